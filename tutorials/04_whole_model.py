# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 - The whole model: the trained ANN and its SNN twin on Fashion-MNIST
#
# Tutorials 01-03 built the pieces: QCFS and the IF neuron (01), converted layers (02) and spiking
# attention (03). Here we run the whole shipped
# model, `data/mst_fashion.pth` (a small MST trained with QCFS at L = 8: patch 2, embed 48,
# depths 2/2, heads 3/6, window 7, 42 activation sites), both ways:
#
# - the **ANN**: every site is QCFS, one pass per image;
# - the **SNN**: every site is an IF neuron with the same threshold lambda, the image is fed at every
#   one of T steps, and the class scores are read out from the head's outputs summed over time.
#
# We derive the read-out and check it by hand, measure accuracy against T, compare every site's
# firing rate with the ANN activation it replaces, draw spike rasters, and recompute one neuron's
# membrane potential by hand from the spikes that feed it.
#
# Sizes are kept small so that this runs in well under a minute on two cores: 64 test images,
# T up to 32, and 4 of those images for the per-site analysis. PNGs go to `$MST_TUTORIAL_OUT`
# (default `tutorial_out/` under the current folder).

# %%
import os
import time
from pathlib import Path

import numpy as np

import mst_ref  # installed by `pip install -e .` (README); tutorials never patch the path
from mst_ref import plots
from mst_ref.io import data
from mst_ref.io.checkpoint import load_state_dict
from mst_ref.nn.layers import batch_norm, bn_params, linear, patch_embed

np.set_printoptions(precision=4, suppress=True, linewidth=120, threshold=5000)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)
N_IMAGES = 64  # test images for accuracy vs T
N_DETAIL = 4  # of those, images whose every site is recorded
T_MAX = 32  # one SNN run of T_MAX steps gives the read-out after every t <= T_MAX
started = time.perf_counter()

# %% [markdown]
# ## 1. Model and data
#
# `load_checkpoint` reads the architecture off the tensor shapes. The lower-level
# `load_state_dict(path)` returns a pair `(state, meta)`: `state` maps each tensor's name to a NumPy
# array, `meta` holds what else the file says, and `meta["config"]` (the training configuration
# saved beside the weights) records how the training images were normalised:
# x_hat = (x/255 - 0.2860) / 0.3530. (Appendix tutorial 10 reads checkpoints in detail.)

# %%
PTH = data.shipped_file("mst_fashion.pth")
model = mst_ref.load_checkpoint(PTH)
config = load_state_dict(PTH)[1]["config"]
print(model.config)
print("normalisation: mean", config["mean"], "std", config["std"])
assert model.config.qcfs_levels == config["qcfs_levels"] == 8 and len(model.site_names) == 42
assert config["mean"] == [0.286] and config["std"] == [0.353]

dataset = data.load_dataset(data.sample_path())
images, labels = [], []
for x, y in data.iterate_batches(dataset, 32, model.config.img_size, model.config.in_chans,
                                 config["mean"], config["std"], limit=N_IMAGES):
    images.append(x)
    labels.append(y)
images, labels = np.concatenate(images), np.concatenate(labels)  # (64, 1, 28, 28), (64,)
print(f"{len(images)} images {images.shape} {images.dtype}; labels {labels[:16]} ...")
print("pixel range after normalisation:", images.min(), images.max())
assert images.shape == (N_IMAGES, 1, 28, 28) and images.dtype == np.float32
# the darkest pixel (0) maps to -0.286 / 0.353
assert np.isclose(images.min(), -0.286 / 0.353) and np.isclose(images.max(), (1 - 0.286) / 0.353)
plots.image_png(OUT / "04_image0.png", dataset.images[0, :, :, 0],
                f"test image 0: {dataset.classes[labels[0]]}", scale=8)

# %% [markdown]
# ## 2. The ANN

# %%
ann_logits = model.ann_forward(images)  # (64, 10)
ann_pred = ann_logits.argmax(axis=1)  # (64,)
ann_acc = float(np.mean(ann_pred == labels))
print(f"ANN (QCFS, L = 8) accuracy on {N_IMAGES} images: {ann_acc:.4f}")
assert ann_acc >= 0.85  # 92.3 % on the whole 1000-image sample

