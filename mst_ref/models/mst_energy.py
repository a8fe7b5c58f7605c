"""MST's energy table: the fan-out of every site, its neurons, its products and its analog MACs.

:mod:`mst_ref.engine.energy` turns spike counts into SOPs and energy for any model family; this module says,
for the Masked Spiking Transformer, what each spike costs and which operations are analog.

SOPs (accumulates caused by spikes; all T steps, after RSM, i.e. the spikes the next layer receives)

    SOPs = sum_t sum_sites spikes(site, t) * fan_out(site) + sum_t pairs(q k^T, t) + sum_t pairs(p v, t)

==========================================  ================  =============================================
site (its spikes feed ...)                  fan-out           why
==========================================  ================  =============================================
``shortcut1_if`` (-> qkv)                   3C                one row of W_qkv per spike
``attn.q_if``, ``attn.k_if`` (-> q k^T)     0, see ``qk``     counted by the product, below
``attn.attn_if`` (-> + bias, softmax)       1                 the bias (+ shift mask) table is constant;
                                                              a spike adds lambda to its entry
``attn.v_if`` (-> p v)                      0, see ``pv``     counted by the product, below
``attn.attn_v_if`` (-> proj)                C
``attn.proj_if`` (-> residual add)          1                 one addition into the residual stream
``shortcut2_if`` (-> fc1)                   hidden = rC
``mlp.fc1_if`` (-> fc2)                     C                 (mlp.norm2, if any, folds into fc2)
``mlp.fc2_if`` (-> residual add)            1
``patch_embed.proj_if``,                    2                 norm1 of the next block (a BN fed by spikes:
``downsample.reduction_if``                                   y = b' + a * s costs one add per spike, b'
(-> next block's norm1 and residual add)                      is a constant bias) + the residual add
==========================================  ================  =============================================

Products of two activations are charged one AC per multiply whose operands are both nonzero (the work
left when zeros are skipped), counted during the run (:meth:`mst_ref.engine.modes.Mode.product`, or the fused
kernels of :mod:`mst_ref.models.mst_fast`, which count the same):

    pairs(a b) = sum over (..., k) of nnz(a[..., :, k]) * nnz(b[..., k, :])

- ``attn.qk`` (q k^T, both binary): the (query, key, d) triples where q and k both spike.
- ``attn.pv`` (p v, p the analog softmax): about N (queries) per v spike. Strictly each is a multiply
  (the spike selects p_ij, scaled by lambda_v); the field counts it as an AC because one operand is a
  spike, and so do we. ``sops_by_site`` keeps it apart, so it can be re-priced at E_MAC.

MACs (operations on multi-bit values; the SNN runs each of them at every step, so T times, except the
input convolution, which runs once)

- ``patch_embed.proj``: the convolution on the analog image, N0 C0 Cin p^2, ONCE per image: the image
  is static, so its output is the same at every step (the code computes it once). Its BN folds into it.
- ``norm1`` (blocks that are not a stage's first) and ``norm2``: BN on the multi-bit residual stream,
  1 MAC per element, N C each (a stage's first norm1 is fed by spikes: counted as SOPs above).
- ``attn.softmax``: 3 MACs per element (exp, sum, divide), nW nH N^2.
- ``downsample.reduction``: its input is BN(merged residual stream), multi-bit, so a dense layer:
  N/4 * 4C * 2C; the BN before it folds into it.
- ``norm`` (the final LayerNorm): 5 MACs per element (mean, centre, variance, normalise, affine).
- ``head``: the mean over tokens, N F, and the linear layer, F K.

Not counted, on either side: BN folded into an adjacent linear layer (patch_embed.norm, mlp.norm1/2,
downsample.norm), the hd^-1/2 scale (it folds into attn_if's threshold), constant biases, the
shift mask (it folds into the bias table), QCFS / IF neuron updates themselves, the read-out sum.

The ANN (per image) runs the same network densely on multi-bit activations: every operation above is
a MAC, every neuron "fires" once (neurons x fan-out), both products are dense (nW nH N^2 hd each), the
analog ops run once; so ``ann_macs`` = ``input_macs`` + ``analog_macs`` + neurons x fan-out + products.

"""

from .mst_layout import site_names

SOFTMAX_MACS = 3  # MACs per softmax element: exp, add to the sum, divide
LAYERNORM_MACS = 5  # MACs per LayerNorm element: mean, centre, variance, normalise, affine
INPUT_NAME = "patch_embed.proj"  # the layer that reads the analog image

__all__ = ["site_names", "fan_outs", "site_neurons", "product_names", "products_after",
           "dense_product_macs", "input_macs", "analog_macs"]


