"""``mst-ref mask-sweep`` and ``mst-ref energy``: RSM's energy saving, measured (docs/mst.md sections 5, 6).

    mst-ref mask-sweep CHECKPOINT [--data PATH] [--ratios 0,0.5,0.75] [--timesteps T] [--seeds 3]
                       [--limit N] [--mask-sites published|paper] [--cnn-sites NAME,...] [--layerwise]
    mst-ref energy CHECKPOINT [--data PATH] [--timesteps T] [--mask-ratio p] [--limit N]

``mask-sweep`` prints the shape of the MST poster's table (p = 0 / 0.5 / 0.75 -> power x1 / x0.82 /
x0.74): per ratio, SOPs and energy per image, energy relative to p = 0 (always run, as the reference)
and accuracy, mean and spread over seeds, and f, the share of the SOPs at p = 0 behind the masked sites
(a CNN: once per ``--cnn-sites`` configuration, :mod:`mst_ref.models.cnn_sites`). ``--layerwise`` adds the map of
:func:`mst_ref.analysis.ratio_search.search_block_ratios`, searched on the images after the first ``--limit``.
``energy`` prints every site's spikes, SOPs and energy per image, the analog MACs, and the totals
against the ANN. What is counted: :mod:`mst_ref.engine.energy`. Progress goes to stderr, tables to stdout.
Both run at one T: ``--timesteps`` takes one value in the grammar every command shares
(:func:`mst_ref.cli.common.parse_timesteps`).
"""

import sys

import numpy as np

from ..engine import energy
from .common import (UsageError, add_neuron_arguments, at_least, load_data, load_model, neuron_label,
                         neuron_options, note_compiling, override_normalisation,
                         parse_floats, parse_timesteps, progress_line)
from .common import ratio as check_ratio
from ..io.data import iterate_batches, sample_path
from ..analysis.ratio_search import evaluate_ratios, search_block_ratios
from ..distributed import EvalSpec, evaluate_images, merge
from .common import add_distributed_arguments, padding_of
from .sharded import ShardedRatios, make_spec, run_sharded, wants_shards
from ..analysis.rsm_table import masked_share
from .mask_policy import add_policy_arguments, cmd_policy_sweep, wants_policy_sweep

__all__ = ["add_mask_sweep_parser", "cmd_mask_sweep", "add_energy_parser", "cmd_energy"]


# ---------------------------------------------------------------- shared pieces

def _load(args, extra=0):
    """The model, the evaluation images (the first --limit) and up to ``extra`` after them, normalised."""
    loaded = load_model(args.checkpoint)
    if args.mean is None and args.std is None and "mean" not in loaded.config:
        print(f"note: {args.checkpoint} stores no mean/std; using the {loaded.norm_source} "
              f"(mean {loaded.mean}, std {loaded.std}); --mean / --std to change", file=sys.stderr)
    loaded = override_normalisation(loaded, args.mean, args.std)
    model, mean, std = loaded.model, loaded.mean, loaded.std
    limit = None if args.limit is None else at_least(args.limit, 1, "--limit")
    dataset, notes = load_data(args.data if args.data else sample_path(), loaded, resize=args.resize,
                               limit=None if limit is None else limit + extra)
    for line in notes:
        print(line, file=sys.stderr)
    c = model.config
    limit = len(dataset) if limit is None else limit
    batches = list(iterate_batches(dataset, 1000, c.img_size, c.in_chans, mean, std, limit=limit + extra,
                                   resize=args.resize))
    images = np.concatenate([x for x, _ in batches])  # (n, Cin, H, W)
    labels = np.concatenate([y for _, y in batches])  # (n,)
    return model, (images[:limit], labels[:limit]), (images[limit:], labels[limit:]), dataset


