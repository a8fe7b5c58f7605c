# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 09 - From an event camera to a spiking transformer
#
# An event camera has no frames. Each pixel watches its own log intensity and reports an *event*
# `(t, x, y, p)` whenever it has changed by a contrast threshold C since the pixel's last event:
# p = 1 (ON) for brighter, p = 0 (OFF) for darker. A static scene makes no events at all, so the
# neuromorphic versions of MNIST-like datasets were recorded by *moving the camera*: N-MNIST's ATIS
# camera sat on a pan-tilt unit making three saccades over a screen showing each digit.
#
# This tutorial:
#
# 1. decodes one N-MNIST `.bin` record by hand and with `mst_ref.read_events`;
# 2. simulates one pixel of a saccade by hand (log intensity, threshold crossings) and checks the
#    library's simulator;
# 3. turns a recording into the two codings a network can take: frames (one per time step) and the
#    MST authors' voxel grid (9 time bins x 2 polarities = 18 channels, one static tensor);
# 4. shows what the SNN receives at each step under each coding;
# 5. measures accuracy vs T of the shipped event model under both codings, and what the input layer
#    costs when the input changes every step.
#
# PNGs go to `$MST_TUTORIAL_OUT` (default `tutorial_out/`). Sizes are small (24 recordings, T <= 32).

# %%
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

import mst_ref
from mst_ref import plots
from mst_ref.io import data
from mst_ref.io.event_frames import event_frames, frame_input, voxel_grid, voxel_input
from mst_ref.io.saccades import SaccadeConfig, encode_nmnist_bin, recording_rng, simulate_saccades

np.set_printoptions(precision=3, suppress=True, linewidth=110)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. An event on disk
#
# N-MNIST stores 5 bytes per event: x, y, then one byte whose bit 7 is the polarity and whose bits
# 6-0 are bits 22-16 of the timestamp (microseconds), then bits 15-8 and 7-0. Let us write one event
# by hand, x = 3, y = 7, ON, t = 0x12345 = 74565 us, and decode it with `struct` and the library.

# %%
t, x, y, p = 0x12345, 3, 7, 1
record = bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
print("bytes:", record.hex(" "))
b = struct.unpack("5B", record)
by_hand = ((b[2] & 0x7F) << 16 | b[3] << 8 | b[4], b[0], b[1], b[2] >> 7)
tmp = Path(tempfile.mkdtemp())
(tmp / "one.bin").write_bytes(record)
events, sensor = mst_ref.read_events(tmp / "one.bin")
print("by hand (t, x, y, p):", by_hand)
print("read_events:", events, "sensor", sensor, "dtype", events.dtype)
assert events.tolist() == [by_hand]

# %% [markdown]
# ## 2. One saccade, one pixel, by hand
#
# The simulator (`mst_ref.io.saccades`) moves the image along a triangle of displacements d(t), one
# side per saccade of 100 ms. A pixel sees the screen brightness `b = 0.1 + 0.9 I` at its position,
# and keeps a reference level `L_ref` (its log brightness at its last event). At each sampling step
# from L0 to L1, every level `L_ref + k C s` (s the sign of the change) that is crossed emits one
# event, at the time the straight line from L0 to L1 crosses it:
#
#     n = floor(|L1 - L_ref| / C),    t_k = t0 + dt (L_ref + k C s - L0) / (L1 - L0)
#
# and then `L_ref <- L_ref + n C s`. A toy image, a bright 8 x 8 square, and one pixel just right of
# it, which the square's right edge sweeps over during the first saccade:

# %%
img = np.zeros((28, 28), np.uint8)
img[10:18, 10:18] = 255
cfg = SaccadeConfig(threshold_sigma=0.0)  # every pixel the same threshold, so the hand version is exact
lib = simulate_saccades(img, cfg)
px, py = 18, 14  # sensor pixel; the image sits at origin (0, 1.5) + d(t)
from mst_ref.io.saccades import _screen, displacement  # noqa: E402  (internals, to re-derive them)

times = np.arange(0, 3 * cfg.saccade_ms * 1e3 + 1, cfg.step_us)
d = displacement(times, cfg) + np.asarray(cfg.origin)
L = np.array([np.log(_screen(img[None] / 255.0, dx, dy, cfg)[0, py, px]) for dx, dy in d])
L_ref, last, mine = L[0], -np.inf, []
for k in range(1, len(times)):
    n = int(np.floor(abs(L[k] - L_ref) / cfg.threshold))
    if n and last + cfg.refractory_us <= times[k]:
        s = np.sign(L[k] - L_ref)
        for j in range(1, n + 1):
            frac = np.clip((L_ref + j * cfg.threshold * s - L[k - 1]) / (L[k] - L[k - 1]), 0, 1)
            mine.append((int(np.rint(times[k - 1] + frac * cfg.step_us)), int(s > 0)))
        L_ref, last = L_ref + n * cfg.threshold * s, times[k]
