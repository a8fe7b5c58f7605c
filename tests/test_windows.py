"""Tests of mst_ref.nn.windows: identities, and Swin's constructions on hand-checked cases."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.nn.windows import (cyclic_shift, relative_position_bias, relative_position_index,
                             shift_attention_mask, window_partition, window_reverse)

SETTINGS = settings(max_examples=30, deadline=None)

grids = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.lists(st.integers(1, 3), max_size=2))


@SETTINGS
@given(grid=grids, c=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_partition_then_reverse_is_identity(grid, c, seed):
    ws, gh, gw, lead = grid
    x = np.random.default_rng(seed).standard_normal((*lead, gh * ws, gw * ws, c))
    win = window_partition(x, ws)
    assert win.shape == (*lead, gh * gw, ws * ws, c)
    np.testing.assert_array_equal(window_reverse(win, ws, gh * ws, gw * ws), x)


@SETTINGS
@given(grid=grids, seed=st.integers(0, 2**16))
def test_partition_puts_each_token_in_its_window(grid, seed):
    ws, gh, gw, _ = grid
    x = np.random.default_rng(seed).standard_normal((gh * ws, gw * ws, 2))
    win = window_partition(x, ws)
    for a in range(gh):
        for b in range(gw):
            for i in range(ws):
                for j in range(ws):
                    # window a * (W / Ws) + b, token i * Ws + j  <->  grid position (a Ws + i, b Ws + j)
                    np.testing.assert_array_equal(win[a * gw + b, i * ws + j], x[a * ws + i, b * ws + j])


@SETTINGS
@given(h=st.integers(1, 6), s=st.integers(-7, 7), seed=st.integers(0, 2**16))
def test_cyclic_shift_rolls_and_unrolls(h, s, seed):
    x = np.random.default_rng(seed).standard_normal((2, h, h + 1, 3))
    y = cyclic_shift(x, s)
    np.testing.assert_array_equal(cyclic_shift(y, -s), x)
    for i in range(h):
        for j in range(h + 1):
            np.testing.assert_array_equal(y[:, (i + s) % h, (j + s) % (h + 1)], x[:, i, j])


def test_relative_position_index_ws2_by_hand():
    np.testing.assert_array_equal(
        relative_position_index(2), np.array([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]))
    assert relative_position_index(2).dtype == np.int64


def _swin_index(ws):
    """Swin's construction, step by step (coords, flatten, pairwise difference, shift, scale, sum)."""
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij"))  # (2, Ws, Ws)
    flat = coords.reshape(2, -1)  # (2, N)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0).copy()  # (N, N, 2)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)  # (N, N)


def test_relative_position_index_equals_swin_construction():
    for ws in range(1, 9):
        idx = relative_position_index(ws)
        np.testing.assert_array_equal(idx, _swin_index(ws))
        # every relative offset appears, the diagonal is the zero offset
        assert set(np.unique(idx)) == set(range((2 * ws - 1) ** 2))
        assert (np.diag(idx) == (ws - 1) * (2 * ws - 1) + ws - 1).all()


def test_relative_position_bias_gathers_per_head():
    table = np.arange(9 * 2, dtype=np.float64).reshape(9, 2)  # ((2*2-1)^2, nH=2)
    bias = relative_position_bias(table, relative_position_index(2))
    assert bias.shape == (2, 4, 4)
    idx = relative_position_index(2)
    for h in range(2):
        np.testing.assert_array_equal(bias[h], table[idx, h])


def test_shift_mask_4x4_window2_shift1_by_hand():
    # regions of the rolled 4x4 grid: rows / cols [0, 2) | [2, 3) | [3, 4)
    #   0 0 1 2
    #   0 0 1 2
    #   3 3 4 5
    #   6 6 7 8
    m = shift_attention_mask(4, 2, 1)
    assert m.shape == (4, 4, 4) and m.dtype == np.float32
    o, x = 0.0, -100.0
    want = np.array([
        [[o, o, o, o], [o, o, o, o], [o, o, o, o], [o, o, o, o]],  # labels 0 0 0 0
        [[o, x, o, x], [x, o, x, o], [o, x, o, x], [x, o, x, o]],  # labels 1 2 1 2
        [[o, o, x, x], [o, o, x, x], [x, x, o, o], [x, x, o, o]],  # labels 3 3 6 6
        [[o, x, x, x], [x, o, x, x], [x, x, o, x], [x, x, x, o]],  # labels 4 5 7 8
    ])
    np.testing.assert_array_equal(m, want)


@SETTINGS
@given(ws=st.integers(2, 4), grid=st.integers(2, 3), data=st.data())
def test_shift_mask_properties(ws, grid, data):
    s = data.draw(st.integers(1, ws - 1))
    m = shift_attention_mask(ws * grid, ws, s, dtype=np.float64)
    assert m.shape == (grid * grid, ws * ws, ws * ws)
    assert set(np.unique(m)) <= {0.0, -100.0}
    np.testing.assert_array_equal(m, m.transpose(0, 2, 1))
    assert (np.diagonal(m, axis1=1, axis2=2) == 0).all()
    # windows away from the bottom and right borders hold one region only
    inner = [a * grid + b for a in range(grid - 1) for b in range(grid - 1)]
    assert (m[inner] == 0).all()
    # the bottom-right window holds all four corner regions: every token is cut off from some others
    assert (m[-1] == -100).any(axis=1).all()
