"""How long ``mst-ref eval`` of the whole Fashion-MNIST test set at T = 32 takes, as a user runs it.

Run: python benchmarks/bench_eval.py --data FASHION_MNIST_FOLDER [--threads 1,2] [--limits 200,1000] [--full]
                                     [--products auto,dense]

Each point is the command itself in a fresh interpreter (import, checkpoint loading, data reading and the
Numba cache are counted):

    mst-ref eval data/mst_fashion.pth --data FOLDER --timesteps 32 --limit N --threads K

By default it is run at two sizes N1 < N2 and the time for all 10,000 test images is extrapolated by the
line through both (a fixed start-up cost plus a cost per image; the images cost the same on average, so
the line is an estimate, and the printout says it is one). ``--full`` runs the whole test set instead
(minutes). ``--products`` runs each setting once per way of computing the products fed by spikes
(``MST_REF_PRODUCTS``: auto = event-driven below the crossover density, dense = BLAS only). Printed:
seconds, image-steps per second (images x 32 / the per-image part of the time), the estimated
full-test-set time against the 90-second target, the accuracy the command printed, and the ratios of the
settings measured in the same run (interleaved). ``/proc/loadavg`` is printed: on a busy machine the times grow with the load.

A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CKPT = str(ROOT / "data" / "mst_fashion.pth")
TEST_IMAGES = 10_000
T = 32
TARGET_S = 90.0


def eval_seconds(data, limit, threads, products="auto"):
    """Wall seconds and output of ``mst-ref eval`` at T = 32 on the first ``limit`` test images (None: all)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MST_REF_THREADS")}
    env["MST_REF_PRODUCTS"] = products
    argv = ["eval", CKPT, "--data", data, "--timesteps", str(T), "--threads", str(threads)]
    argv += [] if limit is None else ["--limit", str(limit)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mst_ref.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"mst-ref {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"),
                        help="Fashion-MNIST IDX folder (default $FASHION_MNIST or /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--threads", default="1,2", help="thread settings to compare, comma-separated")
    parser.add_argument("--limits", default="200,1000", help="the two sizes N1,N2 of the extrapolation")
    parser.add_argument("--full", action="store_true", help="run all 10,000 images (no extrapolation)")
    parser.add_argument("--products", default="auto", help="ways of computing spike products, e.g. auto,dense")
    args = parser.parse_args()
    settings = [(int(k), how) for how in args.products.split(",") for k in args.threads.split(",")]
    sizes = [None] if args.full else [int(n) for n in args.limits.split(",")]
    if not args.full and (len(sizes) != 2 or not 0 < sizes[0] < sizes[1]):
        raise SystemExit("--limits takes two increasing sizes, e.g. 200,1000")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    print(f"# mst-ref eval, shipped Fashion-MNIST MST, T = {T}, cpus={os.cpu_count()}")
    print(f"# load before: {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)")
    # warm the Numba cache: after an edit of mst_ref/kernels.py the first process recompiles the
    # kernels (about a minute), which is not what a thread setting costs
    subprocess.run([sys.executable, "-m", "mst_ref.cli", "eval", CKPT, "--data", args.data, "--timesteps", "1", "--limit", "2"],
                   cwd=ROOT, capture_output=True, check=True)
    wall, accuracy = {}, {}
    for n in sizes:
        for k, how in settings:  # interleaved, so the settings see the same load
            log(f"eval --limit {n} --threads {k}, MST_REF_PRODUCTS={how}")
            wall[n, k, how], out = eval_seconds(args.data, n, k, how)
            accuracy[n, k, how] = next((line.strip() for line in out.splitlines() if line.strip().startswith(f"{T} ")), "")
            print(f"   MST_REF_PRODUCTS={how} mst-ref eval {Path(CKPT).relative_to(ROOT)} --data {args.data} "
                  f"--timesteps {T}{'' if n is None else f' --limit {n}'} --threads {k}: {wall[n, k, how]:.1f} s "
                  f"(T, SNN acc %, correct: {accuracy[n, k, how]}); load now "
                  f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    print(f"# load after: {Path('/proc/loadavg').read_text().split()[:3]}\n")
    full = {}
    for k, how in settings:
        if args.full:
            full[k, how] = wall[None, k, how]
            rate, note = TEST_IMAGES * T / full[k, how], "measured"
        else:
            n1, n2 = sizes
            per_image = (wall[n2, k, how] - wall[n1, k, how]) / (n2 - n1)
            fixed = wall[n1, k, how] - per_image * n1
            full[k, how], rate = fixed + per_image * TEST_IMAGES, T / per_image
            note = f"EXTRAPOLATED from {n1} and {n2} images (start-up {fixed:.1f} s + {per_image * 1e3:.1f} ms/image)"
        verdict = "under" if full[k, how] <= TARGET_S else "OVER"
        print(f"--threads {k}, products {how}: full test set (10,000 images, T = {T}) {full[k, how]:.0f} s = "
              f"{full[k, how] / 60:.1f} min, {verdict} the {TARGET_S:.0f}-second target; {rate:.0f} image-steps/s; {note}")
    if len(settings) > 1:
        base = settings[0]
        print("ratios (same run): " + ", ".join(
            f"--threads {k} {how} is {full[base] / full[k, how]:.2f}x --threads {base[0]} {base[1]}"
            for k, how in settings[1:]))
    print(f"needed for {TARGET_S:.0f} s: {TEST_IMAGES * T / TARGET_S:.0f} image-steps/s (start-up excluded)")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
