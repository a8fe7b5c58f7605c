"""Write data/fashion_sample.npz: the first 1,000 images of the Fashion-MNIST t10k (test) set.

The sample lets the tutorials, the CLI and the tests run without downloading anything. It holds

    images  : (1000, 28, 28) uint8   the first 1,000 t10k images, in file order
    labels  : (1000,) int64          their labels, 0..9
    classes : (10,) str              the Fashion-MNIST class names

Usage (from the repository root)::

    python data/make_fashion_sample.py [--source DIR] [--count 1000] [--out data/fashion_sample.npz]

``--source`` is a folder holding t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], as
downloaded from https://github.com/zalandoresearch/fashion-mnist. Fashion-MNIST is MIT-licensed, see
data/FASHION_MNIST_LICENSE.md.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing mst_ref

from mst_ref.io.data import FASHION_MNIST_CLASSES, load_dataset  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist",
                        help="folder with the Fashion-MNIST t10k IDX files (gzipped or not)")
    parser.add_argument("--count", type=int, default=1000, help="number of leading test images to keep")
    parser.add_argument("--out", default=str(HERE / "fashion_sample.npz"), help="output .npz path")
    args = parser.parse_args(argv)

    test = load_dataset(args.source, split="test")
    images = test.images[: args.count, :, :, 0]  # (count, 28, 28) uint8
    labels = test.labels[: args.count].astype(np.int64)  # (count,)
    np.savez_compressed(args.out, images=images, labels=labels, classes=np.array(FASHION_MNIST_CLASSES))
    counts = np.bincount(labels, minlength=10)
    print(f"wrote {args.out}: images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}")
    print("images per class:", dict(zip(FASHION_MNIST_CLASSES, counts.tolist())))


if __name__ == "__main__":
    main()
