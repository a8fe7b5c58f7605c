"""The fused SNN path (mst_ref.models.mst_fast) and its kernels: each Numba kernel against its readable NumPy twin, bit
for bit, and the fused forward pass against the readable one (model.forward with fast=False).

Kernel tests are marked ``kernels``: CI runs them again with NUMBA_DISABLE_JIT=1, so the kernel bodies
also run (and are checked) as plain Python. Sizes stay tiny for that run.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mst_ref.core import kernels
from mst_ref.nn.attention import softmax_tables, window_attention_scan_reference
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.core.neurons import if_neuron, site_scan_reference
from mst_ref.nn.windows import cyclic_shift, relative_position_index, shift_attention_mask, window_order
from mst_ref.nn.windows import relative_position_bias, window_partition

SETTINGS = settings(max_examples=30, deadline=None)


def _none(ndim, dtype):
    return np.empty((0,) * ndim, dtype)


# ---------------------------------------------------------------- site_scan


@pytest.mark.kernels
@SETTINGS
@given(T=st.integers(1, 5), R=st.integers(1, 7), C=st.integers(1, 6), static=st.booleans(),
       opts=st.sets(st.sampled_from(["add", "rows", "bias", "scale", "shift", "mask", "pre", "post", "out"])),
       gain=st.sampled_from([1.0, 2.0, 0.0]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_site_scan_kernel_equals_reference(T, R, C, static, opts, gain, dtype, seed):
    rng = np.random.default_rng(seed)
    lam = float(dtype(rng.uniform(0.3, 2.0)))

    def arr(*shape):
        return rng.uniform(-1.0, 2.5, shape).astype(dtype)

    x = arr(1 if static else T, R, C)
    add = arr(T, R + 2, C) if "add" in opts else _none(3, dtype)
    rows = rng.permutation(R + 2)[:R].astype(np.int64) if "add" in opts and "rows" in opts else _none(1, np.int64)
    if "add" in opts and "rows" not in opts:
        add = add[:, :R].copy()
    bias, scale, shift = (arr(C) if k in opts else _none(1, dtype) for k in ("bias", "scale", "shift"))
    u = rng.random((T, R, C)) if "mask" in opts else _none(3, np.float64)
    v0 = arr(R, C)
    post0 = arr(T, R, C)
    results = []
    for fn in (kernels.site_scan, site_scan_reference):
        v = v0.copy()
        pre = np.zeros((T, R, C), dtype) if "pre" in opts else _none(3, dtype)
        post = post0.copy() if "post" in opts else _none(3, dtype)
        out = np.zeros((T, R, C), dtype) if "out" in opts else _none(3, dtype)
        counts, fired = fn(x, T, add, rows, bias, scale, shift, lam, gain, v, u, 0.4, pre, post, out)
        results.append((counts, fired, v, pre, post, out))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    # the fast path hands the kernel its keep decisions as bytes, [u > p] against 0.5: the same run
    v = v0.copy()
    pre = np.zeros((T, R, C), dtype) if "pre" in opts else _none(3, dtype)
    post = post0.copy() if "post" in opts else _none(3, dtype)
    out = np.zeros((T, R, C), dtype) if "out" in opts else _none(3, dtype)
    keep = np.greater(u, 0.4).view(np.uint8) if "mask" in opts else _none(3, np.uint8)
    counts, fired = kernels.site_scan(x, T, add, rows, bias, scale, shift, lam, gain, v, keep, 0.5, pre, post, out)
    for got, want in zip((counts, fired, v, pre, post, out), results[0]):
        np.testing.assert_array_equal(got, want)
    counts, fired = results[0][:2]
    # RSM or a silenced site (gain 0) only removes spikes; unmasked, the two counts agree
    assert (counts <= fired).all()
    if "mask" not in opts and gain != 0.0:
        np.testing.assert_array_equal(counts, fired)


@pytest.mark.kernels
def test_site_scan_by_hand():
    # lambda = 2, v starts at 1; y = (x + bias) * scale + shift = (x + 0.5) * 2 - 1 = 2x
    x = np.array([[[0.25]], [[0.5]], [[0.0]]], np.float32)  # (T=3, R=1, C=1) -> y = 0.5, 1.0, 0.0
    v = np.ones((1, 1), np.float32)
    out = np.zeros((3, 1, 1), np.float32)
    one = np.ones(1, np.float32)
    counts, fired = kernels.site_scan(x, 3, _none(3, np.float32), _none(1, np.int64), one * 0.5, one * 2,
                                      one * -1, 2.0, 1.0, v, _none(3, np.float64), 0.0, _none(3, np.float32),
                                      _none(3, np.float32), out)
    # v: 1.5 (no spike) -> 2.5 spike -> 0.5 -> 0.5 (no spike)
    np.testing.assert_array_equal(out.ravel(), [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(counts, [0, 1, 0])
    np.testing.assert_array_equal(fired, [0, 1, 0])
    assert v[0, 0] == 0.5
    # the same input with RSM: the uniform of step 2 (0.3) is below p = 0.5, so its spike is fired but dropped
    v[...] = 1.0
    u = np.array([0.9, 0.3, 0.9]).reshape(3, 1, 1)
    counts, fired = kernels.site_scan(x, 3, _none(3, np.float32), _none(1, np.int64), one * 0.5, one * 2,
                                      one * -1, 2.0, 1.0, v, u, 0.5, _none(3, np.float32), _none(3, np.float32),
                                      out)
    np.testing.assert_array_equal(out.ravel(), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(counts, [0, 0, 0])
    np.testing.assert_array_equal(fired, [0, 1, 0])


def test_if_neuron_unchecked_equals_checked():
    x = np.random.default_rng(0).uniform(-1, 3, (6, 4, 5)).astype(np.float32)
    v1, v2 = np.full((4, 5), 0.6, np.float32), np.full((4, 5), 0.6, np.float32)
    np.testing.assert_array_equal(if_neuron(x, 1.2, v1), if_neuron(x, 1.2, v2, check=False))
    np.testing.assert_array_equal(v1, v2)


# ---------------------------------------------------------------- window attention


def _attention_case(rng, T, B, ws, side, heads, hd, shifted, masked, recorded, bias, big_lambda, dtype):
    """Arguments of window_attention_scan for a random case (the arrays the kernel writes are returned fresh
    by ``fresh()``)."""
    grid, N = ws * side, ws * ws
    nW, C = side * side, heads * hd
    shift = ws // 2 if shifted and side > 1 else 0
    qkv = rng.uniform(-0.5, 1.5, (T * B * grid * grid, 3, heads, hd)).astype(dtype)
    qkv_bias = rng.normal(0, 0.3, (3, heads, hd)).astype(dtype) if bias else _none(3, dtype)
    lam = rng.uniform(0.5, 1.5, 5).astype(dtype)
    if big_lambda:  # exp(lambda_a) would overflow: the kernel exponentiates per step
        lam[3] = 150.0 if dtype == np.float32 else 800.0
    p = np.where(masked, 0.4, 0.0) * np.ones(5)
    gain = np.where(masked, dtype(1 / 0.6), 1).astype(dtype) * np.ones(5, dtype)
    unit = float(lam[0] * gain[0]) * float(lam[1] * gain[1])
    score_table = (np.arange(hd + 1) * unit).astype(dtype) * dtype(hd**-0.5)
    rel = relative_position_bias(rng.normal(0, 1, ((2 * ws - 1) ** 2, heads)).astype(dtype),
                                 relative_position_index(ws))
    smask = shift_attention_mask(grid, ws, shift, dtype) if shift else None
    table = softmax_tables(np.ascontiguousarray(rel), smask, lam[3] * gain[3])
    shapes = [(B * nW * heads * N, hd)] * 3 + [(B * nW * heads * N, N), (B * nW * N, heads, hd)]
    states = [rng.uniform(0, 1, s).astype(dtype) for s in shapes]
    if big_lambda:
        states[3] += lam[3] - 1  # near the threshold: some scores spike
    uniforms = [rng.random((T * s[0], *s[1:])) if masked else _none(len(s), np.float64) for s in shapes]

    def fresh():
        records = [np.zeros((T * s[0], *s[1:]), dtype) if recorded else _none(2, dtype) for s in shapes[:4]]
        out = np.zeros((T * B * nW * N, heads, hd), dtype)
        return [s.copy() for s in states], records, out

    fixed = (qkv, qkv_bias, B, grid, ws, shift, heads, lam, gain, p, score_table, table)
    return fixed, uniforms, fresh


def _run_attention(fn, fixed, uniforms, fresh):
    states, records, out = fresh()
    counts, fired, pairs = fn(*fixed, *states, *uniforms, *records, out)
    return [counts, pairs, out, *states, *records, fired]


@pytest.mark.kernels
@SETTINGS
@given(T=st.integers(1, 3), B=st.integers(1, 2), ws=st.integers(1, 3), side=st.integers(1, 2),
       heads=st.integers(1, 2), hd=st.integers(1, 4), shifted=st.booleans(), masked=st.booleans(),
       recorded=st.booleans(), bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_window_attention_kernel_equals_reference(T, B, ws, side, heads, hd, shifted, masked, recorded, bias,
                                                  dtype, seed):
    case = _attention_case(np.random.default_rng(seed), T, B, ws, side, heads, hd, shifted, masked, recorded,
                           bias, False, dtype)
    got = _run_attention(kernels.window_attention_scan, *case)
    want = _run_attention(window_attention_scan_reference, *case)
    # a case where nothing spikes (possible for one token and one channel) compares only zeros: skip it
    assume(got[0][:4].sum() > 0)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # the fast path hands the kernel its keep decisions as bytes, [u > p] against 0.5: the same run
    fixed, uniforms, fresh = case
    p = fixed[9]
    keep = [np.greater(u, p[k]).view(np.uint8) if u.size else _none(u.ndim, np.uint8) for k, u in enumerate(uniforms)]
    as_bytes = _run_attention(kernels.window_attention_scan, (*fixed[:9], np.where(p > 0, 0.5, 0.0), *fixed[10:]),
                              keep, fresh)
    for g, w in zip(as_bytes, got):
        np.testing.assert_array_equal(g, w)
    counts, fired = got[0], got[-1]
    assert (counts <= fired).all()  # RSM only removes spikes
    if not masked:
        np.testing.assert_array_equal(counts, fired)


@pytest.mark.kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_attention_kernel_large_lambda_exponentiates_per_step(dtype):
    case = _attention_case(np.random.default_rng(5), 3, 1, 2, 2, 2, 3, True, False, True, True, True, dtype)
    got = _run_attention(kernels.window_attention_scan, *case)
    want = _run_attention(window_attention_scan_reference, *case)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)  # scalar exp vs NumPy vectorised exp: ulps
    assert np.isfinite(got[2]).all() and got[0][3].sum() > 0


def test_softmax_tables_give_the_softmax():
    rng = np.random.default_rng(0)
    rel = rng.normal(0, 1, (2, 4, 4))
    smask = shift_attention_mask(4, 2, 1, np.float64)
    table = softmax_tables(rel, smask, 1.7).reshape(4, 4, 2, 4, 4)
    spikes = rng.random((4, 2, 4, 4)) < 0.5  # (nW, nH, N, N)
    a = spikes * 1.7 + rel + smask[:, None]
    want = np.exp(a - a.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    e = np.where(spikes, table[3], table[2])
    np.testing.assert_allclose(e / e.sum(-1, keepdims=True), want, rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(np.where(spikes, table[1], table[0]), a)


@given(grid_windows=st.integers(1, 4), ws=st.integers(1, 4), seed=st.integers(0, 100))
@settings(max_examples=20, deadline=None)
def test_window_order_gathers_the_rolled_windows(grid_windows, ws, seed):
    res = grid_windows * ws
    x = np.random.default_rng(seed).random((res, res, 3))
    for shift in {0, ws // 2}:
        windows = window_partition(cyclic_shift(x, -shift), ws).reshape(-1, 3)  # (nW*N, C)
        order = window_order(res, ws, shift)
        np.testing.assert_array_equal(windows[order], x.reshape(-1, 3))


# ---------------------------------------------------------------- the fused forward pass


CFGS = [
    MSTConfig(img_size=16, patch_size=2, in_chans=3, num_classes=5, embed_dim=8, depths=(2, 2), num_heads=(2, 4),
              window_size=4),
    MSTConfig(img_size=12, patch_size=2, in_chans=1, num_classes=3, embed_dim=6, depths=(2, 1), num_heads=(3, 3),
              window_size=3, mlp_norm=False, qkv_bias=False, mlp_ratio=2.0),
]


@pytest.mark.parametrize("cfg", CFGS, ids=["shifted-imagenet", "no-bias-no-mlp-norm"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_path_equals_readable_path_float64(cfg, masked):
    model = MST.random(cfg, np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, cfg.in_chans, cfg.img_size, cfg.img_size))
    kw = dict(record="all")
    if masked:
        kw |= dict(mask_ratio={"layers.0.*": 0.5, "layers.1.*": 0.3}, mask_sites="paper", mask_rescale=True)
    fast = model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=4, **kw)
    slow = model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=4, fast=False, **kw)
    np.testing.assert_allclose(fast.cumulative_logits, slow.cumulative_logits, rtol=1e-12, atol=1e-12)
    assert fast.spike_counts_by_site == slow.spike_counts_by_site
    assert fast.site_shapes == slow.site_shapes and list(fast.records) == list(slow.records)
    for name in model.site_names:
        np.testing.assert_array_equal(fast.records[name], slow.records[name])
    for name, pairs in slow.product_pairs_per_step.items():
        np.testing.assert_array_equal(fast.product_pairs_per_step[name], pairs)


def test_fused_path_float32_within_the_spike_flip_tolerance():
    cfg = CFGS[0]
    model = MST.random(cfg, np.random.default_rng(3))
    x = np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32)
    fast = model.snn_forward(x, 16).cumulative_logits
    slow = model.snn_forward(x, 16, fast=False).cumulative_logits
    assert fast.dtype == np.float32
    rel = np.abs(fast - slow).max(axis=(1, 2)) / np.abs(slow).max(axis=(1, 2))
    assert rel.max() < 1e-4


@pytest.mark.parametrize("fast", [True, False])
def test_either_path_step_by_step_equals_chunked(fast):
    cfg = CFGS[1]
    model = MST.random(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 1, 12, 12)).astype(np.float32)
    kw = dict(mask_ratio=0.5, record="all", fast=fast)
    whole = model.snn_forward(x, 5, rng=np.random.default_rng(3), chunk=5, **kw)
    sim = model.step_simulator(x, rng=np.random.default_rng(3), **kw)
    steps = np.stack([sim.step() for _ in range(5)])
    np.testing.assert_array_equal(steps, whole.step_logits)
    chunked = model.snn_forward(x, 5, rng=np.random.default_rng(3), chunk=2, **kw)
    np.testing.assert_array_equal(chunked.cumulative_logits, whole.cumulative_logits)
    for name in model.site_names:
        np.testing.assert_array_equal(chunked.records[name], whole.records[name])