# %% [markdown]
# ## 3. The SNN and its read-out
#
# At step t the network computes, from that step's spikes, a head output
#
#     z_t = W_head . mean_over_tokens( LayerNorm(x_t) ) + b_head        (K = 10 numbers)
#
# where x_t, shape (B, N, C), is the residual stream entering the head at step t (the sum of the
# block outputs computed from step t's spikes) and K = 10 is the number of classes.
#
# A single step is a very coarse picture (every neuron has fired at most once), so the published
# code (`snn_validate`) accumulates:
#
#     Z_t = z_1 + z_2 + ... + z_t,          prediction_t = argmax_k Z_t[k]
#
# Since Z_t / t is the *mean* head output, which estimates the ANN's logits (each neuron's
# rate x lambda tends, as T grows, to clip(x, 0, lambda) of its mean input x, which the QCFS
# activation approximates within lambda / (2L)), and dividing by t > 0 does not move the argmax,
# the prediction is that of the mean. The head is affine, so the mean of the z_t is the head
# applied to the mean of LayerNorm(x_t); but LayerNorm is not affine, so that is not LayerNorm of the
# mean (one reason, section 4, why the match is not exact). `SNNResult` keeps both `step_logits`
# (z_t) and `cumulative_logits` (Z_t), shape (T, B, K).
#
# We run the first 4 images recording every site (for sections 5-7), the other 60 without
# recording; one run of 32 steps gives the read-out after every t <= 32.

# %%
detail = model.snn_forward(images[:N_DETAIL], T_MAX, record="all")
rest = model.snn_forward(images[N_DETAIL:], T_MAX)
step_logits = np.concatenate([detail.step_logits, rest.step_logits], axis=1)  # (32, 64, 10)
cumulative = np.concatenate([detail.cumulative_logits, rest.cumulative_logits], axis=1)  # (32, 64, 10)
print("z_t of image 0, steps 1..6 (rows):\n", step_logits[:6, 0])
print("Z_t of image 0, steps 1..6 (rows):\n", cumulative[:6, 0])

# the read-out by hand: Z_t = Z_{t-1} + z_t, added in time order as the library does
Z = np.zeros_like(step_logits[0])  # (64, 10)
by_hand = np.empty_like(step_logits)  # (32, 64, 10)
for t in range(T_MAX):
    Z = Z + step_logits[t]
    by_hand[t] = Z
err = np.abs(by_hand - cumulative).max()
print(f"max |hand-summed Z_t - cumulative_logits| = {err}")
assert np.array_equal(by_hand, cumulative)
assert np.array_equal(np.cumsum(step_logits, axis=0), cumulative)  # numpy's cumsum adds in the same order
predictions = cumulative.argmax(axis=-1)  # (32, 64)
assert np.array_equal(predictions[:, :N_DETAIL], detail.predictions)
assert np.array_equal(predictions, (cumulative / np.arange(1, T_MAX + 1)[:, None, None]).argmax(-1))
print("predictions of image 0 after t = 1..32:", predictions[:, 0], " label:", labels[0])

# %% [markdown]
# ## 4. Accuracy against T
#
# `predictions[t-1]` is the SNN's answer if we stop after t steps.

# %%
snn_acc = (predictions == labels).mean(axis=1)  # (32,)
agree = (predictions == ann_pred).mean(axis=1)  # (32,)
for t in [1, 2, 4, 8, 16, 32]:
    print(f"T = {t:>2}: SNN accuracy {snn_acc[t - 1]:.4f}   agrees with the ANN on {agree[t - 1]:.4f}"
          f"   (ANN {ann_acc:.4f})")
steps = np.arange(1, T_MAX + 1)
clip_acc = float((model.ann_forward(images, quantize=False).argmax(1) == labels).mean())  # the SNN's limit
print(f"clip ANN (QCFS replaced by clip(x, 0, lambda), the limit of the IF rates): {clip_acc:.4f}")
plots.line_chart_png(OUT / "04_accuracy_vs_T.png", steps,
                     {"SNN (IF neurons)": 100 * snn_acc, "ANN (QCFS, L=8)": np.full(T_MAX, 100 * ann_acc),
                      "clip ANN": np.full(T_MAX, 100 * clip_acc)},
                     f"Accuracy vs T: shipped MST on {N_IMAGES} Fashion-MNIST test images", "time steps T (log scale)",
                     "accuracy (%)", logx=True, dashed={"ANN (QCFS, L=8)", "clip ANN"})
assert snn_acc[0] < snn_acc[7] and snn_acc[7] >= ann_acc - 0.08  # one step is not enough; T = 8 nearly is
assert snn_acc[-1] >= ann_acc - 0.08 and agree[-1] >= 0.85

