# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 - Converting layers: linear maps commute with time, so only the neurons approximate
#
# Tutorial 01 showed that one IF neuron's mean output approximates QCFS / clip of its mean input.
# A network is neurons joined by layers. This tutorial shows why the layers of MST between two
# activation sites (linear layers, BatchNorm, the patch embedding, patch merging) need no change
# at all when the network is converted, and how the converted network is simulated:
#
# 1. affine layers commute with the mean over time: linear, BatchNorm (and not LayerNorm);
# 2. the patch embedding is a linear layer on image patches; fed the same image at every step
#    ("direct coding"), the first neurons fire exactly QCFS with L = T;
# 3. patch merging is a gather + BatchNorm + linear, so it commutes too;
# 4. two ways to simulate: layer by layer (all T steps at once) and step by step (all layers at
#    once per step) give the same numbers, on a toy stack and on a whole MST;
# 5. how the error of a stack of IF layers shrinks with T, and why deeper layers miss by more
#    than one neuron's bound lambda/(2T) (though still by O(1/T));
# 6. why random masks (fresh at every step) slow that rate to 1/sqrt(T).
#
# Run it as `python tutorials/02_converting_layers.py`; pictures go to `$MST_TUTORIAL_OUT`
# (default `tutorial_out/` under the current folder).

# %%
import os
from pathlib import Path

import numpy as np

import mst_ref  # noqa: F401  (installed by `pip install -e .`, README; tutorials never patch the path)
from mst_ref import plots
from mst_ref.nn.layers import batch_norm, layer_norm, linear, patch_embed
from mst_ref.nn.merging import merge_tokens, patch_merging
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.engine.masking import rsm
from mst_ref.engine.modes import Mode
from mst_ref.core.neurons import if_neuron, spike_counts
from mst_ref.core.qcfs import clip_activation, qcfs
from mst_ref.engine.stack import random_stack, run_stack_ann, run_stack_multistep, run_stack_stepwise

np.set_printoptions(precision=4, suppress=True, linewidth=110, threshold=5000)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Affine layers commute with the time average
#
# In the SNN every layer sees a *spike train* h_1, ..., h_T instead of one activation vector. An
# affine layer f(h) = W h + b acts on each step separately, and the mean over time goes straight
# through it:
#
# $$ \frac1T \sum_t f(h_t) = \frac1T \sum_t (W h_t + b) = W \Big(\frac1T \sum_t h_t\Big) + b = f(\bar h). $$
#
# So if the spike train's mean rate h-bar equals the ANN's activation, the layer's mean output
# equals the ANN layer's output: **the layer itself adds no error**. Only the neurons approximate.
#
# ### 1a. A linear layer on a spike train
# Three IF neurons (lambda = 1) with constant inputs 0.3, 0.6, 0.9 fire for T = 4 steps; a
# linear layer 3 -> 2 reads their spikes.

# %%
T, lam = 4, 1.0
h = if_neuron(np.tile([0.3, 0.6, 0.9], (T, 1)), lam)  # (T, 3) spikes, 0 or lambda
W = rng.normal(size=(2, 3)).round(2)  # (2, 3)
b = np.array([0.1, -0.2])  # (2,)
# z_t = W h_t + b, every step at once
z = h @ W.T + b  # (T, 2)
print("spikes h (T x 3):\n", h)
print("W:\n", W, "\nb:", b)
print("z_t = W h_t + b (T x 2):\n", z)
print("mean over t of z_t :", z.mean(axis=0))
print("W (mean h) + b     :", W @ h.mean(axis=0) + b)
err = np.abs(z - linear(h, W, b)).max()
print(f"max |by hand - mst_ref.nn.layers.linear| = {err}")
assert err == 0.0
gap = np.abs(z.mean(axis=0) - (W @ h.mean(axis=0) + b)).max()
print(f"max |mean_t f(h_t) - f(mean h)| = {gap:.1e} (rounding only)")
assert gap < 1e-12

