"""The SNN forward pass through fused kernels: the network of :mod:`mst_ref.models.mst`, a few passes per block.

:meth:`mst_ref.models.mst.MST.forward` reads as the paper does, one NumPy operation at a time. Run that way,
the SNN spends its time outside the matrix products: every activation site makes several passes over
its ``(T, ...)`` arrays (affine op, scan, mask, count), and window attention runs thousands of tiny
matrix products per step. This module computes the same network, for a :class:`~mst_ref.engine.modes.Mode`
that is spiking without compensation, as

- one BLAS matrix product per step for each linear layer, on ``(B*tokens, C)`` rows in grid order, or,
  for the products fed by spikes (qkv, proj, fc1, fc2) at steps whose spike density is below
  :data:`CROSSOVER`, an event-driven product that adds the weight rows of the nonzero inputs
  (:func:`mst_ref.core.kernels.spike_linear`; :func:`products`);
- one pass per activation site (:func:`mst_ref.core.kernels.site_scan`), with the neighbouring affine ops
  (the linear bias, BatchNorm, the residual adds) and RSM fused in;
- one kernel for window attention (:func:`mst_ref.core.kernels.window_attention_scan`): the roll and the
  window partition become index arithmetic, and the five neurons, the products and the softmax of a
  (image, window, head) run together over T.

Every site keeps its membranes in ``mode.state`` in the shapes :meth:`Mode.site` uses, draws its RSM
uniforms from the same generator in the same order and shape, and books its counts and records through
:meth:`Mode.observe`: the results have the same layout, and the same numbers up to float rounding (the
kernels sum in other orders than BLAS and exponentiate through tables, so a membrane that lands on its
threshold can flip a spike, as between float32 and float64; docs/mst.md section 9). Each step's arithmetic
does not depend on how many steps a call holds, so step by step, chunked and multi-step runs of this
path agree bit for bit. Besides the membranes, ``mode.state`` keeps each block's softmax tables
(:func:`mst_ref.nn.attention.softmax_tables`), computed at the first call of a run. A run must stay on one
path: the attention membranes are laid out as the readable path lays them out, the others too, but
nothing checks that a run switched paths.

The kernels are single passes with few branches; what is left is the matrix products (BLAS, one per
step and layer) and streaming the ``(T, ...)`` arrays through memory once per site.

Threads: BLAS and the Numba kernels take turns, and OpenBLAS's worker threads keep spinning for a while
after each product, so parallel kernels would fight them for the cores (on two cores that halves the
speed). So when BLAS runs several threads (its count now, read through threadpoolctl:
:func:`mst_ref.threads.kernel_threads`) the kernels run on one thread during a pass; when BLAS runs one
thread they use Numba's threads, and each large product is split by rows over as many threads of a
pool that sleeps between products (:func:`_gemm`). :func:`mst_ref.threads.limit_threads` sets both (BLAS
to one thread unless asked otherwise).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from ..core import kernels
from ..nn.attention import softmax_tables
from ..nn.layers import batch_norm, bn_affine, bn_params, head, layer_norm, patch_embed
from ..nn.merging import merge_tokens
from ..nn.spike_products import event_steps
from ..threads import kernel_threads
from ..nn.windows import relative_position_bias, window_order

__all__ = ["supports", "forward", "default_chunk"]

_NONE = {}  # (ndim, dtype) -> a zero-size array, the kernels' "absent"
_POOL = {}  # threads -> the thread pool of _gemm's row blocks
_SPLIT_ROWS = 64  # rows per block at least, and
_SPLIT_WORK = 2**22  # multiply-adds per step at least, before _gemm splits a product over threads
# Spike density (nonzero inputs / inputs of a step) below which a product fed by spikes is computed
# event-driven (kernels.spike_linear) rather than dense: measured on a two-core machine,
# benchmarks/bench_sparse.py (docs/performance.md).
CROSSOVER = 0.2
# Largest transposed weight (bytes) computed event-driven: the crossover was measured with weights of
# 9-147 KiB, which stay in L2 cache while their rows are added; a larger weight (Swin-T from stage 2 on)
# is read row by row from further out, where BLAS's blocked product wins (random-weight Swin-T ran 0.8x
# with events at every width), so its products stay dense.
EVENT_MAX_WEIGHT = 2**18


def supports(mode):
    """Whether :func:`forward` can run ``mode``: a spiking mode of IF neurons, without compensation, with
    ``fast`` on (the kernels implement the IF neuron only; other neurons take the readable path), and a
    mask policy that does not depend on the spikes fired (``regular`` takes the readable path; the other
    policies' masks are computed from the same uniforms by the masker and handed to the kernels)."""
    return (mode.spiking and mode.fast and mode.compensation == "none" and mode.neuron == "if"
            and not mode.masker.policy.stateful)  # a regular mask counts each neuron's spikes: readable path


def default_chunk(config, batch_size, dtype, timesteps, budget_bytes=2**27):
    """Steps per pass of :func:`forward` that keep its largest arrays within about ``budget_bytes``.

    The estimate: six live ``(T, ...)`` arrays of the largest per-step activation (the MLP hidden layer,
    the qkv products, or the float64 RSM uniforms of the attention scores). Small passes also stay in
    cache and reuse freed memory (arrays above glibc's mmap threshold, 32 MiB, page-fault afresh at
    every allocation). Swin-T at 224, batch 1, float32: 4 steps per pass; the per-pass overhead is a few
    milliseconds, so throughput hardly depends on the chunk.
    """
    itemsize = np.dtype(dtype).itemsize
    largest = max(max(s.resolution**2 * max(s.hidden, 3 * s.dim) * itemsize,
                      s.resolution**2 * s.window**2 * s.heads * 8) for s in config.stages)
    return int(max(1, min(timesteps, budget_bytes // (6 * batch_size * largest))))


def _empty(ndim, dtype):
    """A zero-size C-contiguous array: the kernels' "absent" value for an optional argument."""
    key = (ndim, np.dtype(dtype))
    if key not in _NONE:
        _NONE[key] = np.empty((0,) * ndim, dtype=dtype)
    return _NONE[key]


def _gemm(x, weight):
    """x W^T with one BLAS product per step: ``(T, R, Cin) -> (T, R, Cout)``.

    One BLAS call per step, on the same rows whatever the number of steps in the call, so a step gives
    the same bits alone or in a chunk (a product over the rows of several steps can round differently:
    OpenBLAS takes other code paths for small products).

    With n > 1 kernel threads (BLAS then runs one thread, :func:`mst_ref.threads.kernel_threads`), a large
    product is split into n blocks of rows, one per thread of a pool whose idle threads sleep (OpenBLAS's
    own workers would spin between products and take the cores from the Numba kernels). The blocks depend
    only on R, so step-by-step and chunked runs still split alike.
    """
    T, R, K = x.shape
    out = np.empty((T, R, weight.shape[0]), dtype=np.result_type(x, weight))  # (T, R, Cout)
    n = min(numba.get_num_threads(), R // _SPLIT_ROWS)
    if n <= 1 or R * K * weight.shape[0] < _SPLIT_WORK:
        return np.matmul(x, weight.T, out=out)  # (T, R, Cout)
    pool = _POOL.get(n)
    if pool is None:
        pool = _POOL[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="mst_ref-gemm")
    bounds = [R * i // n for i in range(n + 1)]
    jobs = [pool.submit(np.matmul, x[:, a:b], weight.T, out=out[:, a:b])  # (T, b - a, Cout) each
            for a, b in zip(bounds[:-1], bounds[1:])]
    for job in jobs:
        job.result()
    return out


def products():
    """How the fast path computes the products fed by spikes: ``MST_REF_PRODUCTS`` if set, else "auto".

    "auto": per product and step, event-driven where the step's density of nonzero inputs is below
    :data:`CROSSOVER` and the weight is at most :data:`EVENT_MAX_WEIGHT` bytes, dense (BLAS) otherwise; "events": always event-driven; "dense": always BLAS (the fast
    path as it was before event-driven products, kept as the baseline of benchmarks/bench_snn.py).
    """
    value = os.environ.get("MST_REF_PRODUCTS", "auto").strip() or "auto"
    if value not in ("auto", "events", "dense"):
        raise ValueError(f"MST_REF_PRODUCTS must be auto, events or dense; got {value!r}")
    return value


def _spike_product(mode, x, weight, key, nnz=None):
    """x W^T for inputs x (T, R, K) that are spikes: event-driven at sparse steps, BLAS at dense ones.

    Each step is computed one way or the other as a whole, by its own density, so the arithmetic of a
    step does not depend on the other steps of the call (step-by-step and chunked runs agree bit for
    bit). ``key`` names the product; its transposed weight is kept in ``mode.state``. ``nnz`` (T,): the
    nonzero inputs of each step when the site that made x counted them (else they are counted here).
    """
    how = products()
    if how == "dense":
        return _gemm(x, weight)
    T, R, K = x.shape
    if how == "auto" and weight.size * x.itemsize > EVENT_MAX_WEIGHT:
        return _gemm(x, weight)
    if how == "events":
        events = np.ones(T, dtype=bool)
    else:
        events = (event_steps(x, CROSSOVER)[0] if nnz is None
                  else np.asarray(nnz) < CROSSOVER * max(1, x[0].size))  # density < crossover
    if not events.any():
        return _gemm(x, weight)
    wt = mode.state.get(key)
    if wt is None:
        wt = mode.state[key] = np.ascontiguousarray(weight.T, dtype=x.dtype)  # (K, Cout)
    out = np.empty((T, R, weight.shape[0]), dtype=x.dtype)  # (T, R, Cout)
    kernels.spike_linear(x, wt, events, out)
    for t in np.nonzero(~events)[0]:
        out[t] = _gemm(x[t:t + 1], weight)[0]  # (R, Cout)
    return out


def _membrane(mode, name, shape, lam):
    """The membranes of site ``name`` (created at the pre-charge lambda / 2)."""
    v = mode.state.get(name)
    if v is None:
        # pre-charge: v = lambda / 2
        v = mode.state[name] = np.full(shape, lam / 2, dtype=lam.dtype)
    return v


# the dtype of the RSM decisions the fused kernels read, one byte (an absent site's empty array must
# match the others: one kernel call takes all five attention sites' decisions as one tuple)
MASK_DTYPE = np.uint8


def _mask(mode, name, shape):
    """RSM of site ``name`` for this call: (decisions or None, threshold, gain) for the fused kernels.

    The uniforms are drawn as :func:`masking.rsm` draws them; the kernels receive the decisions, a
    ``(T, ...)`` uint8 array of 1 (keep) / 0 (drop), with the threshold 0.5 (a spike is kept where the
    decision exceeds it). ``shape`` is the whole call's output shape ``(T, ...)``; p = 0 draws nothing
    (None, 0, gain 1), p = 1 draws nothing and silences the site (None, 1, gain 0).
    """
    masker = mode.masker
    p = masker.ratios.get(name, 0.0)
    if p == 0:
        return None, 0.0, 1.0
    if p == 1 and masker.policy.kind != "schedule":
        return None, 1.0, 0.0
    u = masker.rngs[name].random(shape)  # (T, ...) float64, in time order
    gain = 1.0 / (1.0 - p) if masker.rescale else 1.0
    if not masker.policy.published:
        # another policy: its keep mask, computed from these uniforms, as 1 / 0 against 0.5
        return masker.fused_decisions(name, u), 0.5, gain
    # the kernels keep a spike where u > p; they read that decision as one byte (1 keep, 0 drop)
    # against 0.5 instead of the eight-byte uniform: the same spikes kept, an eighth of the memory read
    return np.greater(u, p).view(MASK_DTYPE), 0.5, gain


def _count_fired(mode, name, fired):
    """Add a masked site's spikes fired before RSM (``fired``: (T,) counts) to the masker's tally, as the
    readable path's masker counts them (sites with p = 0 are not tallied there either)."""
    if mode.masker.ratios.get(name, 0.0) > 0:
        mode.masker.fired[name] = mode.masker.fired.get(name, 0) + int(fired.sum())


def _site(mode, name, x, threshold, shape, *, add=None, add_rows=None, bias=None, bn=None, pre=False,
          post=None, out=True, with_counts=False):
    """One fused activation site (:func:`mst_ref.core.kernels.site_scan`) with its state, RSM and bookkeeping.

    Parameters
    ----------
    x : (T, R, C) or (1, R, C) ndarray
        Input currents (1: the same every step).
    shape : tuple
        One step's output shape in :meth:`Mode.site`'s layout, ``(B, ...)`` with R * C elements.
    add, add_rows, bias, bn
        The fused prologue ``y = ((x + add[:, add_rows]) + bias) * a + shift`` with ``(a, shift)`` the
        BatchNorm ``bn`` (a tuple of its four arrays).
    pre : bool
        Also return y (the residual stream after a BatchNorm).
    post : (T, R, C) ndarray or None
        ``post += output`` in place (the residual add after the site).
    out : bool
        Return the outputs (they are kept anyway when the site is recorded).
    with_counts : bool
        Also return the nonzero outputs of each step (T,) (what the next product's density is).

    Returns
    -------
    out : (T, R, C) ndarray or None
    pre : (T, R, C) ndarray, only when ``pre``
    """
    T, R, C = mode.steps, x.shape[1], x.shape[2]
    dt = x.dtype
    lam = dt.type(threshold[0])
    v = _membrane(mode, name, shape, lam).reshape(R, C)  # (R, C) view
    u, p, gain = _mask(mode, name, (T, *shape))
    keep = out or mode.wants(name)
    y_out = np.empty((T, R, C), dt) if keep else _empty(3, dt)
    y_pre = np.empty((T, R, C), dt) if pre else _empty(3, dt)
    scale, shift = bn_affine(*bn) if bn is not None else (_empty(1, dt), _empty(1, dt))
    counts, fired = kernels.site_scan(
        x, T, _empty(3, dt) if add is None else add, _empty(1, np.int64) if add_rows is None else add_rows,
        _empty(1, dt) if bias is None else bias, scale, shift, float(lam), gain, v,
        _empty(3, MASK_DTYPE) if u is None else u.reshape(T, R, C), p, y_pre,
        _empty(3, dt) if post is None else post, y_out)
    _count_fired(mode, name, fired)
    mode.observe(name, shape, counts, y_out.reshape(T, *shape) if keep else None)
    y = y_out if keep else None
    if pre:
        return (y, y_pre, counts) if with_counts else (y, y_pre)
    return (y, counts) if with_counts else y


def _attention(mode, s, prefix, g, stage, shift, batch):
    """Window attention of block ``prefix`` from the qkv products ``g`` (T, B*H*W, 3C) in grid order.

    Returns the outputs of ``attn_v_if``, ``(T, B*nW*N, C)`` in window order, and their nonzero count at
    each step (T,).
    """
    T, dt = mode.steps, g.dtype
    ws, heads, C, res = stage.window, stage.heads, stage.dim, stage.resolution
    hd, N, nW = C // heads, ws * ws, (res // ws) ** 2
    a = f"{prefix}.attn"
    # the kernel's order: q, k, v, attn, attn_v (sites q_if, k_if, v_if, attn_if, attn_v_if)
    names = [f"{a}.{site}" for site in ("q_if", "k_if", "v_if", "attn_if", "attn_v_if")]
    shapes = [(batch, nW, heads, N, hd)] * 3 + [(batch, nW, heads, N, N), (batch, nW, N, C)]
    lam = np.array([s[f"{n}.up"][0] for n in names], dtype=dt)  # (5,)
    flat = [(-1, shp[-1]) for shp in shapes[:4]] + [(-1, heads, hd)]  # the kernel's views
    states = [_membrane(mode, n, shp, lam[k]).reshape(f)
              for k, (n, shp, f) in enumerate(zip(names, shapes, flat))]
    masks = [_mask(mode, n, (T, *shp)) for n, shp in zip(names, shapes)]
    gain = np.array([m[2] for m in masks], dtype=dt)  # (5,)
    p = np.array([m[1] for m in masks], dtype=np.float64)  # (5,)
    uniforms = [_empty(len(f), MASK_DTYPE) if m[0] is None else m[0].reshape(f) for m, f in zip(masks, flat)]
    records = [np.empty((T, *shp), dt) if mode.wants(n) else None
               for n, shp in zip(names[:4], shapes[:4])]
    # (qs @ ks^T) * hd^-1/2 for c coincident spikes: c * (lambda_q g_q) (lambda_k g_k), then the scale
    unit = float(lam[0] * gain[0]) * float(lam[1] * gain[1])
    table = (np.arange(hd + 1) * unit).astype(dt) * dt.type(hd**-0.5)  # (hd + 1,)
    # the softmax's inputs and exponentials: constant over a run, computed at its first call
    key = f"{a}.softmax_table"
    if key not in mode.state:
        bias = relative_position_bias(s[f"{a}.relative_position_bias_table"],
                                      s[f"{a}.relative_position_index"])  # (nH, N, N)
        mode.state[key] = softmax_tables(bias, s.get(f"{prefix}.attn_mask"), lam[3] * gain[3])
    qkv_bias = s.get(f"{a}.qkv.bias")
    out = np.empty((T, batch, nW, N, C), dt)
    counts, fired, pairs = kernels.window_attention_scan(
        g.reshape(-1, 3, heads, hd), _empty(3, dt) if qkv_bias is None else qkv_bias.reshape(3, heads, hd),
        batch, res, ws, shift, heads, lam, gain, p, table, mode.state[key], *states, *uniforms,
        *[_empty(2, dt) if r is None else r.reshape(f) for r, f in zip(records, flat)],
        out.reshape(-1, heads, hd))
    for k in (0, 1, 3, 2, 4):  # book the sites in forward order: q, k, attn, v, attn_v
        _count_fired(mode, names[k], fired[k])
        y = out if k == 4 else records[k]
        mode.observe(names[k], shapes[k], counts[k], y if mode.wants(names[k]) else None)
    mode.observe_product(f"{a}.qk", pairs=pairs[0])
    mode.observe_product(f"{a}.pv", pairs=pairs[1])
    return out.reshape(T, batch * nW * N, C), counts[4]


def _block(model, x, prefix, stage, shift, mode, batch):
    """One MST block on the residual stream x (T, B*N, C) in grid order; returns the new stream."""
    s, T = model.state, mode.steps
    res, ws, C = stage.resolution, stage.window, stage.dim
    L, nW = res * res, (res // ws) ** 2
    grid_shape, win_shape = (batch, L, C), (batch, nW, ws * ws, C)
    # h = Q[shortcut1_if](BN[norm1](x))
    h, nnz = _site(mode, f"{prefix}.shortcut1_if", x, s[f"{prefix}.shortcut1_if.up"], grid_shape,
                   bn=bn_params(s, f"{prefix}.norm1"), with_counts=True)
    # window attention (roll and partition inside the kernel), then Q[proj_if](o W^T + b) in window order
    g = _spike_product(mode, h, s[f"{prefix}.attn.qkv.weight"], f"{prefix}.attn.qkv.wt", nnz)  # (T, B*N, 3C)
    o, nnz = _attention(mode, s, prefix, g, stage, shift, batch)  # (T, B*nW*Ws*Ws, C)
    g = _spike_product(mode, o, s[f"{prefix}.attn.proj.weight"], f"{prefix}.attn.proj.wt", nnz)  # (T, B*nW*N, C)
    h = _site(mode, f"{prefix}.attn.proj_if", g, s[f"{prefix}.attn.proj_if.up"], win_shape,
              bias=s[f"{prefix}.attn.proj.bias"])
    # x = BN[norm2](x + reverse(h)) ; m = Q[shortcut2_if](x)   (reverse + roll: a row gather)
    rows = (window_order(res, ws, shift)[None, :] + np.arange(batch)[:, None] * L).reshape(-1)  # (B*N,)
    m, x, nnz = _site(mode, f"{prefix}.shortcut2_if", x, s[f"{prefix}.shortcut2_if.up"], grid_shape, add=h,
                      add_rows=rows, bn=bn_params(s, f"{prefix}.norm2"), pre=True, with_counts=True)
    # x = x + Q[fc2_if](Linear[fc2](Q[fc1_if](Linear[fc1](m))))   ([BN] after each linear if present)
    mlp_norm = model.config.mlp_norm
    g = _spike_product(mode, m, s[f"{prefix}.mlp.fc1.weight"], f"{prefix}.mlp.fc1.wt", nnz)  # (T, B*N, rC)
    f, nnz = _site(mode, f"{prefix}.mlp.fc1_if", g, s[f"{prefix}.mlp.fc1_if.up"], (batch, L, stage.hidden),
                   bias=s[f"{prefix}.mlp.fc1.bias"], bn=bn_params(s, f"{prefix}.mlp.norm1") if mlp_norm else None,
                   with_counts=True)
    g = _spike_product(mode, f, s[f"{prefix}.mlp.fc2.weight"], f"{prefix}.mlp.fc2.wt", nnz)  # (T, B*N, C)
    _site(mode, f"{prefix}.mlp.fc2_if", g, s[f"{prefix}.mlp.fc2_if.up"], grid_shape,
          bias=s[f"{prefix}.mlp.fc2.bias"], bn=bn_params(s, f"{prefix}.mlp.norm2") if mlp_norm else None,
          post=x, out=False)
    return x


def forward(model, images, mode):
    """The SNN forward pass of ``model`` for ``mode.steps`` steps, through the fused kernels.

    Parameters
    ----------
    model : MST
    images : (B, Cin, H, W) ndarray of the model's dtype
        Checked by the caller.
    mode : Mode
        Spiking, without compensation (:func:`supports`); its state is carried to the next call.

    Returns
    -------
    z : (T, B, K) ndarray
        Head output of each step.
    """
    saved = numba.get_num_threads()
    numba.set_num_threads(min(kernel_threads(), saved))
    try:
        return _forward(model, images, mode)
    finally:
        numba.set_num_threads(saved)


def _forward(model, images, mode):
    s, T = model.state, mode.steps
    B = images.shape[-4]
    x = patch_embed(images, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"])  # ([T,] B, N, C)
    x = batch_norm(x, *bn_params(s, "patch_embed.norm"))  # (B, N, C): the same current at every step
    n, c = x.shape[-2:]  # with a time-varying input (mode.timed_input), (T, B, N, C): one per step
    x = _site(mode, "patch_embed.proj_if", np.ascontiguousarray(x).reshape(-1, B * n, c),
              s["patch_embed.proj_if.up"], (B, n, c))  # (T, B*N, C)
    last = len(model.config.depths) - 1
    for i, stage in enumerate(model.config.stages):
        for j in range(stage.depth):
            x = _block(model, x, f"layers.{i}.blocks.{j}", stage, stage.shift(j), mode, B)
        if i < last:
            d = f"layers.{i}.downsample"
            m = merge_tokens(x.reshape(T, B, -1, stage.dim), stage.resolution)  # (T, B, N/4, 4C)
            m = batch_norm(m, *bn_params(s, f"{d}.norm"))
            g = _gemm(m.reshape(T, -1, 4 * stage.dim), s[f"{d}.reduction.weight"])  # (T, B*N/4, 2C)
            x = _site(mode, f"{d}.reduction_if", g, s[f"{d}.reduction_if.up"],
                      (B, m.shape[2], 2 * stage.dim))  # (T, B*N/4, 2C)
    x = x.reshape(T, B, -1, model.config.num_features)  # (T, B, N, F)
    x = mode.analog("norm", lambda a: layer_norm(a, s["norm.weight"], s["norm.bias"]), x)
    return head(x, s["head.weight"], s["head.bias"])  # (T, B, K)
