"""Random Spike Masking (RSM): drop each spike independently with probability p.

MST's energy saving (docs/mst.md section 5): at chosen activation sites the output spikes are multiplied
by a fresh Bernoulli(1 - p) mask at every step, so the layers they feed receive (and add up) fewer
spikes. What a mask removes directly is "the work behind the masked sites" (docs/energy.md): the
masked spikes times their fan-out, and the q k^T pairs when q or k is masked; not p v, whose p is
dense and whose v is never masked. The published code masks the q, k and attention-score spikes of every window attention with one
global p, without rescaling, in the ANN as well as in the SNN. The paper's figure also masks the MLP
input; the poster argues for layer-wise ratios; an unbiased 1/(1-p) rescale is a natural variant. All
three are options here.

Reproducibility: each masked site draws from its own child generator, seeded from the caller's
``np.random.Generator`` once at the start of a forward pass (one seed per site, in forward order), and
draws its uniforms in time order, ``(T_chunk, ...)`` at a time. A run with the same seed therefore
draws the same masks whether it is computed in one multi-step pass, in time chunks, or step by step.
"""

import fnmatch
import numbers
from dataclasses import dataclass, field

import numpy as np

from .mask_streams import ImageSeeds
from .mask_policies import MaskPolicy

__all__ = ["PUBLISHED_SITES", "MLP_SITE", "MASK_SITE_PRESETS", "rsm", "site_ratios", "SpikeMasker"]

PUBLISHED_SITES = ("attn.q_if", "attn.k_if", "attn.attn_if")  # the official code's masked sites
MLP_SITE = "shortcut2_if"  # the spikes that feed mlp.fc1 (the paper's Fig. 2e also masks them)
MASK_SITE_PRESETS = {
    "published": PUBLISHED_SITES,
    "paper": PUBLISHED_SITES + (MLP_SITE,),
}


def rsm(s, p, rng, rescale=False):
    """Random spike masking of one array of spikes.

    Parameters
    ----------
    s : (...) ndarray
        Site outputs (spikes 0 / lambda in the SNN, activations in the ANN); with a time axis in
        front, ``(T, ...)``, the uniforms are drawn in time order.
    p : float in [0, 1]
        Masking ratio: the probability of dropping each element.
    rng : np.random.Generator
        Source of the uniforms; not touched when p is 0 or 1.
    rescale : bool
        Divide the kept values by 1 - p so that the expected output equals the input (not published).

    Returns
    -------
    masked : (...) ndarray, dtype of s
        ``s`` itself when p = 0 (bit-identical, nothing drawn).

    Notes
    -----
    .. math:: \\mathrm{rsm}(s) = s \\cdot [u > p], \\quad u \\sim U[0, 1) \\text{ per element}

    The uniforms are float64 whatever the dtype of s, so float32 and float64 runs with the same seed
    drop the same spikes.
    """
    if p == 0:
        return s
    if p == 1:
        return np.zeros_like(s)
    # keep = [u > p], u ~ U[0, 1)
    keep = rng.random(s.shape) > p  # (...) bool
    out = s * keep  # (...) dtype of s
    if rescale:
        # s * [u > p] / (1 - p): E[out] = s
        out *= 1.0 / (1.0 - p)
    return out


def _check_ratio(p, where):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"mask ratio {where} must be a number in [0, 1]; got {p!r}")
    return float(p)


def _resolve_sites(site_names, sites, presets=MASK_SITE_PRESETS):
    """The site names that may be masked: those ending with one of the suffixes ``sites``."""
    if isinstance(sites, str):
        if sites not in presets:
            raise ValueError(f"mask sites must be one of {sorted(presets)} or a tuple of site "
                             f"suffixes such as {tuple(presets[sorted(presets)[0]])[:3]}; got {sites!r}")
        sites = presets[sites]
    sites = tuple(sites)
    unknown = [s for s in sites if not any(n == s or n.endswith("." + s) for n in site_names)]
    if unknown:
        raise ValueError(f"mask sites {unknown} name no activation site of this model; use suffixes of "
                         f"site names such as {site_names[:2]}")
    return [n for n in site_names if any(n == s or n.endswith("." + s) for s in sites)]


