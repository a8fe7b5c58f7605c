"""Layer-wise masking ratios: a greedy per-block search (the MST poster's future work).

The published MST masks every block with one global ratio p. Blocks differ in how many SOPs their
masked spikes cause and in how much accuracy they lose when masked, so one ratio per block can remove
more SOPs at the same accuracy. :func:`search_block_ratios` finds such a map cheaply, on a small
validation split at a small T:

1. Baseline: accuracy a_0 and SOPs with p = 0. A map is *accepted* while its accuracy is at least
   a_0 - ``tolerance``.
2. Global: evaluate every candidate ratio for all blocks at once; the best global ratio p_g is the
   largest accepted one (0 if none is).
3. Per block: start from p_g everywhere. Visit the blocks in decreasing order of the SOPs their masked
   spikes cause in the unmasked run (q k^T counts for q and k); raise the block's ratio through the
   larger candidates, keeping each accepted step and stopping at the first rejected one.

Every evaluation uses the same seed (drawn once from ``rng``) and the same images, so runs differ only
in the ratios (common random numbers): a site draws the same uniforms u whatever its p, and keeps a
spike where u > p, so raising p only removes spikes. The result is deterministic given ``rng``, never
masks more than necessary to pass, and its SOPs are at most those of the best global map up to the
indirect effect of masking on later layers' spikes (which the final numbers report).
"""

import numbers
from dataclasses import dataclass, field

import numpy as np

from ..engine.masking import site_ratios
from ..engine.mask_streams import ImageSeeds

__all__ = ["RatioSearchResult", "evaluate_ratios", "block_prefixes", "search_block_ratios"]


@dataclass
class RatioSearchResult:
    """What :func:`search_block_ratios` found.

    Attributes
    ----------
    ratios : dict of {str: float}
        ``"layers.i.blocks.j.*"`` -> p for every block (pass as ``mask_ratio``).
    accuracy, sops_per_image : float
        Of ``ratios`` on the validation images.
    baseline_accuracy, baseline_sops_per_image : float
        Unmasked (p = 0).
    global_ratio, global_accuracy, global_sops_per_image : float
        The best single ratio (largest accepted candidate; 0 if none) and its numbers.
    trials : list of (dict, float, float)
        Every evaluation in order: (mask_ratio, accuracy, SOPs per image).
    """

    ratios: dict
    accuracy: float
    sops_per_image: float
    baseline_accuracy: float
    baseline_sops_per_image: float
    global_ratio: float
    global_accuracy: float
    global_sops_per_image: float
    trials: list = field(default_factory=list)


def block_prefixes(model):
    """The model's blocks, in forward order: ``layers.i.blocks.j`` for MST; the model's own
    ``block_prefixes()`` for the other families (ResNet-18 ``conv1``, ``conv2_x.0``, ...; VGG-16
    ``layer1`` ... ``layer5``, ``classifier``)."""
    if hasattr(model, "block_prefixes"):
        return model.block_prefixes()
    return [f"layers.{i}.blocks.{j}" for i, st in enumerate(model.config.stages) for j in range(st.depth)]


def evaluate_ratios(model, images, labels, timesteps, mask_ratio, seed, mask_sites="published",
                    batch_size=50, neuron_opts=None):
    """Accuracy and SOPs of the SNN with the given masking ratios.

    Parameters
    ----------
    model : MST
    images : (n, Cin, H, W) float ndarray
    labels : (n,) int ndarray
    timesteps : int
    mask_ratio : float or dict
        As in :meth:`MST.snn_forward`.
    seed : int or sequence of int
        The masks' seed: image i's masks derive from (seed, i) (:mod:`mst_ref.engine.mask_streams`), so
        they do not depend on ``batch_size``, and a sharded run (:mod:`mst_ref.distributed`) draws the same.
    mask_sites : str or tuple
    batch_size : int
    neuron_opts : dict or None
        ``neuron`` and ``burst_max`` of :meth:`MST.snn_forward` (None: the IF neuron).

    Returns
    -------
    accuracy : float
        Fraction correct at step T.
    sops_per_image : float
        :attr:`SNNResult.sops` summed over batches / n.
    by_site : dict of {str: float}
        SOPs per image of each site and product.
    """
    seed = tuple(int(v) for v in seed) if isinstance(seed, (list, tuple, np.ndarray)) else int(seed)
    correct, by_site = 0, {}
    for start in range(0, len(images), batch_size):
        rng = ImageSeeds(seed, tuple(range(start, min(start + batch_size, len(images)))))  # per-image masks
        r = model.snn_forward(images[start:start + batch_size], timesteps, mask_ratio=mask_ratio, rng=rng,
                              mask_sites=mask_sites, **(neuron_opts or {}))
        correct += int((r.predictions[-1] == labels[start:start + batch_size]).sum())
        for name, s in r.sops_by_site.items():
            by_site[name] = by_site.get(name, 0) + s
    n = len(images)
    return correct / n, sum(by_site.values()) / n, {k: v / n for k, v in by_site.items()}


