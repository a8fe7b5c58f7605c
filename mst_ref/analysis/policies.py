"""Masking policies compared: the acceptable masking range of each, and the energy saved there.

The MST poster ends on "optimizing the masking policies could expand the acceptable masking range
without compromising performance". Here that range is measured. For one model and one policy
(:mod:`mst_ref.engine.mask_policies`), :func:`sweep_policy` runs the SNN over the same images at every
ratio p and mask seed, and :func:`acceptable_range` reads off

    p* = the largest swept p whose accuracy is within ``tolerance`` points (0.5) of the same model at p = 0

for the mean over seeds, and for every seed on its own (the seed spread: mean and standard deviation of
p* over seeds), with the energy saved at p*: ``1 - E(p*) / E(0)`` (:mod:`mst_ref.engine.energy`). p = 0
draws no mask, so its accuracy is one number shared by every policy; every policy sees the same
images, so the comparison is paired (the sample's standard error affects all policies alike).
"""

from dataclasses import dataclass

import numpy as np

from ..engine.mask_policies import MaskPolicy

__all__ = ["POLICY_NAMES", "policy_options", "sweep_policy", "RangeResult", "acceptable_range"]

# the names of mst-ref mask-sweep --policy: name -> (policy kind, rescale)
POLICY_NAMES = {
    "random": ("random", False),  # the published RSM
    "random-rescaled": ("random", True),
    "regular": ("regular", False),
    "token": ("token", False),
    "channel": ("channel", False),
    "schedule": ("schedule", False),
}


def policy_options(name, schedule=None):
    """``(MaskPolicy, rescale)`` of a policy name of :data:`POLICY_NAMES` (schedule: "delay:4" unless given)."""
    if name not in POLICY_NAMES:
        raise ValueError(f"mask policy must be one of {sorted(POLICY_NAMES)}; got {name!r}")
    kind, rescale = POLICY_NAMES[name]
    if schedule is not None and kind != "schedule":
        raise ValueError(f"a schedule applies to the 'schedule' policy only; got policy {name!r}")
    return MaskPolicy.named(kind, schedule), rescale


def sweep_policy(model, images, labels, timesteps, name, ratios, seeds, mask_sites="published",
                 batch_size=50, schedule=None, neuron_opts=None, on_run=None):
    """Accuracy, SOPs, energy and delivered spikes per image of one policy at every ratio.

    Parameters
    ----------
    model : SpikingNetwork
    images : (n, Cin, H, W) float ndarray
    labels : (n,) int ndarray
    timesteps : int
    name : str
        A key of :data:`POLICY_NAMES`.
    ratios : sequence of float in [0, 1] or dict
        Global ratios p (0 is run once, without masks); a dict of block patterns is one per-block map.
    seeds : int >= 1
        Mask seeds per ratio > 0; seed s draws the masks of the whole evaluation from
        ``np.random.default_rng(s)`` (batches in order).
    mask_sites, batch_size, neuron_opts
        As in :meth:`~mst_ref.engine.network.SpikingNetwork.snn_forward`.
    on_run : callable or None
        Called as ``on_run(ratio, seed)`` after each run (a progress bar).

    Returns
    -------
    rows : list of dict
        ``{"policy", "ratio", "accuracy", "accuracy_std", "sops", "energy_pj", "delivered", "accuracies",
        "seeds", "images"}``: accuracy in %, mean and standard deviation over seeds; the counts per image,
        mean over seeds. ``ratio`` is a float, or the dict for a per-block map.
    """
    policy, rescale = policy_options(name, schedule)
    rows = []
    for ratio in ratios:
        zero = not isinstance(ratio, dict) and float(ratio) == 0.0
        accs, sops, energy_pj, delivered = [], [], [], []
        for seed in range(1 if zero else seeds):
            rng = np.random.default_rng(seed)
            correct = s = e = d = 0
            for start in range(0, len(images), batch_size):
                r = model.snn_forward(images[start:start + batch_size], timesteps,
                                      mask_ratio=ratio if isinstance(ratio, dict) else float(ratio), rng=rng,
                                      mask_sites=mask_sites, mask_rescale=rescale, mask_policy=policy,
                                      **(neuron_opts or {}))
                correct += int((r.predictions[-1] == labels[start:start + batch_size]).sum())
                s, e, d = s + r.sops, e + r.energy_pj, d + sum(r.spike_counts_by_site.values())
            n = len(images)
            accs.append(100.0 * correct / n)
            sops.append(s / n)
            energy_pj.append(e / n)
            delivered.append(d / n)
            if on_run is not None:
                on_run(ratio, seed)
        rows.append({"policy": name, "ratio": ratio if isinstance(ratio, dict) else float(ratio),
                     "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
                     "sops": float(np.mean(sops)), "energy_pj": float(np.mean(energy_pj)),
                     "delivered": float(np.mean(delivered)), "accuracies": accs, "seeds": len(accs),
                     "images": len(images)})
    return rows


@dataclass
class RangeResult:
    """The acceptable masking range of one policy (module docstring).

    Attributes
    ----------
    policy : str
    baseline_accuracy : float
        % at p = 0.
    ratio : float
        p* of the mean accuracy over seeds (0 when no swept p > 0 is acceptable).
    energy_saved : float
        ``1 - E(p*) / E(0)`` (a fraction).
    ratio_by_seed : list of float
        p* of each seed's accuracies on their own.
    energy_saved_by_seed : list of float
    """

    policy: str
    baseline_accuracy: float
    ratio: float
    energy_saved: float
    ratio_by_seed: list
    energy_saved_by_seed: list

    @property
    def ratio_std(self):
        """Standard deviation of p* over seeds."""
        return float(np.std(self.ratio_by_seed))

    @property
    def ratio_mean(self):
        """Mean of p* over seeds."""
        return float(np.mean(self.ratio_by_seed))


def acceptable_range(rows, tolerance=0.5, baseline=None):
    """p* (the largest acceptable ratio) and the energy saved there, for the mean and for every seed.

    Parameters
    ----------
    rows : list of dict
        One policy's rows of :func:`sweep_policy`, global ratios only, p = 0 among them (or ``baseline``).
    tolerance : float
        Accuracy points below the p = 0 accuracy still accepted (0.5).
    baseline : dict or None
        The p = 0 row, when ``rows`` lacks it (it is the same for every policy).

    Returns
    -------
    RangeResult
    """
    rows = sorted((r for r in rows if not isinstance(r["ratio"], dict)), key=lambda r: r["ratio"])
    base = baseline or next((r for r in rows if r["ratio"] == 0), None)
    if base is None:
        raise ValueError("the acceptable range is measured against p = 0: include 0 among the ratios")
    masked = [r for r in rows if r["ratio"] > 0]
    floor = base["accuracy"] - tolerance

    def widest(accuracy_of):
        best = base
        for r in masked:  # the largest p that passes (not only the first run of passes)
            if accuracy_of(r) >= floor - 1e-9:
                best = r
        return best["ratio"], 1.0 - best["energy_pj"] / base["energy_pj"]

    ratio, saved = widest(lambda r: r["accuracy"])
    seeds = min((len(r["accuracies"]) for r in masked), default=1)
    by_seed = [widest(lambda r, s=s: r["accuracies"][s]) for s in range(seeds)]
    return RangeResult(rows[0]["policy"], base["accuracy"], ratio, saved, [p for p, _ in by_seed],
                       [e for _, e in by_seed])