def site_ratios(site_names, ratio, sites="published", presets=MASK_SITE_PRESETS):
    """The masking ratio of every masked site.

    Parameters
    ----------
    site_names : list of str
        All activation sites of the model, in forward order (``MST.site_names``).
    ratio : float or dict of {str: float}
        One p for every maskable site, or glob patterns over site names / block prefixes mapped to p,
        e.g. ``{"layers.0.*": 0.5, "layers.2.*": 0.9}``. A pattern also matches every site below it
        (``"layers.1.blocks.0"`` = ``"layers.1.blocks.0.*"``). Later patterns override earlier ones;
        maskable sites that no pattern matches get p = 0.
    sites : str or tuple of str
        Which sites may be masked: ``"published"`` (q, k and attention-score spikes), ``"paper"``
        (those and the MLP input, ``shortcut2_if``), or a tuple of site-name suffixes.
    presets : dict
        The model family's named site choices (MST's by default; the CNNs' in
        :mod:`mst_ref.models.qcfs_cnn`).

    Returns
    -------
    ratios : dict of {str: float}
        Site name -> p, only for sites with p > 0, in forward order.

    Raises
    ------
    ValueError
        A ratio outside [0, 1], an unknown site suffix, or a pattern that matches no maskable site.
    """
    maskable = _resolve_sites(site_names, sites, presets)
    if isinstance(ratio, dict):
        chosen = {}
        for pattern, p in ratio.items():
            p = _check_ratio(p, f"for {pattern!r}")
            hits = [n for n in maskable
                    if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, pattern + ".*")]
            if not hits:
                raise ValueError(f"mask ratio pattern {pattern!r} matches no maskable site; maskable sites "
                                 f"look like {maskable[:3]} (choose others with mask_sites)")
            chosen.update(dict.fromkeys(hits, p))
    else:
        chosen = dict.fromkeys(maskable, _check_ratio(ratio, "mask_ratio"))
    return {n: chosen[n] for n in maskable if chosen.get(n, 0.0) > 0}


