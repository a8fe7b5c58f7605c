"""The event commands of ``mst-ref``: ``events make-saccades``, ``events inspect``, and ``eval --events``.

::

    mst-ref events make-saccades --data /usr/share/datasets/fashion-mnist --out DIR [--limit N]
                                 [--test-limit N] [--seed S] [--noise-hz F]
    mst-ref events inspect FILE [--png OUT] [--frames 8] [--format F]
    mst-ref eval CHECKPOINT --data DIR --events voxel|frames [--bins 9] ...

``make-saccades`` simulates the N-MNIST recording (:mod:`mst_ref.io.saccades`) over an IDX dataset and
writes ``DIR/{train,test}/<label>/<index>.bin``; rerun with the same arguments, it resumes. ``inspect``
prints what a recording holds and draws its frames over time (ON events red, OFF blue). ``eval
--events`` reads such a folder (any format :func:`mst_ref.io.events.read_events` knows) and codes each
recording for the model:

* ``voxel`` -- the MST authors' voxel grid, ``2 * bins`` channels, fed unchanged at every step;
* ``frames`` -- one input per step: for a 2-channel model the ``bins`` event frames
  (:func:`mst_ref.io.event_frames.frame_input`); for a ``2 * bins``-channel (voxel-trained) model the
  voxel grid one time bin per step (step t holds bin ``t mod bins``, times ``bins``, and zeros
  elsewhere), whose mean over ``bins`` steps is the voxel grid itself. The ANN sees the mean frame.
"""

import json
import os
from pathlib import Path

import numpy as np

from .common import Progress, UsageError, at_least, check_output_dir, check_output_file


# ---------------------------------------------------------------- reading event folders
def event_files(folder, split):
    """(files, labels) of ``folder/split/<label>/*`` (labels: integer folder names), ordered by file name."""
    root = Path(folder) / split
    if not root.is_dir():
        raise UsageError(f"{folder} has no {split}/ folder of event recordings (one subfolder per class, "
                         "named by class index, as `mst-ref events make-saccades` writes)")
    files, labels = [], []
    for sub in sorted(root.iterdir(), key=lambda p: p.name):
        if sub.is_dir():
            if not sub.name.isdigit():
                raise UsageError(f"{sub}: class folders must be named by class index (0, 1, ...)")
            found = sorted(f for f in sub.iterdir() if f.is_file() and not f.name.startswith("."))
            files += found
            labels += [int(sub.name)] * len(found)
    if not files:
        raise UsageError(f"{root} holds no event recordings")
    order = sorted(range(len(files)), key=lambda i: (files[i].name, labels[i]))  # by name: --limit mixes classes
    return [files[i] for i in order], np.array(labels, np.int64)[order]


def code_recording(events, sensor, coding, bins, cfg):
    """One recording as the model's input: (Cin, img, img) (voxel) or (bins, Cin, img, img) (frames)."""
    from ..io.event_frames import frame_input, voxel_input

    if coding == "voxel":
        if cfg.in_chans != 2 * bins:
            raise UsageError(f"--events voxel --bins {bins} makes {2 * bins} channels; the model takes "
                             f"{cfg.in_chans}")
        return voxel_input(events, sensor, cfg.img_size, bins)
    if cfg.in_chans == 2:
        return frame_input(events, sensor, cfg.img_size, bins)  # (bins, 2, img, img)
    if cfg.in_chans != 2 * bins:
        raise UsageError(f"--events frames needs a 2-channel model or one of 2 * bins = {2 * bins} channels; "
                         f"the model takes {cfg.in_chans}")
    vox = voxel_input(events, sensor, cfg.img_size, bins).reshape(2, bins, cfg.img_size, cfg.img_size)
    out = np.zeros((bins, 2, bins, cfg.img_size, cfg.img_size), np.float32)
    for k in range(bins):  # step k: bin k of both polarities, times bins (the mean over bins steps is vox)
        out[k, :, k] = bins * vox[:, k]
    return out.reshape(bins, 2 * bins, cfg.img_size, cfg.img_size)