# %% [markdown]
# At T = 1 every neuron has fired at most once (and the pre-charge lambda/2 lets a neuron fire at
# step 1 only if its input is at least lambda/2), so the first read-out is poor. By T = 8 the SNN
# is within a few points of the ANN, and by T = 32 it gives the ANN's answer on most images.
#
# Accuracy hides how close the *numbers* are. Which numbers should Z_t / t approach? Not the QCFS
# ANN's: an IF neuron's rate x lambda tends to clip(x, 0, lambda), never to QCFS's L-level staircase,
# so even a perfectly converging SNN would stay about lambda / (2L) per site away from the QCFS ANN.
# The limit to compare with is the **clip ANN**, the same weights with every QCFS replaced by
# clip(x, 0, lambda) (`ann_forward(..., quantize=False)`). The mean read-out against both:

# %%
ann4 = ann_logits[:N_DETAIL]  # (4, 10)
clip4 = model.ann_forward(images[:N_DETAIL], quantize=False)  # (4, 10) the clip ANN's logits
rel = [float(np.linalg.norm(detail.mean_logits[t - 1] - clip4) / np.linalg.norm(clip4)) for t in steps]
rel_qcfs = [float(np.linalg.norm(detail.mean_logits[t - 1] - ann4) / np.linalg.norm(ann4)) for t in steps]
for t in [1, 2, 4, 8, 16, 32]:
    print(f"T = {t:>2}: ||Z_t/t - clip-ANN logits|| / ||clip-ANN logits|| = {rel[t - 1]:.4f}   "
          f"(against the QCFS ANN: {rel_qcfs[t - 1]:.4f})")
print(f"QCFS ANN vs clip ANN themselves: {np.linalg.norm(ann4 - clip4) / np.linalg.norm(clip4):.4f}")
assert rel[-1] < rel[0] and rel[-1] > 0.1

# %% [markdown]
# The error falls but is still above 10 % of the clip ANN's logits at T = 32: the faithful SNN does
# not converge to its limit.
# Softmax, LayerNorm and the spike x spike products (q k^T, p v) act on *each step's* values, and
# f(mean) != mean(f) for a nonlinear f (docs/mst.md section 4). Tutorial 03 takes this apart and shows
# the remedy beyond the published code, `compensation="expectation"`, on this same model.

# %% [markdown]
# ## 5. Site by site: rate x lambda against the ANN activation
#
# An IF neuron's outputs are 0 or lambda, so its mean output over T steps is
# rate x lambda. That is the number that stands in for the QCFS activation at the same place in the
# ANN. With `record="all"` we have every site's spike trains `(T, B, ...)`; `ann_forward(record=...)`
# gives the ANN's activations `(B, ...)` in the same layout.
#
# **The first site, exactly.** `patch_embed.proj_if` receives the same input at every step
# (BN(conv(image)): the image is static), and for a constant input the IF neuron's mean output is
# exactly QCFS with L = T (tutorial 01). We recompute that input by hand:

# %%
ann_final, ann_records = model.ann_forward(images[:N_DETAIL], record="all")
s = model.state
x0 = patch_embed(images[:N_DETAIL], s["patch_embed.proj.weight"], s["patch_embed.proj.bias"])  # (4, 196, 48)
x0 = batch_norm(x0, *bn_params(s, "patch_embed.norm"))  # (4, 196, 48)
lam0 = s["patch_embed.proj_if.up"]
rate_lam0 = detail.records["patch_embed.proj_if"].mean(axis=0)  # (4, 196, 48)
err_T = np.abs(rate_lam0 - mst_ref.qcfs(x0, lam0, levels=T_MAX)).max()
err_8 = np.abs(rate_lam0 - ann_records["patch_embed.proj_if"]).max()
print(f"lambda = {lam0[0]:.4f}; input of token 0, channels 0-5: {x0[0, 0, :6]}")
print(f"max |rate x lambda - QCFS_L=32(x)| = {err_T:.2e}   (equal up to float rounding)")
# QCFS_L rounds clip(x, 0, lambda) to the nearest multiple of lambda / L: it is within lambda / (2L) of it
bound = lam0[0] / 16 + lam0[0] / 64  # lambda / (2 * 8) + lambda / (2 * 32)
print(f"max |rate x lambda - QCFS_L=8(x)|  = {err_8:.4f}   (the ANN's grid is coarser; bound "
      f"lambda/16 + lambda/64 = {bound:.4f})")
# the same ANN as section 2, on 4 images instead of 64: BLAS may add the products in another order for
# another batch size, so the logits agree to float32 rounding, not always bit for bit
assert np.abs(ann_final - ann_logits[:N_DETAIL]).max() < 1e-4
assert err_T < 1e-6 and err_8 <= bound + 1e-6