def _common_arguments(p):
    p.add_argument("checkpoint", help="model file (.pth, .npz or .safetensors)")
    p.add_argument("--data", default=None, help="dataset (IDX / CIFAR folder, image folder or .npz); "
                   "default: the shipped Fashion-MNIST sample")
    p.add_argument("--timesteps", default="32", help="T, one value (default 32)")
    p.add_argument("--limit", type=int, default=100, help="evaluate the first N images (default 100)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--mask-sites", choices=["published", "paper"], default=None,
                   help="sites RSM masks: q, k, attention (published) or also the MLP input (paper); default: "
                        "the sites the checkpoint was trained with (a CNN: every site)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mean", default=None, help="normalisation mean, comma-separated (default: checkpoint)")
    p.add_argument("--std", default=None, help="normalisation std, comma-separated (default: checkpoint)")
    p.add_argument("--e-ac", type=float, default=energy.E_AC_PJ, help="pJ per SOP (default 0.9)")
    p.add_argument("--e-mac", type=float, default=energy.E_MAC_PJ, help="pJ per MAC (default 4.6)")
    add_neuron_arguments(p)
    p.add_argument("--resize", action="store_true",
                   help="convert images of another size or channel count to the model's input (else an error)")


def _mean_sd(values):
    return 100 * float(np.mean(values)), 100 * float(np.std(values))


# ---------------------------------------------------------------- mask-sweep