def eval_events(args, loaded, timesteps, mask_ratio, neuron):
    """``eval --events``: ANN and SNN accuracy per T, spikes and energy, on an event folder."""
    from ..io.events import read_events

    at_least(args.bins, 1, "--bins")
    model, cfg = loaded.model, loaded.model.config
    files, labels = event_files(args.data, args.split)
    n = len(files) if args.limit is None else min(args.limit, len(files))
    mean = np.asarray(loaded.mean, np.float64).reshape(-1, 1, 1)
    std = np.asarray(loaded.std, np.float64).reshape(-1, 1, 1)
    t_max = max(timesteps)
    print(f"events {args.data}/{args.split}: {len(files)} recordings, evaluating {n}; coding {args.events}, "
          f"{args.bins} bins; mean/std {loaded.norm_source}; mask ratio {mask_ratio:g}")
    stats = {"n": n, "ann_correct": 0, "snn_correct": {t: 0 for t in timesteps}, "spikes": 0, "sops": 0,
             "macs": 0, "energy_pj": 0.0}
    bar = Progress("eval", n, "recordings")
    for start in range(0, n, args.batch_size):
        idx = range(start, min(n, start + args.batch_size))
        xs = [code_recording(*read_events(files[i]), args.events, args.bins, cfg) for i in idx]
        x = ((np.stack(xs, axis=-4) - mean) / std).astype(model.dtype)  # ([bins,] B, Cin, img, img)
        y = labels[list(idx)]
        rng = np.random.default_rng([args.seed, start])
        stats["ann_correct"] += int((model.ann_forward(x, mask_ratio=mask_ratio, rng=rng).argmax(-1) == y).sum())
        res = model.snn_forward(x, t_max, mask_ratio=mask_ratio, rng=np.random.default_rng([args.seed, start, 1]),
                                **neuron)
        for t in timesteps:
            stats["snn_correct"][t] += int((res.cumulative_logits[t - 1].argmax(-1) == y).sum())
        stats["spikes"] += sum(res.spike_counts_by_site.values())
        stats["sops"] += res.sops
        stats["macs"] += res.macs
        stats["energy_pj"] += res.energy_pj
        bar.update(idx[-1] + 1)
    bar.close()
    return stats


# ---------------------------------------------------------------- make-saccades
def cmd_make_saccades(args):
    from ..io.saccades import SaccadeConfig, write_saccade_dataset
    from ..io.data import load_dataset

    out = check_output_dir(args.out, "--out")
    cfg = SaccadeConfig(noise_hz=args.noise_hz)
    print(f"make-saccades: {args.data} -> {out}; sensor {cfg.sensor} x {cfg.sensor}, 3 saccades of "
          f"{cfg.saccade_ms:g} ms, threshold {cfg.threshold} +- {cfg.threshold_sigma}, refractory "
          f"{cfg.refractory_us} us, noise {cfg.noise_hz} Hz/pixel, seed {args.seed}")
    for split, limit in (("test", args.test_limit), ("train", args.limit)):
        ds = load_dataset(args.data, split)
        if ds.images.shape[-1] != 1:
            raise UsageError(f"{args.data}: make-saccades takes grey images; got {ds.images.shape[-1]} channels")
        n = len(ds) if limit is None else min(limit, len(ds))
        bar = Progress(f"{split:5s}", n, "recordings")
        total = write_saccade_dataset(ds.images[:n, ..., 0], ds.labels[:n], out, split, cfg, args.seed,
                                      progress=bar.update)
        bar.close()
        print(f"{split}: {n} recordings in {out / split} ({total:,} events newly written)")
    (out / "saccades.json").write_text(json.dumps({"source": str(args.data), "seed": args.seed,
                                                   "config": cfg.__dict__}, indent=1, default=list) + "\n")
    return 0


