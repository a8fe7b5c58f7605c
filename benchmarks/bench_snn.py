"""SNN throughput and memory: mst_ref's fused path and step-by-step simulator against the PyTorch reference
run the published way and against T ANN forwards, on three models.

Run: python benchmarks/bench_snn.py [--quick] [--threads N] [--models shipped,cifar32,swin_t] [--repeats R]
                                    [--sizes cifar32=16x16,swin_t=2x4]

For each model, each path runs in its own subprocess (benchmarks/_harness.py) on ``--threads`` threads, after
a warm-up; the best of ``--repeats`` runs is kept. mst_ref's paths run the library's thread policy
(mst_ref.threads: Numba kernels and row-split products on ``--threads``, BLAS one thread); torch and the
NumPy ANN run their BLAS / OpenMP on ``--threads``:

    (a) fast   MST.snn_forward: every layer over a chunk of steps, fused Numba kernels, products fed by
               spikes event-driven where the step's spike density is below the crossover
    (e) dense  (a) with every product a BLAS product (MST_REF_PRODUCTS=dense), the baseline of (a)'s events
    (b) step   MST.step_simulator: (a)'s code one step per call
    (c) torch  reference/mst_torch.py MSTTorch.snn_forward: one full forward per step (snn_validate)
    (d) ANN    T x one MST.ann_forward (NumPy), the dense network the SNN emulates

Printed per model: image-steps per second (B * T / wall seconds), the peak resident memory of the
measurement process during the timed runs (and its increase over the memory before them), the ratios
a/c, a/e and a/d (> 1: the fused path is faster), and the achieved GFLOP/s -- the network's matrix-product
FLOPs per image-step (benchmarks/_harness.network_flops) times image-steps per second -- against a float32
2048^3 NumPy matrix product on the same threads. It asserts that (a) and (b) give the same cumulative
logits bit for bit, and that (a) and (c) agree to the spike-flip tolerance where one is expected: on the
shipped (trained) model 2e-2 of max |logit| (tests/test_fidelity.py); random-weight models are chaotic
(one flipped spike early in a deep random network changes its logits by O(10%), for the NumPy reference
path as much as for the fused one), so for them the agreement is printed, and the predictions of the
last step must agree for most images. A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness  # noqa: E402

SIZES = {  # model -> (batch, T), (quick batch, quick T)
    "shipped": ((32, 32), (8, 8)),
    "cifar32": ((32, 32), (8, 8)),
    "swin_t": ((1, 8), (1, 2)),
}
PATHS = ("fast", "dense", "step", "torch", "ann")


def relative_errors(ours, ref):
    """(T,) max |ours - ref| / max |ref| of cumulative logits (T, B, K) at each step."""
    return np.abs(ours - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))


def bench_model(name, batch, T, threads, repeats, tmp, log):
    out = {p: os.path.join(tmp, f"{name}_{p}.npy") for p in PATHS}
    res = {}
    for path in PATHS:
        res[path] = _harness.measure(path=path, model=name, batch=batch, T=T, threads=threads,
                                     repeats=repeats, out=out[path])
        log(f"  measured {path}")
    res["ann"]["wall"] *= T  # T ANN forwards
    res["ann"]["cpu"] *= T
    fast, dense, step, ref = (np.load(out[p]) for p in ("fast", "dense", "step", "torch"))
    res["dense_same_predictions"] = float((fast[-1].argmax(-1) == dense[-1].argmax(-1)).mean())
    res["dense_rel"] = float(relative_errors(fast.astype(np.float64), dense.astype(np.float64)).max())
    assert np.array_equal(fast, step), f"{name}: fused multi-step and step-by-step logits differ"
    rel = relative_errors(fast.astype(np.float64), ref.astype(np.float64))
    agree = float((fast[-1].argmax(-1) == ref[-1].argmax(-1)).mean())
    if name == "shipped":
        assert rel.max() <= 2e-2, f"{name}: fused path vs torch reference: relative error {rel.max():.2e}"
    assert agree >= 0.75 or batch < 4, f"{name}: predictions agree for only {agree:.0%} of the images"
    return res, rel, agree


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch and T, one repeat")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for BLAS, Numba, torch")
    parser.add_argument("--models", default="shipped,cifar32,swin_t")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", default="", help="batch and T per model, e.g. cifar32=16x16,swin_t=2x4")
    args = parser.parse_args()
    sizes = {name: tuple(int(v) for v in bt.split("x")) for name, bt in
             (item.split("=") for item in args.sizes.split(",") if item)}
    repeats = args.repeats or (1 if args.quick else 3)
    names = args.models.split(",")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    peak = _harness.measure(path="matmul", model="", batch=0, T=0, threads=args.threads, repeats=5)["gflops"]
    print(f"# SNN benchmark: threads={args.threads} (mst_ref: Numba + its own product threads; torch, ANN: BLAS), "
          f"best of {repeats}, {'quick' if args.quick else 'full'} sizes; cpus={os.cpu_count()}")
    print(f"# load: {open('/proc/loadavg').read().split()[:3]} (1, 5, 15 min); command: "
          f"python benchmarks/bench_snn.py {' '.join(sys.argv[1:])}")
    print(f"# float32 matmul peak (NumPy 2048^3, {args.threads} thread(s)): {peak:.1f} GFLOP/s\n")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            batch, T = sizes.get(name, SIZES[name][1 if args.quick else 0])
            log(f"{name}: B={batch}, T={T}")
            res, rel, agree = bench_model(name, batch, T, args.threads, repeats, tmp, log)
            flops = _harness.network_flops(_harness.build(name, 1)[0].config)
            print(f"## {name}: {_harness.MODELS[name]}")
            print(f"   B={batch}, T={T}, {flops / 1e6:.1f} MFLOP per image-step")
            print(f"   {'path':<34}{'image-steps/s':>14}{'wall s':>9}{'GFLOP/s':>9}{'peak MiB':>10}{'(+MiB)':>9}")
            labels = {"fast": "(a) mst_ref fused (snn_forward)", "step": "(b) mst_ref step-by-step",
                      "torch": "(c) torch reference, per step", "ann": "(d) T x ANN forward (NumPy)",
                      "dense": "(e) fused, dense products"}
            for path in PATHS:
                r = res[path]
                rate = batch * T / r["wall"]
                grow = r["peak_mib"] - r["rss_before_mib"]
                print(f"   {labels[path]:<34}{rate:>14.1f}{r['wall']:>9.3f}{rate * flops / 1e9:>9.1f}"
                      f"{r['peak_mib']:>10.0f}{grow:>9.0f}")
            a, e, b, c, d = (res[p]["wall"] for p in PATHS)
            gflops = batch * T / a * flops / 1e9
            print(f"   ratios: a/c = {c / a:.2f}x (fused vs torch), a/e = {e / a:.2f}x (event-driven vs dense products), a/d = {d / a:.2f}x (fused vs T ANN forwards; "
                  f"cost a/d = {a / d:.2f}), b/c = {c / b:.2f}x (step-by-step vs torch)")
            print(f"   fused: {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of the matmul peak")
            print(f"   logits: fused == step-by-step bit for bit; fused vs torch max relative error "
                  f"{rel.max():.1e} (step 1: {rel[0]:.1e}), same prediction at T for {agree:.0%}; fused vs dense "
                  f"products: max relative error {res['dense_rel']:.1e}, same prediction for "
                  f"{res['dense_same_predictions']:.0%}\n")
            summary.append((name, c / a, e / a, d / a, c / b, gflops / peak))
    print("## summary (ratios > 1: mst_ref faster)")
    print(f"   {'model':<10}{'fused/torch':>12}{'fused/dense':>12}{'fused/ANNxT':>13}{'step/torch':>12}{'of peak':>9}")
    for name, ac, ae, ad, bc, frac in summary:
        print(f"   {name:<10}{ac:>11.2f}x{ae:>11.2f}x{ad:>12.2f}x{bc:>11.2f}x{100 * frac:>8.0f}%")
    print(f"# load at the end: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