def add_mask_sweep_parser(subparsers):
    """Register ``mask-sweep`` on an argparse subparsers object."""
    p = subparsers.add_parser("mask-sweep", help="SOPs, energy and accuracy vs the RSM ratio p")
    _common_arguments(p)
    p.add_argument("--ratios", default="0,0.5,0.75", help="comma-separated p (default 0,0.5,0.75)")
    p.add_argument("--seeds", type=int, default=3, help="mask seeds per ratio p > 0 (default 3)")
    add_policy_arguments(p)  # --policy, --schedule, --json (mst_ref.cli.mask_policy)
    add_distributed_arguments(p)  # the (ratio, seed) runs in shards (mst_ref.cli.sharded.ShardedRatios)
    from .events import add_eval_arguments
    add_eval_arguments(p)  # --events voxel|frames, --bins
    p.add_argument("--layerwise", action="store_true", help="add a greedy per-block ratio map")
    p.add_argument("--cnn-sites", action="append", default=None, metavar="NAME",
                   help="a CNN: masking configuration(s), comma-separated or repeated (all, block-input, "
                        "stage-input, conv2_x, layer1, ...: mst_ref.models.cnn_sites); one sweep each")
    p.add_argument("--val-limit", type=int, default=64,
                   help="--layerwise: validation images, taken after the first --limit (default 64)")
    p.add_argument("--search-timesteps", type=int, default=8, help="--layerwise: T of the search (default 8)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="--layerwise: accepted accuracy drop, a fraction (default 0.01)")
    p.add_argument("--candidates", default="0.25,0.5,0.75,0.9",
                   help="--layerwise: ratios tried per block (default 0.25,0.5,0.75,0.9)")
    p.set_defaults(func=cmd_mask_sweep)
    return p


def cmd_mask_sweep(args):
    """Print SOPs, energy and accuracy per masking ratio (and a layer-wise map with --layerwise)."""
    ratios = [check_ratio(p, "--ratios values") for p in parse_floats(args.ratios, "--ratios")]
    ratios = sorted(set([0.0] + ratios))  # p = 0 is the reference
    args.timesteps = parse_timesteps(args.timesteps, single=True)[0]
    neuron = neuron_options(args)
    if args.layerwise and neuron["neuron"] != "if":
        raise UsageError(f"--layerwise searches ratios with the IF neuron only; got --neuron {args.neuron}")
    for value, name in ((args.seeds, "--seeds"), (args.batch_size, "--batch-size")):
        at_least(value, 1, name)
    energy.energy_pj(0, 0, args.e_ac, args.e_mac)  # checks the constants
    n_val = at_least(args.val_limit, 1, "--val-limit") if args.layerwise else 0
    if args.layerwise:
        at_least(args.search_timesteps, 1, "--search-timesteps")
        candidates = [check_ratio(p, "--candidates values") for p in parse_floats(args.candidates, "--candidates")]
    if args.events:  # a folder of recordings: every (ratio, seed) run through the sharded core
        from .events import event_folder
        if args.layerwise or wants_policy_sweep(args):
            raise UsageError("--events sweeps the published masks: drop --layerwise / --policy")
        if not args.data:
            raise UsageError("--events needs --data: a folder of event recordings")
        loaded = override_normalisation(load_model(args.checkpoint), args.mean, args.std)
        model = loaded.model
        dataset = event_folder(args, model.config)
        n = len(dataset) if args.limit is None else min(at_least(args.limit, 1, "--limit"), len(dataset))
        images, labels = dataset.files[:n], dataset.labels[:n]  # recordings, read by the shards
        val_x = []
    else:
        model, (images, labels), (val_x, val_y), dataset = _load(args, extra=n_val)
    note_compiling()
    T, c = args.timesteps, model.config
    args.mask_sites = args.mask_sites or model.trained_mask_sites
    if wants_policy_sweep(args) and wants_shards(args):
        raise UsageError("--policy runs in one process; drop --workers / --scheduler / --shard-size / --cache")
    if wants_policy_sweep(args):  # one masking policy, --json rows (mst_ref.cli.mask_policy)
        return cmd_policy_sweep(args, model, images, labels, dataset, neuron, ratios)
    evaluate = evaluate_ratios
    if args.events:
        evaluate = ShardedRatios("mask-sweep", args, loaded, 0)
    elif wants_shards(args):  # the same runs in shards, one backend for all (mst_ref.cli.sharded)
        loaded = override_normalisation(load_model(args.checkpoint), args.mean, args.std)
        args.data = args.data or str(sample_path())
        evaluate = ShardedRatios("mask-sweep", args, loaded, padding_of(loaded))
    site_sets = [args.mask_sites]
    if args.cnn_sites:
        from .table import check_cnn_site_names, cnn_site_choices
        if getattr(c, "family", "mst") == "mst":
            raise UsageError("--cnn-sites chooses a CNN's masking configuration; for MST use --mask-sites")
        check_cnn_site_names(args.cnn_sites, [model])
        site_sets = cnn_site_choices(model, args.cnn_sites)
        if args.layerwise:
            raise UsageError("--layerwise searches at the --mask-sites sites; it does not combine with --cnn-sites")
    # analog MACs per image (frames: the input layer runs on a new frame every step)
    macs = energy.snn_macs(c, T, input_passes=T if args.events == "frames" else 1)
    rows = [(f"{p:g}", p, 1 if p == 0 else args.seeds) for p in ratios]

    search = None
    if args.layerwise:
        if len(val_x) == 0:
            raise UsageError(f"--layerwise searches on the images after the first --limit {len(images)}; the "
                             f"dataset has only {len(images)}: lower --limit")
        search = search_block_ratios(model, val_x, val_y, args.search_timesteps, np.random.default_rng(args.seed),
                                     candidates=candidates,
                                     tolerance=args.tolerance, mask_sites=args.mask_sites,
                                     batch_size=args.batch_size,
                                     progress=lambda d, t, m: progress_line(d, t, "search " + m))
        sys.stderr.write("\n")  # the search usually ends before its upper bound of evaluations
        rows.append(("layer-wise", search.ratios, args.seeds))

    total, done = 1 + len(site_sets) * sum(n for label, _, n in rows if label != "0"), 0
    acc0, sops0, by_site0 = evaluate(model, images, labels, T, 0.0, [args.seed, 0], args.mask_sites,
                                            args.batch_size, neuron)  # p = 0 draws no mask: once for all sites
    sweeps = []
    for sites in site_sets:
        results = [("0", sops0, [acc0])]
        for label, ratio, seeds in rows[1:]:
            accs, sops = [], []
            for s in range(seeds):
                acc, sop, _ = evaluate(model, images, labels, T, ratio, [args.seed, s], sites,
                                              args.batch_size, neuron)
                accs.append(acc)
                sops.append(sop)
                done += 1
                progress_line(done, total, f"{sites} p={label} seed {s}")
            results.append((label, float(np.mean(sops)), accs))
        sweeps.append((sites, masked_share(model, by_site0, sites), results))
    if evaluate is not evaluate_ratios:
        evaluate.close()
    for k, (sites, f, results) in enumerate(sweeps):
        _print_sweep(args, model, images, dataset, neuron, macs, sites, f, results, search, len(val_x), first=k == 0)
    return 0


def _print_sweep(args, model, images, dataset, neuron, macs, sites, f, results, search, n_val, first=True):
    """One configuration's table (the model's lines above the first)."""
    T, c = args.timesteps, model.config
    ref_sops = results[0][1]
    ref_energy = energy.energy_pj(ref_sops, macs, args.e_ac, args.e_mac)
    ann = energy.energy_pj(0, energy.ann_macs(c), args.e_ac, args.e_mac)
    if first:
        print(f"mask-sweep: {args.checkpoint} (trained with p={c.mask_ratio:g}) on {dataset.name}, "
              f"first {len(images)} images, T={T}, seeds {args.seeds}, "
              f"neuron {neuron_label(neuron, c.qcfs_levels)}")
        print(f"energy = {args.e_ac:g} pJ x SOPs + {args.e_mac:g} pJ x MACs; analog MACs/img {macs:.4g}; "
              f"ANN {energy.ann_macs(c):.4g} MACs/img = {ann / 1e6:.2f} uJ")
    print(f"sites {sites}: f = {f:.3f} of the SOPs at p = 0 lie behind the masked sites")
    header = (f"{'ratio':>10} {'SOPs/img':>11} {'SOPs vs p=0':>12} {'energy/img':>11} {'energy vs p=0':>14} "
              f"{'vs ANN':>7} {'accuracy % (mean +- sd)':>24} {'min..max':>14}")
    print(header)
    print("-" * len(header))
    for label, sops, accs in results:
        e = energy.energy_pj(sops, macs, args.e_ac, args.e_mac)
        mean, sd = _mean_sd(accs)
        print(f"{label:>10} {sops:>11.4g} {'x%.3f' % (sops / ref_sops):>12} {e / 1e6:>8.2f} uJ "
              f"{'x%.3f' % (e / ref_energy):>14} {'x%.2f' % (e / ann):>7} {f'{mean:.2f} +- {sd:.2f}':>24} "
              f"{f'{100 * min(accs):.1f}..{100 * max(accs):.1f}':>14}")
    if search is not None:
        print(f"layer-wise map (greedy, {n_val} validation images after the first "
              f"{len(images)}, T={args.search_timesteps}, tolerance {100 * args.tolerance:g} points):")
        for pattern, p in search.ratios.items():
            print(f"  {pattern:<24} p={p:g}")
        print(f"  search: unmasked {100 * search.baseline_accuracy:.2f}% "
              f"{search.baseline_sops_per_image:.4g} SOPs/img; "
              f"best global p={search.global_ratio:g} {100 * search.global_accuracy:.2f}% "
              f"{search.global_sops_per_image:.4g}; layer-wise {100 * search.accuracy:.2f}% "
              f"{search.sops_per_image:.4g} ({len(search.trials)} evaluations)")


# ---------------------------------------------------------------- energy

def add_energy_parser(subparsers):
    """Register ``energy`` on an argparse subparsers object."""
    p = subparsers.add_parser("energy", help="per-layer spikes, SOPs and energy of the SNN vs the ANN")
    _common_arguments(p)
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="RSM ratio p (default: the ratio the checkpoint was trained with)")
    add_distributed_arguments(p)
    from .events import add_eval_arguments
    add_eval_arguments(p)  # --events voxel|frames, --bins
    p.set_defaults(func=cmd_energy)
    return p