theirs = lib[(lib["x"] == px) & (lib["y"] == py)]
print("log brightness of the pixel every 10 ms:", L[::20])
print("events by hand (t us, p):", mine)
print("events of the library:   ", list(zip(theirs["t"].tolist(), theirs["p"].tolist())))
assert mine == list(zip(theirs["t"].tolist(), theirs["p"].tolist()))
print(f"the whole toy recording: {len(lib)} events, {int(lib['p'].sum())} ON")

# %% [markdown]
# ## 3. Frames and the voxel grid
#
# Now a real image: the first Fashion-MNIST test image, simulated with the default settings (per-pixel
# thresholds C ~ N(0.25, 0.02), refractory period 1 ms) and written in N-MNIST's format.
#
# * **Frames**: cut the recording into T slices and count events per polarity and pixel,
#   `(T, 2, H, W)`. Slices by number cut `[t_first, t_last]` into T windows of `(t_last - t_first) // T`
#   us, the last one taking the remainder (SpikingJelly's convention; tonic drops the remainder).
# * **Voxel grid** (the MST authors' loader): `tau = t / t_max`; bin i holds events with
#   `i/9 < tau <= (i+1)/9`; channels = 9 bins of OFF then 9 bins of ON; pad to square, resize to the
#   network input by nearest neighbour.

# %%
sample = data.load_dataset(data.sample_path())
image0 = sample.images[0, ..., 0]
rec = simulate_saccades(image0, SaccadeConfig(), recording_rng(0, "test", 0))
(tmp / "00000.bin").write_bytes(encode_nmnist_bin(rec))
ev, sensor = mst_ref.read_events(tmp / "00000.bin")
assert np.array_equal(ev, rec)
print(f"{sample.classes[sample.labels[0]]}: {len(ev)} events over {(ev['t'][-1] - ev['t'][0]) / 1e3:.1f} ms, "
      f"sensor {sensor}")
frames = event_frames(ev, sensor, n_bins=9)  # (9, 2, 34, 34)
grid = voxel_grid(ev, sensor, bins=9)  # (18, 34, 34)
print("events per frame:", frames.sum(axis=(1, 2, 3)))
print("events per voxel channel:", grid.sum(axis=(1, 2)))
# the two agree up to where the bin edges fall: frames start at t_first, the grid at 0
print("total events: frames", frames.sum(), " voxel grid", int(grid.sum()), " recording", len(ev))
panels = [frames[k, 1].astype(float) - frames[k, 0] for k in range(9)]
plots.image_panels_png(OUT / "09_frames.png", panels, [f"frame {k}" for k in range(9)],
                       "9 frames of one recording: ON - OFF counts per pixel",
                       (min(p.min() for p in panels), max(p.max() for p in panels), "ON - OFF"), scale=4)
vox_in = voxel_input(ev, sensor, 28)  # (18, 28, 28): padded (already square) and resized
vpanels = [vox_in[9 + k] - vox_in[k] for k in range(9)]
plots.image_panels_png(OUT / "09_voxel_grid.png", vpanels, [f"bin {k}" for k in range(9)],
                       "voxel grid, 28 x 28: ON channel - OFF channel of each time bin",
                       (min(p.min() for p in vpanels), max(p.max() for p in vpanels), "ON - OFF"), scale=4)

# %% [markdown]
# ## 4. What the SNN sees at each step
#
# With the voxel grid the network input is one static `(18, 28, 28)` tensor, fed to the SNN at every
# step like an image (its first layer, the patch embedding, runs once). The frame-per-step coding of
# the same model gives step t only time bin `t mod 9`, times 9, in its own two channels: the mean
# over 9 steps is the voxel grid again, so the ANN (which sees the mean frame) is unchanged, but
# each step's input is different and the first layer runs at every step.

# %%
ckpt = data.shipped_file("mst_events_voxel.pth")
from mst_ref.cli.common import load_model  # noqa: E402
from mst_ref.io.event_folders import model_input  # noqa: E402

loaded = load_model(ckpt)
model, mcfg = loaded.model, loaded.model.config
mean = np.asarray(loaded.mean).reshape(-1, 1, 1)
std = np.asarray(loaded.std).reshape(-1, 1, 1)
static = model_input(ev, sensor, "voxel", 9, mcfg.img_size, mcfg.in_chans)  # (18, 28, 28)
per_step = model_input(ev, sensor, "frames", 9, mcfg.img_size, mcfg.in_chans)  # (9, 18, 28, 28)
print("input per step, events in each channel (rows: steps 0-3):")
print(per_step[:4].sum(axis=(2, 3)).astype(int))
assert np.allclose(per_step.mean(axis=0), static)
print("model:", mcfg.img_size, "px,", mcfg.in_chans, "channels, patch", mcfg.patch_size, "depths", mcfg.depths)