# ---------------------------------------------------------------- inspect
def cmd_inspect(args):
    from .. import plots
    from ..io.event_frames import event_frames
    from ..io.events import detect_format, read_events

    at_least(args.frames, 1, "--frames")
    png = check_output_file(args.png, "--png") if args.png else None
    fmt = args.format or detect_format(args.file)
    ev, (W, H) = read_events(args.file, fmt)
    dur = (int(ev["t"][-1]) - int(ev["t"][0])) if len(ev) else 0
    print(f"{args.file}: format {fmt}, sensor {W} x {H}, {len(ev):,} events")
    if len(ev):
        print(f"time {int(ev['t'][0])} .. {int(ev['t'][-1])} us ({dur / 1e3:.1f} ms)")
        for p, name in ((1, "ON "), (0, "OFF")):
            k = int((ev["p"] == p).sum())
            rate = k / (dur * 1e-6) if dur else float("nan")
            print(f"  {name} (p = {p}): {k:,} events, {rate:,.0f} events/s")
    if png is not None and len(ev):
        fr = event_frames(ev, (W, H), n_bins=args.frames).astype(np.float64)  # (T, 2, H, W)
        scale = max(1.0, fr.max())
        tiles = []
        for f in fr:
            rgb = np.full((H, W, 3), 255.0)
            # ON reddens (removes green and blue), OFF blues (removes red and green)
            rgb[..., 1] -= 255 * np.clip((f[1] + f[0]) / scale, 0, 1)
            rgb[..., 2] -= 255 * np.clip(f[1] / scale, 0, 1)
            rgb[..., 0] -= 255 * np.clip(f[0] / scale, 0, 1)
            tiles += [rgb, np.full((H, 1, 3), 128.0)]
        strip = np.concatenate(tiles[:-1], axis=1).astype(np.uint8)  # (H, T (W + 1) - 1, 3)
        plots.image_png(png, strip, f"{Path(args.file).name}: {args.frames} frames of "
                                    f"{dur / args.frames / 1e3:.1f} ms (ON red, OFF blue)",
                        scale=max(1, min(8, 480 // max(W, 1))))
        print(f"wrote {png}")
    return 0


def add_parsers(sub):
    """Register ``events`` (with ``make-saccades`` and ``inspect``) on an ``add_subparsers()`` object."""
    ev = sub.add_parser("events", help="event-camera recordings: simulate a dataset, inspect a file")
    esub = ev.add_subparsers(dest="events_command", metavar="EVENTS_COMMAND", required=True)
    p = esub.add_parser("make-saccades", help="simulate N-MNIST-style saccade recordings of an IDX dataset")
    p.add_argument("--data", required=True, help="IDX folder of grey images (MNIST / Fashion-MNIST)")
    p.add_argument("--out", required=True, help="output folder (train/ and test/, one subfolder per class)")
    p.add_argument("--limit", type=int, default=None, help="only the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-pixel thresholds and noise")
    p.add_argument("--noise-hz", type=float, default=0.0, help="shot-noise events per pixel per second")
    p.set_defaults(func=cmd_make_saccades)
    p = esub.add_parser("inspect", help="format, sensor, duration, events per polarity; PNG of frames")
    p.add_argument("file", help="an event recording (.bin, .aedat, .dat, .npy, .npz)")
    p.add_argument("--format", default=None, choices=["nmnist", "aedat2", "aedat3", "prophesee", "npy", "npz"])
    p.add_argument("--png", default=None, help="write the frames over time to this PNG")
    p.add_argument("--frames", type=int, default=8, help="frames in the PNG (default 8)")
    p.set_defaults(func=cmd_inspect)


def add_eval_arguments(p):
    """``--events`` / ``--bins`` of ``eval``."""
    p.add_argument("--events", choices=["voxel", "frames"], default=None,
                   help="--data is a folder of event recordings: code them as the authors' voxel grid "
                        "(static) or as one frame per step")
    p.add_argument("--bins", type=int, default=9, help="time bins of the coding (default 9, the authors')")


def check_data_dir(path):
    if not os.path.isdir(path):
        raise UsageError(f"--events needs --data to be a folder of recordings; {path} is not a folder")