# %% [markdown]
# **All sites.** Deeper sites receive spike trains, not constants, and softmax / LayerNorm /
# products act per step, so the agreement degrades with depth. Per site we print the Pearson
# correlation and the relative error ||rate x lambda - a|| / ||a|| over the 4 images' neurons:

# %%
corr, relerr = [], []
print(f"{'site':<38} {'shape (T, B, ...)':<26} {'rate':>6} {'corr':>6} {'rel.err':>8}")
for name in model.site_names:
    a = ann_records[name]  # (4, ...)
    r = detail.records[name].mean(axis=0)  # (4, ...) rate x lambda
    assert r.shape == a.shape
    corr.append(float(np.corrcoef(a.ravel(), r.ravel())[0, 1]))
    relerr.append(float(np.linalg.norm(r - a) / np.linalg.norm(a)))
    print(f"{name:<38} {str(detail.records[name].shape):<26} {detail.firing_rates[name]:>6.3f} "
          f"{corr[-1]:>6.3f} {relerr[-1]:>8.3f}")
corr, relerr = np.array(corr), np.array(relerr)
print(f"correlation: min {corr.min():.3f}, mean {corr.mean():.3f}; relative error: first site {relerr[0]:.3f}, "
      f"mean of the first 11 sites {relerr[:11].mean():.3f}, of the last 11 {relerr[-11:].mean():.3f}")
plots.line_chart_png(OUT / "04_site_agreement.png", np.arange(len(corr)),
                     {"Pearson correlation": corr, "relative error ||r - a|| / ||a||": relerr},
                     f"SNN rate x lambda (T={T_MAX}) vs ANN activation a, per site, {N_DETAIL} images",
                     f"activation site index (forward order, 0..{len(corr) - 1})",
                     "correlation / relative error (fractions)")
assert corr.min() > 0.9 and relerr[-11:].mean() > relerr[:11].mean()

# %% [markdown]
# ## 6. Spike rasters
#
# A raster shows, for a few neurons, *when* they fire. At the first site the input is constant,
# so each neuron fires regularly, n = clip(floor(T x / lambda + 1/2), 0, T) times; deep in the
# network (`layers.1.blocks.1.mlp.fc1_if`) the input itself is a spike-driven signal and the
# trains are irregular. We pick 12 neurons of image 0 with rates spread from low to high.


# %%
def spread_neurons(train, count=12):
    """Indices of `count` neurons of a (T, n) train whose spike counts are spread across their range."""
    n_spikes = (train != 0).sum(axis=0)  # (n,)
    active = np.flatnonzero(n_spikes)
    order = active[np.argsort(n_spikes[active], kind="stable")]
    return order[np.linspace(0, len(order) - 1, count).round().astype(int)]


rasters = {}
for name in ["patch_embed.proj_if", "layers.1.blocks.1.mlp.fc1_if"]:
    train = detail.records[name][:, 0].reshape(T_MAX, -1)  # (32, neurons of image 0)
    chosen = spread_neurons(train)
    spikes = train[:, chosen] != 0  # (32, 12) bool
    rasters[name] = (chosen, spikes)
    print(f"{name}: neurons {chosen}")
    for i, row in enumerate(spikes.T):
        print(f"  {chosen[i]:>5} " + "".join("|" if b else "." for b in row) + f"  {row.sum():>2} spikes")
    file = OUT / f"04_raster_{name.replace('.', '_')}.png"
    plots.raster_png(file, spikes, f"Spikes at {name}, image 0: 12 neurons x {T_MAX} steps",
                     ylabel="neuron (fewest spikes at the top)")
    assert np.array_equal(spikes.sum(axis=0), (detail.records[name][:, 0].reshape(T_MAX, -1) != 0).sum(0)[chosen])

# the first site: spike counts are QCFS at L = T of the constant input
chosen, spikes = rasters["patch_embed.proj_if"]
n_expected = np.clip(np.floor(T_MAX * x0[0].ravel()[chosen] / lam0[0] + 0.5), 0, T_MAX)
print("first site: counts", spikes.sum(axis=0), " clip(floor(T x / lambda + 1/2), 0, T):", n_expected)
assert np.array_equal(spikes.sum(axis=0), n_expected)

