"""The running commands of ``mst-ref``: ``eval`` (accuracy vs T on a dataset) and ``demo``.

Each is a function ``cmd_<name>(args) -> int`` (the exit status); ``add_eval_parser`` and
``add_demo_parser`` register them on the ``add_subparsers()`` object of :mod:`mst_ref.cli`::

    mst-ref eval CHECKPOINT --data PATH [--timesteps 1,2,4,...,128] [--mask-ratio P] [--limit N]
                 [--batch-size B] [--seed S] [--json OUT] [--mean M] [--std S] [--split test] [--resize]
    mst-ref demo [--out DIR] [--limit N] [--timesteps 1,2,4,...,64] [--batch-size B] [--seed S]
                 [--checkpoint PATH]

``eval`` is the published ``snn_validate``: for every batch, the ANN (QCFS) accuracy, and ONE SNN run
to the largest T whose cumulative logits give the prediction at every listed T. The demo does the same
on the shipped Fashion-MNIST model and sample, then runs one image once more with a few quantities
recorded by the model (spikes, membrane potentials, attention probabilities) and draws them
(:mod:`mst_ref.plots`). Tables go to stdout, progress bars and notes to stderr. Arguments, output
checks, normalisation defaults and errors: :mod:`mst_ref.cli.common`.

Masking: the model's trained ratio unless ``--mask-ratio`` says otherwise (a model trained with p is
run with p, as published), in the ANN and the SNN, with each image's masks drawn from (``--seed``, its
index) (:mod:`mst_ref.engine.mask_streams`). ``eval`` runs in shards over local processes
(``--workers N``) or a Dask cluster (``--scheduler``), resumable with ``--cache``, with the same results
(:mod:`mst_ref.distributed`, :mod:`mst_ref.cli.sharded`).
"""

import json
import time

import numpy as np
from ..io import data
from .. import plots
from .common import (IMAGENET_MEAN, IMAGENET_STD, Progress, UsageError, at_least, check_output_dir,  # noqa: F401
                         check_output_file, load_data, load_model, note_compiling, override_normalisation,
                         parse_timesteps, ratio, add_neuron_arguments, neuron_label, neuron_options)
from .common import add_distributed_arguments, padding_of
from .sharded import make_spec, run_sharded, wants_shards
from ..nn.windows import window_reverse
from ..distributed import EvalSpec, evaluate_images, grid_batches, merge

DEMO_CHECKPOINT, DEMO_LIMIT, DEMO_TIMESTEPS = "mst_fashion.pth", 50, "1,2,4,...,64"
DEMO_SITE = "layers.0.blocks.0.shortcut1_if"  # raster and membrane traces: the first block's input spikes
DEMO_BLOCK = "layers.0.blocks.0"  # attention pictures: the first (unshifted) block


