"""Accuracy, SOPs and energy per image of each SNN neuron at T = 1..32 on the shipped MST (README table).

Run (one process per compensation and group of neurons; each writes or extends its JSON):

    python benchmarks/neuron_table.py measure --data /usr/share/datasets/fashion-mnist --limit 1000 \\
        --compensation none --neurons if signed --out neurons_none_a.json
    python benchmarks/neuron_table.py render neurons_*.json --png accuracy_vs_energy.png

``measure`` runs every neuron ONCE to T = 32 per batch of 50 images: the prediction at T is the argmax of
the logits summed over the first T steps (the published read-out), and SOPs / energy at T count the
spikes and product events of the first T steps (a burst of k spikes is k events, a negative spike one;
:mod:`mst_ref.engine.modes`), energy = 0.9 pJ x SOPs + 4.6 pJ x analog MACs (:mod:`mst_ref.engine.energy`). The first
``--limit`` images of the test split, in file order. ``render`` prints the Markdown table and draws
accuracy against energy per image, one curve per neuron and compensation.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mst_ref
from mst_ref import plots
from mst_ref.io import data
from mst_ref.engine import energy

T_MAX = 32
SHOWN = (1, 2, 4, 8, 16, 32)


def measure(args):
    model = mst_ref.load_checkpoint(data.shipped_file("mst_fashion.pth"))
    dataset = data.load_dataset(args.data, "test")
    n = min(args.limit, len(dataset))
    images, labels = zip(*data.iterate_batches(dataset, 50, 28, 1, data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD,
                                               limit=n))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(n=n, data=str(args.data), compensation=args.compensation,
                   ann_accuracy=100 * sum(int((model.ann_forward(x).argmax(-1) == y).sum())
                                          for x, y in zip(images, labels)) / n)
    fan = energy.fan_outs(model.config)
    for neuron in args.neurons:
        started = time.perf_counter()
        T = args.max_t
        correct, sops = np.zeros(T, np.int64), np.zeros(T)
        for x, y in zip(images, labels):
            r = model.snn_forward(x, T, neuron=neuron, compensation=args.compensation)
            correct += (r.predictions == y).sum(axis=1)
            # SOPs of each step: spikes x fan-out, plus the events of the products
            step = sum(c.astype(np.float64) * fan[s] for s, c in r.spike_counts_per_step.items())
            sops += step + sum(c.astype(np.float64) for c in r.product_pairs_per_step.values())
        cum_sops = np.cumsum(sops) / n  # (T,) per image, after t steps
        macs = np.array([energy.snn_macs(model.config, t) for t in range(1, T + 1)], np.float64)
        results[neuron] = {"accuracy": (100 * correct / n).tolist(), "sops_per_image": cum_sops.tolist(),
                           "macs_per_image": macs.tolist(),
                           "energy_uj_per_image": ((energy.E_AC_PJ * cum_sops + energy.E_MAC_PJ * macs) / 1e6).tolist(),
                           "seconds": time.perf_counter() - started}
        out.write_text(json.dumps(results, indent=1))


def render(args):
    runs = [json.loads(Path(p).read_text()) for p in args.json]
    rows, curves = [], {}
    for run in runs:
        comp = run.get("compensation", "none")
        for neuron, r in run.items():
            if not isinstance(r, dict):
                continue
            label = neuron + (", compensated" if comp == "expectation" else "")
            rows.append((label, r, comp))
            if comp == "expectation":
                continue  # its dense running-sum products are not priced (docs/energy.md): no energy curve
            shown = [t - 1 for t in SHOWN if t <= len(r["accuracy"])]
            curves[label] = (np.array(r["energy_uj_per_image"])[shown], np.array(r["accuracy"])[shown])
    print(f"ANN {runs[0]['ann_accuracy']:.2f} % on {runs[0]['n']} images")
    print("| neuron | " + " | ".join(f"T={t}" for t in SHOWN) + " |")
    print("|---|" + "---|" * len(SHOWN))
    for label, r, comp in rows:
        # compensated runs: accuracy only; their energy is not modelled, so no number that looks measured
        cells = [("" if t > len(r["accuracy"]) else f"{r['accuracy'][t - 1]:.1f} / not modelled"
                  if comp == "expectation" else f"{r['accuracy'][t - 1]:.1f} / {r['sops_per_image'][t - 1] / 1e6:.1f}"
                  f" / {r['energy_uj_per_image'][t - 1]:.0f}") for t in SHOWN]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.png:
        plots.xy_chart_png(args.png, curves, f"Shipped MST, first {runs[0]['n']} Fashion-MNIST test images: "
                           f"accuracy vs energy, T = 1 ... 32", "energy per image (uJ, log scale)", "accuracy (%)",
                           logx=True, point_labels={label: [f"{t}" for t in SHOWN] for label in list(curves)[:1]})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    m = sub.add_parser("measure")
    m.add_argument("--data", required=True, help="Fashion-MNIST IDX folder or .npz")
    m.add_argument("--limit", type=int, default=1000)
    m.add_argument("--compensation", choices=["none", "expectation"], default="none")
    m.add_argument("--neurons", nargs="+", default=["if", "signed", "burst", "signed-burst"])
    m.add_argument("--max-t", type=int, default=T_MAX, help="run each neuron to this T (default 32)")
    m.add_argument("--out", required=True)
    m.set_defaults(func=measure)
    r = sub.add_parser("render")
    r.add_argument("json", nargs="+")
    r.add_argument("--png", default=None)
    r.set_defaults(func=render)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