def cmd_energy(args):
    """Print the per-site SOP breakdown, the analog MACs and the totals against the ANN."""
    args.timesteps = parse_timesteps(args.timesteps, single=True)[0]
    neuron = neuron_options(args)
    at_least(args.batch_size, 1, "--batch-size")
    energy.energy_pj(0, 0, args.e_ac, args.e_mac)
    if args.mask_ratio is not None:
        check_ratio(args.mask_ratio, "--mask-ratio")
    if args.events:  # a folder of event recordings, through the sharded core (mst_ref.cli.events)
        from .events import event_folder, event_spec
        if not args.data:
            raise UsageError("--events needs --data: a folder of event recordings")
        loaded = override_normalisation(load_model(args.checkpoint), args.mean, args.std)
        model = loaded.model
        dataset = event_folder(args, model.config)
        n = len(dataset) if args.limit is None else min(at_least(args.limit, 1, "--limit"), len(dataset))
    else:
        model, (images, labels), _, dataset = _load(args)
        n = len(images)
    note_compiling()
    c, T = model.config, args.timesteps
    args.mask_sites = args.mask_sites or model.trained_mask_sites
    p = c.mask_ratio if args.mask_ratio is None else args.mask_ratio
    # the evaluation core of mst_ref.distributed: per-image masks from (--seed, image index)
    options = dict(timesteps=(T,), mask_ratio=p, mask_sites=args.mask_sites, seed=args.seed,
                   batch_size=args.batch_size, neuron=tuple(neuron.items()), ann=False)
    if args.events:
        spec = event_spec(args, loaded, (T,), p, neuron, seed=args.seed, ann=False, mask_sites=args.mask_sites)
        stats = run_sharded("energy", args, spec, n, "energy")
    elif wants_shards(args):  # in shards, on processes or a Dask cluster (mst_ref.cli.sharded)
        loaded = override_normalisation(load_model(args.checkpoint), args.mean, args.std)
        args.data = args.data or str(sample_path())
        stats = run_sharded("energy", args, make_spec(args, loaded, padding_of(loaded), **options), n, "energy")
    else:
        k = len(range(0, n, args.batch_size))
        batches = ((np.arange(a, min(a + args.batch_size, n)), images[a:a + args.batch_size],
                    labels[a:a + args.batch_size]) for a in range(0, n, args.batch_size))
        stats = merge([evaluate_images(model, batches, EvalSpec("", "", **options), lambda done, steps, size:
                                       progress_line(done // args.batch_size + (steps == T), k, "batches"))],
                      n, (T,))
    correct, sops, spikes = stats["snn_correct"][T], stats["sops_by_site"], stats["spikes_by_site"]
    neurons, fan = energy.site_neurons(c), energy.fan_outs(c)
    total_sops = sum(sops.values())
    analog = {name: T * m for name, m in energy.analog_macs(c).items()}  # all steps, per image
    if args.events == "frames":  # a new input at every step: the input layer runs every step
        analog = {f"patch_embed.proj (all {T} steps: a frame each)": T * energy.input_macs(c), **analog}
    else:
        analog = {"patch_embed.proj (once)": energy.input_macs(c), **analog}
    macs = sum(analog.values())
    e_sop = args.e_ac * total_sops / n
    e_mac = args.e_mac * macs

    print(f"energy: {args.checkpoint} (trained with p={c.mask_ratio:g}) on {dataset.name}, {n} images, "
          f"T={T}, p={p:g} ({args.mask_sites} sites), accuracy {100 * correct / n:.2f}%")
    print(f"neuron: {neuron_label(neuron, c.qcfs_levels)}; a burst of k spikes counts k spikes (k SOPs per "
          f"synapse), a negative spike counts one")
    print(f"SOPs (per image, all {T} steps; x {args.e_ac:g} pJ):")
    header = (f"{'site / product':<36} {'spikes/img':>11} {'rate':>6} {'fan-out':>8} {'SOPs/img':>11} "
              f"{'share':>7} {'nJ/img':>8}")
    print(header)
    print("-" * len(header))
    for name, s in sops.items():
        if name in spikes:
            cols = f"{spikes[name] / n:>11.4g} {spikes[name] / (n * T * neurons[name]):>6.3f} {fan[name]:>8}"
        else:
            cols = f"{'-':>11} {'-':>6} {'pairs':>8}"
        print(f"{name:<36} {cols} {s / n:>11.4g} {100 * s / max(total_sops, 1):>6.1f}% "
              f"{args.e_ac * s / n / 1e3:>8.2f}")
    once = "" if args.events == "frames" else " but the input conv"
    print(f"\nanalog MACs (per image, all {T} steps{once}; x {args.e_mac:g} pJ):")
    header2 = f"{'op':<36} {'MACs/img':>11} {'share':>7} {'nJ/img':>8}"
    print(header2)
    print("-" * len(header2))
    for name, m in analog.items():
        print(f"{name:<36} {m:>11.4g} {100 * m / macs:>6.1f}% {args.e_mac * m / 1e3:>8.2f}")
    ann_macs = energy.ann_macs(c)
    e_snn, e_ann = e_sop + e_mac, args.e_mac * ann_macs
    print("\ntotals per image:")
    print(f"  SNN  SOPs {total_sops / n:.4g} ({e_sop / 1e6:.3f} uJ) + MACs {macs:.4g} ({e_mac / 1e6:.3f} uJ) "
          f"= {e_snn / 1e6:.3f} uJ")
    print(f"  ANN  MACs {ann_macs:.4g} = {e_ann / 1e6:.3f} uJ")
    print(f"  SNN / ANN energy: x{e_snn / e_ann:.3f}   (SOPs / ANN MACs: x{total_sops / n / ann_macs:.3f})")
    return 0
