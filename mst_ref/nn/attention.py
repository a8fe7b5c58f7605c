"""Spiking window attention: MST's self-attention inside Ws x Ws windows.

Reproduces ``SpikingWindowAttention.forward`` of the official MST code (github
bic-L/Masked-Spiking-Transformer, models/mst.py), docs/mst.md section 3. Per window (N = Ws * Ws tokens,
nH heads of hd = C / nH channels):

    q, k, v = split(Linear[qkv](x))                         (..., nH, N, hd) each
    qs, ks  = rsm(Q[q_if](q)), rsm(Q[k_if](k))
    a       = rsm(Q[attn_if]((qs @ ks^T) * hd^-1/2))         scale BEFORE the site
    p       = softmax(a + bias_rel (+ mask_shift))           bias AFTER the site; analog
    o       = Q[attn_v_if](merge_heads(p @ Q[v_if](v)))       (..., N, C)
    out     = Q[proj_if](Linear[proj](o))

Q[...] are activation sites, RSM is applied inside the masked ones, and the softmax and the two products
are the mode's analog ops (:mod:`mst_ref.engine.modes`): per step in the faithful SNN, in expectation form with
compensation. Arrays carry any leading axes, ``(T, B, nW, ...)`` or ``(B, nW, ...)``.
"""

import numpy as np

from .layers import linear
from .windows import relative_position_bias, window_order

__all__ = ["softmax", "window_attention", "softmax_tables", "window_attention_scan_reference"]


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
        What the sites and analog ops do (:class:`mst_ref.engine.modes.Mode`).
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


# ---------------------------------------------------------------- the fused SNN path's attention


def softmax_tables(rel_bias, smask, spike_a):
    """The two values a softmax input can take in spiking window attention, and their exponentials.

    Parameters
    ----------
    rel_bias : (nH, N, N) ndarray
        Relative position bias.
    smask : (nW, N, N) ndarray or None
        Shift mask of a shifted block.
    spike_a : float
        Output of a kept ``attn_if`` spike, lambda_a (times the RSM gain).

    Returns
    -------
    table : (4, nWt*nH*N, N) ndarray, dtype of rel_bias
        ``[base0, base1, exp(base0 - M), exp(base1 - M)]`` with ``base0 = (0 + bias) + mask`` (score
        silent), ``base1 = (lambda_a + bias) + mask`` (score spiked), added in :func:`window_attention`'s
        order, M the row maximum of base0, exponentials below the smallest normal float set to 0;
        nWt = nW with a mask, 1 without.

    Notes
    -----
    softmax(a)_ij = e_ij / sum_j e_ij does not depend on the offset subtracted before exponentiating;
    with M_i <= max_j a_ij <= M_i + lambda_a every e_ij <= exp(lambda_a), so the tables are safe while
    lambda_a is moderate (the kernel checks; beyond it, it exponentiates per step with the row max).
    """
    dt = rel_bias.dtype.type
    base0 = dt(0) + rel_bias[None]  # (1, nH, N, N)
    base1 = dt(spike_a) + rel_bias[None]  # (1, nH, N, N)
    if smask is not None:
        base0 = base0 + smask[:, None]  # (nW, nH, N, N)
        base1 = base1 + smask[:, None]
    m = base0.max(axis=-1, keepdims=True)  # (nWt, nH, N, 1)
    with np.errstate(under="ignore", over="ignore"):
        e0, e1 = np.exp(base0 - m), np.exp(base1 - m)
    tiny = np.finfo(rel_bias.dtype).tiny
    e0[e0 < tiny] = 0
    e1[e1 < tiny] = 0
    return np.stack([base0, base1, e0, e1]).reshape(4, -1, rel_bias.shape[-1])  # (4, nWt*nH*N, N)


def _if_step(v, x, lam):
    """One IF step in place: v <- v + x ; s = [v >= lambda] ; v <- v - s lambda. Returns s (bool)."""
    v += x
    s = v >= lam
    v -= s * lam
    return s


