"""``mst-ref rsm-table``: the poster's masking table for MST, ResNet-18 and VGG-16, every measure side by side.

    mst-ref rsm-table --data DATA [--timesteps 32] [--ratios 0,0.5,0.75] [--seeds 3] [--limit N]
                      [--batch-size B] [--json OUT] [--out DIR] [--checkpoints A.pth,B.pth,... | --families MST,...]
                      [--cnn-sites NAME[,NAME...]] [--workers N | --scheduler ADDRESS] [--shard-size K] [--cache DIR]

By default it runs the six models shipped in data/: each family trained without masking (masked only
at evaluation) and trained with p = 0.75. MST is masked at the paper's sites (q, k, attention scores and
the MLP input). A CNN trained without masking is masked at each configuration ``--cnn-sites`` names
(:mod:`mst_ref.models.cnn_sites`: "all", "block-input", "stage-input", one stage, ...; several allowed,
each applied to the families that have it), by default at its family's reconstructed configuration
(:data:`~mst_ref.models.cnn_sites.RECONSTRUCTED`); a CNN trained with RSM at the sites it was trained
with. For each model, configuration and ratio it prints f (the share of the SOPs behind the masked
sites at p = 0), accuracy (mean +- std over the mask seeds) and its change against p = 0, and, as
counts per image and as ratios against p = 0, the spikes fired, the spikes delivered after masking,
SOPs and energy (:mod:`mst_ref.analysis.rsm_table`); with several configurations of a family, the one
whose energy ratios come closest to the poster's P. ``--json`` writes the rows; ``--out`` gets
``rsm_accuracy.png`` and ``rsm_energy.png``.

Each (model, sites, p, seed) run goes through the sharded evaluation core (:mod:`mst_ref.distributed`):
image i's masks derive from (seed, i), so the table does not depend on the batch size, the shard size or
the number of workers; ``--workers`` / ``--scheduler`` spread the shards, and with ``--cache DIR`` a
stopped run resumes from its finished shards (the full test set at T = 32 is hours on two cores).

Inputs: each model gets the data prepared as it was trained: its normalisation, and the zero padding
its config records (the CNNs were trained on Fashion-MNIST padded from 28 to 32 pixels).
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

from ..io import data
from .. import plots
from .common import (Progress, UsageError, add_distributed_arguments, at_least, check_output_dir,
                     check_output_file, load_model, note_compiling, padding_of, parse_floats, parse_timesteps)
from .. import distributed as dist
from ..analysis.rsm_table import RatioStats, RowSpec, closest_to_poster, table_rows
from ..threads import default_threads
from .sharded import backend_of, run_sharded
from ..models.cnn_sites import RECONSTRUCTED

SHIPPED = [  # (file, family label, trained ratio, mask sites)
    ("mst_fashion.pth", "MST", 0.0, "paper"),
    ("mst_fashion_rsm75_paper.pth", "MST", 0.75, "paper"),
    ("resnet18_fashion.pth", "ResNet-18", 0.0, None),  # None: the --cnn-sites configurations
    ("resnet18_fashion_rsm75_block_input.pth", "ResNet-18", 0.75, "trained"),  # RSM at the reconstructed sites
    ("vgg16_fashion.pth", "VGG-16", 0.0, None),
    ("vgg16_fashion_rsm75_stage_input.pth", "VGG-16", 0.75, "trained"),  # RSM at the reconstructed sites
]
POSTER = {  # the poster's table (CIFAR-10): accuracy % and power ratio at p = 0, 0.5, 0.75
    "MST": ((97.27, 97.25, 97.29), (1.0, 0.82, 0.74)),
    "ResNet-18": ((96.48, 92.88, 82.68), (1.0, 0.70, 0.58)),
    "VGG-16": ((95.46, 89.56, 79.09), (1.0, 0.77, 0.68)),
}


FAMILIES = list(dict.fromkeys(label for _, label, _, _ in SHIPPED))  # MST, ResNet-18, VGG-16


def add_rsm_table_parser(sub):
    p = sub.add_parser("rsm-table", help="the poster's masking table: MST vs ResNet-18 vs VGG-16, every measure")
    p.add_argument("--data", required=True, help="dataset: IDX folder, CIFAR batches, image folder or .npz")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--timesteps", default="32", help="T, one value (default 32)")
    p.add_argument("--ratios", default="0,0.5,0.75", help="masking ratios p, comma-separated, must include 0")
    p.add_argument("--seeds", type=int, default=3, help="mask seeds per ratio > 0 (default 3)")
    p.add_argument("--limit", type=int, default=None, help="first N images only (default: all)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--checkpoints", default=None,
                   help="comma-separated checkpoints instead of the six shipped models")
    p.add_argument("--families", default=None, metavar="NAMES",
                   help="only these families of the shipped models, comma-separated: MST, ResNet-18, VGG-16")
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    p.add_argument("--out", default=None, help="folder for rsm_accuracy.png and rsm_energy.png")
    add_cnn_sites_argument(p)
    add_distributed_arguments(p)
    from .events import add_eval_arguments
    add_eval_arguments(p)  # --events voxel|frames, --bins (with --checkpoints of event models)
    p.set_defaults(func=cmd_rsm_table)


def add_cnn_sites_argument(p):
    p.add_argument("--cnn-sites", action="append", default=None, metavar="NAME",
                   help="CNN masking configuration(s), comma-separated or repeated: all, block-input, stream, "
                        "residual-branch, conv2_x..conv5_x (ResNet-18); all, stage-input, stage-output, stage-first, "
                        "layer1..layer5, classifier (VGG-16); default: each family's reconstructed one "
                        f"({', '.join(f'{a} {n}' for a, n in RECONSTRUCTED.items())})")


def cnn_site_choices(model, names):
    """The configurations a CNN runs for ``--cnn-sites`` (a list of names or None); ``[None]`` for MST.

    A name is applied to every family that has it; a name no CNN family has is an error.
    """
    if getattr(model.config, "family", "mst") == "mst":
        return [None]
    if not names:
        return [RECONSTRUCTED[model.config.arch]]
    wanted = [n.strip() for text in names for n in text.split(",") if n.strip()]
    return [n for n in dict.fromkeys(wanted) if n in model.mask_site_presets]


def check_cnn_site_names(names, models):
    """UsageError for a ``--cnn-sites`` name that no given CNN has, or when none applies to a CNN."""
    if not names:
        return
    cnns = [m for m in models if getattr(m.config, "family", "mst") != "mst"]
    known = set().union(*(m.mask_site_presets for m in cnns)) if cnns else set()
    wanted = [n.strip() for text in names for n in text.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise UsageError(f"--cnn-sites must name CNN masking configurations such as {sorted(known)}; "
                         f"got {unknown or names}")
    for m in cnns:
        if not cnn_site_choices(m, names):
            raise UsageError(f"--cnn-sites {','.join(wanted)}: none is a configuration of {family_label(m)}; "
                             f"its are {sorted(m.mask_site_presets)}")


def _specs(args):
    """(LoadedModel, checkpoint path, RowSpec) of each model and masking configuration to run.

    A CNN trained without masking runs once per ``--cnn-sites`` configuration; a model trained with
    RSM at the sites it was trained with; MST (trained or not) at the paper's sites unless its
    checkpoint says otherwise.
    """
    if args.checkpoints and args.families:
        raise UsageError("--families picks among the shipped models; with --checkpoints, list only the ones wanted")
    if args.checkpoints:
        models = []
        for path in args.checkpoints.split(","):
            loaded = load_model(path.strip())
            models.append((loaded, float(getattr(loaded.model, "trained_mask_ratio", 0.0) or 0.0), path.strip()))
    else:
        families = {label.lower() for label in FAMILIES}
        wanted = families if args.families is None else {f.strip().lower() for f in args.families.split(",")}
        if not wanted or wanted - families:
            raise UsageError(f"--families must name some of {', '.join(FAMILIES)}; "
                             f"got {args.families!r}")
        models = [(load_model(data.shipped_file(name)), trained, str(data.shipped_file(name)))
                  for name, label, trained, _ in SHIPPED if label.lower() in wanted]
    check_cnn_site_names(args.cnn_sites, [loaded.model for loaded, _, _ in models])
    out = []
    for loaded, trained, path in models:
        model = loaded.model
        is_mst = getattr(model.config, "family", "mst") == "mst"
        if trained > 0 or is_mst:
            sites = model.trained_mask_sites if args.checkpoints or not is_mst else "paper"
            choices = [sites]
        else:
            choices = cnn_site_choices(model, args.cnn_sites)
        for sites in choices:
            out.append((loaded, path, RowSpec(family_label(model), model, trained, sites,
                                              model.trained_mask_rescale)))
    return out


def family_label(model):
    """"MST", "ResNet-18" or "VGG-16"."""
    if getattr(model.config, "family", "mst") == "mst":
        return "MST"
    return {"resnet18": "ResNet-18", "vgg16": "VGG-16"}[model.config.arch]


def _images(loaded, dataset, limit):
    """The first ``limit`` uint8 images, zero-padded as the checkpoint's config says (``pad``), checked
    against the model's input size."""
    cfg = loaded.model.config
    pad = padding_of(loaded)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = dataset.images[:n]
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # zeros, as in training
    if images.shape[1:] != (cfg.img_size, cfg.img_size, cfg.in_chans):
        raise UsageError(f"the data holds {images.shape[3]}-channel {images.shape[1]} x {images.shape[2]} images "
                         f"(after the checkpoint's padding of {pad}) but a model takes {cfg.in_chans}-channel "
                         f"{cfg.img_size} x {cfg.img_size} inputs: use the dataset the models were trained on")
    return images


