"""Swin's windows: partition and reverse, cyclic shift, the shift mask, the relative position index.

Window attention (:mod:`mst_ref.nn.attention`) attends within non-overlapping Ws x Ws windows of the token
grid; every other block first rolls the grid by -Ws/2 so that windows straddle the previous block's
window borders, and masks the attention between tokens that were not neighbours before the roll.

Everything here follows the official Swin / MST code (github bic-L/Masked-Spiking-Transformer,
models/mst.py) and broadcasts over leading axes: the grid is ``(..., H, W, C)`` and the windows are
``(..., nW, N, C)`` with N = Ws * Ws, windows in row-major order of the window grid and tokens in
row-major order inside a window. (Swin flattens batch and windows into one axis, ``B_ = B * nW``; here they
stay two axes, which is the same memory order.)
"""

import numpy as np

__all__ = [
    "SHIFT_MASK_VALUE",
    "window_partition",
    "window_reverse",
    "cyclic_shift",
    "window_order",
    "shift_attention_mask",
    "relative_position_index",
    "relative_position_bias",
]

SHIFT_MASK_VALUE = -100.0  # added to scores between tokens of different regions (Swin's value)


def window_partition(x, window_size):
    """Cut a token grid into non-overlapping windows.

    Parameters
    ----------
    x : (..., H, W, C) ndarray
        H and W divisible by Ws.
    window_size : int
        Ws.

    Returns
    -------
    windows : (..., nW, N, C) ndarray
        nW = (H / Ws) * (W / Ws) windows, N = Ws * Ws tokens each.

    Notes
    -----
    .. math:: \\mathrm{win}[a W/W_s + b,\\; i W_s + j] = x[a W_s + i,\\; b W_s + j]
    """
    *lead, h, w, c = x.shape
    ws = window_size
    x = x.reshape(*lead, h // ws, ws, w // ws, ws, c)  # (..., H/Ws, Ws, W/Ws, Ws, C)
    x = x.swapaxes(-4, -3)  # (..., H/Ws, W/Ws, Ws, Ws, C)
    return x.reshape(*lead, (h // ws) * (w // ws), ws * ws, c)  # (..., nW, N, C)


def window_reverse(windows, window_size, height, width):
    """Put windows back together into the token grid (inverse of :func:`window_partition`).

    Parameters
    ----------
    windows : (..., nW, N, C) ndarray
    window_size : int
        Ws.
    height, width : int
        H and W of the grid.

    Returns
    -------
    x : (..., H, W, C) ndarray
    """
    *lead, _, _, c = windows.shape
    ws = window_size
    x = windows.reshape(*lead, height // ws, width // ws, ws, ws, c)  # (..., H/Ws, W/Ws, Ws, Ws, C)
    x = x.swapaxes(-4, -3)  # (..., H/Ws, Ws, W/Ws, Ws, C)
    return x.reshape(*lead, height, width, c)  # (..., H, W, C)


def cyclic_shift(x, shift):
    """Roll the token grid by ``shift`` along both spatial axes (``torch.roll`` on dims H, W).

    Parameters
    ----------
    x : (..., H, W, C) ndarray
    shift : int
        Swin rolls by ``-s`` before the window attention and by ``+s`` after it, s = Ws // 2.

    Returns
    -------
    y : (..., H, W, C) ndarray

    Notes
    -----
    .. math:: y[(i + s) \\bmod H, (j + s) \\bmod W] = x[i, j]
    """
    return np.roll(x, (shift, shift), axis=(-3, -2))  # (..., H, W, C)


def window_order(resolution, window_size, shift):
    r"""Where each token of the grid lands after the roll by ``-shift`` and the window partition.

    Parameters
    ----------
    resolution : int
        H = W of the token grid.
    window_size : int
        Ws.
    shift : int
        The block's roll s (0 or Ws // 2).

    Returns
    -------
    order : (H*W,) int64 ndarray
        ``order[r * W + c]`` is the index ``w * N + i`` of grid token (r, c) in the windows
        ``window_partition(cyclic_shift(x, -s), Ws)`` flattened to ``(nW * N, C)``; so
        ``windows.reshape(-1, C)[order]`` is ``cyclic_shift(window_reverse(windows), s)`` as a gather
        (the fused SNN path adds the attention output to the residual stream this way).

    Notes
    -----
    .. math:: r' = (r - s) \bmod H,\; c' = (c - s) \bmod W ;\quad
              \mathrm{order}[r W + c] = (\lfloor r'/W_s \rfloor \tfrac{W}{W_s} + \lfloor c'/W_s \rfloor) W_s^2
              + (r' \bmod W_s) W_s + c' \bmod W_s
    """
    ws, side = window_size, resolution // window_size
    r, c = np.divmod(np.arange(resolution * resolution), resolution)  # (H*W,) grid coordinates
    # position in the rolled grid: y[(i - s) mod H] = x[i] for the roll by -s
    r, c = (r - shift) % resolution, (c - shift) % resolution
    return ((r // ws * side + c // ws) * ws * ws + (r % ws) * ws + c % ws).astype(np.int64)  # (H*W,)


def shift_attention_mask(resolution, window_size, shift, dtype=np.float32):
    """Swin's attention mask for shifted windows.

    Parameters
    ----------
    resolution : int
        H = W of the token grid.
    window_size : int
        Ws.
    shift : int
        s > 0, the roll of the shifted block.
    dtype : float dtype

    Returns
    -------
    mask : (nW, N, N) ndarray
        0 where query and key tokens lie in the same region, -100 where they do not.

    Notes
    -----
    After rolling by -s, the grid is labelled by the 3 x 3 regions
    ``[0, H-Ws) | [H-Ws, H-s) | [H-s, H)`` in each direction;
    ``mask[w, i, j] = -100 [label(w, i) != label(w, j)]``, so softmax gives (almost) no weight to
    tokens that wrapped around the border.
    """
    ws, s = window_size, shift
    labels = np.zeros((resolution, resolution, 1))  # (H, W, 1)
    bands = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
    region = 0
    for rows in bands:
        for cols in bands:
            labels[rows, cols] = region
            region += 1
    labels = window_partition(labels, ws)[..., 0]  # (nW, N)
    # mask[w, i, j] = -100 if label(w, i) != label(w, j) else 0
    differ = labels[:, :, None] != labels[:, None, :]  # (nW, N, N)
    return np.where(differ, SHIFT_MASK_VALUE, 0.0).astype(dtype)


def relative_position_index(window_size):
    """Swin's index into the relative position bias table.

    Parameters
    ----------
    window_size : int
        Ws.

    Returns
    -------
    index : (N, N) ndarray of int64
        Values in [0, (2 Ws - 1)^2).

    Notes
    -----
    For tokens i = (y_i, x_i) and j = (y_j, x_j) of a window,

    .. math:: \\mathrm{index}[i, j] = (y_i - y_j + W_s - 1)(2 W_s - 1) + (x_i - x_j + W_s - 1)

    For Ws = 2: ``[[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]``.
    """
    ws = window_size
    yx = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)  # (2, N)
    rel = yx[:, :, None] - yx[:, None, :]  # (2, N, N)
    # index = (dy + Ws - 1) * (2 Ws - 1) + (dx + Ws - 1)
    return ((rel[0] + ws - 1) * (2 * ws - 1) + rel[1] + ws - 1).astype(np.int64)  # (N, N)


def relative_position_bias(table, index):
    """Gather the per-head bias added to the attention scores.

    Parameters
    ----------
    table : ((2 Ws - 1)^2, nH) ndarray
        ``attn.relative_position_bias_table``.
    index : (N, N) int ndarray
        ``attn.relative_position_index``.

    Returns
    -------
    bias : (nH, N, N) ndarray

    Notes
    -----
    .. math:: \\mathrm{bias}[h, i, j] = \\mathrm{table}[\\mathrm{index}[i, j], h]
    """
    return np.moveaxis(table[index], -1, 0)  # (N, N, nH) -> (nH, N, N)