def window_attention_scan_reference(qkv, qkv_bias, batch, grid, ws, shift, heads, lam, gain, p, score_table,
                                    softmax_table, vq, vk, vv, va, vo, uq, uk, uv, ua, uo, rq, rk, rv, ra, out):
    """Spiking window attention over T steps: readable NumPy twin of :func:`mst_ref.core.kernels.window_attention_scan`.

    Same signature, contract and numbers (see the kernel's docstring): a loop over t, each step
    vectorised over images, windows and heads, with the sums taken in the kernel's order (each row of
    the softmax and each ``p @ vs`` entry added in the order of j). ``v*``, ``r*`` and ``out`` are
    written in place; returns ``counts (5, T)``, ``fired (5, T)`` (before RSM) and ``pairs (2, T)``.

    Notes
    -----
    Per step: ``qs, ks, vs = IF(q), IF(k), IF(v)`` (with RSM); ``c = [qs] @ [ks]^T`` counts coincident
    spikes, ``a = IF(table[c])`` (with RSM); ``p = softmax(a + bias + mask)`` from ``softmax_table``;
    ``o = IF(p @ vs)`` (with RSM), heads merged.
    """
    hd, N, nW, L = qkv.shape[3], ws * ws, (grid // ws) ** 2, grid * grid
    T = qkv.shape[0] // (batch * L)
    spike = lam * gain  # (5,) output of a kept spike: q, k, v, attn, attn_v
    zero = spike.dtype.type(0)
    tiny = np.finfo(qkv.dtype).tiny
    # tokens of each window of the rolled grid, gathered from the grid: (3, T, B, nW, nH, N, hd)
    rows = np.argsort(window_order(grid, ws, shift))  # window position -> grid token
    x = qkv.reshape(T, batch, L, 3, heads, hd)[:, :, rows]  # (T, B, nW*N, 3, nH, hd)
    x = x.reshape(T, batch, nW, N, 3, heads, hd).transpose(4, 0, 1, 2, 5, 3, 6)
    if qkv_bias.size:
        x = x + qkv_bias.reshape(3, 1, 1, 1, heads, 1, hd)
    shape, shape_a, shape_o = (batch, nW, heads, N, hd), (batch, nW, heads, N, N), (batch, nW, N, heads, hd)
    states = [vq.reshape(shape), vk.reshape(shape), vv.reshape(shape)]  # views: updated in place
    uniforms, records = (uq, uk, uv), (rq, rk, rv)
    tables = softmax_table.reshape(4, -1, heads, N, N)  # (4, nWt, nH, N, N), broadcast over (B, nW, ...)
    counts, pairs = np.zeros((5, T), np.int64), np.zeros((2, T), np.int64)
    fired = np.zeros((5, T), np.int64)  # before RSM
    for t in range(T):
        z = []
        for k in range(3):  # q_if, k_if, v_if, then RSM
            s = _if_step(states[k], x[k, t], lam[k])  # (B, nW, nH, N, hd)
            fired[k, t] = s.sum()
            if uniforms[k].size:
                s &= uniforms[k].reshape(T, *shape)[t] > p[k]
            s &= spike[k] != 0
            if records[k].size:
                records[k].reshape(T, *shape)[t] = np.where(s, spike[k], zero)
            counts[k, t] = s.sum()
            z.append(s)
        qs, ks, vs = z
        pairs[0, t] = (qs.sum(axis=-2) * ks.sum(axis=-2)).sum()  # sum_d nnz(q[:, d]) nnz(k[:, d])
        # a = attn_if(table[c]), c_ij = sum_d [q_id][k_jd]
        c = qs.astype(np.int64) @ ks.swapaxes(-1, -2).astype(np.int64)  # (B, nW, nH, N, N)
        sa = _if_step(va.reshape(shape_a), score_table[c], lam[3])
        fired[3, t] = sa.sum()
        if ua.size:
            sa &= ua.reshape(T, *shape_a)[t] > p[3]
        sa &= spike[3] != 0
        if ra.size:
            ra.reshape(T, *shape_a)[t] = np.where(sa, spike[3], zero)
        counts[3, t] = sa.sum()
        # p = softmax(a + bias + mask): the two exponentials from the tables (or per step if lambda_a is large)
        if spike[3] < (60.0 if qkv.itemsize == 4 else 600.0):
            e = np.where(sa, tables[3], tables[2])  # (B, nW, nH, N, N)
        else:
            a = np.where(sa, tables[1], tables[0])
            e = np.exp(a - a.max(axis=-1, keepdims=True))
            e[e < tiny] = 0
        total = np.zeros(e.shape[:-1], e.dtype)  # (B, nW, nH, N)
        for j in range(N):  # each row summed in the order of j
            total += e[..., j]
        prob = e / total[..., None]
        prob[prob < tiny] = 0
        pairs[1, t] = (np.count_nonzero(prob, axis=-2) * vs.sum(axis=-1)).sum()  # sum_j nnz(p[:, j]) nnz(v[j])
        # o = p @ vs, added in the order of j
        o = np.zeros(shape, qkv.dtype)  # (B, nW, nH, N, hd)
        for j in range(N):
            o += prob[..., :, j, None] * np.where(vs[..., j, None, :], spike[2], zero)
        # attn_v_if on the merged heads (B, nW, N, nH, hd)
        so = _if_step(vo.reshape(shape_o), o.swapaxes(2, 3), lam[4])
        fired[4, t] = so.sum()
        if uo.size:
            so &= uo.reshape(T, *shape_o)[t] > p[4]
        so &= spike[4] != 0
        out.reshape(T, *shape_o)[t] = np.where(so, spike[4], zero)
        counts[4, t] = so.sum()
    return counts, fired, pairs
