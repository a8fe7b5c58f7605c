"""The two published orders of QCFS's floating-point operations, compared bit for bit at the level boundaries.

MST's code computes ``floor(x * L / lambda + 1/2)`` (:func:`mst_ref.core.qcfs.qcfs`); the QCFS CNN code
divides first, ``floor(clip(x / lambda, 0, 1) * L + 1/2)`` (:func:`mst_ref.core.qcfs.qcfs_clamp_first`).
In exact arithmetic they are one function. In floating point, multiplying by a power of two is exact
(barring overflow and subnormals), so for L = 2^k both orders round the same real number x L / lambda
once and agree bit for bit; for other L the two roundings differ, and an input within a few ulps of a
level boundary lambda (k + 1/2) / L can land on neighbouring levels. docs/qcfs_cnn.md states this.
"""

import numpy as np
import pytest

from mst_ref.core.qcfs import qcfs, qcfs_clamp_first


def boundary_inputs(lam, L, dtype, ulps=4):
    """Every level boundary lambda (k + 1/2) / L for k = -1 .. L, and its ``ulps`` float neighbours each side."""
    k = np.arange(-1, L + 1)
    b = (lam * ((k + 0.5) / L)).astype(dtype)  # (L + 2,) boundaries, rounded to dtype
    xs, up, down = [b], b.copy(), b.copy()
    for _ in range(ulps):
        up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
        xs += [up, down]
    return np.concatenate(xs)  # ((2 ulps + 1) (L + 2),)


def disagreements(L, dtype, n_thresholds=200, seed=0):
    """Number of boundary inputs (over random thresholds) where the two orders give different outputs."""
    lams = np.random.default_rng(seed).uniform(0.05, 20.0, n_thresholds).astype(dtype)
    count = 0
    for lam in lams:
        x = boundary_inputs(lam, L, dtype)
        count += int(np.count_nonzero(qcfs(x, lam, L) != qcfs_clamp_first(x, lam, L)))
    return count


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [1, 2, 4, 8, 16, 32, 64])
def test_orders_agree_bit_for_bit_when_L_is_a_power_of_two(L, dtype):
    assert disagreements(L, dtype) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [3, 6, 10])
def test_orders_differ_at_some_level_boundaries_otherwise(L, dtype):
    n = disagreements(L, dtype)
    assert n > 0
    # where they differ, they differ by exactly one level (neighbouring levels), never more
    lams = np.random.default_rng(0).uniform(0.05, 20.0, 50).astype(dtype)
    for lam in lams:
        x = boundary_inputs(lam, L, dtype)
        a, b = qcfs(x, lam, L), qcfs_clamp_first(x, lam, L)
        steps = np.abs(a.astype(np.float64) - b.astype(np.float64)) / (float(lam) / L)
        assert np.all((steps < 1e-3) | (np.abs(steps - 1) < 1e-3))


def test_away_from_boundaries_the_orders_agree_for_any_L():
    rng = np.random.default_rng(1)
    for L in (3, 6, 10):
        lam = np.float32(1.7)
        k = rng.integers(0, L + 1, 1000)
        # within 0.4 / L of level k, at least 0.1 / L from the boundaries (k +- 1/2) / L
        x = (lam * (k + rng.uniform(-0.4, 0.4, 1000)) / L).astype(np.float32)
        assert np.array_equal(qcfs(x, lam, L), qcfs_clamp_first(x, lam, L))