def evaluate(model, dataset, timesteps, mean, std, mask_ratio=0.0, limit=None, batch_size=50, seed=0,
             progress="eval", resize=False, neuron_opts=None):
    """ANN accuracy and SNN accuracy at each T in ``timesteps`` from one run to max(timesteps) per batch.

    Returns a dict: n, ann_correct, snn_correct {T: int}, spikes (all sites, all steps), sops, macs,
    energy_pj (None when the energy accounting is unavailable), of the run to max(timesteps).
    ``progress``: the label of the progress bar on stderr, or None for none. ``neuron_opts``: the SNN's
    ``neuron`` and ``burst_max`` (:func:`mst_ref.cli.common.neuron_options`; None: the IF neuron).
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise UsageError(f"nothing to evaluate: the dataset has {len(dataset)} images and --limit is {limit}")
    cfg, t_max = model.config, max(timesteps)
    # one shard of all n images through the core the workers run (mst_ref.distributed.shard)
    spec = EvalSpec("", "", mean=tuple(mean), std=tuple(std), resize=resize, timesteps=tuple(timesteps),
                    mask_ratio=mask_ratio, seed=seed, batch_size=batch_size,
                    neuron=tuple((neuron_opts or {}).items()))
    bar = Progress(progress, n * (t_max + 1), "image-steps") if progress else None

    def on_progress(done, steps, size):  # the ANN counts as one step
        bar.update(done * (t_max + 1) + size * (1 + steps))

    result = evaluate_images(model, grid_batches(dataset, 0, n, spec, cfg.img_size, cfg.in_chans), spec,
                             on_progress if bar else None)
    if bar:
        bar.update(n * (t_max + 1))
        bar.close()
    return merge([result], n, spec.timesteps)


def _levels(model):
    return getattr(model.config, "qcfs_levels", "?")


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
        from ..engine import energy
        macs = energy.ann_macs(model.config)
        return f", ANN {energy.energy_pj(0, macs) / 1e6:.3f} uJ ({macs:,} MACs)"
    except (ImportError, AttributeError, ValueError, TypeError, NotImplementedError):
        return ""


def _common_arguments(p, timesteps_default):
    p.add_argument("--timesteps", default=timesteps_default,
                   help=f"T values, increasing, comma-separated; 'a,b,c,...,z' continues the doubling or "
                        f"the step shown by a,b,c up to z (default {timesteps_default})")
    p.add_argument("--batch-size", type=int, default=50, help="images per SNN run (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the RSM masks (default 0)")


def add_eval_parser(sub):
    """Register ``eval`` on an argparse ``add_subparsers()`` object."""
    p = sub.add_parser("eval", help="ANN and SNN accuracy vs T of a checkpoint on a dataset (snn_validate)")
    p.add_argument("checkpoint", help=".pth / .npz / .safetensors checkpoint")
    p.add_argument("--data", required=True,
                   help="IDX folder (MNIST / Fashion-MNIST), CIFAR batches folder, image folder (one "
                        "subfolder per class, named by class name or index) or .npz")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="part of an IDX / CIFAR / image folder (an .npz holds one set: test)")
    _common_arguments(p, "1,2,4,...,128")
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="RSM ratio p (default: the ratio the checkpoint was trained with)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--mean", default=None, help="per-channel mean, comma-separated (default: the checkpoint's)")
    p.add_argument("--std", default=None, help="per-channel std, comma-separated (default: the checkpoint's)")
    p.add_argument("--resize", action="store_true",
                   help="convert images of another size or channel count to the model's input (else an error)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    add_neuron_arguments(p)
    add_distributed_arguments(p)
    from .events import add_eval_arguments
    add_eval_arguments(p)  # --events voxel|frames, --bins
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    """Print the per-T accuracy table of a checkpoint on a dataset; optionally write it as JSON.

    The JSON holds the settings, ``n``, ``ann_accuracy`` and ``snn_accuracy`` {"T": ...} (fractions in
    [0, 1]), the counts behind them, and spikes, SOPs and energy per image of the run to max T.
    """
    timesteps = parse_timesteps(args.timesteps)
    at_least(args.batch_size, 1, "--batch-size")
    if args.limit is not None:
        at_least(args.limit, 1, "--limit")
    ratio(args.mask_ratio, "--mask-ratio")
    neuron = neuron_options(args)
    json_path = check_output_file(args.json, "--json") if args.json else None
    loaded = override_normalisation(load_model(args.checkpoint), args.mean, args.std)
    model, mean, std = loaded.model, loaded.mean, loaded.std
    trained = float(getattr(model.config, "mask_ratio", 0.0) or 0.0)
    p = trained if args.mask_ratio is None else args.mask_ratio
    if args.events:  # a folder of event recordings (mst_ref.cli.events), through the same sharded core
        from .events import event_folder, event_spec
        folder = event_folder(args, model.config)
        n = len(folder) if args.limit is None else min(args.limit, len(folder))
        print(f"events {args.data}/{args.split}: {len(folder)} recordings, evaluating {n}; coding {args.events}, "
              f"{args.bins} bins; mean/std {loaded.norm_source}; mask ratio {p:g}, seed {args.seed}")
        note_compiling()
        spec = event_spec(args, loaded, timesteps, p, neuron, seed=args.seed)
        stats = run_sharded("eval", args, spec, n, "eval")
        print("\n".join(_table(stats, timesteps, _levels(model)) + _energy_lines(model, stats, max(timesteps))))
        if json_path is not None:
            json_path.write_text(json.dumps({
                "checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, "n": n,
                "events": args.events, "bins": args.bins, "timesteps": timesteps, "mask_ratio": p,
                "seed": args.seed, "batch_size": args.batch_size,
                "ann_accuracy": stats["ann_correct"] / n,
                "snn_accuracy": {str(t): c / n for t, c in stats["snn_correct"].items()},
                "spikes_per_image": stats["spikes"] / n, "sops_per_image": stats["sops"] / n,
                "macs_per_image": stats["macs"] / n, "energy_pj_per_image": stats["energy_pj"] / n}, indent=1) + "\n")
            print(f"wrote {json_path}")
        return 0
    dataset, notes = load_data(args.data, loaded, args.split, args.resize, args.limit)
    print(f"checkpoint {args.checkpoint}: {model.config.in_chans}x{model.config.img_size}^2 inputs, "
          f"{model.config.num_classes} classes, trained mask ratio {trained:g}")
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    print(f"data {args.data} ({dataset.name}): {len(dataset)} images, evaluating {n}; "
          f"mean {mean} std {std} ({loaded.norm_source}); mask ratio {p:g}, seed {args.seed}")
    for line in notes:
        print(line)
    print(f"SNN neuron: {neuron_label(neuron, _levels(model))}")
    note_compiling()
    if wants_shards(args):  # the same core in shards, on processes or a Dask cluster (mst_ref.cli.sharded)
        spec = make_spec(args, loaded, padding_of(loaded), timesteps=tuple(timesteps), mask_ratio=p,
                         seed=args.seed, batch_size=args.batch_size, neuron=tuple(neuron.items()))
        stats = run_sharded("eval", args, spec, n, "eval")
    else:
        stats = evaluate(model, dataset, timesteps, mean, std, p, args.limit, args.batch_size, args.seed,
                         resize=args.resize, neuron_opts=neuron)
    print("\n".join(_table(stats, timesteps, _levels(model)) + _energy_lines(model, stats, max(timesteps))))
    if json_path is not None:
        n = stats["n"]
        record = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, "n": n,
                  "timesteps": timesteps, "mask_ratio": p, "trained_mask_ratio": trained, "seed": args.seed,
                  "batch_size": args.batch_size, "limit": args.limit, "mean": list(mean), "std": list(std),
                  "resize": bool(args.resize), "class_names": loaded.class_names, **neuron,
                  "ann_accuracy": stats["ann_correct"] / n, "ann_correct": stats["ann_correct"],
                  "snn_accuracy": {str(t): c / n for t, c in stats["snn_correct"].items()},
                  "snn_correct": {str(t): c for t, c in stats["snn_correct"].items()},
                  "spikes_per_image": stats["spikes"] / n,
                  "sops_per_image": None if stats["sops"] is None else stats["sops"] / n,
                  "energy_pj_per_image": None if stats["energy_pj"] is None else stats["energy_pj"] / n}
        json_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {json_path}")
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
    timesteps = parse_timesteps(args.timesteps)
    at_least(args.limit, 1, "--limit")
    at_least(args.batch_size, 1, "--batch-size")
    out = check_output_dir(args.out, "--out")
    path = args.checkpoint or data.shipped_file(DEMO_CHECKPOINT)
    loaded = load_model(path)
    model, mean, std = loaded.model, loaded.mean, loaded.std
    dataset, notes = load_data(data.sample_path(), loaded, limit=args.limit)
    cfg, t_max = model.config, max(timesteps)
    p = float(getattr(cfg, "mask_ratio", 0.0) or 0.0)
    n = min(args.limit, len(dataset))
    arch = (f"embed {cfg.embed_dim}, depths {list(cfg.depths)}, " if hasattr(cfg, "depths") else "")
    print(f"MST demo: {path}\n  Fashion-MNIST, the first {n} of the {len(dataset)} shipped test images; "
          f"{arch}L={_levels(model)}, mask ratio {p:g}")
    for line in notes:
        print(line)
    note_compiling()
    stats = evaluate(model, dataset, timesteps, mean, std, p, n, args.batch_size, args.seed, "demo")
    print("\n".join(_table(stats, timesteps, _levels(model)) + _energy_lines(model, stats, t_max)))
    if n < len(dataset):
        print(f"({n} images give a rough estimate; for all {len(dataset)}: mst-ref eval {path} "
              f"--data {data.sample_path()} --timesteps {args.timesteps})")
    x = data.prepare_images(dataset.images[:1], cfg.img_size, cfg.in_chans, mean, std)  # (1, Cin, H, W)
    names = loaded.class_names or dataset.classes
    written = [_accuracy_png(out, stats, timesteps)] + _one_image_pngs(out, model, x, dataset, names, t_max, p,
                                                                       args.seed)
    print(f"wrote {len(written)} PNGs to {out.resolve()}:")
    for f in written:
        print(f"  {f.name}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _accuracy_png(out, stats, timesteps):
    n = stats["n"]
    series = {"SNN (IF neurons), cumulative read-out": [100 * stats["snn_correct"][t] / n for t in timesteps],
              "ANN (QCFS), for reference": [100 * stats["ann_correct"] / n] * len(timesteps)}
    return plots.line_chart_png(out / "accuracy_vs_T.png", timesteps, series,
                                f"Accuracy vs time steps T: shipped MST, {n} Fashion-MNIST test images",
                                "time steps T (log scale)", "accuracy (%)", logx=True,
                                dashed={"ANN (QCFS), for reference"})


def _one_image_pngs(out, model, x, dataset, names, t_max, p, seed):
    """Run image 0 once more, recording spikes, membranes and attention; draw them."""
    site = DEMO_SITE if DEMO_SITE in model.site_names else model.site_names[0]
    probes = getattr(model, "probe_names", [])
    softmax_name = f"{DEMO_BLOCK}.attn.softmax"
    attention = softmax_name in probes and all(hasattr(model.config, a) for a in ("stages", "patch_size"))
    record = [site] + ([f"{site}.membrane"] if f"{site}.membrane" in probes else [])
    rng = np.random.default_rng(seed)
    result = model.snn_forward(x, t_max, mask_ratio=p, rng=rng, record=record + ([softmax_name] if attention else []))
    if attention:
        logits, ann_records = model.ann_forward(x, mask_ratio=p, rng=rng, record=softmax_name)
    else:
        logits = model.ann_forward(x, mask_ratio=p, rng=rng)
    label = int(dataset.labels[0])
    print(f"image 0: a {names[label]}; ANN says {names[int(logits[0].argmax())]}, "
          f"SNN at T={t_max} says {names[int(result.predictions[-1, 0])]}")
    # raster: 24 neurons of the site, spread over the firing rates
    spikes = result.records[site][:, 0].reshape(t_max, -1) != 0  # (T, neurons)
    counts = spikes.sum(axis=0)  # (neurons,)
    active = np.flatnonzero(counts)[np.argsort(counts[np.flatnonzero(counts)], kind="stable")]
    chosen = active[np.unique(np.linspace(0, len(active) - 1, min(24, len(active))).astype(int))][::-1]
    written = [plots.raster_png(out / "spike_raster.png", spikes[:, chosen],
                                f"Spikes of {len(chosen)} of the {spikes.shape[1]} IF neurons at {site}, image 0",
                                ylabel="neuron (fastest firing at the top)")]
    if f"{site}.membrane" in result.records:
        # membranes: 3 neurons firing on about 1/4, 1/2 and 3/4 of the steps, as the model recorded them
        v = result.records[f"{site}.membrane"][:, 0].reshape(t_max, -1)  # (T, neurons)
        pick = np.array([np.argmin(np.abs(counts - f * t_max) + t_max * (counts == 0)) for f in (0.25, 0.5, 0.75)])
        lam = float(model.threshold(site)[0]) if hasattr(model, "threshold") else float(model.state[f"{site}.up"][0])
        same = np.array_equal(v[:, pick] >= lam, spikes[:, pick])
        print(f"membrane traces: the recorded potentials reach lambda exactly when the model's {len(pick)} "
              f"neurons spike: {'yes' if same else 'NO'}")
        shown = min(t_max, 24)  # the first steps only: the input current is itself spiky, long traces blur
        written.append(plots.traces_png(
            out / "membrane_traces.png", v[:shown, pick], lam,
            f"Membrane potential of 3 IF neurons at {site}, image 0, first {shown} steps",
            labels=[f"neuron {i} ({counts[i]}/{t_max} steps fire)" for i in pick],
            ylabel="v after the input, before the reset (units of lambda)"))
    if not attention:
        print("attention pictures skipped: this model has no window attention to record")
        return written
    stage = model.config.stages[0]
    p_ann = ann_records[softmax_name][0]  # (nW, nH, N, N)
    p_snn = result.records[softmax_name][:, 0].mean(axis=0)  # (nW, nH, N, N), mean over steps
    image = dataset.images[0, ..., 0] if dataset.images.shape[-1] == 1 else dataset.images[0].mean(-1)
    maps = []
    for prob in (p_ann, p_snn):
        received = prob.mean(axis=(1, 2))  # (nW, N): attention each key gets, mean over heads and queries
        maps.append(_token_map(received, stage, model.config.patch_size))  # (H, W)
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    written.append(plots.image_panels_png(
        out / "attention_map.png", [image, maps[0], maps[1]],
        ["input image (pixels)", "ANN: attention received", f"SNN: attention received, mean of {t_max} steps"],
        f"{DEMO_BLOCK} (first block): attention probability each token receives, mean over "
        f"{stage.heads} heads and all queries of its {stage.window}x{stage.window} window",
        colorbar=(lo, hi, "attention probability"), scale=6))
    window = int(np.argmax(_window_ink(image, stage, model.config.patch_size)))
    written.append(plots.heatmap_png(
        out / "attention_window.png", p_snn[window, 0], None, None,
        f"{DEMO_BLOCK}, window {window}, head 0: SNN attention probabilities, mean of {t_max} steps",
        xlabel=f"key token (0..{stage.window ** 2 - 1}, row by row in the window)",
        ylabel="query token", colorbar_label="attention probability"))
    return written


def _token_map(received, stage, patch):
    """(nW, N) values per window token -> (H, W) image in pixels (each token covers patch x patch)."""
    grid = window_reverse(received[..., None], stage.window, stage.resolution, stage.resolution)[..., 0]
    return np.kron(grid, np.ones((patch, patch)))  # (H, W)


def _window_ink(image, stage, patch):
    """(nW,) ink of the image in each of stage 0's windows (to show the busiest one)."""
    side = stage.window * patch
    h, w = image.shape[0] // side, image.shape[1] // side
    return image[:h * side, :w * side].reshape(h, side, w, side).sum(axis=(1, 3)).ravel()  # (nW,)
