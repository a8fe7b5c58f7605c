"""Accuracy, SOPs and energy per image of each SNN neuron at T = 1..32 on the shipped QCFS CNNs (README).

Run: python benchmarks/cnn_neuron_table.py --data /usr/share/datasets/fashion-mnist [--limit 200]

For ResNet-18 and VGG-16 (data/*_fashion.pth) and each neuron ("if", "signed", "burst" with at most
L = 8 spikes a step, "signed-burst"), one SNN run to T = 32 per batch: the prediction at T is the argmax
of the head outputs summed over the first T steps, SOPs at T are the synapses the spikes of the first T
steps reach (a burst of k spikes counts k, a negative spike one; exact per-position fan-outs), energy at
T = 0.9 pJ x SOPs + 4.6 pJ x the first convolution's MACs (once per image). The first ``--limit`` test
images, zero-padded to 32 px as the models were trained. Prints a Markdown table.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mst_ref  # noqa: E402
from mst_ref.io import data  # noqa: E402
from mst_ref.engine import energy

SHOWN = (1, 2, 4, 8, 16, 32)
NEURONS = ("if", "signed", "burst", "signed-burst")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args(argv)
    dataset = data.load_dataset(args.data, "test")
    n = min(args.limit, len(dataset))
    raw = np.pad(dataset.images[:n], ((0, 0), (2, 2), (2, 2), (0, 0)))
    labels = dataset.labels[:n]
    print(f"first {n} test images of {args.data}; accuracy % / SOPs per image / energy per image (uJ)")
    print("| model | neuron | ANN | " + " | ".join(f"T = {t}" for t in SHOWN) + " |")
    print("|---|---|---|" + "---|" * len(SHOWN))
    for arch in ("resnet18", "vgg16"):
        model = mst_ref.load_checkpoint(data.shipped_file(f"{arch}_fashion.pth"))
        x = data.prepare_images(raw, 32, 1, data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD)
        ann = 100 * np.mean(np.concatenate([model.ann_forward(x[i:i + 50]).argmax(-1) for i in range(0, n, 50)]) == labels)
        for neuron in NEURONS:
            correct = np.zeros(len(SHOWN))
            sops = np.zeros(len(SHOWN))
            for i in range(0, n, 50):
                res = model.snn_forward(x[i:i + 50], max(SHOWN), neuron=neuron)
                events = sum(res.synaptic_events_per_step.values())  # (T,) whole batch
                cum = np.cumsum(events)
                for k, t in enumerate(SHOWN):
                    correct[k] += np.sum(res.predictions[t - 1] == labels[i:i + 50])
                    sops[k] += cum[t - 1]
            sops /= n
            e = energy.energy_pj(0, energy.input_macs(model.config))
            cells = [f"{100 * c / n:.1f} / {s:.3g} / {(0.9 * s + e) / 1e6:.2f}" for c, s in zip(correct, sops)]
            print(f"| {arch} | {neuron} | {ann:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
