"""The SNN's time loop: multi-step passes over chunks of time, step by step, and what a run returns.

The published evaluation (``snn_validate``, docs/mst.md section 4) runs the whole network once per time
step and sums the head outputs. Here one call of :meth:`mst_ref.models.mst.MST.forward` computes a chunk of
steps at once, every layer as one stacked operation over ``(T_chunk, B, ...)``, with the neurons'
membranes (and the compensation's running sums) carried in the :class:`~mst_ref.engine.modes.Mode` to the next
chunk. Chunks of 1 are the step-by-step simulator; one chunk of T is the fully multi-step run; all give
the same numbers bit for bit, and memory grows only with the chunk.
"""

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from . import energy
from .modes import Mode, running_sum
from .monitors import ProductCounter, Recorder, SpikeCounter, SynapseCounter

__all__ = ["SNNResult", "StepSimulator", "check_timesteps"]


def check_timesteps(value, name="timesteps"):
    """Return ``value`` as an int >= 1, or raise ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


@dataclass
class SNNResult:
    """What an SNN run returns.

    Attributes
    ----------
    step_logits : (T, B, K) ndarray
        Head output of each step (bias included).
    cumulative_logits : (T, B, K) ndarray
        Read-out: the running sum of ``step_logits``; the prediction at step t is its argmax.
    spike_counts_per_step : dict of {str: (T,) int64 ndarray}
        Site -> spikes emitted at each step by all its neurons, whole batch, after RSM (the spikes the
        next layer receives). Every site, in forward order.
    site_shapes : dict of {str: tuple}
        Site -> shape of one step's output, ``(B, ...)``.
    records : dict of {str: (T, B, ...) ndarray}
        Recorded sites -> their outputs at each step (0 or lambda; 0 or lambda / (1 - p) with rescaled
        RSM), after RSM; recorded probes (``<site>.membrane``, ``<block>.attn.softmax``,
        :data:`mst_ref.engine.modes.PROBES`) -> their values at each step.
    mask_ratios : dict of {str: float}
        Masked sites -> p.
    compensation : str
        "none" or "expectation".
    product_pairs_per_step : dict of {str: (T,) int64 ndarray}
        Product (``<block>.attn.qk``, ``<block>.attn.pv``) -> multiplies with both operands nonzero at
        each step, whole batch (:func:`mst_ref.engine.modes.nonzero_pairs`).
    config : MSTConfig, CNNConfig or None
        The model's architecture, for the energy accounting (:mod:`mst_ref.engine.energy`).
    fired_at_masked_sites : dict of {str: int}
        Masked sites -> outputs their neurons fired before RSM, all steps, whole batch (counted by
        :class:`mst_ref.engine.masking.SpikeMasker` on the readable path).
    synaptic_events_per_step : dict of {str: (T,) int64 ndarray}
        Sites whose spikes were weighed position by position (the CNNs' convolutions) -> synapses
        reached at each step, whole batch (:meth:`mst_ref.engine.modes.Mode._book_events`).
    neuron : str
        The neuron of every site: "if" (published), "signed", "burst" or "signed-burst".
    max_spikes : int
        K, spikes a neuron may emit per step (1 for "if" and "signed"); spike counts and SOPs count
        every spike of a burst and every negative spike.
    input_passes : int
        How many times the first layer ran on the analog input, per image: 1 for a static image (its
        convolution is computed once), T for a time-varying input (a new input every step).
    """

    step_logits: np.ndarray
    cumulative_logits: np.ndarray
    spike_counts_per_step: dict = field(default_factory=dict)
    site_shapes: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    mask_ratios: dict = field(default_factory=dict)
    compensation: str = "none"
    product_pairs_per_step: dict = field(default_factory=dict)
    config: object = None
    neuron: str = "if"
    max_spikes: int = 1
    input_passes: int = 1
    synaptic_events_per_step: dict = field(default_factory=dict)
    fired_at_masked_sites: dict = field(default_factory=dict)

    @property
    def timesteps(self):
        """T."""
        return self.step_logits.shape[0]

    @property
    def batch_size(self):
        """B."""
        return self.step_logits.shape[1]

    @property
    def predictions(self):
        """(T, B) int64: argmax of the cumulative logits after each step."""
        return self.cumulative_logits.argmax(axis=-1)

    @property
    def mean_logits(self):
        """(T, B, K): cumulative logits / t, the quantity that approaches the ANN's logits."""
        t = np.arange(1, self.timesteps + 1).astype(self.cumulative_logits.dtype)  # (T,)
        return self.cumulative_logits / t[:, None, None]  # (T, B, K)

    @property
    def spike_counts_by_site(self):
        """dict site -> int: total spikes over all steps and the whole batch."""
        return {name: int(c.sum()) for name, c in self.spike_counts_per_step.items()}

    @property
    def fired_by_site(self):
        """dict site -> int: spikes its neurons fired BEFORE masking, all steps, whole batch.

        Equal to :attr:`spike_counts_by_site` (the spikes delivered) at unmasked sites.

        Raises
        ------
        ValueError
            A masked site's spikes fired before masking were not counted (a path that counts only
            the delivered spikes); the readable path and the fused kernels both count them.
        """
        delivered = self.spike_counts_by_site
        missing = [n for n in self.mask_ratios if n not in self.fired_at_masked_sites]
        if missing:
            raise ValueError(f"spikes fired before masking were not counted at {missing[:2]}...: this run "
                             "counted delivered spikes only; run snn_forward(..., fast=False)")
        return {n: self.fired_at_masked_sites.get(n, c) for n, c in delivered.items()}

    @property
    def neurons_by_site(self):
        """dict site -> int: neurons of the site per image."""
        return {name: math.prod(shape) // self.batch_size for name, shape in self.site_shapes.items()}

    @property
    def firing_rates(self):
        """dict site -> float: spikes per neuron per step (in [0, 1]; up to K for burst neurons)."""
        return {name: c.sum() / (self.timesteps * math.prod(self.site_shapes[name]))
                for name, c in self.spike_counts_per_step.items()}

    # ---------------------------------------------------------------- energy (mst_ref.engine.energy)

    def _energy_config(self):
        if self.config is None:
            raise ValueError("energy accounting needs the model's config: this SNNResult has config=None "
                             "(results of MST.snn_forward / StepSimulator carry it)")
        return self.config

    @property
    def sops_by_site(self):
        """dict site or product -> int: SOPs (spikes x fan-out; product pairs), all steps, whole batch."""
        pairs = {name: int(c.sum()) for name, c in self.product_pairs_per_step.items()}
        events = {name: int(c.sum()) for name, c in self.synaptic_events_per_step.items()}
        return energy.sops_by_site(self._energy_config(), self.spike_counts_by_site, pairs, events)

    @property
    def sops(self):
        """int: total SOPs of the run, all steps, whole batch (:func:`mst_ref.engine.energy.sops_by_site`)."""
        return sum(self.sops_by_site.values())

    @property
    def macs(self):
        """int: analog MACs of the run, whole batch (:func:`mst_ref.engine.energy.snn_macs`)."""
        return energy.snn_macs(self._energy_config(), self.timesteps, self.batch_size, self.input_passes)

    @property
    def energy_pj(self):
        """float: E_AC * sops + E_MAC * macs in pJ, whole batch (default constants of mst_ref.engine.energy)."""
        return energy.energy_pj(self.sops, self.macs)


class StepSimulator:
    """Run the SNN forward in time, one step or one chunk of steps per call, state carried.

    Parameters
    ----------
    model : MST
    images : (B, in_chans, img_size, img_size) or (T_in, B, in_chans, img_size, img_size) float ndarray
        A static image, fed unchanged at every step (direct coding); or one input per step (event
        frames): step t sees ``images[t % T_in]``, whichever way the run is split into calls.
    mask_ratio, rng, mask_sites, mask_rescale, mask_policy
        RSM, as in :meth:`mst_ref.models.mst.MST.snn_forward`; the child generators are drawn from ``rng``
        here, once, so any split of the run into calls draws the same masks.
    compensation : {"none", "expectation"}
    neuron : {"if", "signed", "burst", "signed-burst"}
        The neuron at every site (:mod:`mst_ref.core.neurons`); "if" is the published one.
    burst_max : int or None
        K of the burst neurons (None: the model's L).
    record : None, str or iterable of str
        Sites whose spike trains to keep.

    Notes
    -----
    ``step()`` T times, ``run(T, chunk)`` for any chunk, and ``MST.snn_forward`` all compute the same
    numbers in the same dtype: every layer's per-step arithmetic does not depend on how many steps are
    stacked, the IF scan and the running sums proceed strictly in time order, and each masked site draws
    its uniforms in time order.
    """

    def __init__(self, model, images, mask_ratio=0.0, rng=None, compensation="none", record=None,
                 mask_sites=None, mask_rescale=None, neuron="if", burst_max=None, mask_policy=None):
        self.model = model
        self.images = model.check_images(images, timed=True)
        self.timed = self.images.ndim == 5  # one input per step: the steps consumed so far are self.t
        self.mode = model.make_mode(True, compensation=compensation, neuron=neuron, burst_max=burst_max,
                                    masker=model.masker(mask_ratio, rng, mask_sites, mask_rescale, mask_policy),
                                    record=model.select_sites(record), timed_input=self.timed)
        self._step_logits = []  # (T_chunk, B, K) per call
        self._cumulative = []  # (T_chunk, B, K) per call

    @property
    def t(self):
        """Steps simulated so far."""
        return sum(len(z) for z in self._step_logits)

    @property
    def batch_size(self):
        """B."""
        return self.images.shape[-4]

    def advance(self, steps):
        """Simulate ``steps`` more steps in one multi-step pass.

        Returns
        -------
        step_logits : (steps, B, K) ndarray
            Head output of each of these steps.
        """
        self.mode.steps = check_timesteps(steps, "steps")
        x = self.images
        if self.timed:  # the inputs of steps t .. t + steps - 1 (a shorter input repeats)
            x = x[(self.t + np.arange(steps)) % len(x)]  # (steps, B, Cin, H, W)
        z = self.model.forward(x, self.mode)  # (steps, B, K)
        # read-out: Z_t = Z_{t-1} + z_t
        previous = self._cumulative[-1][-1] if self._cumulative else 0.0  # (B, K)
        self._cumulative.append(running_sum(z, previous))  # (steps, B, K)
        self._step_logits.append(z)
        return z

    def step(self):
        """Simulate one step; return its head output, ``(B, K)``."""
        return self.advance(1)[0]

    def run(self, timesteps, chunk=1):
        """Simulate ``timesteps`` more steps, ``chunk`` at a time (1: step by step); return the result."""
        remaining = check_timesteps(timesteps, "timesteps")
        chunk = check_timesteps(chunk, "chunk")
        while remaining:
            self.advance(min(chunk, remaining))
            remaining -= min(chunk, remaining)
        return self.result()

    def result(self):
        """The :class:`SNNResult` of all steps simulated so far."""
        if not self._step_logits:
            raise ValueError("no step simulated yet: call step(), advance() or run() first")
        mode = self.mode
        spikes, pairs = mode.monitor(SpikeCounter), mode.monitor(ProductCounter)
        synapses = mode.monitor(SynapseCounter)
        return SNNResult(
            step_logits=np.concatenate(self._step_logits),  # (T, B, K)
            cumulative_logits=np.concatenate(self._cumulative),  # (T, B, K)
            spike_counts_per_step={n: np.concatenate(spikes.counts[n]) for n in self.model.site_names},
            site_shapes={n: spikes.site_shapes[n] for n in self.model.site_names},
            records=mode.monitor(Recorder).joined(),  # forward order, probes too
            mask_ratios=dict(mode.masker.ratios),
            compensation=mode.compensation,
            product_pairs_per_step={n: np.concatenate(c) for n, c in pairs.pairs.items()},
            config=self.model.config,
            neuron=mode.neuron,
            max_spikes=mode.max_spikes,
            synaptic_events_per_step={} if synapses is None else
            {n: np.concatenate(c) for n, c in synapses.events.items()},
            fired_at_masked_sites=dict(mode.masker.fired),
            input_passes=self.t if self.timed else 1,
        )
