"""QCFS CNN SNN throughput: mst_ref against the official PyTorch evaluation, in one process, alternating.

Run: python benchmarks/bench_cnn.py [--threads N] [--batch B] [--timesteps T] [--repeats R] [--random]

For ResNet-18 and VGG-16 (the shipped Fashion-MNIST models, or with --random the same shapes with
random weights), on the first B sample images padded to 32 x 32:

    (a) mst_ref    QCFSCNN.snn_forward: event-driven convolutions (Numba), IF scans, T steps at once
    (b) official   reference/qcfs_cnn_torch.py snn_forward: the official QCFS evaluation (the image
                   repeated T times and merged into the batch, each IF layer looping over its T steps)

both on ``--threads`` threads (torch.set_num_threads; mst_ref.threads.limit_threads), the runs
alternating so that a change in the machine's load hits both; best of ``--repeats``. Prints image-steps
per second of each and the ratio a/b (> 1: mst_ref is faster), and checks that the two predict the same
class for the images (trained models; random ones are chaotic). Needs torch. A script, not a test.

On the shipped models and real images the official code's membranes reach denormal floats, which x86
CPUs process far more slowly; ``--flush-denormal`` measures the official code with them flushed to zero
too (its numbers can then differ slightly).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--random", action="store_true", help="random weights instead of the shipped models")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True) for the official code (it does not set it; on real "
                         "images its membranes reach denormal floats, which the CPU handles slowly)")
    args = ap.parse_args(argv)

    import torch

    from mst_ref import load_checkpoint
    from mst_ref.io import data
    from mst_ref.models.qcfs_cnn import QCFSCNN
    from mst_ref.threads import limit_threads
    from reference.qcfs_cnn_torch import CNNConfig, build

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    sample = data.load_dataset(data.sample_path())
    raw = np.pad(sample.images[:args.batch], ((0, 0), (2, 2), (2, 2), (0, 0)))
    x = data.prepare_images(raw, 32, 1, data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD)  # (B, 1, 32, 32)
    B, T = len(x), args.timesteps
    print(f"QCFS CNN SNN, batch {B}, T = {T}, {args.threads} thread(s), best of {args.repeats} alternating runs; "
          f"torch flush-denormal {'on' if args.flush_denormal else 'off (as the official code)'}")
    for arch in ("resnet18", "vgg16"):
        if args.random:
            ref = build(CNNConfig(arch=arch, in_chans=1, width=0.125)).eval()
            model = QCFSCNN.from_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
            what = "random weights, width 1/8"
        else:
            model = load_checkpoint(data.shipped_file(f"{arch}_fashion.pth"))
            ref = build(CNNConfig(arch=arch, in_chans=1, width=model.config.width)).eval()
            ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state.items()})
            what = "shipped Fashion-MNIST model"
        xt = torch.from_numpy(x)
        with limit_threads(args.threads):
            model.snn_forward(x[:2], 2)  # compile / load the kernels
            best_a = best_b = np.inf
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res = model.snn_forward(x, T)
                best_a = min(best_a, time.perf_counter() - t0)
                t0 = time.perf_counter()
                with torch.no_grad():
                    z = ref.snn_forward(xt, T).numpy()  # (T, B, K)
                best_b = min(best_b, time.perf_counter() - t0)
        agree = np.mean(res.predictions[-1] == z.sum(0).argmax(-1))
        print(f"  {arch:<9} ({what}): mst_ref {B * T / best_a:8.0f} image-steps/s, official PyTorch "
              f"{B * T / best_b:8.0f} image-steps/s, ratio a/b = {best_b / best_a:.2f}; same prediction for "
              f"{100 * agree:.0f}% of the images")


if __name__ == "__main__":
    main()
