# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 - The poster's masking table: why masking costs the CNNs and not MST
#
# The MST poster's Random Spike Masking table: dropping 75% of the spikes costs the QCFS-converted
# ResNet-18 and VGG-16 14-16 points of accuracy, and MST nothing, while cutting MST's "power" to
# x0.74. This tutorial rebuilds that comparison on Fashion-MNIST with the six models shipped in
# `data/` (each family trained without masking and with p = 0.75) and looks at why it comes out
# the way it does. It continues tutorial 05 (RSM at the sites of MST) with two more model families.
#
# **The QCFS CNNs.** ResNet-18 and VGG-16 are the convolutional baselines of the QCFS paper (Bu et al.,
# "Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency spiking neural networks", ICLR
# 2022), which the MST paper also compares against: every ReLU is a QCFS activation with its own
# learned lambda (tutorial 01), every site becomes an IF neuron in the SNN, and a spike entering a
# convolution costs one accumulate per weight it reaches (section 2). docs/qcfs_cnn.md describes their
# layout and checkpoint format; the shipped ones are small (widths 8 to 64) and trained on
# Fashion-MNIST padded to 32 x 32.
#
# 1. masking at a CNN site by hand: spikes fired, spikes delivered;
# 2. what one spike costs in a convolution, by hand, borders included;
# 3. the table itself, on a few sample images: accuracy, fired, delivered, SOPs and energy vs p;
# 4. where the work is: which share of each model's SOPs the masked sites feed;
# 5. where the models look as p grows: the spike density of a late layer at one time step;
# 6. which CNN spikes the poster masked: f, the share of the SOPs behind the masked sites, by hand, and
#    the configuration whose predicted energy ratio comes closest to the poster's.
#
# `mst-ref rsm-table` and `mst-ref rsm-regions` run the same code on as many images as you like;
# docs/masking_table.md's table comes from them. Sizes here are small (24 images, T = 16, one mask seed) so that
# the file runs in well under a minute on two cores. PNGs go to `$MST_TUTORIAL_OUT` (default
# `tutorial_out/`).

# %%
import os
import time
from pathlib import Path

import numpy as np

import mst_ref  # installed by `pip install -e .` (README); tutorials never patch the path
from mst_ref import plots
from mst_ref.io import data
from mst_ref.engine import energy
from mst_ref.cli.table import map_correlation, region_site, spike_density
from mst_ref.nn.conv import conv2d, conv_fan_out_map
from mst_ref.engine.masking import rsm
from mst_ref.analysis.rsm_table import RowSpec, measure_ratios, table_rows

np.set_printoptions(precision=4, suppress=True, linewidth=110)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)
started = time.perf_counter()

# %% [markdown]
# ## 1. Masking at a CNN site, by hand
#
# RSM multiplies a site's output spikes by a fresh Bernoulli(1 - p) mask at every step,
# $\mathrm{rsm}(s) = s \cdot [u > p]$. The neurons fire as before (the mask acts on their output,
# not their membrane); the layer after the site receives fewer spikes. So there are two counts:
# spikes **fired** by the neurons and spikes **delivered** to the next layer. A toy spike map of a
# convolutional site, T = 3 steps of one image, 4 x 4 positions, 2 channels:

# %%
rng = np.random.default_rng(0)
lam = 1.5
spikes = lam * (rng.random((3, 1, 4, 4, 2)) < 0.4)  # (T, B, H, W, C): 0 or lambda
masked = rsm(spikes, 0.75, np.random.default_rng(1))
u = np.random.default_rng(1).random(spikes.shape)  # the same uniforms, drawn by hand
assert np.array_equal(masked, spikes * (u > 0.75))
fired, delivered = np.count_nonzero(spikes), np.count_nonzero(masked)
print("channel 0 at step 1, fired:\n", spikes[0, 0, :, :, 0], "\ndelivered:\n", masked[0, 0, :, :, 0])
print(f"fired {fired}, delivered {delivered} ({delivered / fired:.2f} of them; 1 - p = 0.25 expected)")
assert delivered <= fired

# %% [markdown]
# ## 2. What a spike costs in a convolution
#
# A spike at input position (i, j) of a 3 x 3 convolution (padding 1, stride 1) with C_out output
# channels is added into every output whose window covers (i, j): C_out x (number of windows) synapses,
# one accumulate (SOP) each. In the interior that is 9 C_out; on an edge 6 C_out, in a corner 4 C_out,
# since the taps that fall on the zero padding are not synapses. Along one axis of a 4-pixel row the
# windows covering each position are:

# %%
a_hand = np.array([2, 3, 3, 2])  # row 0 is covered by the windows centred at rows 0 and 1, ...
a_lib = conv_fan_out_map(4, 3, 1, 1)
print("windows covering each row:", a_lib)
assert np.array_equal(a_hand, a_lib)
c_out = 5
fan = c_out * np.outer(a_lib, a_lib)  # (4, 4) synapses per spike at each position
print("synapses reached by one spike at each position (C_out = 5):\n", fan)
# the same count from the convolution itself: with all-ones weights, the sum of the outputs is the
# number of (spike, synapse) pairs
ones_out = conv2d(spikes[0] != 0, np.ones((c_out, 2, 3, 3)), None, 1, 1)
sops_hand = int(((spikes[0] != 0).sum(axis=(0, 3)) * fan).sum())
print(f"SOPs of step 1 through the fan-out map: {sops_hand}; sum of an all-ones convolution: {ones_out.sum():.0f}")
assert sops_hand == int(ones_out.sum())

# %% [markdown]
# The library builds this map for every site of ResNet-18 and VGG-16 (pooling folded into the next
# layer, the identity shortcut as one add) and weighs each step's spikes with it
# (`mst_ref/models/cnn_energy.py`). The mean over positions is a little below 9 C_out:

# %%
resnet = mst_ref.load_checkpoint(data.shipped_file("resnet18_fashion.pth"))
fan_lib = energy.fan_outs(resnet.config)
site = "conv2_x.0.residual_function.2"
print(f"{site}: mean fan-out {fan_lib[site]:.2f} synapses per spike; interior 9 x C_out = "
      f"{9 * resnet.config.widths[1]}")
assert fan_lib[site] < 9 * resnet.config.widths[1]

# %% [markdown]
# ## 3. The table
#
# Six models: MST, ResNet-18 and VGG-16, each trained without masking (masked only here, at
# evaluation) and trained with p = 0.75. MST is masked at the paper's sites (`mask_sites="paper"`: q, k,
# attention scores and the MLP input `shortcut2_if`), and its masked model is
# `mst_fashion_rsm75_paper.pth`, fine-tuned with p = 0.75 at those sites from `mst_fashion_rsm75.pth`
# (tutorial 05's model, trained at the published sites q, k, scores). The CNNs are masked at every site,
# since every site feeds a convolution or a linear layer; `vgg16_fashion_rsm75.pth` was trained with the
# rescaled mask (kept spikes divided by 1 - p, tutorial 05 section 3) and is run that way, the ResNet
# without rescaling (`model.trained_mask_rescale` says which).
#
# Two functions of `mst_ref.analysis.rsm_table` do the bookkeeping: a `RowSpec` names one model of the
# table (label, model, the p it was trained with, its masked sites, whether it rescales), and
# `measure_ratios(spec, batches, T, ratios, seeds)` runs its SNN at each p on the same images (one SNN
# run per p and mask seed) and returns the counts that `table_rows` turns into the rows below.
# Each row is one SNN run of T = 16 steps on the same 24 sample images; fired and delivered are
# spikes per image, SOPs and energy per image, and every "x" column is the ratio against p = 0 of
# the same model.

# %%
MODELS = [("mst_fashion.pth", "MST", 0.0, "paper"), ("mst_fashion_rsm75_paper.pth", "MST", 0.75, "paper"),
          ("resnet18_fashion.pth", "ResNet-18", 0.0, "all"), ("resnet18_fashion_rsm75.pth", "ResNet-18", 0.75, "all"),
          ("vgg16_fashion.pth", "VGG-16", 0.0, "all"), ("vgg16_fashion_rsm75.pth", "VGG-16", 0.75, "all")]
