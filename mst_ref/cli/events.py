"""The event commands of ``mst-ref``: ``events make-saccades``, ``events inspect``, and ``eval --events``.

::

    mst-ref events make-saccades --data /usr/share/datasets/fashion-mnist --out DIR [--limit N]
                                 [--test-limit N] [--seed S] [--noise-hz F] [--workers N]
    mst-ref events inspect FILE [--png OUT] [--frames 8] [--format F]
    mst-ref eval CHECKPOINT --data DIR --events voxel|frames [--bins 9] ...

``make-saccades`` simulates the N-MNIST recording (:mod:`mst_ref.io.saccades`) over an IDX dataset and
writes ``DIR/{train,test}/<label>/<index>.bin``; rerun with the same arguments, it resumes; ``--workers N``
simulates blocks of recordings in N processes (each recording draws from its own generator, so the files
are the same bytes whatever N is). ``inspect``
prints what a recording holds and draws its frames over time (ON events red, OFF blue). ``eval``,
``energy``, ``mask-sweep`` and ``rsm-table`` with ``--events voxel|frames`` read such a folder (any format
:func:`mst_ref.io.events.read_events` knows) and code each recording for the model
(:mod:`mst_ref.io.event_folders`: the authors' static voxel grid, or one frame per step); they run
through the sharded evaluation core like images, so ``--workers`` and ``--cache`` work too.
"""

import json
import os
from pathlib import Path

import numpy as np

from .common import Progress, UsageError, at_least, check_output_dir, check_output_file


# ---------------------------------------------------------------- event folders as command input
def event_folder(args, cfg):
    """The :class:`~mst_ref.io.event_folders.EventFolder` of ``--data`` / ``--split``, its coding checked
    against the model (``--events``, ``--bins``): one-line errors before any work starts."""
    from ..io.event_folders import EventFolder, check_coding

    at_least(args.bins, 1, "--bins")
    check_data_dir(args.data)
    try:
        check_coding(args.events, args.bins, cfg.in_chans)
    except ValueError as err:
        raise UsageError(f"--events {args.events} --bins {args.bins}: {err}") from None
    return EventFolder(args.data, getattr(args, "split", "test"))


def event_spec(args, loaded, timesteps, mask_ratio, neuron, seed=0, ann=True, mask_sites=None):
    """The :class:`~mst_ref.distributed.EvalSpec` of a run over an event folder (``--events``)."""
    from .. import distributed as dist
    from ..threads import default_threads

    return dist.EvalSpec(checkpoint=str(Path(args.checkpoint).resolve()), data=str(Path(args.data).resolve()),
                         split=getattr(args, "split", "test"), mean=tuple(loaded.mean), std=tuple(loaded.std),
                         timesteps=tuple(timesteps), mask_ratio=mask_ratio, mask_sites=mask_sites, seed=seed,
                         batch_size=args.batch_size, neuron=tuple(neuron.items()), ann=ann,
                         threads=getattr(args, "threads", None) or default_threads(), events=args.events,
                         bins=args.bins)


# ---------------------------------------------------------------- make-saccades
def cmd_make_saccades(args):
    from ..io.saccades import SaccadeConfig, write_saccade_dataset
    from ..io.data import load_dataset

    at_least(args.workers, 1, "--workers")
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
        if args.workers == 1:
            total = write_saccade_dataset(ds.images[:n, ..., 0], ds.labels[:n], out, split, cfg, args.seed,
                                          progress=bar.update)
        else:
            total = _write_in_processes(ds.images[:n, ..., 0], ds.labels[:n], out, split, cfg, args.seed,
                                        args.workers, bar.update)
        bar.close()
        print(f"{split}: {n} recordings in {out / split} ({total:,} events newly written)")
    (out / "saccades.json").write_text(json.dumps({"source": str(args.data), "seed": args.seed,
                                                   "config": cfg.__dict__}, indent=1, default=list) + "\n")
    return 0


_BLOCK = 1024  # recordings per task of a --workers run: a progress step every second or so per process


def _write_block(images, labels, out, split, cfg, seed, start):
    from ..io.saccades import write_saccade_dataset
    return write_saccade_dataset(images, labels, out, split, cfg, seed, start=start)


def _write_in_processes(images, labels, out, split, cfg, seed, workers, progress):
    """``write_saccade_dataset`` over blocks of ``_BLOCK`` recordings in ``workers`` processes; returns the
    events written. The file of recording i depends only on (seed, split, i), so the blocks' order and
    the number of processes change nothing on disk."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done, total = 0, 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_write_block, images[a:a + _BLOCK], labels[a:a + _BLOCK], out, split, cfg, seed,
                               a): min(_BLOCK, len(images) - a) for a in range(0, len(images), _BLOCK)}
        for f in as_completed(futures):
            total += f.result()
            done += futures[f]
            progress(done)
    return total


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
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="simulate in N processes (default 1); the files are the same whatever N")
    p.set_defaults(func=cmd_make_saccades)
    p = esub.add_parser("inspect", help="format, sensor, duration, events per polarity; PNG of frames")
    p.add_argument("file", help="an event recording (.bin, .aedat, .dat, .npy, .npz)")
    p.add_argument("--format", default=None, choices=["nmnist", "aedat2", "aedat3", "prophesee", "npy", "npz"])
    p.add_argument("--png", default=None, help="write the frames over time to this PNG")
    p.add_argument("--frames", type=int, default=8, help="frames in the PNG (default 8)")
    p.set_defaults(func=cmd_inspect)


def add_eval_arguments(p):
    """``--events`` / ``--bins`` of ``eval``, ``energy``, ``mask-sweep`` and ``rsm-table``."""
    p.add_argument("--events", choices=["voxel", "frames"], default=None,
                   help="--data is a folder of event recordings: code them as the authors' voxel grid "
                        "(static) or as one frame per step")
    p.add_argument("--bins", type=int, default=9, help="time bins of the coding (default 9, the authors')")


def check_data_dir(path):
    if not os.path.isdir(path):
        raise UsageError(f"--events needs --data to be a folder of recordings; {path} is not a folder")