def _check(candidates, tolerance, images, labels):
    cands = sorted({float(p) for p in candidates})
    if not cands or any(not 0 < p <= 1 for p in cands):
        raise ValueError(f"candidate ratios must be numbers in (0, 1]; got {list(candidates)}")
    if not (isinstance(tolerance, numbers.Real) and 0 <= tolerance <= 1):
        raise ValueError(f"tolerance must be an accuracy drop in [0, 1] (e.g. 0.01 = one point); "
                         f"got {tolerance!r}")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need validation images and as many labels; got {len(images)} and {len(labels)}")
    return cands


def search_block_ratios(model, images, labels, timesteps, rng, candidates=(0.25, 0.5, 0.75, 0.9),
                        tolerance=0.01, mask_sites="published", batch_size=50, progress=None):
    """Greedy per-block masking ratios within ``tolerance`` of the unmasked accuracy (module docstring).

    Parameters
    ----------
    model : MST
    images : (n, Cin, H, W) float ndarray
        Validation images (not the ones you report on).
    labels : (n,) int ndarray
    timesteps : int
        T of the search (small: the search runs many evaluations).
    rng : np.random.Generator
        Draws the one seed every evaluation uses.
    candidates : sequence of float in (0, 1]
        Ratios to try.
    tolerance : float
        Largest accepted accuracy drop below the unmasked accuracy (fraction, 0.01 = one point).
    mask_sites : "published", "paper" or tuple of site suffixes
    batch_size : int
    progress : callable or None
        ``progress(done, total, message)`` after every evaluation; ``total`` is an upper bound.

    Returns
    -------
    RatioSearchResult

    Notes
    -----
    Cost: 1 + len(candidates) + at most (blocks x len(candidates)) evaluations of n images x T steps.
    """
    cands = _check(candidates, tolerance, images, labels)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a np.random.Generator; got {type(rng).__name__}")
    seed = int(rng.integers(2**63))
    blocks = block_prefixes(model)
    total = 1 + len(cands) + len(blocks) * len(cands)
    trials = []

    def run(ratio, label):
        acc, sops, by_site = evaluate_ratios(model, images, labels, timesteps, ratio, seed, mask_sites,
                                             batch_size)
        trials.append((ratio, acc, sops))
        if progress is not None:
            progress(len(trials), total, f"{label}: accuracy {acc:.4f}")
        return acc, sops, by_site

    # 1. baseline
    acc0, sops0, by_site0 = run(0.0, "p=0")
    floor = acc0 - tolerance
    # 2. the best global ratio: the largest accepted candidate
    best = (0.0, acc0, sops0)
    for p in cands:
        acc, sops, _ = run(p, f"all blocks p={p:g}")
        if acc >= floor:
            best = (p, acc, sops)
    p_global = best[0]
    # 3. raise block by block, largest maskable SOPs first
    masked = {b: site_ratios(model.site_names, {b: 1.0}, mask_sites, model.mask_site_presets) for b in blocks}

    def potential(b):
        qk = any(n.endswith(("attn.q_if", "attn.k_if")) for n in masked[b])
        return sum(by_site0[n] for n in masked[b]) + (by_site0.get(f"{b}.attn.qk", 0) if qk else 0)

    ratios = {f"{b}.*": p_global for b in blocks}
    acc_now, sops_now = best[1], best[2]
    for b in sorted(blocks, key=potential, reverse=True):
        for p in (c for c in cands if c > ratios[f"{b}.*"]):
            trial = {**ratios, f"{b}.*": p}
            acc, sops, _ = run(trial, f"{b} p={p:g}")
            if acc < floor:
                break
            ratios, acc_now, sops_now = trial, acc, sops
    return RatioSearchResult(ratios, acc_now, sops_now, acc0, sops0, p_global, best[1], best[2], trials)
