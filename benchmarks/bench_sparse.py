"""Event-driven products against dense ones: the crossover density, and synaptic operations per second
against this machine's add rate.

Run: python benchmarks/bench_sparse.py [--threads 1] [--batch 32] [--repeats 5] [--densities 0.05,0.1,...]
                                      [--skip-shapes]

1. The add rate: a Numba loop adding weight rows into an output row (``y += v * W^T_k`` over the rows
   k of a list), the synaptic operation with no gathering, at the shipped model's widths. It bounds
   what an event-driven product can reach per thread.
2. The crossover: for each product of the shipped Fashion-MNIST MST (its shapes at ``--batch`` images),
   random spike trains of each density are multiplied dense (one BLAS product per step, as
   mst_ref.models.mst_fast._gemm) and event-driven (mst_ref.core.kernels.spike_linear); printed is the
   time ratio and the density where the two cross (linear interpolation of the ratio). The fast path
   switches at mst_ref.models.mst_fast.CROSSOVER.
3. The shipped model itself (batch ``--batch``, T = 8, the sample images): SOPs per second of its
   event-driven products (nonzero inputs x Cout, counted) over the time spent in them, against (1),
   and the spike density each product saw (``--skip-shapes``: 1 and 3 only).

Best of ``--repeats``; /proc/loadavg printed before and after. A script, not a test: the numbers depend
on the machine and its load.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402

import _harness  # noqa: E402
from mst_ref.core import kernels  # noqa: E402
from mst_ref.models import mst_fast  # noqa: E402
from mst_ref.threads import limit_threads  # noqa: E402

# (name, rows per image, K, Cout) of the shipped model's products fed by spikes (stage 1: 14x14 tokens,
# C = 48; stage 2: 7x7, C = 96)
SHAPES = [("qkv 1", 196, 48, 144), ("proj 1", 196, 48, 48), ("fc1 1", 196, 48, 192), ("fc2 1", 196, 192, 48),
          ("qkv 2", 49, 96, 288), ("fc1 2", 49, 96, 384), ("fc2 2", 49, 384, 96)]


@kernels.njit
def add_rows(wt, idx, out):
    """out[r] = sum_j wt[idx[r, j]]: the row additions of an event-driven product, without the gather."""
    cout = wt.shape[1]
    for r in range(idx.shape[0]):
        yr = out[r]
        for c in range(cout):
            yr[c] = 0
        for j in range(idx.shape[1]):
            wk = wt[idx[r, j]]
            for c in range(cout):
                yr[c] += wk[c]
    return out


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def load():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def add_rate(repeats, rng):
    """Additions per second of add_rows at the shipped widths (the mean over the widths of SHAPES)."""
    rates = []
    for _, _, K, cout in SHAPES:
        wt = rng.standard_normal((K, cout)).astype(np.float32)
        idx = rng.integers(0, K, (4096, max(1, K // 4)))
        out = np.empty((4096, cout), np.float32)
        add_rows(wt, idx, out)
        rates.append(idx.size * cout / best(lambda: add_rows(wt, idx, out), repeats))
    return float(np.mean(rates)), rates


def crossover(densities, ratios):
    """The density where dense / event time ratio falls through 1 (None if it never does)."""
    for (d0, r0), (d1, r1) in zip(zip(densities, ratios), zip(densities[1:], ratios[1:])):
        if r0 >= 1 > r1:
            return d0 + (r0 - 1) * (d1 - d0) / (r0 - r1)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="steps per product call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--densities", default="0.05,0.1,0.2,0.3,0.4,0.5,0.7")
    parser.add_argument("--skip-shapes", action="store_true", help="skip part 2 (the crossover table)")
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    rng = np.random.default_rng(0)
    print(f"# command: python benchmarks/bench_sparse.py {' '.join(sys.argv[1:])}")
    print(f"# threads={args.threads}, batch {args.batch}, {args.steps} steps per call, best of {args.repeats}; "
          f"cpus={os.cpu_count()}; load before: {load()} (1, 5, 15 min)")
    with limit_threads(args.threads):
        rate, _ = add_rate(args.repeats, rng)
        print(f"\n## 1. add rate (Numba row additions, no gather): {rate / 1e9:.2f} e9 additions/s "
              f"on {args.threads} thread(s)\n")
        if not args.skip_shapes:
            print("## 2. dense (BLAS) time / event-driven time, per product and density")
            print(f"   {'product':<8}{'R':>7}{'K':>5}{'Cout':>6}" + "".join(f"{d:>7.2f}" for d in densities)
                  + f"{'crossover':>11}")
        found = []
        for name, rows, K, cout in ([] if args.skip_shapes else SHAPES):
            R = rows * args.batch
            w = rng.standard_normal((cout, K)).astype(np.float32)
            wt = np.ascontiguousarray(w.T)
            ratios = []
            for d in densities:
                x = ((rng.random((args.steps, R, K)) < d) * np.float32(0.8)).astype(np.float32)
                out = np.empty((args.steps, R, cout), np.float32)
                steps = np.ones(args.steps, bool)
                kernels.spike_linear(x, wt, steps, out)
                dense = best(lambda: mst_fast._gemm(x, w), args.repeats)
                event = best(lambda: kernels.spike_linear(x, wt, steps, out), args.repeats)
                ratios.append(dense / event)
            cross = crossover(densities, ratios)
            found.append(cross)
            print(f"   {name:<8}{R:>7}{K:>5}{cout:>6}" + "".join(f"{r:>6.2f}x" for r in ratios)
                  + f"{'-' if cross is None else f'{cross:.2f}':>11}")
        known = [c for c in found if c is not None]
        if known:
            print(f"   crossover: median {np.median(known):.2f} (range {min(known):.2f}-{max(known):.2f}); "
                  f"the fast path uses {mst_fast.CROSSOVER}")
        # 3. the shipped model: SOPs/s of its event-driven products
        model, images = _harness.build("shipped", args.batch)
        stats = {"sops": 0, "seconds": 0.0, "nnz": 0, "inputs": 0}
        inner = kernels.spike_linear

        def counted(x, wt, steps, out):
            t0 = time.perf_counter()
            inner(x, wt, steps, out)
            stats["seconds"] += time.perf_counter() - t0
            nnz = int(sum(np.count_nonzero(x[t]) for t in np.nonzero(steps)[0]))
            stats["sops"] += nnz * wt.shape[1]
            stats["nnz"] += nnz
            stats["inputs"] += int(steps.sum()) * x[0].size
            return out

        seen = {}  # product -> densities of its input at each step
        chooser = mst_fast._spike_product

        def recorded(mode, x, weight, key, nnz=None):
            seen.setdefault(key.removesuffix(".wt"), []).extend(
                (np.asarray(nnz) / max(1, x[0].size)).tolist() if nnz is not None else [])
            return chooser(mode, x, weight, key, nnz)

        model.snn_forward(images, 8)  # warm-up
        kernels.spike_linear = counted
        mst_fast._spike_product = recorded
        try:
            t0 = time.perf_counter()
            model.snn_forward(images, 8)
            wall = time.perf_counter() - t0
        finally:
            kernels.spike_linear = inner
            mst_fast._spike_product = chooser
        sops_rate = stats["sops"] / max(stats["seconds"], 1e-12)
        print(f"\n## 3. shipped model, batch {args.batch}, T = 8: {args.batch * 8 / wall:.0f} image-steps/s; "
              f"event-driven products took {stats['seconds']:.3f} s of {wall:.3f} s, "
              f"{stats['sops'] / (args.batch * 8):.3g} SOPs per image-step at density "
              f"{stats['nnz'] / max(stats['inputs'], 1):.3f}")
        print(f"   {sops_rate / 1e9:.2f} e9 SOPs/s = {100 * sops_rate / rate:.0f}% of the add rate "
              f"({rate / 1e9:.2f} e9/s, the limit)")
        print(f"   input spike density of each product (mean over the 8 steps; event-driven below "
              f"{mst_fast.CROSSOVER}):")
        for key, dens in seen.items():
            print(f"     {key:<34}{np.mean(dens):.3f}")
    print(f"\n# load after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
