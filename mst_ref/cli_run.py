"""The running commands of ``mst-ref``: ``eval`` (accuracy vs T on a dataset) and ``demo``.

Each is a function ``cmd_<name>(args) -> int`` (the exit status); ``add_eval_parser`` and
``add_demo_parser`` register them on the ``add_subparsers()`` object of :mod:`mst_ref.cli`::

    mst-ref eval CHECKPOINT --data PATH [--timesteps 1,2,4,...,128] [--mask-ratio P] [--limit N]
                 [--batch-size B] [--seed S] [--json OUT] [--mean M] [--std S] [--split test]
    mst-ref demo [--out DIR] [--limit N] [--timesteps 1,2,4,...,64] [--batch-size B] [--seed S]
                 [--checkpoint PATH]

``eval`` is the published ``snn_validate``: for every batch, the ANN (QCFS) accuracy, and ONE SNN run
to the largest T whose cumulative logits give the prediction at every listed T. The demo does the same
on the shipped Fashion-MNIST model and sample, then runs one image once more with a few sites recorded
and draws what happened (:mod:`mst_ref.plots`): accuracy vs T, a spike raster, membrane traces, and
attention maps. Tables go to stdout, progress bars to stderr.

Normalisation: ``mean`` / ``std`` from the checkpoint's config when it has them (the shipped models
do), else Fashion-MNIST's (0.2860 / 0.3530) for a 1-channel model and ImageNet's ((0.485, 0.456, 0.406)
/ (0.229, 0.224, 0.225), the timm / torchvision convention for RGB models) for a 3-channel one;
``--mean`` / ``--std`` override both. Masking: the model's trained ratio unless ``--mask-ratio`` says
otherwise (a model trained with p is run with p, as published), in the ANN and the SNN, with masks
drawn from ``--seed``; results with masking then also depend on ``--batch-size``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import data, plots
from .attention import softmax
from .checkpoint import load_checkpoint, load_state_dict
from .layers import batch_norm, bn_params
from .neurons import IFState
from .windows import relative_position_bias, window_reverse

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEMO_CHECKPOINT, DEMO_LIMIT, DEMO_TIMESTEPS = "mst_fashion.pth", 50, "1,2,4,8,16,32,64"
DEMO_SITE = "layers.0.blocks.0.shortcut1_if"  # raster and membrane traces: the first block's input spikes


def parse_timesteps(text):
    """T values from ``"1,2,4"``; ``a,b,c,...,z`` continues a doubling (any integer ratio) or a constant
    step up to z (``"1,2,4,...,128"``, ``"8,16,24,...,64"``; two values before ``...`` mean a step)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        if "..." in parts:
            i = parts.index("...")
            values, last = [int(p) for p in parts[:i]], int(parts[i + 1])
            if i < 2 or i != len(parts) - 2 or not 0 < values[-2] < values[-1] <= last:
                raise ValueError
            a, b = values[-2], values[-1]
            ratio = b // a if b % a == 0 else 0
            if len(values) > 2 and ratio > 1 and values[-3] * ratio == a:
                grow = lambda v: v * ratio  # noqa: E731
            elif len(values) == 2 or values[-3] + (b - a) == a:
                grow = lambda v: v + (b - a)  # noqa: E731
            else:
                raise ValueError
            while grow(values[-1]) <= last:
                values.append(grow(values[-1]))
            values.append(last)
        else:
            values = [int(p) for p in parts]
    except (ValueError, IndexError):
        raise ValueError(f"--timesteps must be integers separated by commas, e.g. 1,2,4 or 1,2,4,...,128; "
                         f"got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--timesteps must be integers >= 1; got {text!r}")
    return sorted(set(values))


class Progress:
    """A one-line progress bar on stderr: ``label [#####-----] done/total unit, elapsed, ETA``."""

    def __init__(self, label, total, unit="images", stream=None):
        self.label, self.total, self.unit = label, max(1, total), unit
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.update(0)

    def update(self, done):
        elapsed = time.perf_counter() - self.start
        filled = int(20 * done / self.total)
        eta = f", ETA {elapsed / done * (self.total - done):.0f} s" if 0 < done < self.total else ""
        self.stream.write(f"\r{self.label} [{'#' * filled}{'-' * (20 - filled)}] {done}/{self.total} "
                          f"{self.unit}, {elapsed:.1f} s{eta}   ")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def load_model(path):
    """(model, mean, std, where): the checkpoint's MST and the normalisation its inputs need."""
    model = load_checkpoint(path)
    config = load_state_dict(path)[1].get("config")
    config = config if isinstance(config, dict) else {}
    c = model.config.in_chans
    if config.get("mean") is not None and config.get("std") is not None:
        return model, tuple(config["mean"]), tuple(config["std"]), "the checkpoint's config"
    if c == 1:
        return model, data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD, "Fashion-MNIST default (1 channel)"
    return model, IMAGENET_MEAN, IMAGENET_STD, "ImageNet default (3 channels)"


