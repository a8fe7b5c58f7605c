"""QCFS and its continuous limit: grid, monotonicity, limits, dtype, hand values, argument checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mst_ref import clip_activation, qcfs

SETTINGS = settings(max_examples=50, deadline=None)

dtypes = st.sampled_from([np.float32, np.float64])
thresholds = st.floats(0.05, 20.0)
levels_st = st.integers(1, 64)


@st.composite
def inputs(draw, dtype=None):
    """An array of pre-activations spanning below 0 to above lambda, with its dtype."""
    dtype = draw(dtypes) if dtype is None else dtype
    x = draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
            elements=st.floats(-30.0, 30.0, width=np.finfo(dtype).bits),
        )
    )
    return x


@SETTINGS
@given(inputs(), thresholds, levels_st)
def test_outputs_lie_on_the_level_grid(x, lam, L):
    y = qcfs(x, lam, L)
    lam_d = x.dtype.type(lam)
    assert y.shape == x.shape and y.dtype == x.dtype
    k = np.rint(y.astype(np.float64) * L / float(lam_d))  # the level index of each output
    assert np.all((k >= 0) & (k <= L))
    eps = np.finfo(x.dtype).eps
    np.testing.assert_allclose(y, k * float(lam_d) / L, rtol=4 * eps, atol=4 * eps * float(lam_d))


@SETTINGS
@given(inputs(), thresholds, levels_st)
def test_monotone_nondecreasing(x, lam, L):
    xs = np.sort(x.ravel())
    y = qcfs(xs, lam, L)
    assert np.all(np.diff(y) >= 0)


@SETTINGS
@given(inputs(), thresholds, levels_st)
def test_within_half_a_level_of_clip(x, lam, L):
    lam_d = float(x.dtype.type(lam))
    err = np.abs(qcfs(x, lam, L).astype(np.float64) - clip_activation(x, lam))
    assert err.max(initial=0.0) <= lam_d / (2 * L) * (1 + 1e-5) + 8 * np.finfo(x.dtype).eps * lam_d


@SETTINGS
@given(inputs(np.float64), thresholds)
def test_huge_levels_tend_to_clip(x, lam):
    L = 2**30
    np.testing.assert_allclose(qcfs(x, lam, L), clip_activation(x, lam), rtol=0, atol=lam / L)


def test_hand_values():
    # L = 4, lambda = 1: floor(4x + 0.5) / 4 clipped to [0, 1]; x = 0.125 and 0.875 are ties, rounded up
    x = np.array([-0.2, 0.0, 0.1, 0.125, 0.3, 0.874, 0.875, 2.0])
    np.testing.assert_array_equal(qcfs(x, 1.0, 4), [0.0, 0.0, 0.0, 0.25, 0.25, 0.75, 1.0, 1.0])
    # lambda = 2, L = 2: levels {0, 1, 2}; 0.5 is a tie (rounded up), 1.4 rounds down
    np.testing.assert_array_equal(qcfs(np.array([0.49, 0.5, 1.4, 1.6]), 2.0, 2), [0.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(clip_activation(np.array([-1.0, 0.5, 3.0]), 2.0), [0.0, 0.5, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_threshold_array_accepted(dtype):
    x = np.linspace(-1, 3, 41).astype(dtype)
    up = np.array([1.7], dtype=np.float32)  # as stored in a checkpoint: <site>.up of shape (1,)
    for y in (qcfs(x, up, 16), clip_activation(x, up), qcfs(x, np.float64(1.7), 16)):
        assert y.dtype == dtype
    # lambda is cast to x's dtype first: a (1,) float32 array and the python float agree in float32
    if dtype == np.float32:
        np.testing.assert_array_equal(qcfs(x, up, 16), qcfs(x, 1.7, 16))
    assert qcfs(np.float64(0.3), 1.0, 4).shape == ()


@pytest.mark.parametrize("fn", [qcfs, clip_activation])
@pytest.mark.parametrize(
    "threshold", [0.0, -1.0, np.nan, np.inf, np.array([1.0, 2.0]), "1.0", np.array([True]), 1e-60]
)
def test_bad_threshold_names_threshold(fn, threshold):
    # 1e-60 is positive in float64 but underflows to 0 in float32
    with pytest.raises(ValueError, match="threshold"):
        fn(np.zeros(3, np.float32), threshold)


@pytest.mark.parametrize("levels", [0, -3, 2.5, 16.0, True, "16", None])
def test_bad_levels_names_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        qcfs(np.zeros(3), 1.0, levels)


@pytest.mark.parametrize("fn", [qcfs, clip_activation])
@pytest.mark.parametrize(
    "x", [np.arange(3), np.array([True, False]), np.array([0.5, None], dtype=object), np.zeros(2, np.float16)]
)
def test_non_float_x_names_x(fn, x):
    with pytest.raises(ValueError, match=r"x must be a float32 or float64 array; got " + str(x.dtype)):
        fn(x, 1.0)


def test_numpy_integer_levels_accepted():
    x = np.linspace(0, 1, 9)
    np.testing.assert_array_equal(qcfs(x, 1.0, np.int64(8)), qcfs(x, 1.0, 8))