def _batches(loaded, dataset, limit, batch_size):
    """A callable yielding the model's normalised batches (:func:`_images`) and their labels; and n."""
    cfg = loaded.model.config
    images = _images(loaded, dataset, limit)
    n = len(images)
    labels = dataset.labels[:n]

    def batches():
        for start in range(0, n, batch_size):
            x = data.prepare_images(images[start:start + batch_size], cfg.img_size, cfg.in_chans, loaded.mean,
                                    loaded.std)
            yield x, labels[start:start + batch_size]
    return batches, n


def _stats(merged, ratio):
    """A run's merged shard results (:func:`mst_ref.distributed.merge`) as one seed of a RatioStats."""
    n = merged["n"]
    stats = RatioStats(ratio=float(ratio), images=n)
    stats.accuracies.append(100.0 * next(iter(merged["snn_correct"].values())) / n)
    stats.fired = merged["fired"] / n
    stats.delivered = merged["spikes"] / n
    stats.sops = merged["sops"] / n
    stats.energy_pj = merged["energy_pj"] / n
    stats.sops_by_site = {k: v / n for k, v in merged["sops_by_site"].items()}
    return stats


def _mean_stats(runs):
    """Seeds of one ratio (RatioStats with one accuracy each) as one RatioStats: accuracies listed, counts averaged."""
    out = RatioStats(ratio=runs[0].ratio, images=runs[0].images)
    for r in runs:
        out.accuracies += r.accuracies
        out.fired += r.fired / len(runs)
        out.delivered += r.delivered / len(runs)
        out.sops += r.sops / len(runs)
        out.energy_pj += r.energy_pj / len(runs)
        for k, v in r.sops_by_site.items():
            out.sops_by_site[k] = out.sops_by_site.get(k, 0.0) + v / len(runs)
    return out


