"""Masking policies: which spikes RSM drops, given the uniforms it draws.

The published RSM (:func:`mst_ref.engine.masking.rsm`) drops every spike independently with probability
p, fresh at every step. A *policy* keeps the drawing of the uniforms ``u ~ U[0, 1)`` exactly as it is
(one per element of a site's output, in time order, from the site's generator: the plumbing of
:class:`~mst_ref.engine.masking.SpikeMasker`) and decides from them which spikes pass:

=========  ==============================================================================================
policy     keep, for a site with ratio p (q = 1 - p), at global step t
=========  ==============================================================================================
random     ``[u > p]`` per element (the published RSM; with ``rescale`` the kept spikes are / q)
regular    per neuron, the k-th spike it fires passes iff ``floor(k q + phi) > floor((k - 1) q + phi)``,
           phi = the neuron's first uniform: exactly q of its spikes over time, no variance
token      ``[u > p]`` once per token and step, shared by its channels: whole rows dropped (the next
           linear layer skips the row: no weight row fetched, no accumulate for any of its channels)
channel    ``[u > p]`` once per channel and step, shared by the tokens of a window (MST) or the positions
           of a feature map (CNN): whole columns dropped (the weights fed by that channel are not read)
schedule   ``[u > p_t]`` per element with ``p_t = min(1, p w(t))``: the ratio follows the step
=========  ==============================================================================================

``token`` and ``channel`` use one uniform of each group (the first along the shared axis), so every
path that draws the same uniforms drops the same rows. Per-block ratios (a dict of patterns, today's
map form) apply to every policy: each site uses its own p.

Where a policy has no meaning in the ANN: ``schedule`` (the ANN has no steps: refused). ``regular``
passes exactly q of a neuron's spikes, so in the ANN (rates, no time) it scales every activation by q
(by 1 with ``rescale``). ``random``, ``token`` and ``channel`` drop elements / rows / columns of the
activations, as the published code masks the ANN.

Layout: MST's site outputs are channels-last, one step ``(B, ..., N, C)`` (C, hd, or keys for the
attention scores); the QCFS CNNs' are channels-first, ``(B, C, H, W)`` or ``(B, F)``.
"""

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["POLICIES", "MaskPolicy", "parse_schedule", "regular_keep"]

POLICIES = ("random", "regular", "token", "channel", "schedule")


def parse_schedule(schedule):
    """A schedule as a callable of the steps: a sequence of weights or a small formula.

    Parameters
    ----------
    schedule : sequence of float or str
        Weights w(0), w(1), ... in [0, 1] (the last repeats), or ``"delay:K"`` (0 for the first K steps,
        then 1), or ``"ramp:K"`` (w(t) = min(1, (t + 1) / K)).

    Returns
    -------
    weights : callable, ``(n,) int ndarray of steps -> (n,) float64 ndarray``
    """
    if isinstance(schedule, str):
        kind, _, k = schedule.partition(":")
        if kind not in ("delay", "ramp") or not k.strip().isdigit() or (kind == "ramp" and int(k) < 1):
            raise ValueError(f"schedule formula must be 'delay:K' (K >= 0) or 'ramp:K' (K >= 1), or a list "
                             f"of weights in [0, 1]; got {schedule!r}")
        k = int(k)
        if kind == "delay":
            return lambda t: (np.asarray(t) >= k).astype(np.float64)
        return lambda t: np.minimum(1.0, (np.asarray(t) + 1.0) / k)
    w = list(schedule) if schedule is not None else []
    if not w or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1 for v in w):
        raise ValueError(f"schedule must be a non-empty list of weights in [0, 1] or a formula "
                         f"('delay:K', 'ramp:K'); got {schedule!r}")
    table = np.array(w, dtype=np.float64)  # (len,)
    return lambda t: table[np.minimum(np.asarray(t), len(table) - 1)]


def regular_keep(fired, p, phase, count):
    """Which of the fired spikes a regular mask passes, step by step; updates ``count`` in place.

    Parameters
    ----------
    fired : (T, ...) bool ndarray
        Spikes fired at each step (before masking).
    p : float in (0, 1)
    phase : (...) float64 ndarray
        phi in [0, 1) per neuron.
    count : (...) int64 ndarray
        Spikes each neuron fired before this call.

    Returns
    -------
    keep : (T, ...) bool ndarray

    Notes
    -----
    .. math:: \\mathrm{keep}_k = \\lfloor k q + \\phi \\rfloor > \\lfloor (k - 1) q + \\phi \\rfloor,
              \\quad q = 1 - p

    so the spikes passed among fired spikes a+1 .. b are ``floor(b q + phi) - floor(a q + phi)``, within
    one of ``(b - a) q``.
    """
    q = 1.0 - p
    keep = np.zeros(fired.shape, dtype=bool)  # (T, ...)
    for t in range(fired.shape[0]):
        before = np.floor(count * q + phase)  # (...)
        count += fired[t]
        # keep_k = floor(k q + phi) > floor((k - 1) q + phi), only where the neuron fired
        keep[t] = fired[t] & (np.floor(count * q + phase) > before)
    return keep