# %% [markdown]
# ### 1b. BatchNorm in eval mode is affine too
# With its running statistics frozen, BatchNorm is a per-channel scale and shift:
#
# $$ \mathrm{BN}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta = a\,x + c .$$
#
# (mst_ref computes it in this folded form, as PyTorch's CPU kernel does; the difference from the
# textbook order is rounding.) LayerNorm is *not* affine: it divides by the standard deviation of
# the very vector it normalises. So it does not commute with the mean over time; MST has one
# LayerNorm, before the head, and tutorial 03 deals with non-affine operations.

# %%
gamma, beta = np.array([1.2, 0.7]), np.array([0.05, -0.3])  # (2,) each
mu, var = np.array([0.4, -0.1]), np.array([0.8, 1.5])  # (2,) running statistics
# BN(x) = (x - mu) / sqrt(var + eps) * gamma + beta
bn_hand = (z - mu) / np.sqrt(var + 1e-5) * gamma + beta  # (T, 2)
bn_lib = batch_norm(z, gamma, beta, mu, var)  # (T, 2)
print("BN(z_t) by hand (T x 2):\n", bn_hand)
print(f"max |by hand - mst_ref.nn.layers.batch_norm| = {np.abs(bn_hand - bn_lib).max():.1e}")
assert np.allclose(bn_hand, bn_lib, rtol=0, atol=1e-14)
bn_gap = np.abs(bn_lib.mean(axis=0) - batch_norm(z.mean(axis=0), gamma, beta, mu, var)).max()
print(f"BatchNorm: max |mean_t BN(z_t) - BN(mean z)| = {bn_gap:.1e}")
assert bn_gap < 1e-12

z4 = if_neuron(np.tile([0.2, 0.5, 0.7, 0.95], (T, 1)), lam) @ rng.normal(size=(4, 4)) + 0.1  # (T, 4)
ln_w, ln_b = np.ones(4), np.zeros(4)
ln_mean_of_steps = layer_norm(z4, ln_w, ln_b).mean(axis=0)  # (4,)
ln_of_mean = layer_norm(z4.mean(axis=0), ln_w, ln_b)  # (4,)
print("LayerNorm: mean_t LN(z_t):", ln_mean_of_steps)
print("           LN(mean z)   :", ln_of_mean)
ln_gap = np.abs(ln_mean_of_steps - ln_of_mean).max()
print(f"           max difference {ln_gap:.3f}: LayerNorm does not commute with the time average")
assert ln_gap > 0.05

# %% [markdown]
# ## 2. The patch embedding, and direct coding
#
# MST's first layer is a convolution with kernel = stride = p: it cuts the image into p x p
# patches and applies the same linear map to each,
#
# $$ y_{ij} = \sum_{c,u,v} W_{c u v}\, x_{c,\, ip+u,\, jp+v} + b ,$$
#
# so it is linear too. A 1-channel 4 x 4 image, p = 2, 3 output channels, written as loops:

# %%
img = np.arange(16, dtype=float).reshape(1, 1, 4, 4) / 16  # (B=1, Cin=1, 4, 4)
Wp = rng.normal(size=(3, 1, 2, 2)).round(2)  # (C=3, Cin=1, p, p)
bp = np.array([0.0, 0.1, -0.1])  # (3,)
p = 2
tokens_hand = np.zeros((1, 4, 3))  # (B, N = (4/p)^2, C)
for i in range(2):
    for j in range(2):
        patch = img[0, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (Cin, p, p)
        # y_ij = sum_{c,u,v} W[:, c, u, v] x[c, ip+u, jp+v] + b
        tokens_hand[0, i * 2 + j] = (Wp * patch).sum(axis=(1, 2, 3)) + bp  # (C,)
print("image:\n", img[0, 0])
print("tokens by hand (N x C, patches in row-major order):\n", tokens_hand[0])
tokens_lib = patch_embed(img, Wp, bp)  # (B, N, C)
err = np.abs(tokens_hand - tokens_lib).max()
print(f"max |by hand - mst_ref.nn.layers.patch_embed| = {err:.1e}")
assert err < 1e-14

# %% [markdown]
# The published SNN feeds the *same* normalised image at every step (direct coding). The patch
# embedding and its BatchNorm are affine, so the first IF neurons (`patch_embed.proj_if`) receive
# a **constant** current, and by tutorial 01 their mean output is exactly QCFS with L = T: the
# first layer has quantization error only, no unevenness.

# %%
T, lam = 8, 0.5
pre = batch_norm(tokens_lib, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))  # (B, N, C)
train = if_neuron(np.ascontiguousarray(np.broadcast_to(pre, (T, *pre.shape))), lam)  # (T, B, N, C)
print("input current of the first neurons:\n", pre[0])
print(f"spike counts over T = {T}:\n", spike_counts(train)[0])
print("rate:\n", train.mean(axis=0)[0])
print("QCFS(current, lambda, L = T):\n", qcfs(pre, lam, levels=T)[0])
assert np.array_equal(train.mean(axis=0), qcfs(pre, lam, levels=T))