def add_unmasked_reference(rows):
    """Rows of a model trained with RSM gain ``energy_vs_unmasked_model`` / ``accuracy_vs_unmasked_model``:
    against the same family's model trained without masking, at p = 0, when the table has it."""
    base = {r["model"]: r for r in rows if r["trained_ratio"] == 0 and r["ratio"] == 0}
    for r in rows:
        b = base.get(r["model"])
        if r["trained_ratio"] > 0 and b is not None:
            r["energy_vs_unmasked_model"] = r["energy_pj"] / b["energy_pj"] if b["energy_pj"] else math.nan
            r["accuracy_vs_unmasked_model"] = r["accuracy"] - b["accuracy"]


def reconstruction_lines(rows):
    """For each model masked at several configurations: the one closest to the poster's P."""
    lines = []
    for key in dict.fromkeys((r["model"], r["trained_ratio"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["trained_ratio"]) == key]
        if len({str(r["sites"]) for r in mine}) < 2 or key[0] not in POSTER:
            continue
        target = dict(zip((0.5, 0.75), POSTER[key[0]][1][1:]))
        best, d = closest_to_poster(mine, target)
        if best is not None:
            lines.append(f"closest to the poster's P for {key[0]} (trained p = {key[1]:g}): {best}, largest "
                         f"|energy ratio - P| at p = 0.5 / 0.75 = {d:.3f}")
    return lines


def _fmt(v):
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


def format_rows(rows):
    """The table as text lines."""
    head = (f"{'model':<10} {'trained':>7} {'sites':<15} {'f':>5} {'p':>5} {'accuracy %':>14} {'change':>7} {'fired/img':>10} {'x':>6} "
            f"{'delivered':>10} {'x':>6} {'SOPs/img':>10} {'x':>6} {'energy uJ':>9} {'x':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<10} {r['trained_ratio']:>7g} {_sites_label(r['sites']):<15} {r['masked_share']:>5.3f} "
            f"{r['ratio']:>5g} {r['accuracy']:>7.2f} +-{r['accuracy_std']:>4.2f} "
            f"{r['accuracy_change']:>+7.2f} {r['fired']:>10.4g} {r['fired_ratio']:>6.3f} {r['delivered']:>10.4g} "
            f"{r['delivered_ratio']:>6.3f} {r['sops']:>10.4g} {r['sops_ratio']:>6.3f} {r['energy_pj'] / 1e6:>9.2f} "
            f"{r['energy_ratio']:>6.3f}")
    return lines


def _sites_label(sites):
    return sites if isinstance(sites, str) else f"{len(sites)} sites"


def _pngs(out, rows, ratios):
    out = Path(out)
    acc, energy = {}, {}
    for r in rows:
        key = f"{r['model']} trained p={r['trained_ratio']:g}, {_sites_label(r['sites'])}"
        acc.setdefault(key, []).append(r["accuracy"])
        energy.setdefault(key, []).append(r["energy_ratio"])
    n = rows[0]["images"]
    plots.line_chart_png(out / "rsm_accuracy.png", ratios, acc,
                         f"SNN accuracy vs masking ratio p ({n} test images, mean over mask seeds)",
                         "masking ratio p (fraction of spikes dropped)", "accuracy (%)")
    plots.line_chart_png(out / "rsm_energy.png", ratios, energy,
                         "SNN energy per image vs masking ratio p, relative to p = 0 of the same model",
                         "masking ratio p (fraction of spikes dropped)", "energy / energy at p = 0")


def cmd_rsm_table(args):
    T = parse_timesteps(args.timesteps, single=True)[0]
    ratios = parse_floats(args.ratios, "--ratios")
    if any(not 0 <= p <= 1 for p in ratios) or 0 not in ratios or sorted(set(ratios)) != list(ratios):
        raise UsageError(f"--ratios must be increasing numbers in [0, 1] including 0; got {args.ratios!r}")
    at_least(args.seeds, 1, "--seeds")
    at_least(args.batch_size, 1, "--batch-size")
    if args.limit is not None:
        at_least(args.limit, 1, "--limit")
    if args.json:
        check_output_file(args.json, "--json")
    if args.out:
        check_output_dir(args.out, "--out")
    if args.events and not args.checkpoints:
        raise UsageError("--events needs --checkpoints: models trained on event recordings (the shipped table's "
                         "models take images), e.g. data/mst_events_voxel.pth")
    specs = _specs(args)
    if args.events:  # a folder of recordings, coded for each model (mst_ref.cli.events)
        from .events import event_folder
        folders = [event_folder(args, loaded.model.config) for loaded, _, _ in specs]
        n = len(folders[0]) if args.limit is None else min(args.limit, len(folders[0]))
    else:
        dataset = data.load_dataset(args.data, args.split)
        n = len(_images(specs[0][0], dataset, args.limit))
        for loaded, _, _ in specs:
            _images(loaded, dataset, args.limit)  # every model takes these images (a clear error if not)
    masked_ratios = [p for p in ratios if p > 0]
    # p = 0 draws no mask: run once per model, whatever its sites
    runs = [(k, 0.0, 0) for k, (_, _, spec) in enumerate(specs)
            if k == 0 or specs[k - 1][2].model is not spec.model]
    runs += [(k, p, seed) for k in range(len(specs)) for p in masked_ratios for seed in range(args.seeds)]
    runs.sort()
    note_compiling()
    backend = backend_of(args)
    print(f"{len(runs)} SNN runs of {n} images (model, sites, p, seed), each in shards on {backend.name}"
          + (f"; cache {args.cache}" if args.cache else ""), file=sys.stderr)
    bar = Progress(f"rsm-table T={T}", n * len(runs), "image runs")
    done = [0]

    def tick(k):
        done[0] += k
        bar.update(done[0])
    stats = {}  # (spec index, p) -> [RatioStats per seed]; p = 0 under the first spec of its model
    try:
        for k, p, seed in runs:
            loaded, path, spec = specs[k]
            espec = dist.EvalSpec(
                checkpoint=str(Path(path).resolve()), data=str(Path(args.data).resolve()), split=args.split,
                class_names=None if loaded.class_names is None else tuple(loaded.class_names),
                pad=0 if args.events else padding_of(loaded), mean=tuple(loaded.mean), std=tuple(loaded.std),
                timesteps=(T,), mask_ratio=float(p), mask_sites=spec.mask_sites if p > 0 else None, seed=seed,
                batch_size=args.batch_size, ann=False, threads=default_threads(), events=args.events,
                bins=args.bins)
            merged = run_sharded("rsm-table", args, espec, n, f"{spec.label} {spec.mask_sites} p={p:g} seed {seed}",
                                 backend=backend, quiet=True, on_images=tick)
            stats.setdefault((k, p), []).append(_stats(merged, p))
    finally:
        backend.close()
    bar.close()
    rows = []
    for k, (_, _, spec) in enumerate(specs):
        base = next(v for (j, p), v in stats.items() if p == 0 and specs[j][2].model is spec.model)
        rows += table_rows(spec, [_mean_stats(base)] + [_mean_stats(stats[(k, p)]) for p in masked_ratios])
    add_unmasked_reference(rows)
    print(f"rsm-table: T = {T}, {n} images of {args.data} ({args.split}), {args.seeds} mask seed(s) per p > 0; "
          "counts per image, x = ratio against p = 0 of the same model and sites; f = share of the SOPs "
          "behind the masked sites at p = 0; MST's sites: paper = q, k, attention scores and MLP input, published = "
          "q, k, attention scores")
    print("\n".join(format_rows(rows)))
    print("\nthe poster (CIFAR-10): accuracy % / power ratio at p = " + ", ".join(f"{p:g}" for p in (0, 0.5, 0.75)))
    for label, (acc, power) in POSTER.items():
        print(f"  {label:<10} " + "   ".join(f"{a:.2f}% x{w:.2f}" for a, w in zip(acc, power)))
    for line in reconstruction_lines(rows):
        print(line)
    for r in rows:
        if "energy_vs_unmasked_model" in r and r["ratio"] > 0:
            print(f"{r['model']} trained with p = {r['trained_ratio']:g} at p = {r['ratio']:g}: energy "
                  f"x{r['energy_vs_unmasked_model']:.3f}, accuracy {r['accuracy_vs_unmasked_model']:+.2f} against "
                  f"the {r['model']} trained without masking at p = 0")
    print(f"standard error of one accuracy on {rows[0]['images']} images: at most "
          f"{max(r['accuracy_se'] for r in rows):.2f} points (sqrt(a (1 - a) / n))")
    if args.json:
        Path(args.json).write_text(json.dumps({"timesteps": T, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    if args.out:
        _pngs(args.out, rows, ratios)
        print(f"wrote {Path(args.out) / 'rsm_accuracy.png'} and rsm_energy.png")
    return 0


# ---------------------------------------------------------------- where the models look, as p grows
REGION_SITES = {  # a late site with a spatial grid, per architecture
    "mst": "layers.{last}.blocks.{block}.shortcut1_if",  # last block's input tokens (not a masked site)
    "resnet18": "conv4_x.1.act",  # 8 x 8 for 32-px inputs
    "vgg16": "layer3.10",  # 8 x 8
}


def region_site(model):
    """The late site whose spike density :func:`cmd_rsm_regions` maps, for this model."""
    cfg = model.config
    if getattr(cfg, "family", "mst") == "mst":
        last = len(cfg.depths) - 1
        return REGION_SITES["mst"].format(last=last, block=cfg.depths[last] - 1)
    return REGION_SITES[cfg.arch]


def spike_density(model, x, step, ratio, seed, sites=None, rescale=None):
    """Per image, the fraction of the site's neurons at each position that spiked at ``step``.

    ``sites`` / ``rescale`` None: masked as the model was trained (its ``trained_mask_sites`` and
    ``trained_mask_rescale``).

    Returns
    -------
    (B, h, w) ndarray
        MST: tokens on their grid, mean over channels; CNN: positions, mean over channels.
    """
    site = region_site(model)
    res = model.snn_forward(x, step, mask_ratio=ratio, rng=np.random.default_rng(seed), mask_sites=sites,
                            mask_rescale=rescale, record=site, fast=False)
    s = res.records[site][step - 1] != 0  # (B, N, C) or (B, h, w, C) at step t
    if s.ndim == 3:
        side = int(round(np.sqrt(s.shape[1])))
        s = s.reshape(s.shape[0], side, side, s.shape[2])
    return s.mean(axis=-1)  # (B, h, w)


def add_rsm_regions_parser(sub):
    p = sub.add_parser("rsm-regions", help="spike density of a late layer of MST and ResNet-18 at one step, p = 0 / 0.5 / 0.75")
    p.add_argument("--data", required=True, help="dataset: IDX folder, CIFAR batches, image folder or .npz")
    p.add_argument("--images", type=int, default=3, help="number of test images (default 3)")
    p.add_argument("--step", default="8", help="the time step t shown (default 8)")
    p.add_argument("--ratios", default="0,0.5,0.75")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default=None, help="comma-separated checkpoints (default: the shipped "
                   "MST and ResNet-18 trained with p = 0.75, the ResNet at its reconstructed sites)")
    p.add_argument("--out", default="rsm_out", help="folder for rsm_regions.png (default ./rsm_out)")
    p.set_defaults(func=cmd_rsm_regions)


def cmd_rsm_regions(args):
    t = parse_timesteps(args.step, "--step", single=True)[0]
    ratios = parse_floats(args.ratios, "--ratios")
    if any(not 0 <= p <= 1 for p in ratios):
        raise UsageError(f"--ratios must be numbers in [0, 1]; got {args.ratios!r}")
    at_least(args.images, 1, "--images")
    out = check_output_dir(args.out, "--out")
    paths = (args.checkpoints.split(",") if args.checkpoints else
             [data.shipped_file("mst_fashion_rsm75_paper.pth"),
              data.shipped_file("resnet18_fashion_rsm75_block_input.pth")])
    dataset = data.load_dataset(args.data, "test")
    images, heats, labels, lines = [], [], [], []
    note_compiling()
    for path in paths:
        loaded = load_model(str(path).strip())
        model = loaded.model
        batches, n = _batches(loaded, dataset, args.images, args.images)
        x, y = next(batches())
        raw = _images(loaded, dataset, n)[..., 0]  # (n, H, W) as the model sees them
        # masked as the model was trained (its sites and scaling)
        maps = [spike_density(model, x, t, p, args.seed) for p in ratios]  # (B, h, w) each
        name = family_label(model)
        similarity = [np.mean([map_correlation(maps[0][b], m[b]) for b in range(n)]) for m in maps[1:]]
        lines.append(f"  {name:<10} {region_site(model):<34} " + "  ".join(
            f"p = {p:g}: {c:+.2f}" for p, c in zip(ratios[1:], similarity)))
        for b in range(n):
            images.append(raw[b])
            # each map relative to its own maximum: where the spikes are, not how many
            heats.append([m[b] / m[b].max() if m[b].max() > 0 else m[b] for m in maps])
            cls = loaded.class_names[y[b]] if loaded.class_names else str(y[b])
            labels.append(f"{name}, image {b} ({cls})")
    order = sorted(range(len(images)), key=lambda k: (int(labels[k].split("image ")[1].split(" ")[0]), k))
    path = plots.overlay_grid_png(
        Path(out) / "rsm_regions.png", [images[k] for k in order], [heats[k] for k in order],
        [labels[k] for k in order], [f"p = {p:g}" for p in ratios],
        f"Spike density of a late layer at time step t = {t}, as the masking ratio p grows",
        (0.0, 1.0, "spike density / panel maximum"), scale=4)
    print(f"rsm-regions: step t = {t}, {args.images} test images, mask seed {args.seed}; correlation of each "
          f"map with the p = {ratios[0]:g} map of the same image (mean over images):")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


def map_correlation(a, b):
    """Pearson correlation of two maps (0 when either is constant)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0