def _blocks(config):
    """(i, j, prefix, stage, tokens M, windows nW, tokens per window N) of every block."""
    for i, st in enumerate(config.stages):
        m, n = st.resolution**2, st.window**2
        for j in range(st.depth):
            yield i, j, f"layers.{i}.blocks.{j}", st, m, m // n, n


def fan_outs(config):
    """ACs caused by one spike of each site (the table of the module docstring).

    Returns
    -------
    dict of {str: int}
        Site -> fan-out, every site in forward order.
    """
    out = {"patch_embed.proj_if": 2}  # next block's norm1 (spike-driven BN) + residual add
    last = len(config.stages) - 1
    for i, j, b, st, m, nw, n in _blocks(config):
        out |= {f"{b}.shortcut1_if": 3 * st.dim, f"{b}.attn.q_if": 0, f"{b}.attn.k_if": 0,
                f"{b}.attn.attn_if": 1, f"{b}.attn.v_if": 0, f"{b}.attn.attn_v_if": st.dim,
                f"{b}.attn.proj_if": 1, f"{b}.shortcut2_if": st.hidden, f"{b}.mlp.fc1_if": st.dim,
                f"{b}.mlp.fc2_if": 1}
        if j == st.depth - 1 and i < last:
            out[f"layers.{i}.downsample.reduction_if"] = 2  # like patch_embed.proj_if
    return {name: out[name] for name in site_names(config)}


def site_neurons(config):
    """Neurons of each site per image (one step's output size), in forward order."""
    st0 = config.stages[0]
    out = {"patch_embed.proj_if": st0.resolution**2 * st0.dim}
    for i, j, b, st, m, nw, n in _blocks(config):
        mc = m * st.dim  # (N, C) tokens x channels = nW nH N hd for q, k, v
        out |= {f"{b}.shortcut1_if": mc, f"{b}.attn.q_if": mc, f"{b}.attn.k_if": mc,
                f"{b}.attn.attn_if": nw * st.heads * n * n, f"{b}.attn.v_if": mc, f"{b}.attn.attn_v_if": mc,
                f"{b}.attn.proj_if": mc, f"{b}.shortcut2_if": mc, f"{b}.mlp.fc1_if": m * st.hidden,
                f"{b}.mlp.fc2_if": mc}
        if j == st.depth - 1 and i < len(config.stages) - 1:
            out[f"layers.{i}.downsample.reduction_if"] = (m // 4) * 2 * st.dim
    return {name: out[name] for name in site_names(config)}


def product_names(config):
    """Names of the products of two activations (:meth:`Mode.product` ops), in forward order."""
    return [f"{b}.attn.{op}" for _, _, b, *_ in _blocks(config) for op in ("qk", "pv")]


def dense_product_macs(config):
    """MACs of each product per image when dense (the ANN): nW nH N^2 hd = M N C."""
    return {f"{b}.attn.{op}": m * n * st.dim
            for _, _, b, st, m, nw, n in _blocks(config) for op in ("qk", "pv")}


def input_macs(config):
    """MACs of the patch embedding conv on the analog image, per image (run once; its BN folded)."""
    st0 = config.stages[0]
    return st0.resolution**2 * st0.dim * config.in_chans * config.patch_size**2


def analog_macs(config):
    """MACs of the analog operations of one step, per image (the list in the module docstring).

    Returns
    -------
    dict of {str: int}
        Op name (the model's module names) -> MACs, in forward order.
    """
    out = {}
    last = len(config.stages) - 1
    for i, j, b, st, m, nw, n in _blocks(config):
        if j > 0:  # a stage's first norm1 is fed by spikes: counted as SOPs of the site before it
            out[f"{b}.norm1"] = m * st.dim
        out[f"{b}.attn.softmax"] = SOFTMAX_MACS * nw * st.heads * n * n
        out[f"{b}.norm2"] = m * st.dim
        if j == st.depth - 1 and i < last:
            # BN(merge(x)) is multi-bit: (N/4, 4C) @ (4C, 2C)
            out[f"layers.{i}.downsample.reduction"] = (m // 4) * 4 * st.dim * 2 * st.dim
    stl = config.stages[-1]
    m, f = stl.resolution**2, config.num_features
    out["norm"] = LAYERNORM_MACS * m * f
    out["head"] = m * f + f * config.num_classes  # mean over tokens, then (F, K)
    return out


def products_after(config):
    """Product op -> the site that completes its operands (q k^T after k_if, p v after v_if)."""
    return {f"{b}.attn.{op}": f"{b}.attn.{site}" for _, _, b, *_ in _blocks(config)
            for op, site in (("qk", "k_if"), ("pv", "v_if"))}
