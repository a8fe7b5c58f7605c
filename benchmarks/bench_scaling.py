"""How the fused SNN path scales: time and peak memory against T and against the batch, and Swin-T at T = 128.

Run: python benchmarks/bench_scaling.py [--quick] [--threads N]

Every point is one subprocess (benchmarks/_harness.py: warm-up, then the best of ``--repeats`` timed runs,
peak resident memory of those runs). Printed:

1. the shipped Fashion-MNIST model, batch 8, T = 8 ... 256: seconds, seconds per step (flat when the cost
   is linear in T) and peak memory (flat: ``snn_forward`` runs the steps in chunks of bounded size,
   :func:`mst_ref.models.mst_fast.default_chunk`, so memory does not grow with T beyond the (T, B, K) logits);
2. the same model at T = 16, batch 1 ... 64: image-steps per second and peak memory (linear in B);
3. Swin-T at 224, batch 1, T = 128 with the default chunking: time and peak memory, asserted under 4 GiB
   (and, for contrast, the same run forced into one chunk of 128 steps, when --quick is not given).
A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness  # noqa: E402

GIB = 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, Swin-T at T = 32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    kw = dict(threads=args.threads, repeats=args.repeats)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    print(f"# scaling of the fused SNN path (MST.snn_forward), threads={args.threads}, cpus={os.cpu_count()}\n")
    steps = (8, 32, 128) if args.quick else (8, 16, 32, 64, 128, 256)
    print("## shipped model, batch 8: time and memory against T")
    print(f"   {'T':>5}{'seconds':>10}{'ms/step':>10}{'image-steps/s':>15}{'peak MiB':>10}{'(+MiB)':>9}")
    for T in steps:
        log(f"T={T}")
        r = _harness.measure(path="fast", model="shipped", batch=8, T=T, **kw)
        print(f"   {T:>5}{r['wall']:>10.3f}{1e3 * r['wall'] / T:>10.2f}{8 * T / r['wall']:>15.1f}"
              f"{r['peak_mib']:>10.0f}{r['peak_mib'] - r['rss_before_mib']:>9.0f}")
    batches = (1, 8, 32) if args.quick else (1, 4, 16, 64)
    print("\n## shipped model, T = 16: time and memory against the batch")
    print(f"   {'B':>5}{'seconds':>10}{'image-steps/s':>15}{'peak MiB':>10}{'(+MiB)':>9}")
    for B in batches:
        log(f"B={B}")
        r = _harness.measure(path="fast", model="shipped", batch=B, T=16, **kw)
        print(f"   {B:>5}{r['wall']:>10.3f}{B * 16 / r['wall']:>15.1f}{r['peak_mib']:>10.0f}"
              f"{r['peak_mib'] - r['rss_before_mib']:>9.0f}")
    T = 32 if args.quick else 128
    print(f"\n## Swin-T 224, batch 1, T = {T}")
    print(f"   {'chunking':<28}{'seconds':>10}{'ms/step':>10}{'peak MiB':>10}{'(+MiB)':>9}")
    runs = [("default (bounded)", None)] + ([] if args.quick else [(f"one chunk of {T} steps", T)])
    for label, chunk in runs:
        log(f"swin_t T={T} chunk={chunk}")
        r = _harness.measure(path="fast", model="swin_t", batch=1, T=T, chunk=chunk, **kw)
        print(f"   {label:<28}{r['wall']:>10.2f}{1e3 * r['wall'] / T:>10.1f}{r['peak_mib']:>10.0f}"
              f"{r['peak_mib'] - r['rss_before_mib']:>9.0f}")
        if chunk is None:
            assert r["peak_mib"] < 4 * GIB, f"Swin-T T={T}: peak {r['peak_mib']:.0f} MiB is not under 4 GiB"
            print(f"   peak under 4 GiB: yes ({r['peak_mib'] / GIB:.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
