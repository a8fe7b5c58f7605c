"""Spiking window attention: MST's self-attention inside Ws x Ws windows.

Reproduces ``SpikingWindowAttention.forward`` of the official MST code (github
bic-L/Masked-Spiking-Transformer, models/mst.py), MST_SPEC section 3. Per window (N = Ws * Ws tokens,
nH heads of hd = C / nH channels):

    q, k, v = split(Linear[qkv](x))                         (..., nH, N, hd) each
    qs, ks  = rsm(Q[q_if](q)), rsm(Q[k_if](k))
    a       = rsm(Q[attn_if]((qs @ ks^T) * hd^-1/2))         scale BEFORE the site
    p       = softmax(a + bias_rel (+ mask_shift))           bias AFTER the site; analog
    o       = Q[attn_v_if](merge_heads(p @ Q[v_if](v)))       (..., N, C)
    out     = Q[proj_if](Linear[proj](o))

Q[...] are activation sites, RSM is applied inside the masked ones, and the softmax and the two products
are the mode's analog ops (:mod:`mst_ref.modes`): per step in the faithful SNN, in expectation form with
compensation. Arrays carry any leading axes, ``(T, B, nW, ...)`` or ``(B, nW, ...)``.
"""

import numpy as np

from .layers import linear
from .windows import relative_position_bias

__all__ = ["softmax", "window_attention"]


def softmax(x):
    """Softmax over the last axis (max-subtracted, as torch).

    Parameters
    ----------
    x : (..., n) ndarray

    Returns
    -------
    p : (..., n) ndarray, dtype of x

    Notes
    -----
    .. math:: p_i = \\frac{e^{x_i - \\max_j x_j}}{\\sum_k e^{x_k - \\max_j x_j}}
    """
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # (..., n)
    return e / e.sum(axis=-1, keepdims=True)  # (..., n)


def window_attention(x, state, prefix, num_heads, mode, mask=None):
    """Multi-head self-attention within each window, with MST's activation sites.

    Parameters
    ----------
    x : (..., nW, N, C) ndarray
        Tokens of each window (the spikes of ``shortcut1_if`` after roll and partition).
    state : dict of {str: ndarray}
        The model's state dict; the keys ``<prefix>.*`` are used.
    prefix : str
        e.g. ``layers.0.blocks.1.attn``.
    num_heads : int
        nH.
    mode : Mode
        What the sites and analog ops do (:class:`mst_ref.modes.Mode`).
    mask : (nW, N, N) ndarray or None
        Swin's shift mask (0 / -100) of a shifted block.

    Returns
    -------
    out : (..., nW, N, C) ndarray
        The spikes (activations) of ``proj_if``.

    Notes
    -----
    .. math:: \\mathrm{out} = Q_{proj}\\Big( Q_{attn\\_v}\\big( \\mathrm{softmax}\\big(
              \\mathrm{rsm}(Q_{attn}(\\mathrm{rsm}(Q_q(q))\\, \\mathrm{rsm}(Q_k(k))^\\top / \\sqrt{hd}))
              + B_{rel} + M \\big)\\, Q_v(v) \\big) W_{proj}^\\top + b_{proj} \\Big)
    """
    *lead, n, c = x.shape
    hd = c // num_heads

    def param(key):
        return state[f"{prefix}.{key}"]

    qkv = linear(x, param("qkv.weight"), state.get(f"{prefix}.qkv.bias"))  # (..., N, 3C)
    qkv = qkv.reshape(*lead, n, 3, num_heads, hd)  # (..., N, 3, nH, hd)
    q, k, v = np.moveaxis(qkv, (-3, -4), (0, -2))  # 3 x (..., nH, N, hd)

    # qs = rsm(Q[q_if](q)), ks = rsm(Q[k_if](k))   (RSM happens inside a masked site)
    qs = mode.site(f"{prefix}.q_if", q, param("q_if.up"))  # (..., nH, N, hd)
    ks = mode.site(f"{prefix}.k_if", k, param("k_if.up"))  # (..., nH, N, hd)
    # a = rsm(Q[attn_if]((qs @ ks^T) * hd^-1/2))
    scores = mode.product(f"{prefix}.qk", qs, ks.swapaxes(-1, -2)) * hd**-0.5  # (..., nH, N, N)
    a = mode.site(f"{prefix}.attn_if", scores, param("attn_if.up"))  # (..., nH, N, N)

    # p = softmax(a + bias_rel (+ mask))
    bias = relative_position_bias(param("relative_position_bias_table"), param("relative_position_index"))
    a = a + bias  # (..., nW, nH, N, N) + (nH, N, N)
    if mask is not None:
        a = a + mask[:, None]  # (..., nW, nH, N, N) + (nW, 1, N, N)
    p = mode.analog(f"{prefix}.softmax", softmax, a)  # (..., nH, N, N)

    # o = Q[attn_v_if](merge_heads(p @ Q[v_if](v)))
    vs = mode.site(f"{prefix}.v_if", v, param("v_if.up"))  # (..., nH, N, hd)
    o = mode.product(f"{prefix}.pv", p, vs)  # (..., nH, N, hd)
    o = o.swapaxes(-3, -2).reshape(*lead, n, c)  # (..., N, nH, hd) -> (..., N, C)
    o = mode.site(f"{prefix}.attn_v_if", o, param("attn_v_if.up"))  # (..., N, C)

    # out = Q[proj_if](o W^T + b)
    out = linear(o, param("proj.weight"), param("proj.bias"))  # (..., N, C)
    return mode.site(f"{prefix}.proj_if", out, param("proj_if.up"))