@dataclass(frozen=True)
class MaskPolicy:
    """How RSM decides which spikes pass (module docstring); the default is the published one.

    Attributes
    ----------
    kind : {"random", "regular", "token", "channel", "schedule"}
    schedule : sequence of float, str or None
        ``kind="schedule"`` only: the weights w(t) of ``p_t = min(1, p w(t))`` (:func:`parse_schedule`).
    """

    kind: str = "random"  # the published RSM
    schedule: object = None  # weights or "delay:K" / "ramp:K", for kind "schedule"

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"mask policy must be one of {POLICIES}; got {self.kind!r}")
        if (self.kind == "schedule") != (self.schedule is not None):
            raise ValueError("a schedule is given with kind='schedule' and only then, e.g. "
                             "MaskPolicy('schedule', 'delay:4'); got "
                             f"kind={self.kind!r}, schedule={self.schedule!r}")
        if self.schedule is not None:
            parse_schedule(self.schedule)  # checks it
            if not isinstance(self.schedule, str):
                object.__setattr__(self, "schedule", tuple(float(v) for v in self.schedule))

    @classmethod
    def named(cls, name, schedule=None):
        """The policy called ``name`` (``mst-ref mask-sweep --policy``); "schedule" takes ``schedule``."""
        if name == "schedule":
            return cls("schedule", "delay:4" if schedule is None else schedule)
        return cls(name)

    @property
    def published(self):
        """Whether this is the published RSM (then :func:`~mst_ref.engine.masking.rsm` draws it)."""
        return self.kind == "random"

    @property
    def stateful(self):
        """Whether the mask depends on the spikes fired (regular): only the readable path computes it."""
        return self.kind == "regular"

    def check(self, rescale):
        """Refuse a combination without a meaning: a rescaled schedule (the gain would change per step)."""
        if rescale and self.kind == "schedule":
            raise ValueError("mask_rescale with a schedule would divide by a different 1 - p_t at every "
                             "step; use a schedule without rescaling")

    def factor(self, s, u, p, t0, spiking, channel_first, memory):
        """What the kept outputs are multiplied by: a bool keep mask (or a float scale in the ANN).

        Parameters
        ----------
        s : (T, B, ...) or (B, ...) ndarray
            The site's outputs before masking (SNN with the time axis, ANN without).
        u : ndarray, shape of s, or None
            The site's uniforms for this call (None: the policy needs none, regular in the ANN).
        p : float in (0, 1)
            The site's ratio.
        t0 : int
            Steps the site has run before this call (the schedule's t of the first step).
        spiking : bool
        channel_first : bool
            Layout of one step's output (module docstring).
        memory : dict
            The site's policy state across calls (regular: phase and spike count), filled here.

        Returns
        -------
        factor : bool ndarray broadcastable to s, or float
        """
        if self.kind == "schedule":
            if not spiking:
                raise ValueError("the 'schedule' mask policy sets the ratio per time step; the ANN has no "
                                 "steps: use it in snn_forward, or another policy in ann_forward")
            steps = np.arange(t0, t0 + s.shape[0])  # (T,)
            # p_t = min(1, p w(t))
            p_t = np.minimum(1.0, p * parse_schedule(self.schedule)(steps))  # (T,)
            return u > p_t.reshape((-1,) + (1,) * (s.ndim - 1))  # (T, B, ...)
        if self.kind == "regular":
            if not spiking:
                return 1.0 - p  # the rate it passes, exactly
            if "phase" not in memory:
                memory["phase"] = np.array(u[0], dtype=np.float64)  # (B, ...) phi = first uniform
                memory["count"] = np.zeros(s.shape[1:], dtype=np.int64)  # (B, ...)
            return regular_keep(s != 0, p, memory["phase"], memory["count"])  # (T, B, ...)
        if self.kind == "random":
            return u > p
        lead = 1 if spiking else 0  # the time axis
        k = s.ndim - lead  # axes of one step, batch first
        channel = lead + (1 if channel_first else k - 1)
        if self.kind == "token":
            shared = (channel,)
        else:  # channel: the tokens of a window (channels-last), the positions of a map (channels-first)
            shared = tuple(range(channel + 1, s.ndim)) if channel_first else ((s.ndim - 2,) if k >= 3 else ())
        pick = tuple(slice(0, 1) if ax in shared else slice(None) for ax in range(s.ndim))
        return u[pick] > p  # one uniform per group, broadcast over the shared axes

    def gain(self, p, rescale):
        """Output of a kept spike relative to an unmasked one: 1, or 1 / (1 - p) when rescaled."""
        return 1.0 / (1.0 - p) if rescale and 0.0 < p < 1.0 else 1.0

    def __str__(self):
        return self.kind if self.schedule is None else f"{self.kind}({self.schedule})"