# %% [markdown]
# ## 3. Patch merging
#
# Between stages MST halves the token grid: the four tokens of each 2 x 2 block are concatenated
# (in the order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), batch-normalised and
# reduced 4C -> 2C by a linear layer without bias, then pass the site `reduction_if`. A gather,
# BatchNorm and a linear layer: all affine. We label each token of a 4 x 4 grid (C = 1) by
# 10 * row + column to see where it goes:

# %%
grid = (10 * np.arange(4)[:, None] + np.arange(4)[None, :]).astype(float)  # (H, W) labels
x_tok = grid.reshape(1, 16, 1)  # (B, H*W, C=1) tokens in row-major order
g = x_tok.reshape(1, 4, 4, 1)  # (B, H, W, C)
merged_hand = np.concatenate([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]],
                             axis=-1).reshape(1, 4, 4)  # (B, H/2 * W/2, 4C)
print("token grid (labels 10*row + col):\n", grid)
print("merged tokens by hand (4 tokens x 4C):\n", merged_hand[0])
assert np.array_equal(merged_hand, merge_tokens(x_tok, 4))
print("equal to mst_ref.nn.merging.merge_tokens: max difference",
      np.abs(merged_hand - merge_tokens(x_tok, 4)).max())

# %% [markdown]
# Now the whole layer, in SNN mode, on a spike train over a 4 x 4 grid with C = 2. The library's
# `patch_merging` takes a state dict and a `Mode`, the object that decides what an activation
# site means (QCFS in the ANN, IF neurons in the SNN: see `mst_ref/modes.py`). We build the five
# arrays it needs and compare it with the hand-written chain; then we check that the part before
# the site commutes with the time average.

# %%
T, C = 6, 2
rng = np.random.default_rng(2)
spikes_in = if_neuron(np.tile(rng.uniform(0, 1, size=(1, 16, C)), (T, 1, 1, 1)), 1.0)  # (T, B, 16, C)
state = {"toy.norm.weight": rng.uniform(0.5, 1.5, 4 * C), "toy.norm.bias": rng.normal(0, 0.3, 4 * C),
         "toy.norm.running_mean": rng.normal(0, 0.2, 4 * C),
         "toy.norm.running_var": rng.uniform(0.5, 2, 4 * C),
         "toy.reduction.weight": rng.normal(0, 1 / np.sqrt(4 * C), (2 * C, 4 * C)),
         "toy.reduction_if.up": np.array([0.6])}