# %% [markdown]
# ## 7. One neuron's membrane, by hand
#
# Take `layers.0.blocks.0.mlp.fc1_if`. Its input current is fc1 applied to the spikes of
# `shortcut2_if`, which we recorded:  I_t = s_t W_fc1^T + b_fc1. Then the IF recurrence of
# tutorial 01, from the pre-charge v_0 = lambda / 2:
#
#     v <- v + I_t ;  s_t = [v >= lambda] ;  v <- v - s_t lambda
#
# Summing the recurrence over t gives an exact identity worth checking too:
# v_T = v_0 + sum_t I_t - n lambda, so  rate x lambda = n lambda / T = mean(I) + (v_0 - v_T) / T.

# %%
site, source = "layers.0.blocks.0.mlp.fc1_if", "layers.0.blocks.0.shortcut2_if"
lam = float(s[site + ".up"][0])
current = linear(detail.records[source], s["layers.0.blocks.0.mlp.fc1.weight"],
                 s["layers.0.blocks.0.mlp.fc1.bias"])  # (32, 4, 196, 192)
spikes_lib = detail.records[site]  # (32, 4, 196, 192), 0 or lambda
assert np.array_equal(mst_ref.if_neuron(current, lam), spikes_lib)  # the whole site, from the recorded input

counts = (spikes_lib[:, 0] != 0).sum(axis=0)  # (196, 192) spikes of image 0's neurons
token, channel = np.argwhere(counts == np.sort(counts.ravel())[-len(counts.ravel()) // 20])[0]
I = current[:, 0, token, channel]  # (32,)
v = np.float32(lam / 2)
rows = []
for t in range(T_MAX):
    v = v + I[t]  # v <- v + I_t
    v_peak = v
    spike = v >= np.float32(lam)  # s_t = [v >= lambda]
    v = v - spike * np.float32(lam)  # v <- v - s_t lambda
    rows.append((t + 1, I[t], v_peak, spike, v))
table = np.array(rows, dtype=np.float64)  # (32, 5): t, I_t, v before reset, s_t, v after reset
print(f"neuron (token {token}, channel {channel}) of {site}, lambda = {lam:.4f}")
print("     t        I_t   v(before)   s_t   v(after)")
print(table)
s_hand = table[:, 3].astype(bool)
s_lib = spikes_lib[:, 0, token, channel] != 0
n = int(s_hand.sum())
identity = float(I.astype(np.float64).mean() + (lam / 2 - table[-1, 4]) / T_MAX)
print(f"hand-written spikes == library spikes: {np.array_equal(s_hand, s_lib)}; {n} spikes, "
      f"rate x lambda = {n * lam / T_MAX:.5f}, mean(I) + (v_0 - v_T)/T = {identity:.5f}, "
      f"ANN activation {ann_records[site][0, token, channel]:.5f}")
assert np.array_equal(s_hand, s_lib) and 0 < n < T_MAX
assert abs(n * lam / T_MAX - identity) < 1e-5

# three neurons of the same site, by hand, for the picture: v before the reset
others = np.argwhere((counts > 2) & (counts < 12))[:2]  # two slower neurons
picks = [(int(token), int(channel))] + [(int(tk), int(ch)) for tk, ch in others]
traces = np.empty((T_MAX, len(picks)), dtype=np.float32)
for j, (tk, ch) in enumerate(picks):
    v = np.float32(lam / 2)
    for t in range(T_MAX):
        v = v + current[t, 0, tk, ch]
        traces[t, j] = v
        v = v - (v >= np.float32(lam)) * np.float32(lam)
crossings = (traces >= lam).sum(axis=0)
print("neurons", picks, "crossings of lambda:", crossings, " library spike counts:",
      [int(counts[tk, ch]) for tk, ch in picks])
assert crossings.tolist() == [int(counts[tk, ch]) for tk, ch in picks]
# the model records the same quantity itself: "<site>.membrane" (v after the input, before the reset)
v_model = model.snn_forward(images[:1], T_MAX, record=f"{site}.membrane").records[f"{site}.membrane"][:, 0]
traces_model = np.stack([v_model[:, tk, ch] for tk, ch in picks], axis=1)  # (32, 3)
print(f"max |hand-written v - recorded v| = {np.abs(traces - traces_model).max():.2e}")
assert np.allclose(traces, traces_model, atol=1e-4)
plots.traces_png(OUT / "04_membrane.png", traces, lam,
                 f"Membrane potential of 3 IF neurons at {site}, image 0",
                 labels=[f"token {tk}, channel {ch}" for tk, ch in picks],
                 ylabel="v after the input, before the reset")

# %%
pngs = sorted(p.name for p in OUT.glob("04_*.png"))
print("wrote", pngs, "to", OUT.resolve())
assert len(pngs) == 6
print(f"tutorial 04 done in {time.perf_counter() - started:.1f} s")
