"""The whole Fashion-MNIST test set through the fused path twice: event-driven products (auto) and dense
ones, image for image.

Run: python benchmarks/compare_products.py [--data FOLDER] [--timesteps 32] [--threads 1] [--limit N]
                                           [--state runs/compare_products.npz]

For each batch (``--batch-size``, 100, as ``mst-ref eval``'s default) the shipped MST runs
``--timesteps`` steps with ``MST_REF_PRODUCTS=auto`` and then with ``dense`` (interleaved, so both see the
same load), timing each; printed: the number of test images whose prediction at T differs between the
two, the accuracy of each, the largest relative difference of the cumulative logits, and the time of
each, with the load average. The predictions and times so far are saved to ``--state`` after every
batch, and a rerun resumes from there, also with a larger ``--limit`` (the run takes tens of minutes on
two busy cores).

A script, not a test: the times depend on the machine and its load.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mst_ref.cli.common import load_data, load_model  # noqa: E402
from mst_ref.io import data  # noqa: E402
from mst_ref.threads import limit_threads  # noqa: E402


def load():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--state", default=str(ROOT / "runs" / "compare_products.npz"))
    args = parser.parse_args()
    loaded = load_model(ROOT / "data" / "mst_fashion.pth")
    model, cfg = loaded.model, loaded.model.config
    dataset, _ = load_data(args.data, loaded, "test", False, args.limit)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    state = Path(args.state)
    keys = ("auto", "dense")
    saved = dict(np.load(state)) if state.exists() else {}
    if saved and (int(saved["n"]) > n or int(saved["T"]) != args.timesteps):
        raise SystemExit(f"{state} holds another run (n = {int(saved['n'])}, T = {int(saved['T'])}); remove it")
    # a run on fewer images is extended (its first images are the same)
    pred = {k: np.concatenate([saved.get(f"pred_{k}", np.zeros(0, np.int64)),
                               np.full(n - int(saved.get("n", 0)), -1, np.int64)]) for k in keys}
    seconds = {k: float(saved.get(f"seconds_{k}", 0.0)) for k in keys}
    rel = float(saved.get("rel", 0.0))
    done = int(saved.get("done", 0))
    labels = dataset.labels[:n]
    print(f"# command: python benchmarks/compare_products.py {' '.join(sys.argv[1:])}")
    print(f"# shipped MST, {n} test images, T = {args.timesteps}, threads {args.threads}, batch {args.batch_size}; "
          f"load at start: {load()}; resuming at image {done}" if done else
          f"# shipped MST, {n} test images, T = {args.timesteps}, threads {args.threads}, batch {args.batch_size}; "
          f"load at start: {load()}")
    loads = [load()]
    with limit_threads(args.threads):
        start = 0
        for x, _ in data.iterate_batches(dataset, args.batch_size, cfg.img_size, cfg.in_chans, loaded.mean,
                                         loaded.std, limit=n):
            stop = start + len(x)
            if stop <= done:
                start = stop
                continue
            logits = {}
            for k in keys:
                os.environ["MST_REF_PRODUCTS"] = k
                t0 = time.perf_counter()
                logits[k] = model.snn_forward(x, args.timesteps).cumulative_logits[-1]  # (B, K)
                seconds[k] += time.perf_counter() - t0
                pred[k][start:stop] = logits[k].argmax(-1)
            scale = np.abs(logits["dense"]).max()
            rel = max(rel, float(np.abs(logits["auto"] - logits["dense"]).max() / scale))
            done = start = stop
            np.savez(state, n=n, T=args.timesteps, done=done, rel=rel, **{f"pred_{k}": pred[k] for k in keys},
                     **{f"seconds_{k}": seconds[k] for k in keys})
            if done % 1000 == 0:
                loads.append(load())
                print(f"   {done} images: differing predictions so far "
                      f"{int((pred['auto'][:done] != pred['dense'][:done]).sum())}; load {loads[-1]}", flush=True)
    differ = np.nonzero(pred["auto"] != pred["dense"])[0]
    print(f"images whose prediction at T = {args.timesteps} differs (auto vs dense products): {differ.size} of {n}"
          + (f" (indices {differ[:20].tolist()})" if differ.size else ""))
    for k in keys:
        print(f"   {k:<6} accuracy {100 * (pred[k] == labels).mean():.2f} %, SNN forward {seconds[k]:.0f} s "
              f"({n * args.timesteps / seconds[k]:.0f} image-steps/s)")
    print(f"   largest relative difference of the final cumulative logits: {rel:.1e}")
    print(f"   dense / auto time: {seconds['dense'] / seconds['auto']:.2f}x (interleaved per batch)")
    print(f"# load during the run (every 1000 images): {'; '.join(loads)}; at the end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
