"""Tests of mst_ref.nn.layers: each layer against its defining formula, and leading-axis broadcasting."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.nn.layers import batch_norm, bn_params, head, layer_norm, linear, patch_embed

SETTINGS = settings(max_examples=30, deadline=None)


def _rand(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@SETTINGS
@given(lead=st.lists(st.integers(1, 3), max_size=3), c=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_batch_norm_is_the_eval_formula(lead, c, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, *lead, c)
    w, b, m = _rand(rng, c), _rand(rng, c), _rand(rng, c)
    v = rng.uniform(0.1, 3.0, c)
    want = (x - m) / np.sqrt(v + 1e-5) * w + b
    np.testing.assert_allclose(batch_norm(x, w, b, m, v), want, rtol=1e-12, atol=1e-12)


def test_batch_norm_keeps_float32_and_reads_state_keys():
    rng = np.random.default_rng(0)
    state = {f"bn.{k}": rng.uniform(0.5, 2, 4).astype(np.float32)
             for k in ("weight", "bias", "running_mean", "running_var")}
    x = _rand(rng, 2, 3, 4, dtype=np.float32)
    y = batch_norm(x, *bn_params(state, "bn"))
    assert y.dtype == np.float32
    want = (x - state["bn.running_mean"]) / np.sqrt(state["bn.running_var"] + 1e-5) * state["bn.weight"] + state["bn.bias"]
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=2e-6)


@SETTINGS
@given(lead=st.lists(st.integers(1, 3), max_size=3), c=st.integers(2, 9), seed=st.integers(0, 2**16))
def test_layer_norm_normalises_each_token(lead, c, seed):
    rng = np.random.default_rng(seed)
    x = 3.0 * _rand(rng, *lead, c) + 1.0
    y = layer_norm(x, np.ones(c), np.zeros(c))
    # mean 0 and (biased) variance var / (var + eps) over the channels of every token
    var = x.var(axis=-1, keepdims=True)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose((y * y).mean(axis=-1, keepdims=True), var / (var + 1e-5), rtol=1e-10)
    w, b = _rand(rng, c), _rand(rng, c)
    np.testing.assert_allclose(layer_norm(x, w, b), y * w + b, rtol=1e-12, atol=1e-12)


def test_layer_norm_two_channel_hand_value():
    # x = (0, 2): mean 1, variance 1 -> (-1, 1) / sqrt(1 + 1e-5)
    y = layer_norm(np.array([0.0, 2.0]), np.ones(2), np.zeros(2))
    np.testing.assert_allclose(y, np.array([-1.0, 1.0]) / np.sqrt(1 + 1e-5), rtol=1e-15)


@SETTINGS
@given(lead=st.lists(st.integers(1, 3), max_size=3), cin=st.integers(1, 6), cout=st.integers(1, 6),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_einsum(lead, cin, cout, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, *lead, cin), _rand(rng, cout, cin), _rand(rng, cout)
    want = np.einsum("...i,oi->...o", x, w) + (b if bias else 0)
    np.testing.assert_allclose(linear(x, w, b if bias else None), want, rtol=1e-12, atol=1e-12)


def _conv_stride_p(images, weight, bias):
    """Naive Conv2d with kernel = stride = p, tokens in row-major order."""
    b, cin, h, w = images.shape
    c, _, p, _ = weight.shape
    out = np.zeros((b, h // p, w // p, c))
    for i in range(h // p):
        for j in range(w // p):
            patch = images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (B, Cin, p, p)
            out[:, i, j] = np.einsum("bcuv,ocuv->bo", patch, weight) + bias
    return out.reshape(b, -1, c)


@SETTINGS
@given(p=st.integers(1, 4), grid=st.integers(1, 3), cin=st.integers(1, 3), c=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_patch_embed_equals_a_strided_convolution(p, grid, cin, c, seed):
    rng = np.random.default_rng(seed)
    images = _rand(rng, 2, cin, p * grid, p * (grid + 1))
    w, b = _rand(rng, c, cin, p, p), _rand(rng, c)
    np.testing.assert_allclose(patch_embed(images, w, b), _conv_stride_p(images, w, b), rtol=1e-12, atol=1e-12)


def test_head_is_token_mean_then_linear():
    rng = np.random.default_rng(1)
    x, w, b = _rand(rng, 2, 5, 3), _rand(rng, 4, 3), _rand(rng, 4)
    want = np.stack([w @ x[i].mean(axis=0) + b for i in range(2)])
    np.testing.assert_allclose(head(x, w, b), want, rtol=1e-12)


def test_every_layer_computes_a_stacked_step_exactly_as_alone():
    """A time axis in front gives the same bits as each step computed alone (float32)."""
    rng = np.random.default_rng(2)
    T, c = 5, 6
    x = _rand(rng, T, 2, 7, c, dtype=np.float32)
    w, b = _rand(rng, 4, c, dtype=np.float32), _rand(rng, 4, dtype=np.float32)
    g, beta, mu = (_rand(rng, c, dtype=np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, c).astype(np.float32)
    images = _rand(rng, T, 2, 3, 8, 8, dtype=np.float32)
    kernel, kb = _rand(rng, c, 3, 2, 2, dtype=np.float32), _rand(rng, c, dtype=np.float32)
    layers = [
        (lambda a: linear(a, w, b), x),
        (lambda a: batch_norm(a, g, beta, mu, var), x),
        (lambda a: layer_norm(a, g, beta), x),
        (lambda a: head(a, w, b), x),
        (lambda a: patch_embed(a, kernel, kb), images),
    ]
    for f, inputs in layers:
        stacked = f(inputs)
        assert stacked.dtype == np.float32
        alone = np.stack([f(inputs[t:t + 1])[0] for t in range(T)])
        np.testing.assert_array_equal(stacked, alone)
