"""The IF neuron: hand-checked recurrence, the QCFS identities, kernel vs NumPy reference, state carrying.

The whole module is marked ``kernels``: CI runs it a second time with NUMBA_DISABLE_JIT=1, so the body of
``kernels.if_scan`` is also executed (and checked against the reference) as plain Python.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mst_ref import IFState, if_neuron, qcfs
from mst_ref.core.kernels import if_scan
from mst_ref.core.neurons import if_neuron_reference, spike_counts

pytestmark = pytest.mark.kernels

SETTINGS = settings(max_examples=50, deadline=None)
DTYPES = [np.float32, np.float64]

dtypes = st.sampled_from(DTYPES)
thresholds = st.floats(0.01, 100.0)


def _pre_charge(shape, lam, dtype):
    return np.full(shape, np.dtype(dtype).type(lam) / 2, dtype=dtype)


@st.composite
def input_trains(draw, max_T=24, max_side=5):
    """(x (T, ...), lambda): a float32/64 input train of any shape, values from -2 lambda to 3 lambda."""
    dtype = draw(dtypes)
    lam = draw(thresholds)
    T = draw(st.integers(1, max_T))
    rest = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    u = draw(hnp.arrays(np.float64, (T,) + rest, elements=st.floats(-2.0, 3.0)))
    return (u * lam).astype(dtype), lam


# --- the recurrence, by hand ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [if_neuron, if_neuron_reference])
def test_three_steps_by_hand(fn, dtype):
    # lambda = 2, so v starts at 1; all values are dyadic, so every step is exact in both dtypes.
    # neuron 0, x = 0.5, 1.25, 2.75:  v = 1.5 (no spike) ; 2.75 -> spike, 0.75 ; 3.5 -> spike, 1.5
    # neuron 1, x = -0.75, 2.5, 0.25: v = 0.25 (no spike) ; 2.75 -> spike, 0.75 ; 1.0 (no spike)
    x = np.array([[0.5, -0.75], [1.25, 2.5], [2.75, 0.25]], dtype=dtype)  # (T=3, 2)
    v = _pre_charge(2, 2.0, dtype)
    out = fn(x, 2.0, v)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [2.0, 2.0], [2.0, 0.0]])
    np.testing.assert_array_equal(v, [1.5, 1.0])
    assert out.dtype == dtype and v.dtype == dtype
    # v = None starts from the same pre-charge
    np.testing.assert_array_equal(fn(x, 2.0), out)


def test_threshold_reached_exactly_fires():
    # v = 0.5 + 0.5 = 1.0 >= 1.0: fires (">="), and the reset leaves exactly 0
    v = np.array([0.5])
    np.testing.assert_array_equal(if_neuron(np.array([[0.5], [0.0]]), 1.0, v), [[1.0], [0.0]])
    assert v[0] == 0.0


# --- the identities of docs/mst.md section 2 --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 4, 8, 32])
def test_constant_input_equals_qcfs_on_exact_grid_including_ties(T, dtype):
    # lambda and x = j lambda / (2T) are dyadic here, so the IF arithmetic is exact and every odd j is
    # an exact tie (T x / lambda + 1/2 an integer): both QCFS (floor(. + 1/2)) and IF (v >= lambda)
    # round ties up, so the mean output equals QCFS at L = T exactly.
    lam = 4.0
    x = (np.arange(-3, 2 * T + 4) * lam / (2 * T)).astype(dtype)  # (M,)
    out = if_neuron(np.broadcast_to(x, (T,) + x.shape), lam)  # (T, M)
    np.testing.assert_array_equal(out.mean(axis=0), qcfs(x, lam, levels=T))


@SETTINGS
@given(
    st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=20),
    thresholds,
    st.integers(1, 128),
    dtypes,
)
def test_constant_input_mean_equals_qcfs_at_L_equals_T(u, lam, T, dtype):
    # In exact arithmetic the count of spikes is n = clip(floor(T x / lambda + 1/2), 0, T), so the mean
    # output n lambda / T is qcfs(x, lambda, T). In floating point the IF accumulates T roundings and
    # QCFS makes three, so where T x / lambda + 1/2 lies within rounding of an integer (a tie) either
    # side may be taken: there we accept n or n - 1 ("the tie may go either way", docs/mst.md section 9). A missed
    # spike at an earlier step is made up at the next one, so only the tie at step T matters.
    x = (np.array(u) * lam).astype(dtype)  # (M,)
    lam_d = np.dtype(dtype).type(lam)
    out = if_neuron(np.broadcast_to(x, (T,) + x.shape), lam)  # (T, M)
    n = spike_counts(out)
    q = qcfs(x, lam, levels=T)
    tie_band = 16 * (T + 1) * np.finfo(dtype).eps
    for xi, ni, qi, oi in zip(x, n, q, out.T):
        z = Fraction(float(xi)) * T / Fraction(float(lam_d)) + Fraction(1, 2)  # exact
        k = min(max(int(np.floor(z)), 0), T)
        near_tie = abs(z - round(z)) < tie_band and 0 < round(z) <= T
        if near_tie:
            assert ni in (round(z), round(z) - 1)
        else:
            assert ni == k
            assert round(float(qi) * T / float(lam_d)) == k
            np.testing.assert_allclose(oi.astype(np.float64).mean(), qi, rtol=4 * np.finfo(dtype).eps)


@SETTINGS
@given(st.integers(1, 64), st.integers(1, 8), thresholds, dtypes, st.data())
def test_mean_error_at_most_half_lambda_over_T(T, M, lam, dtype, data):
    # v_T = lambda/2 + sum x - n lambda stays in [0, lambda) when every x_t is in [0, lambda],
    # hence |mean out - mean x| = |v_T - lambda/2| / T <= lambda / (2T).
    lam_d = np.dtype(dtype).type(lam)
    u = data.draw(hnp.arrays(np.float64, (T, M), elements=st.floats(0.0, 1.0)))
    x = np.minimum((u * lam_d).astype(dtype), lam_d)  # (T, M), in [0, lambda]
    out = if_neuron(x, lam)
    err = np.abs(out.astype(np.float64).mean(axis=0) - x.astype(np.float64).mean(axis=0))  # (M,)
    # float tolerance: T roundings of v, each at most eps * 2 lambda, spread over T steps
    assert err.max() <= float(lam_d) / (2 * T) + 4 * np.finfo(dtype).eps * float(lam_d)


@SETTINGS
@given(input_trains())
def test_outputs_are_zero_or_lambda_and_at_most_one_spike_per_step(train):
    x, lam = train
    out = if_neuron(x, lam)
    lam_d = x.dtype.type(lam)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.all((out == 0) | (out == lam_d))
    n = spike_counts(out)
    assert n.dtype == np.int64 and n.shape == x.shape[1:]
    assert np.all((n >= 0) & (n <= x.shape[0]))
    np.testing.assert_array_equal(n, (out == lam_d).sum(axis=0))


# --- the numba kernel against the NumPy reference ------------------------------------------------


@SETTINGS
@given(input_trains(), st.booleans())
def test_kernel_equals_reference_bit_exact(train, carry_v):
    x, lam = train
    rng = np.random.default_rng(0)
    v0 = (
        np.asarray(rng.uniform(-1, 1, x.shape[1:]) * lam).astype(x.dtype)
        if carry_v
        else _pre_charge(x.shape[1:], lam, x.dtype)
    )
    v_fast, v_ref = v0.copy(), v0.copy()
    out_fast = if_neuron(x, lam, v_fast)
    out_ref = if_neuron_reference(x, lam, v_ref)
    np.testing.assert_array_equal(out_fast, out_ref)
    np.testing.assert_array_equal(v_fast, v_ref)
    assert out_fast.dtype == out_ref.dtype == x.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_if_scan_directly_against_reference(dtype):
    # more neurons than one kernel block (1024), so several parallel blocks and a partial last block
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 2.5, size=(9, 2500)).astype(dtype)  # (T, M)
    v = _pre_charge(2500, 1.3, dtype)
    v_ref = v.copy()
    out = if_scan(x, float(dtype(1.3)), v)
    np.testing.assert_array_equal(out, if_neuron_reference(x, 1.3, v_ref))
    np.testing.assert_array_equal(v, v_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_x_and_v(dtype):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 3, size=(6, 4, 10)).astype(dtype)[:, :, ::2]  # (T, 4, 5), strided
    v = _pre_charge((5, 4), 1.0, dtype).T  # (4, 5), a transposed view: updated in place all the same
    v_ref = np.ascontiguousarray(v)
    expected = if_neuron_reference(np.ascontiguousarray(x), 1.0, v_ref)
    np.testing.assert_array_equal(if_neuron(x, 1.0, v), expected)
    np.testing.assert_array_equal(v, v_ref)


# --- state: chunks and single steps --------------------------------------------------------------


@SETTINGS
@given(input_trains(max_T=30), st.data())
def test_chunked_calls_with_carried_v_equal_one_call(train, data):
    x, lam = train
    T = x.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(1, T), max_size=4)))
    v = _pre_charge(x.shape[1:], lam, x.dtype)
    chunks = [if_neuron(x[a:b], lam, v) for a, b in zip([0] + cuts, cuts + [T]) if b > a]
    v_whole = _pre_charge(x.shape[1:], lam, x.dtype)
    np.testing.assert_array_equal(np.concatenate(chunks), if_neuron(x, lam, v_whole))
    np.testing.assert_array_equal(v, v_whole)


@SETTINGS
@given(input_trains(max_T=16))
def test_ifstate_step_by_step_equals_multi_step(train):
    x, lam = train
    state = IFState(lam, x.shape[1:], dtype=x.dtype)
    steps = np.stack([state.step(xt) for xt in x])  # (T, ...)
    v = _pre_charge(x.shape[1:], lam, x.dtype)
    multi = if_neuron(x, lam, v)
    np.testing.assert_array_equal(steps, multi)
    np.testing.assert_array_equal(state.v, v)
    np.testing.assert_array_equal(state.spike_count, spike_counts(multi))
    assert state.t == x.shape[0]
    # reset returns to the pre-charge: running again gives the same spikes
    state.reset()
    assert state.t == 0 and not state.spike_count.any()
    np.testing.assert_array_equal(np.stack([state.step(xt) for xt in x]), multi)


def test_ifstate_accepts_checkpoint_threshold_and_int_shape():
    state = IFState(np.array([1.0], np.float32), 3)
    assert state.v.shape == (3,) and state.v.dtype == np.float32
    np.testing.assert_array_equal(state.step(np.array([0.25, 0.5, 2.0], np.float32)), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(state.v, [0.75, 0.0, 1.5])
    np.testing.assert_array_equal(state.spike_count, [0, 1, 1])


# --- argument checks -----------------------------------------------------------------------------

GOOD_X = np.zeros((3, 2), np.float32)


@pytest.mark.parametrize("fn", [if_neuron, if_neuron_reference])
@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((3, 2), np.int64), "x must be a float32 or float64 array; got int64"),
        (np.zeros((3, 2), bool), "x must be a float32 or float64 array; got bool"),
        (np.array([[0.5, None]], dtype=object), "x must be a float32 or float64 array; got object"),
        (np.float64(1.0), "x must have a leading time axis"),
        (np.zeros((0, 4)), r"x must have at least one time step"),
        (np.array([[0.5, np.nan]]), "x must be finite"),
        (np.array([[np.inf], [0.0]], np.float32), "x must be finite"),
    ],
)
def test_bad_x_names_x(fn, x, match):
    with pytest.raises(ValueError, match=match):
        fn(x, 1.0)


@pytest.mark.parametrize("fn", [if_neuron, if_neuron_reference])
@pytest.mark.parametrize(
    "threshold", [0.0, -0.5, np.nan, np.inf, -np.inf, np.ones(2), np.ones((1, 2)), 1e300]
)
def test_bad_threshold_names_threshold(fn, threshold):
    # 1e300 is finite in float64 but overflows float32, x's dtype here
    with pytest.raises(ValueError, match="threshold"):
        fn(GOOD_X, threshold)


@pytest.mark.parametrize("fn", [if_neuron, if_neuron_reference])
@pytest.mark.parametrize(
    "v, match",
    [
        (np.zeros(3, np.float32), "v must have shape"),
        (np.zeros(2, np.float64), "v must have shape .* dtype float32"),
        ([0.5, 0.5], "v must be a numpy array"),
        (np.array([0.5, np.nan], np.float32), "v must be finite"),
        (np.broadcast_to(np.float32(0.5), (2,)), "v must be writeable"),
    ],
)
def test_bad_v_names_v(fn, v, match):
    with pytest.raises(ValueError, match=match):
        fn(GOOD_X, 1.0, v)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=1.0, shape=(2,), dtype=np.int32), "dtype"),
        (dict(threshold=0.0, shape=(2,)), "threshold"),
        (dict(threshold=1.0, shape=(2, -1)), "shape"),
        (dict(threshold=1.0, shape=(2.5,)), "shape"),
    ],
)
def test_bad_ifstate_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IFState(**kwargs)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros(3, np.float32), r"x must have shape \(2,\)"),
        (np.zeros(2, np.float64), "x must have shape .* dtype float32"),
        (np.zeros(2, np.int32), "x must be a float32 or float64 array"),
        (np.array([np.nan, 0.0], np.float32), "x must be finite"),
    ],
)
def test_bad_ifstate_step_names_x(x, match):
    state = IFState(1.0, (2,))
    with pytest.raises(ValueError, match=match):
        state.step(x)
    np.testing.assert_array_equal(state.v, [0.5, 0.5])  # a refused step leaves the state alone
    assert state.t == 0


def test_spike_counts_needs_time_axis():
    with pytest.raises(ValueError, match="out"):
        spike_counts(np.float64(1.0))
    np.testing.assert_array_equal(spike_counts(np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0]])), [1, 2])
