"""The tiny LinearIF stack: multi-step == step-by-step, and the SNN converges to the clip-ANN."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.engine.stack import LinearIF, random_stack, run_stack_ann, run_stack_multistep, run_stack_stepwise

SETTINGS = settings(max_examples=50, deadline=None)


def _constant_train(x, T):
    return np.broadcast_to(x, (T,) + x.shape)  # (T, B, C_in)


@pytest.mark.parametrize("seed", range(5))
def test_snn_mean_output_approaches_clip_ann_as_T_grows(seed):
    # theory: each layer's mean output tends to clip(mean input, 0, lambda), with an error ~ lambda / T
    rng = np.random.default_rng(seed)
    layers = random_stack(rng, [8, 16, 16, 4])
    x = rng.uniform(0.0, 1.0, size=(32, 8))  # (B, C_in)
    ann = run_stack_ann(layers, x, activation="clip")  # (B, C_out)
    assert 0.05 < np.mean((ann > 0) & (ann < 1.0))  # the test means nothing if every neuron saturates

    def err(T):
        return np.abs(run_stack_multistep(layers, _constant_train(x, T)).mean(axis=0) - ann).mean()

    e16, e64, e256 = err(16), err(64), err(256)
    assert e256 < 0.25 * e16
    assert e256 < e64 < e16
    assert e256 < 2e-3


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 12), min_size=2, max_size=4),
    st.integers(1, 40),
    st.integers(1, 6),
    st.sampled_from([np.float32, np.float64]),
)
def test_stepwise_equals_multistep(seed, widths, T, B, dtype):
    rng = np.random.default_rng(seed)
    layers = random_stack(rng, widths, threshold=0.8, dtype=dtype)
    x_seq = rng.uniform(-0.5, 1.5, size=(T, B, widths[0])).astype(dtype)  # (T, B, C_in), not constant
    multi = run_stack_multistep(layers, x_seq)
    step = run_stack_stepwise(layers, x_seq)
    assert multi.dtype == step.dtype == dtype
    np.testing.assert_array_equal(step, multi)
    assert set(np.unique(multi)) <= {0.0, dtype(0.8)}


@pytest.mark.parametrize("seed", range(3))
def test_one_layer_constant_input_mean_equals_qcfs_ann_at_L_equals_T(seed):
    # with a constant input the first layer's IF neurons see a constant current, so their mean output
    # is exactly the QCFS ANN with L = T (random float64 values: exact ties have probability ~0)
    rng = np.random.default_rng(seed)
    layers = random_stack(rng, [6, 10])
    x = rng.uniform(0.0, 1.0, size=(7, 6))  # (B, C_in)
    for T in (1, 3, 16):
        snn = run_stack_multistep(layers, _constant_train(x, T)).mean(axis=0)  # (B, C_out)
        np.testing.assert_allclose(snn, run_stack_ann(layers, x, "qcfs", levels=T), rtol=1e-12, atol=1e-15)


def test_ann_qcfs_with_many_levels_is_close_to_clip():
    rng = np.random.default_rng(3)
    layers = random_stack(rng, [5, 9, 3])
    x = rng.uniform(0.0, 1.0, size=(4, 5))
    q = run_stack_ann(layers, x, "qcfs", levels=4096)
    c = run_stack_ann(layers, x, "clip")
    assert np.abs(q - c).max() < 1e-2
    assert not np.array_equal(run_stack_ann(layers, x, "qcfs", levels=2), c)


def test_bad_arguments_name_the_argument():
    layers = [LinearIF(np.ones((2, 3)), np.zeros(2), 1.0)]
    with pytest.raises(ValueError, match="x_seq must be"):
        run_stack_multistep(layers, np.zeros((4, 3)))  # missing T axis
    with pytest.raises(ValueError, match="C_in = 3"):
        run_stack_stepwise(layers, np.zeros((4, 1, 5)))
    with pytest.raises(ValueError, match="x_seq must be a float32 or float64 array"):
        run_stack_multistep(layers, np.zeros((4, 1, 3), np.int64))
    with pytest.raises(ValueError, match="activation"):
        run_stack_ann(layers, np.zeros((1, 3)), activation="relu")
    with pytest.raises(ValueError, match="layers"):
        run_stack_ann([], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="threshold"):
        run_stack_multistep([LinearIF(np.ones((2, 3)), np.zeros(2), -1.0)], np.zeros((4, 1, 3)))
