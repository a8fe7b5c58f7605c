"""Masked against unmasked runs of ``mst-ref eval``: what RSM costs in drawing its uniforms, what it saves.

Run: python benchmarks/bench_masking.py [--data PATH] [--limit 200] [--timesteps 32] [--ratio 0.75]
                                        [--repeats 2] [--checkpoint data/mst_fashion_rsm75_paper.pth]

Each point is the command in a fresh interpreter, one process, one thread:

    mst-ref eval CHECKPOINT --data PATH --timesteps T --limit N --mask-ratio P --json OUT

Three settings, alternating within each repeat so that a change of load falls on all of them:

- ``p = 0``: unmasked (nothing drawn);
- ``p = P``: masked, each image's generator filling its rows of one array in place (the shipped code);
- ``p = P, earlier``: masked as the earlier implementation did, re-created here by replacing two
  functions: each image's draws built as its own array and concatenated along the batch axis
  (``ImageStreams.random``), and the float64 uniforms handed to the fused kernels instead of one byte
  per decision (``mst_fast._mask``). The same masks, so its JSON must equal the shipped one's.

Printed per setting: wall seconds (best of the repeats), the seconds spent drawing the uniforms
(``ImageStreams.random``, timed inside the run), SOPs per image, and ratios to ``p = 0``; then whether
the two masked runs' JSON agree, and ``/proc/loadavg`` before and after. A script, not a test: the
numbers depend on the machine and its load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import numpy as np
from mst_ref.engine import mask_streams
from mst_ref.cli import main

earlier, timing_out, argv = sys.argv[1] == "earlier", sys.argv[2], sys.argv[3:]
fill = mask_streams.ImageStreams.random
spent = [0.0]

def stacked_random(self, shape):
    # the earlier implementation: one array per image, then one concatenate along the batch axis
    shape, ax, B = tuple(shape), self.batch_axis, len(self.generators)
    one = shape[:ax] + (shape[ax] // B,) + shape[ax + 1:]
    return np.concatenate([g.random(one) for g in self.generators], axis=ax)

draw = stacked_random if earlier else fill

def uniforms_mask(mode, name, shape):
    # the earlier fast path: the kernels read the float64 uniforms themselves (published policy only)
    masker = mode.masker
    p = masker.ratios.get(name, 0.0)
    if p == 0:
        return None, 0.0, 1.0
    if p == 1:
        return None, 1.0, 0.0
    gain = 1.0 / (1.0 - p) if masker.rescale else 1.0
    return masker.rngs[name].random(shape), p, gain

if earlier:
    from mst_ref.models import mst_fast
    mst_fast._mask = uniforms_mask
    mst_fast.MASK_DTYPE = np.float64  # the absent sites' empty arrays, to match

def timed(self, shape):
    t0 = time.perf_counter()
    try:
        return draw(self, shape)
    finally:
        spent[0] += time.perf_counter() - t0

mask_streams.ImageStreams.random = timed
code = main(argv)
json.dump({"draw_seconds": spent[0]}, open(timing_out, "w"))
sys.exit(code)
"""


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(argv, earlier, tmp, name):
    """(wall seconds, draw seconds, JSON dict) of one ``mst-ref eval`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "MST_REF_THREADS"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out, timing = tmp / f"{name}.json", tmp / f"{name}.timing.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "earlier" if earlier else "shipped", str(timing), "eval",
                           *argv, "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bench_masking: mst-ref eval {' '.join(argv)} failed: "
                         f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    result = json.loads(out.read_text())
    return wall, json.loads(timing.read_text())["draw_seconds"], result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "fashion_sample.npz"),
                        help="dataset (default: the shipped 1000-image Fashion-MNIST sample)")
    parser.add_argument("--checkpoint", default=str(ROOT / "data" / "mst_fashion_rsm75_paper.pth"))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not 0 < args.ratio <= 1 or args.limit < 1 or args.timesteps < 1 or args.repeats < 1:
        raise SystemExit("bench_masking: --ratio must be in (0, 1]; --limit, --timesteps, --repeats >= 1")
    base = [args.checkpoint, "--data", args.data, "--timesteps", str(args.timesteps), "--limit", str(args.limit)]
    settings = [("p = 0", 0.0, False), (f"p = {args.ratio:g}", args.ratio, False),
                (f"p = {args.ratio:g}, earlier", args.ratio, True)]
    print(f"mst-ref eval {' '.join(base)} --mask-ratio P  (one process, one thread, best of {args.repeats})")
    print(f"load average before: {loadavg()}", flush=True)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            for k, (name, p, earlier) in enumerate(settings):
                wall, draw, result = run(base + ["--mask-ratio", str(p)], earlier, tmp, f"{k}_{r}")
                print(f"  repeat {r + 1}: {name:<16} {wall:7.1f} s", flush=True)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, draw, result)
    w0 = best[settings[0][0]][0]
    print(f"\n| setting | wall s | drawing the uniforms, s (share) | SOPs per image | wall / p = 0 | SOPs / p = 0 |")
    print("|---|---|---|---|---|---|")
    s0 = best[settings[0][0]][2]["sops_per_image"]
    for name, _, _ in settings:
        wall, draw, result = best[name]
        sops = result["sops_per_image"]
        print(f"| {name} | {wall:.1f} | {draw:.1f} ({draw / wall:.0%}) | {sops:,.0f} | x{wall / w0:.2f} | "
              f"x{sops / s0:.3f} |")
    same = best[settings[1][0]][2] == best[settings[2][0]][2]
    print(f"\nmasked runs, shipped and earlier: {'identical JSON' if same else 'JSON DIFFERS'}")
    print(f"load average after: {loadavg()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
