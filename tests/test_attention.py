"""Tests of mst_ref.nn.attention: window attention against a loop over windows and heads written from
docs/mst.md section 3, and the SNN's multi-step pass against single steps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.nn.attention import softmax, window_attention
from mst_ref.engine.modes import Mode
from mst_ref.engine.monitors import Recorder
from mst_ref.core.qcfs import qcfs
from mst_ref.nn.windows import relative_position_index, shift_attention_mask

SITES = ("q_if", "k_if", "v_if", "attn_if", "attn_v_if", "proj_if")


def _state(rng, c, nh, ws, dtype=np.float64):
    n = ws * ws
    s = {
        "attn.qkv.weight": rng.normal(0, c**-0.5, (3 * c, c)),
        "attn.qkv.bias": rng.normal(0, 0.3, 3 * c),
        "attn.proj.weight": rng.normal(0, c**-0.5, (c, c)),
        "attn.proj.bias": rng.normal(0, 0.3, c),
        "attn.relative_position_bias_table": rng.normal(0, 1.0, ((2 * ws - 1) ** 2, nh)),
    }
    s |= {f"attn.{q}.up": rng.uniform(0.3, 1.5, 1) for q in SITES}
    s = {k: v.astype(dtype) for k, v in s.items()}
    s["attn.relative_position_index"] = relative_position_index(ws)
    assert s["attn.relative_position_index"].shape == (n, n)
    return s


def _loop_attention(x, s, nh, levels, mask):
    """One window and one head at a time, in the order of docs/mst.md section 3."""
    B, nW, N, C = x.shape
    hd = C // nh

    def Q(site, a):
        return qcfs(a, s[f"attn.{site}.up"], levels)

    idx, table = s["attn.relative_position_index"], s["attn.relative_position_bias_table"]
    out = np.zeros_like(x)
    for b in range(B):
        for w in range(nW):
            qkv = x[b, w] @ s["attn.qkv.weight"].T + s["attn.qkv.bias"]  # (N, 3C): [q heads | k heads | v heads]
            merged = np.zeros((N, C))
            for h in range(nh):
                cols = slice(h * hd, (h + 1) * hd)
                q, k, v = qkv[:, cols], qkv[:, C:][:, cols], qkv[:, 2 * C:][:, cols]
                a = Q("attn_if", (Q("q_if", q) @ Q("k_if", k).T) * hd**-0.5)  # scale, then the site
                for i in range(N):
                    for j in range(N):
                        a[i, j] += table[idx[i, j], h] + (0.0 if mask is None else mask[w, i, j])  # bias after
                p = np.exp(a - a.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                merged[:, cols] = p @ Q("v_if", v)
            out[b, w] = Q("proj_if", Q("attn_v_if", merged) @ s["attn.proj.weight"].T + s["attn.proj.bias"])
    return out


@settings(max_examples=15, deadline=None)
@given(ws=st.integers(2, 3), nh=st.integers(1, 3), hd=st.integers(1, 3), shifted=st.booleans(),
       levels=st.sampled_from([4, 16]), seed=st.integers(0, 2**16))
def test_ann_window_attention_matches_loop_over_windows_and_heads(ws, nh, hd, shifted, levels, seed):
    rng = np.random.default_rng(seed)
    c, grid = nh * hd, 2
    s = _state(rng, c, nh, ws)
    mask = shift_attention_mask(grid * ws, ws, ws // 2, np.float64) if shifted else None
    x = rng.uniform(-0.5, 2.0, (2, grid * grid, ws * ws, c))
    got = window_attention(x, s, "attn", nh, Mode(levels=levels), mask)
    np.testing.assert_allclose(got, _loop_attention(x, s, nh, levels, mask), rtol=1e-10, atol=1e-10)


def test_softmax_rows_sum_to_one_and_ignore_shifts():
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    p = softmax(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(softmax(x + 7.0), p, rtol=1e-5)
    np.testing.assert_allclose(p, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("compensation", ["none", "expectation"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_snn_attention_multi_step_equals_step_by_step(compensation, dtype):
    rng = np.random.default_rng(3)
    nh, ws, c, T = 2, 2, 4, 7
    s = _state(rng, c, nh, ws, dtype)
    mask = shift_attention_mask(4, 2, 1, dtype)
    x = rng.uniform(-0.5, 1.5, (T, 2, 4, ws * ws, c)).astype(dtype)  # (T, B, nW, N, C) input currents
    recorder = Recorder({"attn.attn_if"})
    multi = Mode(spiking=True, steps=T, compensation=compensation, monitors=[recorder])
    y = window_attention(x, s, "attn", nh, multi, mask)
    single = Mode(spiking=True, steps=1, compensation=compensation)
    y1 = np.concatenate([window_attention(x[t:t + 1], s, "attn", nh, single, mask) for t in range(T)])
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y1)
    # spikes are 0 or lambda, and something fires
    spikes = recorder.records["attn.attn_if"][0]
    assert set(np.unique(spikes)) <= {0, dtype(s["attn.attn_if.up"][0])}
    assert spikes.any() and y.any()