def evaluate(model, dataset, timesteps, mean, std, mask_ratio=0.0, limit=None, batch_size=50, seed=0,
             progress="eval"):
    """ANN accuracy and SNN accuracy at each T in ``timesteps`` from one run to max(timesteps) per batch.

    Returns a dict: n, ann_correct, snn_correct {T: int}, spikes (all sites, all steps), sops, macs,
    energy_pj (None when the energy accounting is unavailable), of the run to max(timesteps).
    ``progress``: the label of the progress bar on stderr, or None for none.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError(f"nothing to evaluate: the dataset has {len(dataset)} images and --limit is {limit}")
    cfg, t_max = model.config, max(timesteps)
    ann_rng, snn_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = {"n": n, "ann_correct": 0, "snn_correct": {t: 0 for t in timesteps}, "spikes": 0,
           "sops": 0, "macs": 0, "energy_pj": 0.0}
    bar = Progress(progress, n * (t_max + 1), "image-steps") if progress else None
    done = 0
    for x, y in data.iterate_batches(dataset, batch_size, cfg.img_size, cfg.in_chans, mean, std, limit=n):
        logits = model.ann_forward(x, mask_ratio=mask_ratio, rng=ann_rng)  # (B, K)
        out["ann_correct"] += int((logits.argmax(-1) == y).sum())
        if bar:
            bar.update(done * (t_max + 1) + len(y))
        # the SNN to t_max in passes of 8 steps (same numbers as one pass), for the progress bar
        sim = model.step_simulator(x, mask_ratio=mask_ratio, rng=snn_rng)
        while sim.t < t_max:
            sim.advance(min(8, t_max - sim.t))
            if bar:
                bar.update(done * (t_max + 1) + len(y) * (1 + sim.t))
        result = sim.result()
        predictions = result.predictions  # (T, B): argmax of the cumulative logits after each step
        for t in timesteps:
            out["snn_correct"][t] += int((predictions[t - 1] == y).sum())
        out["spikes"] += sum(result.spike_counts_by_site.values())
        if out["sops"] is not None:
            try:  # SOPs and energy (mst_ref.energy); without them, spike counts only
                out["sops"] += result.sops
                out["macs"] += result.macs
                out["energy_pj"] += result.energy_pj
            except (AttributeError, ValueError):
                out["sops"] = out["macs"] = out["energy_pj"] = None
        done += len(y)
        if bar:
            bar.update(done * (t_max + 1))
    if bar:
        bar.close()
    return out


def _table(stats, timesteps, levels):
    n = stats["n"]
    lines = [f"ANN (QCFS, L={levels}): {100 * stats['ann_correct'] / n:6.2f} %  ({stats['ann_correct']}/{n})",
             f"{'T':>5}  {'SNN acc %':>9}  {'correct':>8}"]
    lines += [f"{t:>5}  {100 * stats['snn_correct'][t] / n:9.2f}  {stats['snn_correct'][t]:>8}" for t in timesteps]
    return lines


def _energy_lines(model, stats, t_max):
    n = stats["n"]
    lines = [f"spikes per image (all sites, T={t_max}): {stats['spikes'] / n:,.0f}"]
    if stats["sops"] is not None:
        lines.append(f"SOPs per image: {stats['sops'] / n:,.0f}; analog MACs per image: {stats['macs'] / n:,.0f}")
        lines.append(f"energy per image: SNN {stats['energy_pj'] / n / 1e6:.3f} uJ at T={t_max}" +
                     _ann_energy(model))
    return lines


def _ann_energy(model):
    try:
        from . import energy
        macs = energy.ann_macs(model.config)
        return f", ANN {energy.energy_pj(0, macs) / 1e6:.3f} uJ ({macs:,} MACs)"
    except (ImportError, AttributeError, ValueError):
        return ""


def _fail(command, err):
    print(f"\nmst-ref {command}: error: {err}", file=sys.stderr)
    return 2


def _common_arguments(p, timesteps_default):
    p.add_argument("--timesteps", default=timesteps_default,
                   help=f"T values, comma-separated; 'a,b,...,z' continues the doubling or the step "
                        f"(default {timesteps_default})")
    p.add_argument("--batch-size", type=int, default=50, help="images per SNN run (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the RSM masks (default 0)")


def add_eval_parser(sub):
    """Register ``eval`` on an argparse ``add_subparsers()`` object."""
    p = sub.add_parser("eval", help="ANN and SNN accuracy vs T of a checkpoint on a dataset (snn_validate)")
    p.add_argument("checkpoint", help=".pth / .npz / .safetensors checkpoint")
    p.add_argument("--data", required=True,
                   help="IDX folder (MNIST / Fashion-MNIST), CIFAR batches folder, image folder or .npz")
    p.add_argument("--split", choices=["test", "train"], default="test")
    _common_arguments(p, "1,2,4,...,128")
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="RSM ratio p (default: the ratio the checkpoint was trained with)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--mean", default=None, help="per-channel mean, comma-separated (default: see docs)")
    p.add_argument("--std", default=None, help="per-channel std, comma-separated")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=cmd_eval)


def _floats(text, name):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--{name} must be numbers separated by commas; got {text!r}") from None


def cmd_eval(args):
    """Print the per-T accuracy table of a checkpoint on a dataset; optionally write it as JSON.

    The JSON holds the settings, ``n``, ``ann_accuracy`` and ``snn_accuracy`` {"T": ...} (fractions in
    [0, 1]), the counts behind them, and spikes, SOPs and energy per image of the run to max T.
    """
    try:
        timesteps = parse_timesteps(args.timesteps)
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            raise ValueError(f"--batch-size and --limit must be >= 1; got {args.batch_size}, {args.limit}")
        if args.mask_ratio is not None and not 0 <= args.mask_ratio <= 1:
            raise ValueError(f"--mask-ratio must be in [0, 1]; got {args.mask_ratio}")
        dataset = data.load_dataset(args.data, args.split)
        model, mean, std, where = load_model(args.checkpoint)
        if dataset.labels.max(initial=0) >= model.config.num_classes:
            raise ValueError(f"{args.data} has labels up to {dataset.labels.max()} but the checkpoint has "
                             f"{model.config.num_classes} classes: is this the dataset it was trained on?")
        if args.mean is not None or args.std is not None:
            mean = _floats(args.mean, "mean") if args.mean else mean
            std = _floats(args.std, "std") if args.std else std
            where = "--mean / --std"
        trained = float(getattr(model.config, "mask_ratio", 0.0) or 0.0)
        p = trained if args.mask_ratio is None else args.mask_ratio
        print(f"checkpoint {args.checkpoint}: {model.config.in_chans}x{model.config.img_size}^2 inputs, "
              f"{model.config.num_classes} classes, trained mask ratio {trained:g}")
        n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        print(f"data {args.data} ({dataset.name}): {len(dataset)} images, evaluating {n}; "
              f"mean {mean} std {std} ({where}); mask ratio {p:g}, seed {args.seed}")
        stats = evaluate(model, dataset, timesteps, mean, std, p, args.limit, args.batch_size, args.seed)
    except (ValueError, OSError) as err:  # DataError and CheckpointError are ValueErrors
        return _fail("eval", err)
    print("\n".join(_table(stats, timesteps, model.config.qcfs_levels) +
                    _energy_lines(model, stats, max(timesteps))))
    if args.json:
        n = stats["n"]
        record = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, "n": n,
                  "timesteps": timesteps, "mask_ratio": p, "trained_mask_ratio": trained, "seed": args.seed,
                  "batch_size": args.batch_size, "limit": args.limit, "mean": list(mean), "std": list(std),
                  "ann_accuracy": stats["ann_correct"] / n, "ann_correct": stats["ann_correct"],
                  "snn_accuracy": {str(t): c / n for t, c in stats["snn_correct"].items()},
                  "snn_correct": {str(t): c for t, c in stats["snn_correct"].items()},
                  "spikes_per_image": stats["spikes"] / n,
                  "sops_per_image": None if stats["sops"] is None else stats["sops"] / n,
                  "energy_pj_per_image": None if stats["energy_pj"] is None else stats["energy_pj"] / n}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------- demo
def add_demo_parser(sub):
    """Register ``demo`` on an argparse ``add_subparsers()`` object."""
    p = sub.add_parser("demo", help="the shipped Fashion-MNIST MST: ANN vs SNN accuracy, spikes, energy, PNGs")
    p.add_argument("--out", default="mst_demo_out", help="folder for the PNGs (default ./mst_demo_out)")
    p.add_argument("--limit", type=int, default=DEMO_LIMIT,
                   help=f"test images to evaluate, of the 1000 shipped (default {DEMO_LIMIT})")
    _common_arguments(p, DEMO_TIMESTEPS)
    p.add_argument("--checkpoint", default=None,
                   help=f"another checkpoint for the same data (default: the shipped {DEMO_CHECKPOINT})")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args):
    """Evaluate the shipped model on the shipped sample, then draw one image's spikes and attention."""
    start = time.perf_counter()
    try:
        timesteps = parse_timesteps(args.timesteps)
        if args.limit < 1 or args.batch_size < 1:
            raise ValueError(f"--limit and --batch-size must be >= 1; got {args.limit}, {args.batch_size}")
        path = args.checkpoint or data.shipped_file(DEMO_CHECKPOINT)
        dataset = data.load_dataset(data.sample_path())
        model, mean, std, _ = load_model(path)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as err:
        return _fail("demo", err)
    cfg, t_max = model.config, max(timesteps)
    p = float(getattr(cfg, "mask_ratio", 0.0) or 0.0)
    n = min(args.limit, len(dataset))
    print(f"MST demo: {path}\n  Fashion-MNIST, the first {n} of the {len(dataset)} shipped test images; "
          f"embed {cfg.embed_dim}, depths {list(cfg.depths)}, L={cfg.qcfs_levels}, mask ratio {p:g}")
    stats = evaluate(model, dataset, timesteps, mean, std, p, n, args.batch_size, args.seed, "demo")
    print("\n".join(_table(stats, timesteps, cfg.qcfs_levels) + _energy_lines(model, stats, t_max)))
    if n < len(dataset):
        print(f"({n} images give a rough estimate; for all {len(dataset)}: mst-ref eval {path} "
              f"--data {data.sample_path()} --timesteps {args.timesteps})")
    x = data.prepare_images(dataset.images[:1], cfg.img_size, cfg.in_chans, mean, std)  # (1, Cin, H, W)
    written = [_accuracy_png(out, stats, timesteps)] + _one_image_pngs(out, model, x, dataset, t_max, p, args.seed)
    print(f"wrote {len(written)} PNGs to {out.resolve()}:")
    for f in written:
        print(f"  {f.name}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _accuracy_png(out, stats, timesteps):
    n = stats["n"]
    series = {"ANN (QCFS)": [100 * stats["ann_correct"] / n] * len(timesteps),
              "SNN (IF neurons)": [100 * stats["snn_correct"][t] / n for t in timesteps]}
    return plots.line_chart_png(out / "accuracy_vs_T.png", timesteps, series,
                                f"Shipped MST on {n} Fashion-MNIST test images", "time steps T", "accuracy (%)",
                                logx=True)


def _one_image_pngs(out, model, x, dataset, t_max, p, seed):
    """Run image 0 once more with a few sites recorded; draw a raster, membranes and attention."""
    s, stage = model.state, model.config.stages[0]
    attn = "layers.0.blocks.0.attn.attn_if"
    rng = np.random.default_rng(seed)
    result = model.snn_forward(x, t_max, mask_ratio=p, rng=rng, record=["patch_embed.proj_if", DEMO_SITE, attn])
    logits, ann_records = model.ann_forward(x, mask_ratio=p, rng=rng, record=attn)
    names = dataset.classes
    print(f"image 0: a {names[dataset.labels[0]]}; ANN says {names[logits[0].argmax()]}, "
          f"SNN at T={t_max} says {names[result.predictions[-1, 0]]}")
    # raster: 24 neurons of the first block's input site, spread over the firing rates
    spikes = result.records[DEMO_SITE][:, 0].reshape(t_max, -1) != 0  # (T, N*C)
    counts = spikes.sum(axis=0)  # (N*C,)
    active = np.flatnonzero(counts)[np.argsort(counts[np.flatnonzero(counts)], kind="stable")]
    chosen = active[np.unique(np.linspace(0, len(active) - 1, min(24, len(active))).astype(int))][::-1]
    written = [plots.raster_png(out / "spike_raster.png", spikes[:, chosen],
                                f"{DEMO_SITE}: {len(chosen)} of {spikes.shape[1]} neurons, image 0")]
    # membranes: re-simulate 3 of them with IFState on the site's input, BN[norm1](patch_embed spikes)
    current = batch_norm(result.records["patch_embed.proj_if"][:, 0],
                         *bn_params(s, "layers.0.blocks.0.norm1")).reshape(t_max, -1)  # (T, N*C)
    # 3 neurons firing on about 1/4, 1/2 and 3/4 of the steps
    pick = np.array([np.argmin(np.abs(counts - f * t_max) + t_max * (counts == 0)) for f in (0.25, 0.5, 0.75)])
    lam = s[f"{DEMO_SITE}.up"]
    neurons, before, emitted = IFState(lam, (len(pick),), model.dtype), [], []
    for t in range(t_max):
        # v <- v + x_t ; s = [v >= lambda] ; v <- v - s * lambda   (we plot v before the reset)
        before.append(neurons.v + current[t, pick])
        emitted.append(neurons.step(np.ascontiguousarray(current[t, pick])) != 0)
    same = np.array_equal(np.array(emitted), spikes[:, pick])
    print(f"membrane traces: IFState on the recorded input reproduces the model's spikes of "
          f"{len(pick)} neurons: {'yes' if same else 'NO'}")
    shown = min(t_max, 24)  # the first steps only: the input current is itself spiky, long traces blur
    written.append(plots.traces_png(out / "membrane_traces.png", np.array(before[:shown]), float(lam[0]),
                                    f"{DEMO_SITE}: v before reset, neurons {', '.join(map(str, pick))} "
                                    f"(0, 1, 2), first {shown} steps"))
    # attention: softmax(a + B_rel) of block 0 (not shifted), ANN and SNN (mean over steps)
    bias = relative_position_bias(s["layers.0.blocks.0.attn.relative_position_bias_table"],
                                  s["layers.0.blocks.0.attn.relative_position_index"])  # (nH, N, N)
    p_ann = softmax(ann_records[attn][0] + bias)  # (nW, nH, N, N)
    p_snn = softmax(result.records[attn][:, 0] + bias).mean(axis=0)  # (nW, nH, N, N)
    image = dataset.images[0, ..., 0] if dataset.images.shape[-1] == 1 else dataset.images[0].mean(-1)
    panels = [np.repeat(image[..., None], 3, axis=2)]  # (H, W, 3) uint8
    for prob in (p_ann, p_snn):
        received = prob.mean(axis=(1, 2))  # (nW, N): attention each key gets, mean over heads and queries
        grid = window_reverse(received[..., None], stage.window, stage.resolution, stage.resolution)[..., 0]
        grid = np.kron(grid, np.ones((model.config.patch_size,) * 2))  # (H, W) in pixels (img_size)
        panels.append(_overlay(image, grid))
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    written.append(plots.image_png(out / "attention_map.png",
                                   np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1),
                                   "input | ANN attention | SNN attention (mean over T)", scale=6))
    window = int(np.argmax(_window_ink(image, stage, model.config.patch_size)))
    written.append(plots.heatmap_png(out / "attention_window.png", p_snn[window, 0], None, None,
                                     f"block 0, window {window}, head 0: SNN softmax (queries x keys), "
                                     f"mean over {t_max} steps"))
    return written


def _window_ink(image, stage, patch):
    """(nW,) ink of the image in each of stage 0's windows (to show the busiest one)."""
    side = stage.window * patch
    h, w = image.shape[0] // side, image.shape[1] // side
    return image[:h * side, :w * side].reshape(h, side, w, side).sum(axis=(1, 3)).ravel()  # (nW,)


def _overlay(image, heat):
    """(H, W) uint8 image under a viridis map of ``heat`` (resized to the image if needed)."""
    if heat.shape != image.shape:
        heat = np.asarray(Image.fromarray(heat.astype(np.float32)).resize(image.shape[::-1], Image.BILINEAR))
    u = (heat - heat.min()) / (np.ptp(heat) or 1.0)
    # rgb = 0.45 * image + 0.55 * colormap(u)
    rgb = 0.45 * image[..., None].astype(float) + 0.55 * plots.colormap(u)  # (H, W, 3)
    return np.round(rgb).astype(np.uint8)
