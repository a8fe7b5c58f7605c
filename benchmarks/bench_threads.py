"""Threads on a busy machine: every long ``mst-ref`` command under one competing CPU-bound process, with the
default thread setting, with ``--threads 1`` and with ``--threads N`` (N = the cores, what OpenBLAS and Numba
take when nobody sets them).

Run: python benchmarks/bench_threads.py [--repeats 2] [--no-competitor] [--commands eval,demo,...]

The script starts the competitor itself (one Python process spinning on one core, ``nice 0``), waits a
second, then runs each command as a user would (``python -m mst_ref.cli ...``, a fresh interpreter each
time, so import and Numba-cache loading are counted) on the shipped checkpoint and the shipped 1,000-image
Fashion-MNIST sample, cycling through the settings ``repeats`` times and keeping each setting's best wall
time. Printed per command: the wall seconds and the ratios ``t(--threads 1) / t(setting)`` (> 1: faster
than single-threaded; the issue's condition is that the default is never below 1.0), then the competitor
is stopped. Other load on the machine (``/proc/loadavg`` is printed before and after) shifts all numbers;
the ratios are measured in the same run, interleaved.

A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CKPT = str(ROOT / "data" / "mst_fashion.pth")
SAMPLE = str(ROOT / "data" / "fashion_sample.npz")


def commands(out_dir):
    """name -> argv after ``mst-ref``: each long command at a size that runs for seconds on an idle machine."""
    return {
        "eval": ["eval", CKPT, "--data", SAMPLE, "--timesteps", "1,2,4,8", "--limit", "50"],
        "demo": ["demo", "--limit", "25", "--timesteps", "1,2,4,8", "--out", os.path.join(out_dir, "demo")],
        "energy": ["energy", CKPT, "--data", SAMPLE, "--timesteps", "8", "--limit", "25"],
        "mask-sweep": ["mask-sweep", CKPT, "--data", SAMPLE, "--ratios", "0,0.5", "--seeds", "1",
                       "--timesteps", "8", "--limit", "25"],
        "analyze": ["analyze", CKPT, "--data", SAMPLE, "--timesteps", "1,2,4,8", "--limit", "8"],
    }

def run_command(argv, threads):
    """Wall seconds of ``mst-ref argv [--threads threads]`` in a fresh interpreter (None: the default)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                        "MST_REF_THREADS")}
    extra = [] if threads is None else ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mst_ref.cli", *argv, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"mst-ref {' '.join(argv + extra)} failed:\n{proc.stderr[-2000:]}")
    return wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the settings; best of (default 2)")
    parser.add_argument("--commands", default="eval,demo,energy,mask-sweep,analyze")
    parser.add_argument("--no-competitor", action="store_true", help="measure without starting the competitor")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from mst_ref.threads import default_threads

    cores = os.cpu_count() or 1
    settings = [("--threads 1", 1), ("default", None), (f"--threads {cores}", cores)]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed script still stops its competitor
    competitor = None
    if not args.no_competitor:
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        print(f"# mst-ref commands under {'no' if competitor is None else 'one'} competing CPU-bound process "
              f"(started by this script); cpus={cores}; best of {args.repeats}, settings interleaved")
        print(f"# load before: {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)\n")
        header = f"{'command':<12}" + "".join(f"{label:>14}" for label, _ in settings)
        header += "".join(f"{'1 / ' + label:>18}" for label, _ in settings[1:])
        print(f"{'':<12}{'wall seconds':>14}")
        print(header)
        worst = float("inf")
        # warm the Numba cache: after an edit of mst_ref/kernels.py the first process recompiles the
        # kernels (about a minute), which is not what a thread setting costs
        subprocess.run([sys.executable, "-m", "mst_ref.cli", "eval", CKPT, "--data", SAMPLE, "--timesteps", "1", "--limit", "2"],
                       cwd=ROOT, capture_output=True, check=True)
        with tempfile.TemporaryDirectory() as tmp:
            for name, argv in commands(tmp).items():
                if name not in args.commands.split(","):
                    continue
                best = {label: float("inf") for label, _ in settings}
                for r in range(args.repeats):
                    for label, threads in settings:
                        log(f"{name} {label} (round {r + 1})")
                        best[label] = min(best[label], run_command(argv, threads))
                ratios = [best["--threads 1"] / best[label] for label, _ in settings[1:]]
                worst = min(worst, ratios[0])
                print(f"{name:<12}" + "".join(f"{best[label]:>14.2f}" for label, _ in settings)
                      + "".join(f"{r:>17.2f}x" for r in ratios), flush=True)
        print(f"\n# load after: {Path('/proc/loadavg').read_text().split()[:3]}")
        verdict = "not slower than" if worst >= 0.95 else "SLOWER (by more than 5%) than"
        print(f"# default vs single-threaded, worst command: {worst:.2f}x: {verdict} --threads 1; the default "
              f"is {default_threads()} thread(s) here (mst_ref.threads.default_threads)")
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
