"""``mst-ref eval --workers 2`` against the one-process run of the same command: speed-up and equal JSON.

Run: python benchmarks/bench_workers.py [--data PATH] [--limit 200] [--timesteps 16] [--workers 2]
                                        [--repeats 1]

Each point is the command itself in a fresh interpreter, as a user runs it (import, checkpoint loading,
data reading, the Numba cache, and with workers their start-up: each spawned process imports mst_ref and
loads the model once):

    mst-ref eval data/mst_fashion.pth --data PATH --timesteps T --limit N --batch-size 25 [--workers W]

The settings alternate (one process, W processes, one process, ...) so that a change of load falls on
both. Printed: wall and CPU seconds of each run (CPU: the command and its workers), the speed-up (one process / W processes, best of the repeats),
whether the JSON files are identical, and ``/proc/loadavg`` before and after: with other processes on the
cores, W workers cannot get W cores and the speed-up falls short of W for that reason.

A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CKPT = str(ROOT / "data" / "mst_fashion.pth")


def loadavg():
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return ["?"] * 3


def eval_seconds(argv, out):
    """Wall seconds and CPU seconds (user + system, the command and its workers) of ``mst-ref eval ARGV
    --json OUT`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "MST_REF_THREADS"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mst_ref.cli", "eval", *argv, "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants: the workers too
    if proc.returncode:
        raise RuntimeError(f"mst-ref eval {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "fashion_sample.npz"),
                        help="dataset (default: the shipped 1000-image Fashion-MNIST sample)")
    parser.add_argument("--limit", type=int, default=200, help="images (default 200)")
    parser.add_argument("--timesteps", default="16", help="T (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting (default 1)")
    args = parser.parse_args()
    common = [CKPT, "--data", args.data, "--timesteps", args.timesteps, "--limit", str(args.limit),
              "--batch-size", "25"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"mst-ref eval {' '.join(common)} [--workers {args.workers}]; {cores} cores visible; "
          f"loadavg before {' '.join(loadavg())}")
    print(f"{'setting':<14} {'run':>3} {'wall s':>8} {'CPU s':>8}")
    times = {"1 process": [], f"{args.workers} workers": []}
    cpu = {k: [] for k in times}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / f"{i}.json" for i, k in enumerate(times)}
        eval_seconds(common + ["--limit", "2"], Path(tmp) / "warm.json")  # the Numba cache, once
        for r in range(args.repeats):
            for setting in times:
                extra = [] if setting == "1 process" else ["--workers", str(args.workers)]
                wall, used = eval_seconds(common + extra, outs[setting])
                times[setting].append(wall)
                cpu[setting].append(used)
                print(f"{setting:<14} {r + 1:>3} {wall:>8.1f} {used:>8.1f}", flush=True)
        same = filecmp.cmp(*outs.values(), shallow=False)
    one, many = (min(v) for v in times.values())
    c1, cw = (min(v) for v in cpu.values())
    print(f"speed-up of {args.workers} workers: x{one / many:.2f} (best of {args.repeats}: {one:.1f} s / "
          f"{many:.1f} s); CPU seconds x{cw / c1:.2f} of one process (start-up of the workers); JSON identical: "
          f"{same}; loadavg after {' '.join(loadavg())}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
