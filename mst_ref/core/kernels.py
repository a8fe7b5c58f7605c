"""Numba twins of the hot loops.

Each kernel here has a readable NumPy version with the same signature and docstring next to the code
that uses it, and the tests (tests/test_neurons.py, tests/test_fast.py) check every kernel against its
NumPy version bit for bit, once compiled and once more as plain Python with ``NUMBA_DISABLE_JIT=1``:

=============================  ==================================================================
kernel                         readable twin
=============================  ==================================================================
:func:`if_scan`                :func:`mst_ref.core.neurons.if_neuron_reference`
:func:`multilevel_scan`        :func:`mst_ref.core.neurons.multilevel_neuron_reference`
:func:`site_scan`              :func:`mst_ref.core.neurons.site_scan_reference`
:func:`window_attention_scan`  :func:`mst_ref.nn.attention.window_attention_scan_reference`
:func:`conv2d_events`          :func:`mst_ref.nn.conv.conv2d_events_reference`
:func:`spike_linear`           :func:`mst_ref.nn.spike_products.spike_linear_reference`
=============================  ==================================================================

Kernels take and return plain contiguous arrays and do no argument checking: the public wrappers
(:func:`mst_ref.core.neurons.if_neuron`, :mod:`mst_ref.models.mst_fast`) validate and reshape. Optional arrays are passed
with zero size, so that each kernel compiles once per dtype.

Numba options are set once, here: ``cache=True`` keeps compiled code in ``__pycache__`` between runs,
``nogil=True`` lets callers run kernels from several threads. No ``fastmath``: the kernels must round
exactly as NumPy does. Two habits keep the inner loops vectorised: each index of an innermost loop is
its loop variable on its own axis (a computed offset such as ``c0 + d`` makes Numba check for negative
indices inside the loop), and booleans combine with ``&`` rather than the branching ``and``.
"""

import os
from functools import partial

import numba
import numpy as np
from numba import prange

__all__ = ["njit", "if_scan", "multilevel_scan", "site_scan", "window_attention_scan", "conv2d_events",
           "spike_linear", "aedat3_walk"]

njit = partial(numba.njit, cache=True, nogil=True)

# Idle Numba (OpenMP) threads sleep instead of spinning. libgomp reads this once, when Numba starts its
# thread pool at the first parallel kernel, so it is set here, before any kernel runs (a value the user
# set wins). Spinning workers take a shared core from the thread doing the work: on two cores with
# other processes running, two spinning threads ran 3-4x slower than one (benchmarks/bench_threads.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Neurons per parallel work item: the block's membrane potentials (4-8 KiB) stay in L1 cache while
# the scan walks over T, and each time step reads and writes one contiguous run of x and out.
_BLOCK = 1024