print("input spike counts over T = 6 (16 tokens x C):\n", spike_counts(spikes_in)[0].T)
bn_args = [state[f"toy.norm.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def merging_pre_site(x):
    """gather -> BN -> linear: (..., 16, C) -> (..., 4, 2C), everything before the site."""
    m = merge_tokens(x, 4)  # (..., 4, 4C)
    return batch_norm(m, *bn_args) @ state["toy.reduction.weight"].T  # (..., 4, 2C)


current = merging_pre_site(spikes_in)  # (T, B, 4, 2C)
out_hand = if_neuron(current, 0.6)  # (T, B, 4, 2C)
out_lib = patch_merging(spikes_in, state, "toy", 4, Mode(spiking=True, steps=T))  # (T, B, 4, 2C)
print("output spike counts over T = 6 (4 tokens x 2C):\n", spike_counts(out_lib)[0])
err = np.abs(out_hand - out_lib).max()
print(f"max |by hand - mst_ref.nn.merging.patch_merging| = {err}")
assert err == 0.0
gap = np.abs(current.mean(axis=0) - merging_pre_site(spikes_in.mean(axis=0))).max()
print(f"max |mean_t pre-site(x_t) - pre-site(mean x)| = {gap:.1e}: merging commutes with the time average")
assert gap < 1e-12

# %% [markdown]
# ## 4. Two ways to run the same SNN
#
# A converted network can be simulated in two orders:
#
# * **layer by layer** (multi-step): each layer takes its whole input train (T, B, C) at once,
#   one matrix product for all T steps, then the IF scan along t. Few, large NumPy calls: fast.
# * **step by step**: for t = 1..T, the step's input goes through every layer, each layer keeping
#   its membrane potentials between steps. This is how neuromorphic hardware runs.
#
# They compute the same numbers because a linear layer treats each step separately and the IF
# neuron is *causal* (its output at t depends only on inputs up to t): nothing a layer does at t
# needs anything from a later step. Both by hand, on a random stack of three layers:


# %%
def multistep_by_hand(layers, x_seq):
    h = x_seq  # (T, B, C_in)
    for layer in layers:
        h = if_neuron(h @ layer.weight.T + layer.bias, layer.threshold)  # (T, B, C_out): all steps at once
    return h


def stepwise_by_hand(layers, x_seq):
    v = [np.full((x_seq.shape[1], layer.weight.shape[0]), layer.threshold / 2) for layer in layers]
    outputs = []
    for t in range(x_seq.shape[0]):
        h = x_seq[t]  # (B, C_in): one step
        for layer, v_l in zip(layers, v):
            v_l += h @ layer.weight.T + layer.bias  # v <- v + x_t   (v_l updated in place)
            s = v_l >= layer.threshold  # s = [v >= lambda]
            v_l -= s * layer.threshold  # v <- v - s lambda
            h = s * layer.threshold  # (B, C_out)
        outputs.append(h)
    return np.stack(outputs)  # (T, B, C_out)


layers = random_stack(np.random.default_rng(5), [6, 8, 8, 3], threshold=0.8)
x_seq = np.random.default_rng(2).uniform(-0.5, 1.5, size=(16, 2, 6))  # (T, B, C_in), not even constant
multi, step = multistep_by_hand(layers, x_seq), stepwise_by_hand(layers, x_seq)
print("output spike counts, layer by layer:\n", spike_counts(multi))
print("output spike counts, step by step:\n", spike_counts(step))
print("last layer's spikes of image 0 (rows = neurons, columns = steps):\n", (multi[:, 0].T > 0).astype(int))
errors = {"step vs layer (by hand)": np.abs(multi - step).max(),
          "hand vs run_stack_multistep": np.abs(multi - run_stack_multistep(layers, x_seq)).max(),
          "hand vs run_stack_stepwise": np.abs(step - run_stack_stepwise(layers, x_seq)).max()}
for name, e in errors.items():
    print(f"max |{name}| = {e}")
assert all(e == 0.0 for e in errors.values())

# %% [markdown]
# The same holds for the whole MST. `MST.snn_forward` runs its layers multi-step over chunks of
# time (`chunk` steps per pass, the membranes carried between chunks); chunk = 1 is the
# step-by-step simulator. A tiny random MST, three ways, must agree bit for bit:

# %%
cfg = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=4, embed_dim=8, depths=(2, 1),
                num_heads=(2, 2), window_size=2)
model = MST.random(cfg, np.random.default_rng(0), dtype=np.float64)
images = np.random.default_rng(3).standard_normal((2, 1, 8, 8))  # (B, Cin, H, W)
T = 12
runs = {"layer by layer (chunk = T)": model.snn_forward(images, T, chunk=T).cumulative_logits,
        "chunks of 5": model.snn_forward(images, T, chunk=5).cumulative_logits,
        "step by step (chunk = 1)": model.step_simulator(images).run(T, chunk=1).cumulative_logits}
print(f"cumulative logits of image 0 after T = {T} steps:")
for name, logits in runs.items():
    print(f"  {name:<28}", logits[-1, 0])
base = runs["layer by layer (chunk = T)"]
for name, logits in runs.items():
    assert np.array_equal(logits, base), name
print("all three equal (max difference 0.0)")

# %% [markdown]
# ## 5. Error against T, layer by layer
#
# Feed a constant input to a stack of four IF layers and compare each layer's mean output after T
# steps with the ANN in which every IF neuron is replaced by clip(x, 0, lambda) (the function the
# neurons' rates tend to; `run_stack_ann(..., activation="clip")`). We follow the worst neuron of
# each layer, the quantity tutorial 01 bounded.
#
# * **Layer 1** sees a constant current: its error is pure quantization, at most lambda/(2T)
#   (tutorial 01), and the worst neuron reaches the bound.
# * **Deeper layers** see weighted sums of spikes, which fluctuate and can be negative:
#   unevenness. The bound no longer holds, and the errors of earlier layers add to their own. The
#   error still falls like 1/T, a few times larger, and the reason is worth stating exactly. An IF
#   neuron's membrane after t steps is v_t = v_0 + X_t - lambda n_t, with X_t the running sum of its
#   input and n_t its spike count. A fluctuating input does not keep the membrane bounded in
#   general: a mean input m below 0 drifts it down without bound (the neuron falls silent), one
#   above lambda drifts it up (the neuron fires every step). What holds is: **if the input's running
#   sum is X_t = t m + O(1), then n_t = t clip(m, 0, lambda) / lambda + O(1)**, so the mean output
#   is clip(m, 0, lambda) + O(1/t). Here every upstream train comes from a deterministic IF neuron
#   whose running sum is t x (its rate) + O(1), so each layer's weighted running sum is again
#   t m + O(1), and the 1/T rate carries down the stack (with a constant that grows with depth).
# * **Independent fluctuations break the 1/T rate.** If the input changes randomly from step to step
#   (fresh random spike masks at every step, tutorial 05), its running sum deviates from t m like a
#   random walk, by about sqrt(t), and the mean output's error falls only like 1/sqrt(T). Section 6
#   measures both rates.
#
# One multi-step run of T = 1024 steps gives every shorter T too: the mean output after t steps is
# the running sum divided by t. The plot shows log10 of the largest absolute error.

# %%
lam = 1.0
layers = random_stack(np.random.default_rng(4), [16, 32, 32, 32, 10], threshold=lam)
x = np.random.default_rng(5).uniform(0, lam, size=(64, 16))  # (B, C_in) constant inputs
T_max = 1024
Ts = 2 ** np.arange(11)  # 1, 2, 4, ..., 1024
h, h_ann = np.broadcast_to(x, (T_max, *x.shape)), x  # (T, B, C_in), (B, C_in)
errors = {}
for k, layer in enumerate(layers, start=1):
    h = if_neuron(layer.linear(h), lam)  # (T, B, C_k) this layer's spikes
    h_ann = clip_activation(layer.linear(h_ann), lam)  # (B, C_k) the clip-ANN
    mean_t = np.cumsum(h, axis=0) / np.arange(1, T_max + 1)[:, None, None]  # (T, B, C_k) mean after t steps
    errors[f"layer {k}"] = np.array([np.abs(mean_t[t - 1] - h_ann).max() for t in Ts])  # (11,)
assert np.array_equal(h_ann, run_stack_ann(layers, x, activation="clip"))  # the same ANN as mst_ref.engine.stack
assert np.array_equal(h[:16], run_stack_multistep(layers, np.broadcast_to(x, (16, *x.shape))))
bound = lam / (2 * Ts)  # (11,)
print("max |SNN mean output - clip ANN| per layer, and the same times 2T / lambda (in units of the bound)")
header = "".join(f"{name:>9}" for name in errors)
print("     T " + header + "  lambda/2T" + header)
for i, t in enumerate(Ts):
    print(f"{t:6d} " + "".join(f"{e[i]:9.5f}" for e in errors.values()) + f"  {bound[i]:9.5f}"
          + "".join(f"{e[i] / bound[i]:9.2f}" for e in errors.values()))
assert np.all(errors["layer 1"] <= bound + 1e-12)  # layer 1: constant input, within lambda/(2T) ...
assert errors["layer 1"][-1] > 0.99 * bound[-1]  # ... and the bound is reached
last = errors["layer 4"]
assert last[-1] < last[6] < last[2] < last[0]  # T = 1024 < T = 64 < T = 4 < T = 1: it shrinks
assert np.all(last[3:] > bound[3:])  # deeper layers: beyond one neuron's bound (unevenness) ...
assert np.all(last / bound < 6)  # ... but still ~1/T, a few times the bound
assert all(e[-1] < 3e-3 for e in errors.values())

# the bound is dashed and drawn last, so it stays visible where layer 1 lies exactly on it
series = {name: np.log10(e) for name, e in errors.items()}
series["lambda/(2T) (one neuron's bound)"] = np.log10(bound)
png = plots.line_chart_png(OUT / "02_error_vs_T.png", Ts, series,
                           "IF stack: max |SNN mean output - clip ANN| per layer vs T",
                           "time steps T (log scale)", "log10 of the max absolute error (units of lambda = 1)",
                           logx=True, dashed={"lambda/(2T) (one neuron's bound)"})
print("wrote", png)

# %% [markdown]
# ## 6. Deterministic trains give 1/T, random masks give 1/sqrt(T)
#
# Take layer 1's spike trains from section 5 and feed layer 2 with them twice: as they are, and after
# Random Spike Masking with p = 0.5 and the unbiased rescale (`rsm(..., rescale=True)`: each spike is
# kept with probability 1/2 and doubled, so the expected input is unchanged, tutorial 05 section 3),
# with a fresh mask at every step. The reference is the same in both cases, the clip ANN's layer 2.
# We measure the root-mean-square error over all 64 x 32 neurons (the RMS averages the noise; the
# maximum of section 5 follows one unlucky neuron), and fit the slope of log(error) against log(T)
# for T >= 16.

# %%
h1 = if_neuron(layers[0].linear(np.broadcast_to(x, (T_max, *x.shape))), lam)  # (T, B, 32) layer 1's spikes
a2 = clip_activation(layers[1].linear(clip_activation(layers[0].linear(x), lam)), lam)  # (B, 32) clip ANN
inputs = {"deterministic trains": h1,
          "RSM p = 0.5, rescaled": rsm(h1, 0.5, np.random.default_rng(7), rescale=True)}  # (T, B, 32) each
rms, slopes = {}, {}
for name, spikes_in in inputs.items():
    h2 = if_neuron(layers[1].linear(spikes_in), lam)  # (T, B, 32) layer 2's spikes
    mean_t = np.cumsum(h2, axis=0) / np.arange(1, T_max + 1)[:, None, None]  # (T, B, 32)
    rms[name] = np.array([np.sqrt(np.mean((mean_t[t - 1] - a2) ** 2)) for t in Ts])  # (11,)
    # error ~ c T^slope: slope -1 for 1/T, -1/2 for 1/sqrt(T)
    slopes[name] = np.polyfit(np.log(Ts[4:]), np.log(rms[name][4:]), 1)[0]
print("RMS |layer-2 mean output - clip ANN|, times T and times sqrt(T):")
for name, e in rms.items():
    print(f"  {name}: slope {slopes[name]:+.2f}")
    for i in (4, 6, 8, 10):
        print(f"    T = {Ts[i]:4d}: {e[i]:.5f}   x T = {e[i] * Ts[i]:7.3f}   x sqrt(T) = {e[i] * np.sqrt(Ts[i]):.3f}")
assert -1.1 < slopes["deterministic trains"] < -0.9  # 1/T
assert -0.65 < slopes["RSM p = 0.5, rescaled"] < -0.35  # 1/sqrt(T)
png = plots.line_chart_png(OUT / "02_rsm_error_vs_T.png", Ts, {n: np.log10(e) for n, e in rms.items()},
                           "Layer 2 of the IF stack: RMS error vs T, deterministic vs randomly masked input",
                           "time steps T (log scale)", "log10 of the RMS error (units of lambda = 1)", logx=True)
print("wrote", png)
print("tutorial 02 done")
