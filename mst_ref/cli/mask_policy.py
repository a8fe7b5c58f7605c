"""``mst-ref mask-sweep --policy NAME [--schedule S] [--json OUT]``: one masking policy's sweep.

    mst-ref mask-sweep CHECKPOINT --policy regular --ratios 0.1,0.3,0.5 --seeds 3 --json regular.json

Runs :func:`mst_ref.analysis.policies.sweep_policy` (policies: :mod:`mst_ref.engine.mask_policies`) at the
``--ratios`` (p = 0 always, once), prints per ratio the accuracy (mean and sd over seeds), SOPs, energy
and delivered spikes per image and the acceptable range p* (the largest p within 0.5 point of p = 0),
and with ``--json`` writes ``{"rows": [{"policy", "ratio", "accuracy", "accuracy_std", "sops",
"energy_pj", "delivered", ...}], "model", "images", "timesteps", "seeds", "mask_sites", "schedule"}``
(counts per image, accuracy in %), which ``benchmarks/policy_table.py render`` reads.
"""

import json
import sys
from pathlib import Path

from .common import UsageError, progress_line

__all__ = ["add_policy_arguments", "wants_policy_sweep", "cmd_policy_sweep"]


def add_policy_arguments(p):
    """``--policy``, ``--schedule`` and ``--json`` of ``mask-sweep``."""
    from ..analysis.policies import POLICY_NAMES
    p.add_argument("--policy", choices=list(POLICY_NAMES), default=None,
                   help="masking policy (default: the published random one): random, random-rescaled, "
                        "regular, token, channel, schedule (mst_ref.engine.mask_policies)")
    p.add_argument("--schedule", default=None,
                   help="--policy schedule: weights w(t) of p_t = p w(t), comma-separated (the last repeats), "
                        "or delay:K / ramp:K (default delay:4)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the rows as JSON to OUT")


def wants_policy_sweep(args):
    """Whether ``mask-sweep`` runs the policy sweep (``--policy`` or ``--json`` given)."""
    return args.policy is not None or args.json is not None


def cmd_policy_sweep(args, model, images, labels, dataset, neuron, ratios):
    """Sweep one policy over ``ratios`` on the loaded images; print the table, write ``--json``."""
    from ..analysis.policies import acceptable_range, sweep_policy

    name = args.policy or "random"
    for flag, given in (("--layerwise", args.layerwise), ("--cnn-sites", getattr(args, "cnn_sites", None))):
        if given:
            raise UsageError(f"{flag} does not combine with --policy / --json; run it without them")
    schedule = args.schedule
    if schedule is not None and name != "schedule":
        raise UsageError(f"--schedule applies to --policy schedule; got --policy {name}")
    if schedule is not None and ":" not in schedule:
        try:
            schedule = [float(v) for v in schedule.split(",")]
        except ValueError:
            raise UsageError(f"--schedule must be weights such as 0,0,1 or delay:K / ramp:K; got {args.schedule!r}")
    sites = args.mask_sites or model.trained_mask_sites
    total = 1 + args.seeds * sum(1 for p in ratios if p > 0)
    count = [0]

    def tick(ratio, seed):
        count[0] += 1
        progress_line(count[0], total, f"{name} p={ratio:g} seed {seed}")

    try:
        rows = sweep_policy(model, images, labels, args.timesteps, name, ratios, args.seeds, sites,
                            args.batch_size, schedule, neuron, on_run=tick)
    except ValueError as e:  # e.g. a bad schedule
        raise UsageError(str(e))
    res = acceptable_range(rows)
    print(f"mask-sweep --policy {name}{f' (schedule {schedule})' if name == 'schedule' else ''}: "
          f"{args.checkpoint} on {dataset.name}, first {len(images)} images, T={args.timesteps}, sites {sites}, "
          f"seeds {args.seeds}")
    header = (f"{'ratio':>6} {'accuracy % (mean +- sd)':>24} {'SOPs/img':>11} {'energy/img':>11} "
              f"{'vs p=0':>7} {'delivered/img':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        acc = f"{r['accuracy']:.2f} +- {r['accuracy_std']:.2f}"
        print(f"{r['ratio']:>6g} {acc:>24} {r['sops']:>11.4g} "
              f"{r['energy_pj'] / 1e6:>8.2f} uJ {'x%.3f' % (r['energy_pj'] / rows[0]['energy_pj']):>7} "
              f"{r['delivered']:>14.4g}")
    print(f"acceptable range (within 0.5 point of p = 0): p* = {res.ratio:g}, energy saved {100 * res.energy_saved:.1f}%; "
          f"per seed p* = {res.ratio_mean:.3g} +- {res.ratio_std:.2g}")
    if args.json:
        try:
            meta = {"model": Path(args.checkpoint).name, "images": len(images), "timesteps": args.timesteps,
                    "seeds": args.seeds, "mask_sites": sites, "schedule": schedule}
            Path(args.json).write_text(json.dumps({"rows": rows, **meta}, indent=1))
        except OSError as e:
            raise UsageError(f"cannot write --json {args.json}: {e.strerror}")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