@njit(parallel=True)
def if_scan(x, threshold, v):
    """Multi-step integrate-and-fire scan over the time axis, fused in one pass.

    Parameters
    ----------
    x : (T, M) C-contiguous ndarray of float32 or float64
        Input current of M neurons over T steps.
    threshold : float
        lambda; cast to ``x.dtype`` before use. Must be positive and finite (not checked here).
    v : (M,) C-contiguous ndarray, same dtype as x
        Membrane potentials before step 1; updated in place to the potentials after step T.

    Returns
    -------
    out : (T, M) ndarray, same dtype as x
        0 or lambda at each step.

    Notes
    -----
    For each neuron and t = 1..T:

    .. math:: v \\leftarrow v + x_t ;\\quad s_t = [v \\ge \\lambda] ;\\quad v \\leftarrow v - s_t \\lambda ;
              \\quad \\mathrm{out}_t = s_t \\lambda

    Parallel over blocks of neurons (``prange``); within a block the loop runs over t, then over the
    block's neurons, so memory is read and written in contiguous runs and the inner loop is branch-free
    (``s`` selects lambda or 0), which lets LLVM vectorise it.
    """
    T, M = x.shape
    out = np.empty_like(x)  # (T, M)
    # lambda in x's dtype, so that float32 inputs are compared and reset in float32
    lam_arr = np.empty(1, dtype=x.dtype)
    lam_arr[0] = threshold
    lam = lam_arr[0]
    zero = lam - lam
    n_blocks = (M + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        lo = b * _BLOCK
        hi = min(lo + _BLOCK, M)
        v_b = v[lo:hi].copy()  # (n,) this block's membranes, a private copy the loop can vectorise over
        for t in range(T):
            x_t = x[t, lo:hi]  # (n,)
            out_t = out[t, lo:hi]  # (n,) view: writes go to out
            for m in range(hi - lo):
                # v <- v + x_t
                vm = v_b[m] + x_t[m]
                # s = [v >= lambda]
                s = vm >= lam
                # v <- v - s * lambda ; out = s * lambda
                v_b[m] = vm - (lam if s else zero)
                out_t[m] = lam if s else zero
        v[lo:hi] = v_b
    return out



@njit(parallel=True)
def multilevel_scan(x, threshold, max_spikes, signed, clamp_first, v, n):
    """Signed and burst neurons over the time axis: the Numba twin of
    :func:`mst_ref.core.neurons.multilevel_neuron_reference` (same signature, same numbers bit for bit).

    Parameters
    ----------
    x : (T, M) C-contiguous ndarray of float32 or float64
        Input current of M neurons over T steps.
    threshold : float
        lambda; cast to ``x.dtype``. Positive and finite (not checked here).
    max_spikes : int
        K >= 1: at most K spikes of lambda / K per step.
    signed : bool
        Whether negative spikes are allowed (never more than the neuron's net count so far).
    clamp_first : bool
        Round as :func:`mst_ref.core.qcfs.qcfs_clamp_first` (True) or as :func:`mst_ref.core.qcfs.qcfs` (False).
    v : (M,) C-contiguous ndarray, same dtype as x
        Residual membranes before step 1 (0 at the start); updated in place.
    n : (M,) int64 ndarray, or empty when not signed
        Net spikes emitted so far (0 at the start); updated in place.

    Returns
    -------
    out : (T, M) ndarray, same dtype as x
        k lambda / K at each step, k an integer in [-K, K].

    Notes
    -----
    .. math:: u = v + x_t ;\\quad k_t = \\mathrm{clip}(\\lfloor u K / \\lambda + 1/2 \\rfloor, lo, K) ;
              \\quad \\mathrm{out}_t = (k_t / K)\\, \\lambda ;\\quad v \\leftarrow u - \\mathrm{out}_t ;
              \\quad n \\leftarrow n + k_t

    with lo = -min(K, n) for a signed neuron and 0 otherwise (``clamp_first``:
    :math:`k_t = \\lfloor \\mathrm{clip}(u / \\lambda, -1 \\text{ or } 0, 1) K + 1/2 \\rfloor`, then
    :math:`k_t \\ge -n`). Parallel over blocks of neurons, as :func:`if_scan`.
    """
    T, M = x.shape
    out = np.empty_like(x)  # (T, M)
    # lambda, K, 1/2 and the lower clip of u / lambda in x's dtype, so float32 rounds in float32
    consts = np.empty(4, dtype=x.dtype)
    consts[0] = threshold
    consts[1] = max_spikes
    consts[2] = 0.5
    consts[3] = -1.0 if signed else 0.0
    lam, K, half, lo_ratio = consts[0], consts[1], consts[2], consts[3]
    one = lam / lam
    n_blocks = (M + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        lo = b * _BLOCK
        hi = min(lo + _BLOCK, M)
        neg_n = np.empty(1, dtype=x.dtype)  # -n cast to x's dtype
        for t in range(T):
            for m in range(lo, hi):
                # u = v + x_t
                u = v[m] + x[t, m]
                # k = clip(floor(u K / lambda + 1/2), lo, K)
                if clamp_first:
                    k = np.floor(min(max(u / lam, lo_ratio), one) * K + half)
                else:
                    k = min(max(np.floor(u * K / lam + half), lo_ratio * K), K)
                if signed:
                    # a negative spike only takes back an earlier positive one: k >= -n
                    neg_n[0] = -n[m]
                    k = max(k, neg_n[0])
                    n[m] += np.int64(k)
                # out = (k / K) lambda ; v <- u - out
                o = k / K * lam
                out[t, m] = o
                v[m] = u - o
    return out

# Rows of (R, C) work per parallel item of site_scan: about 16K elements, so that each item's membranes
# stay in L1/L2 while the scan walks over t.
_SITE_ELEMENTS = 16384


@njit(parallel=True)
def site_scan(x, T, add, add_rows, bias, scale, shift, lam, gain, v, u, p, pre, post, out):
    """One activation site over T steps in one pass: affine prologue, IF scan, RSM, spike count.

    Readable NumPy twin: :func:`mst_ref.core.neurons.site_scan_reference` (same signature and numbers).
    Optional arrays are passed with zero size when absent.

    Parameters
    ----------
    x : (Tx, R, C) ndarray of float32 or float64
        Input currents of R rows of C neurons; Tx = T, or Tx = 1 for an input fed unchanged at every
        step (the image, in direct coding).
    T : int
        Steps to simulate.
    add : (T, R2, C) ndarray or empty
        Added to x; row r reads ``add[t, add_rows[r]]`` (a token permutation) or ``add[t, r]``.
    add_rows : (R,) int64 ndarray or empty
    bias, scale, shift : (C,) ndarray or empty
        Per-channel affine ops applied in this order (a linear layer's bias, then a folded BatchNorm
        ``y * a + (beta - mu a)``, as :func:`mst_ref.nn.layers.batch_norm` computes it).
    lam : float
        lambda, cast to x's dtype.
    gain : float
        Output of a kept spike is ``lam * gain`` (1; 1 / (1 - p) for rescaled RSM; 0 when p = 1).
    v : (R, C) ndarray
        Membrane potentials, updated in place.
    u : (T, R, C) float64 or uint8 ndarray, or empty
        RSM uniforms (drawn by the caller in time order); a spike is kept where ``u > p``. The fast path
        passes the decisions ``[u > p]`` as bytes with p = 0.5 (the same spikes kept, an eighth of the
        memory to read).
    p : float
        RSM ratio.
    pre : (T, R, C) ndarray or empty
        Receives the input current y of every step (e.g. the residual stream after a BatchNorm).
    post : (T, R, C) ndarray or empty
        ``post += output`` (the residual add after the site), in place.
    out : (T, R, C) ndarray or empty
        Receives the outputs (0 or lam * gain).

    Returns
    -------
    counts : (T,) int64 ndarray
        Nonzero outputs at each step.
    fired : (T,) int64 ndarray
        Spikes fired at each step before RSM (equal to ``counts`` when nothing is masked): what the
        masking table counts as "fired".

    Notes
    -----
    .. math:: y = ((x + a) + b) \\cdot s + h ;\\quad v \\leftarrow v + y ;\\quad z = [v \\ge \\lambda] ;
              \\quad v \\leftarrow v - z \\lambda ;\\quad \\mathrm{out} = z\\, [u > p]\\, \\lambda g

    every operation rounded in x's dtype in this order, as the unfused NumPy ops round.
    """
    R, C = v.shape
    Tx = x.shape[0]
    has_add, has_rows = add.size > 0, add_rows.size > 0
    has_bias, has_scale, has_shift = bias.size > 0, scale.size > 0, shift.size > 0
    has_u, has_pre, has_post, has_out = u.size > 0, pre.size > 0, post.size > 0, out.size > 0
    consts = np.empty(2, dtype=x.dtype)
    consts[0] = lam
    consts[1] = gain
    lam_ = consts[0]
    spike = lam_ * consts[1]  # the output of a kept spike, lambda * gain rounded in x's dtype
    zero = lam_ - lam_
    live = spike != zero  # False when p = 1: every output is 0
    rows_per = max(1, _SITE_ELEMENTS // max(C, 1))
    n_blocks = (R + rows_per - 1) // rows_per
    partial = np.zeros((n_blocks, 2, T), dtype=np.int64)  # kept spikes, spikes fired before RSM
    masked = has_u or not live  # only then can the two counts differ
    for blk in prange(n_blocks):
        r0 = blk * rows_per
        r1 = min(r0 + rows_per, R)
        y = np.empty(C, dtype=x.dtype)  # one row's input currents
        z = np.empty(C, dtype=np.bool_)  # one row's kept spikes
        for t in range(T):
            tx = t if Tx > 1 else 0
            n = 0
            n_fired = 0
            for r in range(r0, r1):
                ra = (add_rows[r] if has_rows else r) if has_add else 0
                # y = ((x + add) + bias) * scale + shift   (the flags are loop-invariant)
                for c in range(C):
                    yc = x[tx, r, c]
                    if has_add:
                        yc = yc + add[t, ra, c]
                    if has_bias:
                        yc = yc + bias[c]
                    if has_scale:
                        yc = yc * scale[c]
                    if has_shift:
                        yc = yc + shift[c]
                    y[c] = yc
                if has_pre:
                    for c in range(C):
                        pre[t, r, c] = y[c]
                for c in range(C):
                    # v <- v + y ; z = [v >= lambda] ; v <- v - z lambda
                    vm = v[r, c] + y[c]
                    fired = vm >= lam_
                    v[r, c] = vm - (lam_ if fired else zero)
                    z[c] = fired
                if masked:
                    for c in range(C):
                        n_fired += z[c]
                if has_u:
                    # RSM: keep where u > p
                    for c in range(C):
                        z[c] = z[c] & (u[t, r, c] > p)
                if live:
                    for c in range(C):
                        n += z[c]
                    if has_out:
                        for c in range(C):
                            out[t, r, c] = spike if z[c] else zero
                    if has_post:
                        for c in range(C):
                            post[t, r, c] = post[t, r, c] + (spike if z[c] else zero)
                else:
                    if has_out:
                        for c in range(C):
                            out[t, r, c] = zero
                    if has_post:  # + 0, as the unfused add rounds (-0 + 0 = +0)
                        for c in range(C):
                            post[t, r, c] = post[t, r, c] + zero
            partial[blk, 0, t] = n
            partial[blk, 1, t] = n_fired if masked else n
    total = partial.sum(axis=0)
    return total[0], total[1]


@njit(parallel=True)
def window_attention_scan(qkv, qkv_bias, batch, grid, ws, shift, heads, lam, gain, p, score_table, softmax_table,
                          vq, vk, vv, va, vo, uq, uk, uv, ua, uo, rq, rk, rv, ra, out):
    """MST's spiking window attention over T steps, fused: one work item per (image, window, head).

    Readable NumPy twin: :func:`mst_ref.nn.attention.window_attention_scan_reference` (same signature).
    Arrays are 2-D reshapes of the shapes named below; optional ones (``qkv_bias``, uniforms ``u*``,
    records ``r*``) have zero size when absent.

    Parameters
    ----------
    qkv : (T * B*H*W, 3, nH, hd) ndarray of float32 or float64
        ``x W_qkv^T`` of every token, in grid order (before the roll): the qkv linear layer commutes
        with the roll and the window partition, so they become index arithmetic here.
    qkv_bias : (3, nH, hd) ndarray or empty
    batch, grid, ws, shift, heads : int
        B, H = W of the token grid, Ws, the roll s of the block (0 or Ws // 2), nH.
    lam, gain : (5,) ndarray of qkv's dtype
        lambda and RSM gain of the sites q_if, k_if, v_if, attn_if, attn_v_if (a kept spike is
        ``lam * gain``; gain 0 silences a site).
    p : (5,) float64 ndarray
        RSM ratios of the five sites (used where uniforms are given).
    score_table : (hd + 1,) ndarray
        ``(qs @ ks^T) * hd^-1/2`` of a query-key pair whose spikes coincide in c of the hd channels.
    softmax_table : (4, nWt*nH*N, N) ndarray
        :func:`softmax_tables` of the block: the softmax inputs of a silent and of a spiking score, and
        their exponentials (nWt = nW with a shift mask, else 1).
    vq, vk, vv : (B*nW*nH*N, hd) ndarray; va : (B*nW*nH*N, N); vo : (B*nW*N, nH, hd)
        Membranes of q_if, k_if, v_if ((B, nW, nH, N, hd)), attn_if ((B, nW, nH, N, N)) and attn_v_if
        ((B, nW, N, C)), updated in place.
    uq, uk, uv : (T*B*nW*nH*N, hd) float64 or empty; ua : (T*B*nW*nH*N, N); uo : (T*B*nW*N, nH, hd)
        RSM uniforms of the five sites, ``(T, ...)`` with the membranes' shapes, all of one dtype: float64
        uniforms, or (as the fast path passes them) uint8 decisions ``[u > p]`` with p = 0.5.
    rq, rk, rv, ra : like uq, uk, uv, ua, of qkv's dtype, or empty
        Receive the (masked) outputs of q_if, k_if, v_if, attn_if when recorded.
    out : (T*B*nW*N, nH, hd) ndarray
        Receives the outputs of attn_v_if, (T, B, nW, N, C).

    Returns
    -------
    counts : (5, T) int64 ndarray
        Nonzero outputs of q_if, k_if, v_if, attn_if, attn_v_if at each step.
    fired : (5, T) int64 ndarray
        Spikes the five sites fired before RSM (equal to ``counts`` where nothing is masked).
    pairs : (2, T) int64 ndarray
        Multiplies with two nonzero operands in qs @ ks^T and p @ vs (:func:`mst_ref.engine.modes.nonzero_pairs`).

    Notes
    -----
    Per step, for the window's tokens i, j and the head's channels d (docs/mst.md section 3):

    .. math:: a_{ij} = \\mathrm{IF}_{attn}(\\mathrm{table}[c_{ij}]),\\; c_{ij} = \\sum_d [q_{id}][k_{jd}]
              ;\\quad p = \\mathrm{softmax}(a + B_{rel} + M) ;\\quad o = \\mathrm{IF}_{attn\\_v}(p\\, v_s)

    Spikes make the scores lambda_q lambda_k / sqrt(hd) times a small integer c (counted, not
    multiplied) and give each softmax input one of two values, whose exponentials come from
    ``softmax_table``. Each row's sum is added in the order of j (vectorised across rows), p = e / sum,
    and ``p @ vs`` adds, for each spike of v, a column of p.

    Every innermost loop indexes its own axis with its loop variable (no computed column offsets, so
    Numba needs no negative-index check inside it) and combines booleans with ``&``, not the branching
    ``and``: LLVM vectorises such loops.
    """
    hd = qkv.shape[3]
    N = ws * ws
    side = grid // ws
    nW = side * side
    L = grid * grid
    T = qkv.shape[0] // (batch * L)
    n_items = batch * nW * heads
    has_bias = qkv_bias.size > 0
    shifted_tables = softmax_table.shape[1] > heads * N
    one_ = np.ones(1, dtype=qkv.dtype)
    zero = one_[0] - one_[0]
    tiny = np.finfo(qkv.dtype).tiny
    la, lo = lam[3], lam[4]
    spike = lam * gain  # (5,) output of a kept spike
    sv, sa, so = spike[2], spike[3], spike[4]
    # exponentials from the tables unless exp(lambda_a) could overflow (then per step, max-subtracted)
    use_tables = sa < (60.0 if qkv.itemsize == 4 else 600.0)
    states = (vq, vk, vv)
    uniforms = (uq, uk, uv)
    records = (rq, rk, rv)
    part_counts = np.zeros((n_items, 5, T), dtype=np.int64)
    part_fired = np.zeros((n_items, 5, T), dtype=np.int64)  # before RSM
    part_pairs = np.zeros((n_items, 2, T), dtype=np.int64)
    for item in prange(n_items):
        b = item // (nW * heads)
        w = (item // heads) % nW
        h = item % heads
        trow0 = ((w if shifted_tables else 0) * heads + h) * N  # the item's rows of softmax_table
        rows = np.empty(N, dtype=np.int64)
        for i in range(N):
            # token i of window w of the rolled grid sits at (r + s, c + s) of the unrolled grid
            gr = (w // side * ws + i // ws + shift) % grid
            gc = (w % side * ws + i % ws + shift) % grid
            rows[i] = b * L + gr * grid + gc
        z = np.empty((3, N, hd), dtype=np.bool_)  # kept spikes of q, k, v
        kt = np.empty((hd, N), dtype=np.int32)  # k spikes, transposed, 0 / 1
        cnt = np.empty(N, dtype=np.int32)  # c_ij of one query row
        za = np.empty(N, dtype=np.bool_)
        e = np.empty(N, dtype=qkv.dtype)
        et = np.empty((N, N), dtype=qkv.dtype)  # exponentials, transposed: et[j, i] = e_ij
        total = np.empty(N, dtype=qkv.dtype)
        ot = np.empty((hd, N), dtype=qkv.dtype)  # (p @ vs) transposed
        row0 = item * N  # the item's first row in the (B*nW*nH*N, .) arrays
        orow0 = (b * nW + w) * N  # its first row in the (B*nW*N, C) arrays
        for t in range(T):
            xrow0 = t * batch * L
            urow0 = t * n_items * N + row0
            # q_if, k_if, v_if: v <- v + x_t ; s = [v >= lambda] ; v <- v - s lambda ; s *= [u > p]
            for k in range(3):
                v_k, u_k, r_k = states[k], uniforms[k], records[k]
                lk, sk, pk = lam[k], spike[k], p[k]
                live = sk != zero
                masked = u_k.size > 0 or not live
                n = 0
                n_fired = 0
                for i in range(N):
                    r = xrow0 + rows[i]
                    for d in range(hd):
                        x = qkv[r, k, h, d]
                        if has_bias:
                            x = x + qkv_bias[k, h, d]
                        m = v_k[row0 + i, d] + x
                        fired = m >= lk
                        v_k[row0 + i, d] = m - (lk if fired else zero)
                        z[k, i, d] = fired
                    if masked:
                        for d in range(hd):
                            n_fired += z[k, i, d]
                    if u_k.size > 0:
                        for d in range(hd):
                            z[k, i, d] = z[k, i, d] & (u_k[urow0 + i, d] > pk)
                    for d in range(hd):
                        z[k, i, d] = z[k, i, d] & live
                        n += z[k, i, d]
                    if r_k.size > 0:
                        for d in range(hd):
                            r_k[urow0 + i, d] = sk if z[k, i, d] else zero
                part_counts[item, k, t] = n
                part_fired[item, k, t] = n_fired if masked else n
            pairs_qk = 0
            for d in range(hd):
                nq = 0
                nk = 0
                for i in range(N):
                    nq += z[0, i, d]
                    nk += z[1, i, d]
                    kt[d, i] = z[1, i, d]
                pairs_qk += nq * nk
            # attn_if on the scores, RSM, and the softmax numerators, one query row i at a time
            n_a = 0
            live = sa != zero
            masked_a = ua.size > 0 or not live
            n_a_fired = 0
            for i in range(N):
                # c_ij = sum_d [q_id][k_jd]: exact small integers
                for j in range(N):
                    cnt[j] = 0
                for d in range(hd):
                    if z[0, i, d]:
                        for j in range(N):
                            cnt[j] += kt[d, j]
                for j in range(N):
                    m = va[row0 + i, j] + score_table[cnt[j]]
                    fired = m >= la
                    va[row0 + i, j] = m - (la if fired else zero)
                    za[j] = fired
                if masked_a:
                    for j in range(N):
                        n_a_fired += za[j]
                if ua.size > 0:
                    for j in range(N):
                        za[j] = za[j] & (ua[urow0 + i, j] > p[3])
                for j in range(N):
                    za[j] = za[j] & live
                    n_a += za[j]
                if ra.size > 0:
                    for j in range(N):
                        ra[urow0 + i, j] = sa if za[j] else zero
                if use_tables:
                    for j in range(N):
                        e_on, e_off = softmax_table[3, trow0 + i, j], softmax_table[2, trow0 + i, j]
                        e[j] = e_on if za[j] else e_off
                else:  # e_ij = exp(a_ij - max_j a_ij)
                    for j in range(N):
                        a_on, a_off = softmax_table[1, trow0 + i, j], softmax_table[0, trow0 + i, j]
                        e[j] = a_on if za[j] else a_off
                    m = e[0]
                    for j in range(N):
                        m = max(m, e[j])
                    for j in range(N):
                        x = np.exp(e[j] - m)
                        e[j] = x if x >= tiny else zero
                for j in range(N):
                    et[j, i] = e[j]
            # p_ij = e_ij / sum_j e_ij: each row summed in the order of j, all rows at once
            for i in range(N):
                total[i] = zero
            for j in range(N):
                for i in range(N):
                    total[i] += et[j, i]
            pairs_pv = 0
            for j in range(N):
                nz = 0
                for i in range(N):
                    pij = et[j, i] / total[i]
                    pij = pij if pij >= tiny else zero  # no subnormal arithmetic
                    et[j, i] = pij
                    nz += pij != zero
                n_vj = 0
                for d in range(hd):
                    n_vj += z[2, j, d]
                pairs_pv += nz * n_vj
            # o = p @ vs: column j of p goes to the channels d where v_j spiked
            for d in range(hd):
                for i in range(N):
                    ot[d, i] = zero
            for j in range(N):
                for d in range(hd):
                    if z[2, j, d]:
                        for i in range(N):
                            ot[d, i] += et[j, i] * sv
            # attn_v_if on o (heads merged: channel h * hd + d of token i)
            n_o = 0
            n_o_fired = 0
            live = so != zero
            for i in range(N):
                orow = orow0 + i
                trow = t * batch * nW * N + orow
                for d in range(hd):
                    m = vo[orow, h, d] + ot[d, i]
                    fired = m >= lo
                    vo[orow, h, d] = m - (lo if fired else zero)
                    n_o_fired += fired
                    if uo.size > 0:
                        fired = fired & (uo[trow, h, d] > p[4])
                    fired = fired & live
                    n_o += fired
                    out[trow, h, d] = so if fired else zero
            part_counts[item, 3, t] = n_a
            part_counts[item, 4, t] = n_o
            part_fired[item, 3, t] = n_a_fired if masked_a else n_a
            part_fired[item, 4, t] = n_o_fired
            part_pairs[item, 0, t] = pairs_qk
            part_pairs[item, 1, t] = pairs_pv
    return part_counts.sum(axis=0), part_fired.sum(axis=0), part_pairs.sum(axis=0)



@njit(parallel=True)
def conv2d_events(x, w, stride, padding, ho, wo, bias, scale, shift, out):
    """Convolution that skips zero inputs: the event-driven form of a conv fed by spikes.

    Twin of :func:`mst_ref.nn.conv.conv2d_events_reference` (the same additions in the same order, so the
    same bits).

    Parameters
    ----------
    x : (S, H, W, Cin) float ndarray
        S = steps x images; spikes (0 or lambda), or any sparse map.
    w : (k, k, Cin, Cout) float ndarray
        The conv weight with its taps in front (``weight.transpose(2, 3, 1, 0)``), contiguous.
    stride, padding, ho, wo : int
    bias, scale, shift : (Cout,) float ndarrays, or size 0 to skip
        The conv's bias, and the folded BatchNorm after it (:func:`mst_ref.nn.layers.bn_affine`): each
        output becomes ``(y + bias) * scale + shift``, rounded as :func:`mst_ref.nn.layers.batch_norm`.
    out : (S, ho, wo, Cout) float ndarray
        Set to zero, accumulated into and returned.

    Notes
    -----
    .. math:: y[s, i, j, :] = \\sum_{u, v} \\sum_{c:\\, x \\ne 0} x[s, \\sigma i + u - p, \\sigma j + v - p, c]\\,
              W[u, v, c, :]

    Event-driven: each nonzero input x[s, r, q, c] (a spike) is read once and added, times the row
    W[u, v, c, :], into every output (i, j) whose window holds it at tap (u, v): i = (r + p - u) / sigma
    when that is a whole number in range (the spike's SOPs). Inputs are visited in row-major order
    (r, then q, then c), so each output receives its terms in the order (u, v, c) of the reference.
    """
    S, H, W, cin = x.shape
    k, cout = w.shape[0], w.shape[3]
    for s in prange(S):
        out[s] = 0
        for r in range(H):
            for q in range(W):
                for c in range(cin):
                    val = x[s, r, q, c]
                    if val == 0:
                        continue
                    for u in range(k):
                        ti = r + padding - u
                        if ti < 0 or ti % stride != 0 or ti // stride >= ho:
                            continue
                        i = ti // stride
                        for v in range(k):
                            tj = q + padding - v
                            if tj < 0 or tj % stride != 0 or tj // stride >= wo:
                                continue
                            j = tj // stride
                            # y[s, i, j, :] += x * W[u, v, c, :]
                            for o in range(cout):
                                out[s, i, j, o] += val * w[u, v, c, o]
        if bias.size or scale.size:
            for i in range(ho):
                for j in range(wo):
                    for o in range(cout):
                        y = out[s, i, j, o]
                        if bias.size:
                            y = y + bias[o]
                        if scale.size:
                            # BatchNorm: y * a + (beta - mu a)
                            y = y * scale[o]
                            y = y + shift[o]
                        out[s, i, j, o] = y
    return out


# Rows of one parallel work item of spike_linear (rows of one step; a step's rows are split into these).
_EVENT_ROWS = 64


@njit(parallel=True)
def spike_linear(x, wt, steps, out):
    """Event-driven ``x W^T`` for inputs that are mostly zero (spikes): each nonzero input adds its weight row.

    Readable NumPy twin: :func:`mst_ref.nn.spike_products.spike_linear_reference` (same signature, same bits).

    Parameters
    ----------
    x : (T, R, K) C-contiguous ndarray of float32 or float64
        Inputs of R rows at T steps: spikes (0 or lambda * gain), or any mostly-zero array.
    wt : (K, Cout) C-contiguous ndarray, x's dtype
        The transposed weight ``W^T``: row k is what an input of 1 on channel k adds.
    steps : (T,) bool ndarray
        The steps to compute here; the other steps of ``out`` are left untouched (the caller computes
        them densely).
    out : (T, R, Cout) ndarray, x's dtype
        Receives ``x[t] W^T`` at the chosen steps.

    Notes
    -----
    .. math:: y_{r,:} = \\sum_{k:\\, x_{rk} \\ne 0} x_{rk}\\, W^T_{k,:}

    the terms added in the order of k, from +0 (a spike of lambda adds lambda times the row; a masked
    or silent input is a skipped row: the work is the synaptic operations, nnz(x) * Cout additions).
    Per row, the nonzero channels are gathered first (a branch-free pass), then their weight rows are
    added into the output row, which stays in L1 cache. Parallel over blocks of rows of all chosen steps.
    """
    T, R, K = x.shape
    cout = wt.shape[1]
    per_step = (R + _EVENT_ROWS - 1) // _EVENT_ROWS
    chosen = np.nonzero(steps)[0]
    for item in prange(chosen.size * per_step):
        t = chosen[item // per_step]
        r0 = (item % per_step) * _EVENT_ROWS
        r1 = min(r0 + _EVENT_ROWS, R)
        idx = np.empty(K, dtype=np.int64)
        for r in range(r0, r1):
            xr = x[t, r]  # (K,)
            yr = out[t, r]  # (Cout,) view: writes go to out
            # the nonzero channels of the row, in order of k
            n = 0
            for k in range(K):
                idx[n] = k
                n += xr[k] != 0
            for c in range(cout):
                yr[c] = 0
            # y_r += x_rk W^T_k for each nonzero x_rk
            for j in range(n):
                k = idx[j]
                val = xr[k]
                wk = wt[k]  # (Cout,)
                for c in range(cout):
                    yr[c] += val * wk[c]
    return out


@njit
def aedat3_walk(raw, start, out):
    """Walk the packet headers of an AEDAT 3.1 file (one pass; the NumPy-free twin of
    :func:`mst_ref.io.events.aedat3_walk_reference`, same signature and results).

    Parameters
    ----------
    raw : (n_bytes,) uint8 ndarray
        The whole file.
    start : int
        Offset of the first packet (after the text header).
    out : (n, 4) int64 ndarray
        Filled with (offset of the first event, eventSize, eventNumber, eventTSOverflow) of each
        polarity packet (eventType 1) in file order; with n = 0 the packets are only counted.

    Returns
    -------
    (count, status, where, size, number, valid, overflow) : tuple of int
        ``count`` polarity packets; ``status`` 0 (the packets tile the file), 1 (fewer than 28 bytes
        left for a header), 2 (a field out of range), 3 (events beyond the end of the file) or 4 (a
        polarity eventSize below 8), at byte ``where``, with the header's fields.
    """
    n_bytes = raw.shape[0]
    pos, count = start, 0
    fill = out.shape[0] > 0
    while pos < n_bytes:
        if n_bytes - pos < 28:
            return count, 1, pos, 0, 0, 0, 0
        f = np.zeros(7, np.int64)  # eventSize, eventTSOffset, overflow, capacity, number, valid, type
        for k in range(6):
            o = pos + 4 + 4 * k
            v = np.int64(raw[o]) | (np.int64(raw[o + 1]) << 8) | (np.int64(raw[o + 2]) << 16) | (np.int64(raw[o + 3]) << 24)
            f[k] = v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v  # int32
        kind = np.int64(raw[pos]) | (np.int64(raw[pos + 1]) << 8)
        f[6] = kind - 65536 if kind >= 32768 else kind  # int16
        size, overflow, number, valid = f[0], f[2], f[4], f[5]
        if size < 1 or number < 0 or valid < 0 or valid > number or overflow < 0:
            return count, 2, pos, size, number, valid, overflow
        if size * number > n_bytes - pos - 28:
            return count, 3, pos, size, number, valid, overflow
        if f[6] == 1:
            if size < 8:
                return count, 4, pos, size, number, valid, overflow
            if fill:
                out[count, 0] = pos + 28
                out[count, 1] = size
                out[count, 2] = number
                out[count, 3] = overflow
            count += 1
        pos += 28 + size * number
    return count, 0, pos, 0, 0, 0, 0