N, T, RATIOS = 24, 16, (0.0, 0.5, 0.75)
sample = data.load_dataset(data.sample_path())
rows, loaded = [], {}
for name, label, trained, sites in MODELS:
    path = data.shipped_file(name)
    model = mst_ref.load_checkpoint(path)
    config = mst_ref.io.checkpoint.load_state_dict(path)[1]["config"]
    pad = int(config.get("pad", 0))
    images = np.pad(sample.images[:N], ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # CNNs: 28 -> 32 pixels
    x = data.prepare_images(images, model.config.img_size, 1, config["mean"], config["std"])
    spec = RowSpec(label, model, trained, sites, model.trained_mask_rescale)
    loaded[name] = (model, x, spec, config)
    stats = measure_ratios(spec, lambda: [(x, sample.labels[:N])], T, RATIOS, seeds=1)
    rows += table_rows(spec, stats)
print(f"{'model':<10} {'trained':>7} {'p':>5} {'acc %':>6} {'fired x':>8} {'delivered x':>11} {'SOPs x':>7} {'energy x':>8}")
for r in rows:
    print(f"{r['model']:<10} {r['trained_ratio']:>7g} {r['ratio']:>5g} {r['accuracy']:>6.1f} {r['fired_ratio']:>8.3f} "
          f"{r['delivered_ratio']:>11.3f} {r['sops_ratio']:>7.3f} {r['energy_ratio']:>8.3f}")
for r in rows:
    assert r["delivered"] <= r["fired"] + 1e-9 and (r["ratio"] > 0 or r["sops_ratio"] == 1.0)
by = {(r["model"], r["trained_ratio"], r["ratio"]): r for r in rows}
# the poster's contrast, here far stronger: a CNN not trained for masking collapses when every site is masked,
# while the MST trained with p = 0.75 keeps most of its accuracy at p = 0.75
assert by["ResNet-18", 0.0, 0.5]["accuracy"] < by["ResNet-18", 0.0, 0.0]["accuracy"] - 40
assert by["VGG-16", 0.0, 0.5]["accuracy"] < by["VGG-16", 0.0, 0.0]["accuracy"] - 40
assert by["MST", 0.75, 0.75]["accuracy"] > by["ResNet-18", 0.0, 0.75]["accuracy"] + 40
# masking fires fewer spikes downstream too, not only delivers fewer
assert by["MST", 0.75, 0.75]["fired_ratio"] < 1 and by["ResNet-18", 0.0, 0.75]["fired_ratio"] < 1

# %% [markdown]
# The accuracy and energy against p, one line per model:

# %%
acc = {f"{m} trained p={t:g}": [by[m, t, p]["accuracy"] for p in RATIOS] for m in ("MST", "ResNet-18", "VGG-16")
       for t in (0.0, 0.75)}
plots.line_chart_png(OUT / "06_accuracy_vs_p.png", RATIOS, acc,
                     f"SNN accuracy vs masking ratio p ({N} sample images, T = {T})",
                     "masking ratio p (fraction of spikes dropped)", "accuracy (%)")
energy_x = {k.replace("trained", "tr."): [by[k.split(" trained")[0], float(k.split("p=")[1]), p]["energy_ratio"]
                                          for p in RATIOS] for k in acc}
plots.line_chart_png(OUT / "06_energy_vs_p.png", RATIOS, energy_x,
                     f"SNN energy per image vs p, relative to p = 0 of the same model (T = {T})",
                     "masking ratio p (fraction of spikes dropped)", "energy / energy at p = 0")

# %% [markdown]
# ## 4. Where the work is
#
# A mask saves the SOPs of the layers its spikes feed, and only those. In a CNN every site is
# masked, so every SOP is exposed to masking - and so is every layer's input, which is why a
# CNN that was not trained for it falls apart. In MST the masked sites feed q k^T (q, k), the
# scores' bias add (the scores) and fc1 (the MLP input); the qkv, proj and fc2 inputs, v and the
# residual stream are never masked.
#
# **The work behind the masked sites** is defined as in tutorial 05: the masked sites' own spikes times
# their fan-out, plus the q k^T spike pairs of every block whose q or k is masked. The p v products are
# not part of it: p (the softmax output) is dense and v is never masked, so a mask at q, k or the
# scores cannot lower p v's count of accumulates (N per v spike). The share of each model's SOPs
# (at p = 0) behind the masked sites, with p v's share printed beside it:

# %%
for name in ("mst_fashion_rsm75_paper.pth", "resnet18_fashion_rsm75.pth"):
    model, x, spec, config = loaded[name]
    res = model.snn_forward(x, T)
    masked_sites = set(model.masker(0.75, np.random.default_rng(0), spec.mask_sites).ratios)
    by_site = res.sops_by_site
    qk_blocks = {k.rsplit(".attn.", 1)[0] for k in masked_sites if k.endswith(("attn.q_if", "attn.k_if"))}
    # work behind the masked sites = sum over masked sites of spikes x fan-out + q k^T pairs of those blocks
    fed = sum(by_site[k] for k in masked_sites) + sum(by_site[f"{b}.attn.qk"] for b in qk_blocks)
    total = sum(by_site.values())
    share, pv_share = fed / total, sum(v for k, v in by_site.items() if k.endswith("attn.pv")) / total
    print(f"{spec.label}: {len(masked_sites)} of {len(model.site_names)} sites masked; the work behind them is "
          f"{100 * share:.1f}% of the SOPs (p v, not behind them: {100 * pv_share:.1f}%)")
    if spec.label != "MST":
        assert share == 1.0
    else:
        mst_share = share
assert 0.2 < mst_share < 0.6  # MST: a minority of the work can be removed by masking at the paper's sites

# %% [markdown]
# ## 5. Where the models look, as p grows
#
# The poster's figure: "models with varying mask rates focus on similar object regions at the same
# time step". Here: the spike density of a late layer at step t = 8 (the fraction of its channels
# spiking at each position), each map divided by its maximum, for p = 0, 0.5 and 0.75, overlaid on
# the image, and the correlation of the p = 0.75 map with the p = 0 map. MST's late tokens keep much
# of their layout; the CNN's map is reshuffled by the masks (`mst-ref rsm-regions` measures this on 16
# test images: docs/masking_table.md). `spike_density(model, x, t, p, seed, sites, rescale)` runs the
# SNN for t steps with masks drawn from `seed` (0 here) and returns, per image, the fraction of the
# late site's channels that spiked at step t at each position.

# %%
t_show, n_img = 8, 2
imgs, heats, labels, corr = [], [], [], {}
for name in ("mst_fashion_rsm75_paper.pth", "resnet18_fashion_rsm75.pth"):
    model, x, spec, config = loaded[name]
    maps = [spike_density(model, x[:n_img], t_show, p, seed=0, sites=spec.mask_sites, rescale=spec.mask_rescale)
            for p in RATIOS]
    pad = int(config.get("pad", 0))
    corr[spec.label] = np.mean([map_correlation(maps[0][b], maps[2][b]) for b in range(n_img)])
    for b in range(n_img):
        imgs.append(np.pad(sample.images[b, :, :, 0], pad))
        heats.append([m[b] / m[b].max() if m[b].max() > 0 else m[b] for m in maps])
        labels.append(f"{spec.label}, image {b} ({sample.classes[sample.labels[b]]})")
    print(f"{spec.label}: site {region_site(model)}, correlation of the p = 0.75 map with the p = 0 map: "
          f"{corr[spec.label]:+.2f}")
assert corr["MST"] > corr["ResNet-18"]  # MST's map at p = 0.75 resembles its p = 0 map more
plots.overlay_grid_png(OUT / "06_regions.png", imgs, heats, labels, [f"p = {p:g}" for p in RATIOS],
                       f"Spike density of a late layer at time step t = {t_show}, as the masking ratio p grows",
                       (0.0, 1.0, "spike density / panel maximum"), scale=4)

# %% [markdown]
# ## 6. Which CNN spikes did the poster mask? f, by hand
#
# Masking a site removes, in expectation, p of the SOPs its spikes drive. If a share f of a model's
# SOPs lies behind the masked sites (measured at p = 0, a count), and e is the SOPs' share of its
# energy (the rest is the first convolution's analog MACs), the energy ratio is about
#
#     P ~ 1 - f p e,
#
# before the masked spikes change how the later layers fire. The poster's CNN ratios (ResNet-18 x0.70 /
# x0.58, VGG-16 x0.77 / x0.68 at p = 0.5 / 0.75) give f ~ 0.56-0.60 and ~ 0.43-0.46: the poster did not
# mask every site (f = 1). `mst_ref.models.cnn_sites` names the network-wide readings of "masks each
# block"; here is f of one of them by hand, ResNet-18's `block-input` (the spikes each BasicBlock
# receives: `conv1.2` and every block's `act` except the last, which feeds the pooled classifier):

# %%
from mst_ref.analysis.rsm_table import masked_share
from mst_ref.models.cnn_sites import RECONSTRUCTED, cnn_mask_presets, structural_presets

POSTER_P = {"resnet18": {0.5: 0.70, 0.75: 0.58}, "vgg16": {0.5: 0.77, 0.75: 0.68}}
model, x, spec, config = loaded["resnet18_fashion.pth"]
res0 = model.snn_forward(x, T)  # p = 0: nothing masked, every site's SOPs
by_site = res0.sops_by_site
block_input = cnn_mask_presets(model.config)["block-input"]
for name in block_input:
    print(f"  {name:<16} {by_site[name] / sum(by_site.values()):.4f} of the SOPs")
# f = SOPs behind the masked sites / all SOPs
f_hand = sum(by_site[name] for name in block_input) / sum(by_site.values())
f_lib = masked_share(model, by_site, "block-input")
print(f"f by hand {f_hand:.4f}, library {f_lib:.4f}")
assert abs(f_hand - f_lib) < 1e-12

# %% [markdown]
# The same for every network-wide configuration of both CNNs, with the predicted ratio at p = 0.5 and
# 0.75 and its largest distance from the poster's P; the closest is the reconstruction
# (`RECONSTRUCTED`, the default of `mst-ref rsm-table`). The choice uses counts only, no accuracy.

# %%
for key in ("resnet18_fashion.pth", "vgg16_fashion.pth"):
    model, x, spec, config = loaded[key]
    r0 = model.snn_forward(x, T)
    e = energy.E_AC_PJ * r0.sops / r0.energy_pj  # the SOPs' share of the energy at p = 0
    gaps = {}
    for sites in structural_presets(model.config):
        f = masked_share(model, r0.sops_by_site, sites)
        # P ~ 1 - f p e at each p; distance = the larger of the two gaps to the poster's P
        pred = {p: 1 - f * p * e for p in POSTER_P[model.config.arch]}
        gaps[sites] = max(abs(pred[p] - want) for p, want in POSTER_P[model.config.arch].items())
        print(f"{spec.label:<10} {sites:<16} f = {f:.3f}  predicted x{pred[0.5]:.3f} / x{pred[0.75]:.3f}  "
              f"gap {gaps[sites]:.3f}")
    best = min(gaps, key=gaps.get)
    print(f"  -> closest: {best} (RECONSTRUCTED: {RECONSTRUCTED[model.config.arch]})")
    assert best == RECONSTRUCTED[model.config.arch]

# %% [markdown]
# The measured energy ratio of the reconstructed configuration, on the model trained without masking
# (one mask seed), beside the prediction: they differ because a layer whose input lost half its spikes
# no longer fires as it did (here mostly less: its spikes' SOPs go too). docs/masking_table.md measures
# this on more images, and the models trained with RSM at these sites.

# %%
for key in ("resnet18_fashion.pth", "vgg16_fashion.pth"):
    model, x, spec, config = loaded[key]
    rec = RowSpec(spec.label, model, 0.0, RECONSTRUCTED[model.config.arch])
    rows_rec = table_rows(rec, measure_ratios(rec, lambda: [(x, sample.labels[:N])], T, (0.0, 0.5), seeds=1))
    r = rows_rec[1]
    print(f"{spec.label:<10} {rec.mask_sites:<12} p = 0.5: f = {r['masked_share']:.3f}, predicted "
          f"x{r['predicted_energy_ratio']:.3f}, measured x{r['energy_ratio']:.3f}, accuracy "
          f"{rows_rec[0]['accuracy']:.1f}% -> {r['accuracy']:.1f}%")
    assert r["delivered"] < rows_rec[0]["delivered"] and r["energy_ratio"] < 1

# %% [markdown]
# On the whole test set (10,000 images, T = 32, three mask seeds; `mst-ref rsm-table --data
# /usr/share/datasets/fashion-mnist --families ResNet-18,VGG-16 --ratios 0,0.5,0.75 --seeds 3 --workers 2`,
# 41 minutes on two cores) the reconstructed configurations measure ResNet-18 x0.653 / x0.590 (the
# poster's x0.70 / x0.58: within 0.05 at both ratios) and VGG-16 x0.656 / x0.587 (x0.77 / x0.68: 0.11 /
# 0.09 below). Their accuracy does not follow the poster: 10.00% (ResNet-18) and 26.68% / 10.14%
# (VGG-16) at p = 0.5 / 0.75 when trained without masking; trained with RSM at p = 0.75, VGG-16 loses
# 5.92 points against the unmasked VGG-16 (poster: 16.37). And MST trained with masks at the paper's
# sites, run at p = 0.75, is 1.82 points below the unmasked MST at p = 0 (88.09% against 89.91%; the
# `--families MST --ratios 0,0.75` run of the same command, 48 minutes), where the poster reports no
# loss.

# %%
print(f"done in {time.perf_counter() - started:.0f} s")
