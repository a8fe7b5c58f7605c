"""The masking policies compared on a shipped model: acceptable range p* and energy saved there.

Run (one process per group of policies; each writes or extends its JSON, resuming where it stopped):

    python benchmarks/policy_table.py measure --model mst_fashion.pth --data /usr/share/datasets/fashion-mnist \\
        --limit 200 --timesteps 8 --ratios 0.05,0.1,0.2,0.3,0.5,0.75 --seeds 3 \\
        --policies random regular --out policies_a.json
    python benchmarks/policy_table.py render policies_*.json --png policies_accuracy_vs_energy.png

``measure`` evaluates every policy (:data:`mst_ref.analysis.policies.POLICY_NAMES`) at every ratio and
seed over the first ``--limit`` images of the test split (file order), at the checkpoint's trained
sites (or ``--mask-sites``); p = 0 is run once and shared. ``render`` prints, per policy, the acceptable range p* (largest p
with accuracy within 0.5 point of p = 0; mean accuracy over seeds, and p* per seed as mean +- sd), the
energy saved there, and the whole sweep; it draws accuracy against energy per image, one line per policy.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import mst_ref
from mst_ref import plots
from mst_ref.analysis.policies import POLICY_NAMES, acceptable_range, sweep_policy
from mst_ref.io import data


def measure(args):
    model = mst_ref.load_checkpoint(data.shipped_file(args.model))
    dataset = data.load_dataset(args.data, "test")
    c = model.config
    x, y = zip(*data.iterate_batches(dataset, 50, c.img_size, c.in_chans, data.FASHION_MNIST_MEAN,
                                     data.FASHION_MNIST_STD, limit=min(args.limit, len(dataset))))
    images, labels = np.concatenate(x), np.concatenate(y)
    ratios = [float(v) for v in args.ratios.split(",")]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    sites = args.mask_sites or model.trained_mask_sites
    results.update(model=args.model, images=len(images), timesteps=args.timesteps, seeds=args.seeds,
                   mask_sites=sites, schedule=args.schedule)
    done = {(r["policy"], r["ratio"]) for r in results["rows"]}
    todo = [(name, p) for name in args.policies for p in [0.0] * (name == args.policies[0]) + ratios
            if (name, p) not in done]
    for k, (name, p) in enumerate(todo):
        print(f"[{k + 1}/{len(todo)}] {name} p={p:g}", file=sys.stderr, flush=True)
        rows = sweep_policy(model, images, labels, args.timesteps, name, [p], args.seeds,
                            sites, 50, args.schedule if name == "schedule" else None)
        results["rows"] += rows
        out.write_text(json.dumps(results, indent=1))  # after every ratio: a rerun resumes


def render(args):
    files = [json.loads(Path(f).read_text()) for f in args.files]
    rows = [r for f in files for r in f["rows"]]
    meta = next(f for f in files if "model" in f)  # mst-ref mask-sweep --json files carry the same keys
    base = next(r for r in rows if r["ratio"] == 0)
    print(f"model {meta['model']}, first {meta['images']} test images, T = {meta['timesteps']}, "
          f"{meta['seeds']} mask seeds, sites {meta['mask_sites']}, schedule {meta['schedule']}")
    se = 100 * np.sqrt(base["accuracy"] / 100 * (1 - base["accuracy"] / 100) / base["images"])
    print(f"p = 0: accuracy {base['accuracy']:.2f}% (binomial standard error {se:.2f} points; every policy "
          f"sees the same images), energy {base['energy_pj'] / 1e6:.2f} uJ/img")
    print("\n| policy | p* (mean acc.) | energy saved at p* | p* per seed (mean +- sd) | energy saved per seed |")
    print("|---|---|---|---|---|")
    series, names = {}, [n for n in POLICY_NAMES if any(r["policy"] == n for r in rows)]
    for name in names:
        mine = [r for r in rows if r["policy"] == name and r["ratio"] != 0]
        res = acceptable_range(mine, 0.5, base)
        saved = np.array(res.energy_saved_by_seed)
        print(f"| {name} | {res.ratio:g} | {100 * res.energy_saved:.1f}% | {res.ratio_mean:.3g} +- "
              f"{res.ratio_std:.2g} | {100 * saved.mean():.1f} +- {100 * saved.std():.1f}% |")
        mine = sorted(mine, key=lambda r: r["ratio"])
        series[name] = ([base["energy_pj"] / 1e6] + [r["energy_pj"] / 1e6 for r in mine],
                        [base["accuracy"]] + [r["accuracy"] for r in mine])
    print("\n| policy | p | accuracy % (mean +- sd over seeds) | SOPs/img | energy uJ/img | delivered spikes/img |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for r in [base] + sorted((r for r in rows if r["policy"] == name and r["ratio"] != 0), key=lambda r: r["ratio"]):
            print(f"| {name} | {r['ratio']:g} | {r['accuracy']:.2f} +- {r['accuracy_std']:.2f} | "
                  f"{r['sops']:.4g} | {r['energy_pj'] / 1e6:.2f} | {r['delivered']:.4g} |")
    if args.png:
        plots.xy_chart_png(args.png, series, f"masking policies, {meta['model']}, {meta['mask_sites']} sites, "
                           f"T = {meta['timesteps']}, {meta['images']} images",
                           "energy per image (uJ)", "accuracy (%)")
        print(f"\nwrote {args.png}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--model", default="mst_fashion.pth", help="a shipped model (data/)")
    m.add_argument("--data", required=True)
    m.add_argument("--limit", type=int, default=200)
    m.add_argument("--timesteps", type=int, default=8)
    m.add_argument("--ratios", default="0.05,0.1,0.2,0.3,0.5,0.75")
    m.add_argument("--seeds", type=int, default=3)
    m.add_argument("--policies", nargs="+", default=list(POLICY_NAMES), choices=list(POLICY_NAMES))
    m.add_argument("--schedule", default="delay:2")
    m.add_argument("--mask-sites", choices=["published", "paper"], default=None,
                   help="default: the sites the model was trained with")
    m.add_argument("--out", required=True)
    r = sub.add_parser("render")
    r.add_argument("files", nargs="+")
    r.add_argument("--png", default=None)
    args = parser.parse_args(argv)
    measure(args) if args.cmd == "measure" else render(args)


if __name__ == "__main__":
    main()