# %% [markdown]
# ## 5. Accuracy vs T, and the input layer's cost
#
# 24 simulated test recordings (the first 24 images of the shipped sample), the shipped model, both
# codings. `snn_forward` takes a `(T_in, B, C, H, W)` input as one input per step (step t sees
# `x[t mod T_in]`) and books the patch embedding's MACs at every step (`input_passes`).

# %%
n, T = 24, 32
recs = [simulate_saccades(sample.images[i, ..., 0], SaccadeConfig(), recording_rng(0, "test", i)) for i in range(n)]
y = sample.labels[:n]
xv = np.stack([(model_input(r, sensor, "voxel", 9, 28, 18) - mean) / std for r in recs]).astype(model.dtype)
xf = np.stack([(model_input(r, sensor, "frames", 9, 28, 18) - mean) / std for r in recs], axis=1).astype(model.dtype)
ann = (model.ann_forward(xv).argmax(-1) == y).mean()
assert np.array_equal(model.ann_forward(xf).argmax(-1), model.ann_forward(xv).argmax(-1))
rv, rf = model.snn_forward(xv, T), model.snn_forward(xf, T)
Ts = [1, 2, 4, 8, 9, 16, 18, 27, 32]
acc_v = [(rv.cumulative_logits[t - 1].argmax(-1) == y).mean() for t in Ts]
acc_f = [(rf.cumulative_logits[t - 1].argmax(-1) == y).mean() for t in Ts]
print(f"ANN: {100 * ann:.1f} % of {n}")
print(f"{'T':>4} {'voxel %':>8} {'frames %':>9}")
for t, a, b in zip(Ts, acc_v, acc_f):
    print(f"{t:>4} {100 * a:8.1f} {100 * b:9.1f}")
plots.line_chart_png(OUT / "09_accuracy_vs_T.png", Ts, {"voxel grid (static)": [100 * a for a in acc_v],
                     "one time bin per step": [100 * a for a in acc_f], "ANN": [100 * ann] * len(Ts)},
                     f"shipped event MST, {n} simulated test recordings", "T", "accuracy %", logx=True)
for name, r in (("voxel", rv), ("frames", rf)):
    print(f"{name:>6}: input passes {r.input_passes:>2}, spikes/rec {sum(r.spike_counts_by_site.values()) / n:,.0f}, "
          f"SOPs/rec {r.sops / n:,.0f}, MACs/rec {r.macs / n:,.0f}, energy/rec {r.energy_pj / n / 1e6:.3f} uJ")
from mst_ref.engine import energy  # noqa: E402

assert rf.macs - rv.macs == n * (T - 1) * energy.input_macs(mcfg)
print(f"the patch embedding costs {energy.input_macs(mcfg):,} MACs per pass: once for the voxel grid, "
      f"{T} times for the per-step coding")

# %% [markdown]
# Why the per-step coding of a voxel-trained model loses accuracy: the first neurons, after the
# patch embedding and its BatchNorm, see current `c_t` at step t. An IF neuron emits at most one
# spike of lambda per step, so over a period its output rate is at most the mean of `min(c_t, lambda)`
# -- and with one bin per step, nine times the mean, the current often exceeds lambda. The ANN's
# QCFS instead clips the *mean* current once. Compare the two on the first recording:

# %%
from mst_ref.nn.layers import batch_norm, bn_params, patch_embed  # noqa: E402

s = model.state
lam = float(s["patch_embed.proj_if.up"][0])


def currents(x):  # (..., Cin, H, W) -> (..., N, C): what patch_embed.proj_if integrates
    return batch_norm(patch_embed(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"]),
                      *bn_params(s, "patch_embed.norm"))


c_static = currents(xv[:1])[0]  # (N, C)
c_steps = currents(xf[:9, :1])[:, 0]  # (9, N, C)
ann_drive = np.clip(c_static, 0, lam)  # what QCFS passes (before its rounding)
snn_bound = np.clip(c_steps, 0, lam).mean(axis=0)  # the most an IF neuron can pass per step, on average
print(f"lambda = {lam:.3f}; mean current: static {c_static.mean():.3f}, per step {c_steps.mean():.3f}")
print(f"neurons whose per-step current exceeds lambda at some step: {(c_steps > lam).any(0).mean():.1%}")
print(f"mean |bound - ANN drive|: per-step coding {np.abs(snn_bound - ann_drive).mean():.4f}, "
      f"static coding 0 (its current is the same every step)")

# %% [markdown]
# The per-step coding reaches the same ANN but converges more slowly: the neurons integrate a
# different input every step and only the mean over a whole period of 9 steps equals the voxel grid,
# so T should be a multiple of 9 and large; and each step pays the first layer again. The authors'
# static voxel grid is the cheaper of the two for a converted SNN. Measured on the whole simulated
# test set: docs/events.md.
