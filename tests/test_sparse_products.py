"""Event-driven products (mst_ref.core.kernels.spike_linear) against their readable twin, the dense product,
and the fused forward pass with and without them.

Kernel tests are marked ``kernels``: CI runs them again with NUMBA_DISABLE_JIT=1. Sizes stay tiny.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.core import kernels
from mst_ref.models import mst_fast
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.nn.spike_products import event_steps, spike_linear_reference

SETTINGS = settings(max_examples=30, deadline=None)


def _spikes(rng, T, R, K, density, value, dtype):
    return ((rng.random((T, R, K)) < density) * value).astype(dtype)  # (T, R, K): 0 or value


@pytest.mark.kernels
@SETTINGS
@given(T=st.integers(1, 4), R=st.integers(1, 70), K=st.integers(1, 9), cout=st.integers(1, 7),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_spike_linear_kernel_equals_reference(T, R, K, cout, density, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _spikes(rng, T, R, K, density, rng.uniform(0.2, 3.0), dtype)
    x[rng.random(x.shape) < 0.1] *= -1.5  # any nonzero value, not only lambda
    wt = rng.standard_normal((K, cout)).astype(dtype)
    steps = rng.random(T) < 0.7
    got = kernels.spike_linear(x, wt, steps, np.full((T, R, cout), 7.0, dtype))
    want = spike_linear_reference(x, wt, steps, np.full((T, R, cout), 7.0, dtype))
    np.testing.assert_array_equal(got, want)
    assert (got[~steps] == 7.0).all()  # steps not chosen are left to the dense product


@pytest.mark.kernels
def test_spike_linear_by_hand():
    # row 0 spikes (lambda = 2) on channels 0 and 2, row 1 is silent: y_0 = 2 (W_0 + W_2), y_1 = 0
    x = np.array([[[2.0, 0.0, 2.0], [0.0, 0.0, 0.0]]], np.float32)  # (T=1, R=2, K=3)
    wt = np.array([[1.0, -1.0], [10.0, 10.0], [0.5, 0.25]], np.float32)  # (K=3, Cout=2)
    out = kernels.spike_linear(x, wt, np.ones(1, bool), np.empty((1, 2, 2), np.float32))
    np.testing.assert_array_equal(out, [[[3.0, -1.5], [0.0, 0.0]]])


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
def test_spike_linear_equals_the_dense_product(dtype, tol):
    rng = np.random.default_rng(0)
    x = _spikes(rng, 3, 300, 48, 0.2, 0.7, dtype)
    wt = rng.standard_normal((48, 144)).astype(dtype)
    got = kernels.spike_linear(x, wt, np.ones(3, bool), np.empty((3, 300, 144), dtype))
    want = x.astype(np.float64) @ wt.astype(np.float64)  # (T, R, Cout)
    # the sum of ~10 terms in another order: a few ulps of the largest term
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


def test_event_steps_split_by_density():
    x = np.zeros((3, 10, 10), np.float32)
    x[0, :1] = 1  # density 0.1
    x[1, :5] = 1  # 0.5
    steps, density = event_steps(x, 0.2)
    np.testing.assert_array_equal(steps, [True, False, True])
    np.testing.assert_allclose(density, [0.1, 0.5, 0.0])


CFG = MSTConfig(img_size=16, patch_size=2, in_chans=3, num_classes=5, embed_dim=8, depths=(2, 2), num_heads=(2, 4),
                window_size=4)


def _run(model, x, how, monkeypatch, **kw):
    monkeypatch.setenv("MST_REF_PRODUCTS", how)
    return model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=4, record="all", **kw)


@pytest.mark.parametrize("masked", [False, True])
def test_event_products_give_the_dense_paths_results(masked, monkeypatch):
    # float64: the products differ from BLAS's by summation order only (~1e-16), far from any threshold
    model = MST.random(CFG, np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16))
    kw = dict(mask_ratio=0.5, mask_sites="paper", mask_rescale=True) if masked else {}
    runs = {how: _run(model, x, how, monkeypatch, **kw) for how in ("events", "dense", "auto")}
    slow = model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=4, record="all", fast=False, **kw)
    for how in ("events", "auto"):
        r = runs[how]
        np.testing.assert_allclose(r.cumulative_logits, runs["dense"].cumulative_logits, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(r.predictions, slow.predictions)
        # the monitors count the same spikes and product pairs as the readable path
        assert r.spike_counts_by_site == slow.spike_counts_by_site
        for name, pairs in slow.product_pairs_per_step.items():
            np.testing.assert_array_equal(r.product_pairs_per_step[name], pairs)
        for name in model.site_names:
            np.testing.assert_array_equal(r.records[name], slow.records[name])


def test_event_products_step_by_step_equal_chunked(monkeypatch):
    monkeypatch.setenv("MST_REF_PRODUCTS", "auto")
    model = MST.random(CFG, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    whole = model.snn_forward(x, 5, rng=np.random.default_rng(3), chunk=5, mask_ratio=0.5)
    sim = model.step_simulator(x, rng=np.random.default_rng(3), mask_ratio=0.5)
    steps = np.stack([sim.step() for _ in range(5)])
    np.testing.assert_array_equal(steps, whole.step_logits)


def test_products_setting_is_checked(monkeypatch):
    monkeypatch.setenv("MST_REF_PRODUCTS", "sparse")
    with pytest.raises(ValueError, match="auto, events or dense"):
        mst_fast.products()


def test_site_counts_choose_as_the_density_count_does(monkeypatch):
    # the fast path decides from the counts of the site that made the spikes; deciding from a fresh
    # count of the nonzero inputs (nnz=None) must give the same products
    model = MST.random(CFG, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    seen = []
    inner = mst_fast._spike_product

    def check(mode, inputs, weight, key, nnz=None):
        fresh = np.array([np.count_nonzero(inputs[t]) for t in range(inputs.shape[0])])
        seen.append(nnz is not None)
        np.testing.assert_array_equal(nnz, fresh)
        return inner(mode, inputs, weight, key, nnz)

    monkeypatch.setattr(mst_fast, "_spike_product", check)
    model.snn_forward(x, 4, mask_ratio=0.5, rng=np.random.default_rng(0))
    assert len(seen) == 4 * sum(CFG.depths) and all(seen)
