"""The poster's masking table, measured: accuracy, spikes fired and delivered, SOPs and energy against p.

The MST poster's table compares MST with the QCFS ResNet-18 and VGG-16 at masking ratios p = 0, 0.5
and 0.75 ("P", its power figure, is "spike count as an indicator of energy efficiency"). This module
measures every quantity that figure could mean, for any model mst_ref loads, with one SNN run per
(ratio, seed):

- ``accuracy``: of the prediction after T steps (argmax of the cumulative logits), mean and standard
  deviation over the seeds of the masks (p = 0 draws no mask: one run);
- ``fired``: spikes emitted by all neurons, before masking (per image);
- ``delivered``: spikes that reach the next layer, after masking (per image);
- ``sops``: synaptic operations, delivered spikes x fan-out (+ the products' pairs for MST);
- ``energy_pj``: 0.9 pJ x SOPs + 4.6 pJ x analog MACs (:mod:`mst_ref.engine.energy`);
- each of the four also as a ratio against p = 0 of the same model;
- ``masked_share``: f, the share of the SOPs at p = 0 that the masked sites' spikes drive (their own
  synapses; for MST the products q k^T they feed are booked under the product). Masking removes about
  p of those, so the energy ratio is about ``1 - f p e`` (``predicted_energy_ratio``; e is the SOPs'
  share of the energy at p = 0): a count, exact on a few hundred images, before the masked spikes
  change how later layers fire. :func:`closest_to_poster` picks, among several site configurations of
  one model, the one whose energy ratios come closest to a target (the poster's P).

Masks are applied by :class:`mst_ref.engine.masking.SpikeMasker`, which also counts the spikes fired before
masking (on MST's fused path the kernels count them). Image i's masks derive from (seed, i)
(:class:`mst_ref.engine.mask_streams.ImageSeeds`), not from its batch: every number is reproducible and
does not depend on the batch size, so ``mst-ref rsm-table`` run in shards over processes or machines
(:mod:`mst_ref.distributed`) gives the same table.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from ..engine.energy import E_AC_PJ
from ..engine.mask_streams import ImageSeeds
from ..engine.masking import site_ratios

__all__ = ["RowSpec", "RatioStats", "measure_ratios", "table_rows", "masked_sites", "masked_share",
           "closest_to_poster"]


@dataclass
class RowSpec:
    """One model of the table.

    Attributes
    ----------
    label : str
        What the table calls it ("MST", "ResNet-18", "VGG-16").
    model : SpikingNetwork
    trained_ratio : float
        p the model was trained with (0: masked only at evaluation).
    mask_sites : str or tuple
        Which sites RSM masks (the family's preset name or site suffixes).
    mask_rescale : bool
        Divide kept spikes by 1 - p (as the model was trained, if it was).
    """

    label: str
    model: object
    trained_ratio: float
    mask_sites: object = "published"
    mask_rescale: bool = False


@dataclass
class RatioStats:
    """Totals of one model at one ratio, over seeds (per image: divide by ``images``)."""

    ratio: float
    accuracies: list = field(default_factory=list)  # one per seed, in %
    fired: float = 0.0  # per image, averaged over seeds
    delivered: float = 0.0
    sops: float = 0.0
    energy_pj: float = 0.0
    images: int = 0
    sops_by_site: dict = field(default_factory=dict)  # site / product -> SOPs per image, mean over seeds


def measure_ratios(spec, batches, timesteps, ratios, seeds, on_batch=None):
    """Run the SNN of ``spec.model`` at every ratio and seed over the same images.

    Parameters
    ----------
    spec : RowSpec
    batches : callable
        ``batches()`` yields ``(x, y)``: normalised ``(B, Cin, H, W)`` images and ``(B,)`` labels, the
        same images in the same order on every call (image i of the run gets the masks of (seed, i)).
    timesteps : int
        T.
    ratios : sequence of float in [0, 1]
    seeds : int >= 1
        Mask seeds per ratio > 0 (p = 0 runs once).
    on_batch : callable or None
        Called with the batch size after each batch (a progress bar).

    Returns
    -------
    list of RatioStats, one per ratio, in order
    """
    out = []
    for p in ratios:
        stats = RatioStats(ratio=float(p))
        runs = 1 if p == 0 else seeds
        for seed in range(runs):
            correct = n = 0
            fired = delivered = sops = energy_pj = 0.0
            by_site = {}
            for x, y in batches():
                rng = ImageSeeds(seed, tuple(range(n, n + len(y))), "snn")  # image i: masks of (seed, i)
                res = spec.model.snn_forward(x, timesteps, mask_ratio=float(p), rng=rng, mask_sites=spec.mask_sites,
                                             mask_rescale=spec.mask_rescale)
                correct += int((res.predictions[-1] == y).sum())
                n += len(y)
                fired += sum(res.fired_by_site.values())
                delivered += sum(res.spike_counts_by_site.values())
                sops += res.sops
                for name, v in res.sops_by_site.items():
                    by_site[name] = by_site.get(name, 0) + v
                energy_pj += res.energy_pj
                if on_batch is not None:
                    on_batch(len(y))
            if n == 0:
                raise ValueError("no images to evaluate")
            stats.accuracies.append(100.0 * correct / n)
            stats.fired += fired / n / runs
            stats.delivered += delivered / n / runs
            stats.sops += sops / n / runs
            stats.energy_pj += energy_pj / n / runs
            stats.images = n
            for name, v in by_site.items():
                stats.sops_by_site[name] = stats.sops_by_site.get(name, 0.0) + v / n / runs
        out.append(stats)
    return out


def table_rows(spec, stats):
    """The JSON rows of one model: counts per image and ratios against p = 0 of the same model.

    Raises
    ------
    ValueError
        ``stats`` has no p = 0 entry to compare with.
    """
    base = next((s for s in stats if s.ratio == 0), None)
    if base is None:
        raise ValueError("the table needs p = 0 among the ratios (everything is compared with it)")
    f = masked_share(spec.model, base.sops_by_site, spec.mask_sites)
    # e: the SOPs' share of the energy at p = 0 (the rest is the analog MACs masking does not touch)
    e = E_AC_PJ * base.sops / base.energy_pj if base.energy_pj else math.nan
    sites = spec.mask_sites if isinstance(spec.mask_sites, str) else list(spec.mask_sites)
    rows = []
    for s in stats:
        acc = float(np.mean(s.accuracies))
        rows.append({
            "model": spec.label, "trained_ratio": spec.trained_ratio, "ratio": s.ratio,
            "mask_rescale": spec.mask_rescale, "sites": sites, "masked_share": f,
            # P ~ 1 - f p e
            "predicted_energy_ratio": 1.0 - f * s.ratio * e,
            "accuracy": acc, "accuracy_std": float(np.std(s.accuracies)),
            # standard error of an accuracy over n images: sqrt(a (1 - a) / n)
            "accuracy_se": 100.0 * math.sqrt(acc / 100 * (1 - acc / 100) / s.images),
            "accuracy_change": acc - float(np.mean(base.accuracies)), "seeds": len(s.accuracies),
            "images": s.images,
            "fired": s.fired, "delivered": s.delivered, "sops": s.sops, "energy_pj": s.energy_pj,
            "fired_ratio": _ratio(s.fired, base.fired), "delivered_ratio": _ratio(s.delivered, base.delivered),
            "sops_ratio": _ratio(s.sops, base.sops), "energy_ratio": _ratio(s.energy_pj, base.energy_pj),
        })
    return rows


def _ratio(a, b):
    return a / b if b else math.nan


def masked_sites(model, sites):
    """The site names a configuration masks (a preset name of the model's family or site suffixes)."""
    return list(site_ratios(model.site_names, 1.0, sites, model.mask_site_presets))


def masked_share(model, sops_by_site, sites):
    """f: the share of the SOPs that the spikes of the masked sites drive.

    Parameters
    ----------
    model : SpikingNetwork
    sops_by_site : dict of {str: float}
        SOPs of each site (and product) at p = 0 (``SNNResult.sops_by_site`` or a sum of them).
    sites : str or tuple of str
        The masking configuration (:func:`masked_sites`).

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    .. math:: f = \\sum_{s \\in \\text{masked}} \\mathrm{SOPs}_s \\big/ \\sum_s \\mathrm{SOPs}_s
    """
    total = sum(sops_by_site.values())
    if total <= 0:
        return math.nan
    # f = SOPs behind the masked sites / all SOPs
    return sum(sops_by_site.get(name, 0.0) for name in masked_sites(model, sites)) / total


def closest_to_poster(rows, target):
    """The configuration whose energy ratios come closest to a target, and how close.

    Parameters
    ----------
    rows : list of dict
        :func:`table_rows` of one model under several ``sites``.
    target : dict of {float: float}
        p -> the ratio to reach (e.g. the poster's P: ``{0.5: 0.70, 0.75: 0.58}``).

    Returns
    -------
    (sites, distance) : the ``sites`` of the rows with the smallest largest \\|energy ratio - target\\|
    over the target's ratios, and that distance; ``(None, inf)`` when no configuration has them all.
    """
    best, best_d = None, math.inf
    for sites in dict.fromkeys(str(r["sites"]) for r in rows):
        got = {r["ratio"]: r["energy_ratio"] for r in rows if str(r["sites"]) == sites}
        if not all(p in got for p in target):
            continue
        # distance = max over p of |E(p) / E(0) - P(p)|
        d = max(abs(got[p] - t) for p, t in target.items())
        if d < best_d:
            best, best_d = sites, d
    return best, best_d