@dataclass
class SpikeMasker:
    """RSM at a set of sites, each with its own ratio and its own generator.

    Attributes
    ----------
    ratios : dict of {str: float}
        Site name -> p (> 0).
    rngs : dict of {str: np.random.Generator}
        Site name -> the child generator it draws its uniforms from.
    rescale : bool
        Divide kept spikes by 1 - p.
    fired : dict of {str: int}
        Masked site -> nonzero outputs it produced BEFORE masking, summed over the calls of
        :meth:`__call__` (the spikes its neurons fired; the layers after it receive fewer). Sites
        masked inside fused kernels (MST's fast path) are not seen here.
    policy : MaskPolicy
        Which spikes the uniforms drop (:mod:`mst_ref.engine.mask_policies`); the published RSM by default.
    channel_first : bool
        Layout of one step's site output: MST's are channels-last, the QCFS CNNs' channels-first.
    steps, memory : dict
        Site -> steps masked so far (a schedule's t) and the policy's state (a regular mask's counters).
    """

    ratios: dict = field(default_factory=dict)
    rngs: dict = field(default_factory=dict)
    rescale: bool = False
    fired: dict = field(default_factory=dict)
    policy: MaskPolicy = field(default_factory=MaskPolicy)
    channel_first: bool = False
    steps: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)

    @classmethod
    def create(cls, site_names, ratio, rng, sites="published", rescale=False, presets=MASK_SITE_PRESETS):
        """Resolve the ratios (:func:`site_ratios`) and derive one child generator per site.

        ``rng`` is used once, here: ``rng.integers(2**63, size=len(site_names))`` gives one seed per
        activation site in forward order, masked or not, so that changing which sites are masked does
        not change the masks drawn at the others. Nothing is drawn when no site is masked (rng may then
        be None). An :class:`~mst_ref.engine.mask_streams.ImageSeeds` instead of ``rng`` gives every
        image its own generators, seeded from (seed, image index), whatever the batch.
        """
        ratios = site_ratios(site_names, ratio, sites, presets)
        if not ratios:
            return cls(rescale=rescale)
        if isinstance(rng, ImageSeeds):  # per-image masks from (seed, image index): mask_streams.py
            rngs = {n: rng.streams(k) for k, n in enumerate(site_names) if n in ratios}
            return cls(ratios, rngs, rescale)
        if not isinstance(rng, np.random.Generator):
            raise ValueError("masking draws random numbers: pass rng=np.random.default_rng(seed); "
                             f"got {type(rng).__name__}")
        seeds = rng.integers(2**63, size=len(site_names))  # (n_sites,) one seed per site
        rngs = {n: np.random.default_rng(int(seed)) for n, seed in zip(site_names, seeds) if n in ratios}
        return cls(ratios, rngs, rescale)

    def with_policy(self, policy=None, channel_first=False):
        """Set the masking policy (None: the published RSM) and the family's layout; returns self."""
        policy = MaskPolicy() if policy is None else policy
        if not isinstance(policy, MaskPolicy):
            raise ValueError(f"mask_policy must be a MaskPolicy (e.g. MaskPolicy('regular')); got {policy!r}")
        policy.check(self.rescale)
        self.policy, self.channel_first = policy, bool(channel_first)
        return self

    def __call__(self, name, s, spiking=True):
        """Mask the outputs ``s`` of site ``name`` (unchanged if the site is not masked).

        ``s`` is ``(T, B, ...)`` in the SNN (``spiking``), ``(B, ...)`` in the ANN.
        """
        p = self.ratios.get(name, 0.0)
        if p == 0:
            return s
        self.fired[name] = self.fired.get(name, 0) + int(np.count_nonzero(s))
        if self.policy.published:
            return rsm(s, p, self.rngs[name], self.rescale)
        out = s * self._factor(name, s, p, spiking)  # (...) dtype of s
        if self.rescale:
            # s * keep / (1 - p)
            out *= self.policy.gain(p, True)
        return out

    def _factor(self, name, s, p, spiking):
        """The policy's keep mask (or ANN scale) for this call of site ``name``; advances its step count."""
        memory = self.memory.setdefault(name, {})
        if p == 1 and self.policy.kind != "schedule":
            return False
        # the uniforms, drawn as the published RSM draws them (a regular mask needs its first step's only)
        needs = not (self.policy.kind == "regular" and (not spiking or "phase" in memory))
        u = self.rngs[name].random(s.shape) if needs else None  # (...) float64
        t0 = self.steps.get(name, 0)
        if spiking:
            self.steps[name] = t0 + s.shape[0]
        return self.policy.factor(s, u, p, t0, spiking, self.channel_first, memory)

    def fused_decisions(self, name, u):
        """For fused kernels that keep a spike where ``u > p``: this call's keep mask as uint8 decisions,
        1 keep / 0 drop (to be used with p = 0.5), from the uniforms ``u (T, ...)`` drawn as :func:`rsm`
        draws them.

        Not for a stateful policy (regular: the kernels would have to count each neuron's spikes).
        """
        if self.policy.stateful:
            raise ValueError(f"the {self.policy.kind!r} mask policy depends on the spikes fired: run it on "
                             "the readable path (fast=False)")
        t0 = self.steps.get(name, 0)
        self.steps[name] = t0 + u.shape[0]
        keep = self.policy.factor(u, u, self.ratios[name], t0, True, self.channel_first, {})
        return np.broadcast_to(keep, u.shape).astype(np.uint8)  # (T, ...) 1 keep / 0 drop
