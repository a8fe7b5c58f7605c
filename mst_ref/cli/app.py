"""The ``mst-ref`` command line.

Each subcommand is a function ``cmd_<name>(args) -> int`` (the exit status) registered in
:func:`_build_parser`; the library below this module never prints, so tables and progress are written
here. Usage::

    mst-ref selfcheck [--neurons 10000] [--max-T 256] [--threshold 1.0] [--dtype float64] [--seed 0]
    mst-ref demo [--out DIR] [--limit N] [--timesteps ...]
    mst-ref eval CHECKPOINT --data PATH --timesteps 1,2,4,...,128 [--mask-ratio p] [--limit N] [--json OUT]
                 [--resize]
    mst-ref inspect CHECKPOINT [--img-size N] [--thresholds] [--json]
    mst-ref convert IN OUT [--force]
    mst-ref mask-sweep CHECKPOINT [--data PATH] --ratios 0,0.5,0.75 --timesteps T
    mst-ref energy CHECKPOINT [--data PATH] [--timesteps T] [--mask-ratio p]
    mst-ref analyze CHECKPOINT [--data PATH] --timesteps 1,2,4,...,64 [--curve] [--commutation]

The options every command shares mean the same everywhere (:mod:`mst_ref.cli.common`): ``--timesteps``
is a list of increasing T values (``1,2,4,...,128``; commands that run at one T take one value),
``--data`` a dataset path whose images must match the model unless ``--resize`` is given, and output
paths are checked before any work starts.
"""

import argparse
import os
import sys

import numpy as np

from .common import fail, run_command
from ..core.neurons import if_neuron
from ..core.qcfs import clip_activation, qcfs


def cmd_selfcheck(args):
    """A QCFS layer and its IF twin side by side, converging as T grows.

    For a random constant input x (shape (M,), values in [-0.25 lambda, 1.25 lambda]), run M IF neurons
    for T steps and compare their mean output ``rate * lambda`` with QCFS at L = T (equal up to ties
    broken by rounding) and with clip(x, 0, lambda) (within lambda / (2T)). Exit status 1 if either
    check fails.
    """
    if not (np.isfinite(args.threshold) and args.threshold > 0):
        raise ValueError(f"--threshold must be positive and finite; got {args.threshold}")
    if args.neurons < 1 or args.max_T < 1:
        raise ValueError(f"--neurons and --max-T must be >= 1; got {args.neurons} and {args.max_T}")
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    lam = args.threshold
    x = rng.uniform(-0.25 * lam, 1.25 * lam, size=args.neurons).astype(dtype)  # (M,)
    x0 = x[:1]
    clip = clip_activation(x, lam)  # (M,)
    print(f"QCFS site vs its IF twin: {args.neurons} neurons, constant input, lambda = {lam}, {dtype}")
    print(f"example neuron: x = {x0[0]:.6f}, clip(x, 0, lambda) = {clip[0]:.6f}")
    header = (
        f"{'T':>6} {'qcfs_L=T(x)':>12} {'rate*lam(x)':>12} "
        f"{'mean|rate*lam - qcfs_L=T|':>26} {'mean|rate*lam - clip|':>22} {'lam/(2T)':>10}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    T = 1
    while T <= args.max_T:
        out = if_neuron(np.broadcast_to(x, (T,) + x.shape), lam)  # (T, M)
        rate_lam = out.mean(axis=0, dtype=np.float64)  # (M,)
        q = qcfs(x, lam, levels=T)  # (M,)
        err_q = np.abs(rate_lam - q)  # (M,)
        err_c = np.abs(rate_lam - clip)  # (M,)
        bound = lam / (2 * T)
        print(
            f"{T:>6} {q[0]:>12.6f} {rate_lam[0]:>12.6f} "
            f"{err_q.mean():>26.3e} {err_c.mean():>22.3e} {bound:>10.3e}"
        )
        # equal to QCFS except where a tie (T x / lambda + 1/2 an integer) is broken by rounding
        tol = 1e-4 * lam if dtype == np.float32 else 1e-9 * lam
        ok &= bool(np.mean(err_q > tol) <= 1e-3)
        ok &= bool(err_c.max() <= bound + 4 * T * np.finfo(dtype).eps * lam)
        T *= 2
    print("selfcheck " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


# Commands that run long enough for threads to matter; each gets --threads (mst_ref.threads).
LONG_COMMANDS = ("demo", "eval", "energy", "mask-sweep", "analyze", "rsm-table")


def _add_threads_option(sub):
    """Give every long command ``--threads N`` and run it inside :func:`mst_ref.threads.limit_threads`."""
    from ..threads import limit_threads

    def positive(text):
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, e.g. 2; got {text!r}")
        return int(text)

    def with_threads(func):
        def run(args):
            with limit_threads(args.threads):
                return func(args)
        return run

    for name in LONG_COMMANDS:
        p = sub.choices.get(name)
        if p is not None:
            p.add_argument("--threads", type=positive, default=None,
                           help="threads of the Numba kernels and the SNN's matrix products; BLAS itself "
                                "runs one (default 1, or $MST_REF_THREADS; more helps on idle cores)")
            p.set_defaults(func=with_threads(p.get_default("func")))


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="mst-ref",
        description="Masked Spiking Transformer reference (NumPy): ANN with QCFS, SNN with IF neurons.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("selfcheck", help="QCFS vs its IF twin as T grows (no data or checkpoint needed)")
    p.add_argument("--neurons", type=int, default=10000, help="number of neurons M (default 10000)")
    p.add_argument("--max-T", type=int, default=256, help="largest T; T doubles from 1 (default 256)")
    p.add_argument("--threshold", type=float, default=1.0, help="lambda (default 1.0)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_selfcheck)

    from . import analysis as cli_analysis, checkpoint as cli_checkpoint, energy as cli_energy, run as cli_run
    cli_run.add_demo_parser(sub)
    cli_run.add_eval_parser(sub)
    cli_checkpoint.add_parsers(sub)
    cli_energy.add_mask_sweep_parser(sub)
    cli_energy.add_energy_parser(sub)
    cli_analysis.add_analyze_parser(sub)
    from . import table as cli_table
    cli_table.add_rsm_table_parser(sub)
    cli_table.add_rsm_regions_parser(sub)
    from . import events as cli_events
    cli_events.add_parsers(sub)
    _add_threads_option(sub)  # last: after every command is registered
    return parser


def main(argv=None):
    """Entry point of ``mst-ref``; returns the exit status.

    Errors are one line on stderr and exit status 2, never a traceback
    (:func:`mst_ref.cli.common.run_command`); argparse reports malformed options the same way.
    """
    args = _build_parser().parse_args(argv)
    for attr in ("checkpoint", "input"):  # every command reading a checkpoint file: a folder is not one
        value = getattr(args, attr, None)
        if isinstance(value, str) and os.path.isdir(value):
            return fail(args.command, f"{value} is a directory; give a checkpoint file (.pth, .pt, .npz or "
                                      ".safetensors)")
    return run_command(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
