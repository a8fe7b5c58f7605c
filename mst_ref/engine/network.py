"""What every model family offers: the ANN, the SNN, step-by-step simulation, sites, masks, records.

A model family (:mod:`mst_ref.models.mst`, :mod:`mst_ref.models.qcfs_cnn`) writes one thing: its
``forward(images, mode)``, which calls ``mode.site(name, x, threshold)`` at each activation site (and
``mode.analog`` / ``mode.product`` where it has per-step analog operations). Everything else is the same
for all families and lives here, once: checking images, choosing recorded sites, building the RSM masker,
and the public entry points

- :meth:`SpikingNetwork.ann_forward`: every site is QCFS (or clip);
- :meth:`SpikingNetwork.snn_forward`: IF neurons over T steps, in time chunks, returning an
  :class:`~mst_ref.engine.simulate.SNNResult` with spike counts, SOPs and energy;
- :meth:`SpikingNetwork.step_simulator`: the same SNN one step (or chunk) per call.

The time loop itself is :class:`mst_ref.engine.simulate.StepSimulator`; what a site does is
:class:`mst_ref.engine.modes.Mode`; masking is :mod:`mst_ref.engine.masking`; energy is :mod:`mst_ref.engine.energy`.
"""

import fnmatch

import numpy as np

from .masking import MASK_SITE_PRESETS, SpikeMasker
from .modes import Mode
from .monitors import ProductCounter, Recorder, SpikeCounter
from ..core.qcfs import qcfs
from .simulate import StepSimulator, check_timesteps

__all__ = ["SpikingNetwork"]


class SpikingNetwork:
    """Shared entry points of the model families (a mixin; subclasses set the attributes below).

    Attributes a subclass provides
    ------------------------------
    config : dataclass
        With ``in_chans``, ``img_size``, ``num_classes``, ``qcfs_levels`` and ``energy_module`` (the name of its energy table).
    state : dict of {str: ndarray}
        The official state dict.
    dtype : np.dtype
    site_names : list of str
        Activation sites in forward order (the checkpoint key of the threshold without its suffix).
    threshold_suffix : str
        ``"up"`` (MST) or ``"thresh"`` (QCFS CNNs): the threshold of site n is ``state[n + "." + suffix]``.
    mask_site_presets : dict
        Names accepted by ``mask_sites`` -> tuples of site-name suffixes (or full names).
    quantizer : callable
        The family's QCFS, ``f(x, threshold, levels)``, with its published order of operations.
    """

    threshold_suffix = "up"
    trained_mask_sites = "published"  # RSM sites the model was trained with (load_checkpoint reads the config)
    trained_mask_rescale = False  # whether its training divided kept spikes by 1 - p
    mask_site_presets = MASK_SITE_PRESETS
    quantizer = staticmethod(qcfs)

    # ------------------------------------------------------------------ what a family must define

    def forward(self, images, mode):  # pragma: no cover - documented interface
        """``(B, Cin, H, W)`` images -> ``(B, K)`` logits (ANN) or ``(T, B, K)`` head outputs (SNN)."""
        raise NotImplementedError

    def default_chunk(self, batch_size, timesteps, mode):
        """Steps per multi-step pass (memory grows with it; the numbers do not depend on it)."""
        return timesteps

    # ------------------------------------------------------------------ shared helpers

    def threshold(self, name):
        """lambda of site ``name``, a ``(1,)`` array."""
        return self.state[f"{name}.{self.threshold_suffix}"]

    def check_images(self, images, timed=False):
        """Return ``images`` as a finite ``(B, in_chans, img, img)`` array of the model's dtype.

        With ``timed`` a time-varying input ``(T, B, in_chans, img, img)`` (one input per step, such as
        event frames) is accepted too and returned with its time axis.

        Raises
        ------
        ValueError
            Wrong shape, non-float dtype, or NaN / inf values.
        """
        c = self.config
        shape = (c.in_chans, c.img_size, c.img_size)
        want = f"(B, {c.in_chans}, {c.img_size}, {c.img_size})"
        images = np.asarray(images)
        if timed and images.ndim == 5:
            if images.shape[0] == 0:
                raise ValueError(f"a time-varying input must be (T, B, {c.in_chans}, {c.img_size}, "
                                 f"{c.img_size}) with T >= 1; got {images.shape}")
            return self.check_images(images.reshape(-1, *images.shape[2:])).reshape(images.shape)
        if images.dtype.kind != "f":
            raise ValueError(f"images must be a float array of normalised images {want}; got dtype "
                             f"{images.dtype} (normalise uint8 images first)")
        if images.ndim != 4 or images.shape[0] == 0 or images.shape[1:] != shape:
            raise ValueError(f"images must be {want} for this model; got {images.shape}")
        if not np.isfinite(images).all():
            raise ValueError("images must be finite; got NaN or inf values")
        return images.astype(self.dtype, copy=False)

    def select_sites(self, record):
        """Site names chosen by ``record``: None, "all", a name, or names / glob patterns.

        A pattern ending in ``.membrane`` or ``.softmax`` chooses among the model's ``probe_names``
        instead (membrane potentials, attention probabilities: :data:`mst_ref.engine.modes.PROBES`); "all"
        and other patterns choose sites only.
        """
        if record is None:
            return frozenset()
        patterns = [record] if isinstance(record, str) else list(record)
        chosen = set()
        for pattern in patterns:
            if pattern.endswith((".membrane", ".softmax")):
                probes = getattr(self, "probe_names", [f"{n}.membrane" for n in self.site_names])
                hits = fnmatch.filter(probes, pattern)
                if not hits:
                    raise ValueError(f"record pattern {pattern!r} matches nothing this model can record; "
                                     f"probes look like {probes[:2]} (see the model's probe_names)")
                chosen.update(hits)
                continue
            hits = self.site_names if pattern == "all" else fnmatch.filter(self.site_names, pattern)
            if not hits:
                raise ValueError(f"record pattern {pattern!r} matches no activation site; sites look like "
                                 f"{self.site_names[:3]} (see the model's site_names)")
            chosen.update(hits)
        return frozenset(chosen)

    def masker(self, mask_ratio, rng, mask_sites=None, mask_rescale=None, mask_policy=None):
        """The :class:`~mst_ref.engine.masking.SpikeMasker` of one forward pass (child generators drawn here).

        ``mask_sites`` / ``mask_rescale`` None: as the model was trained (:attr:`trained_mask_sites`,
        :attr:`trained_mask_rescale`, read from the checkpoint's config; "published" and False when it
        does not say). ``mask_policy``: a :class:`~mst_ref.engine.mask_policies.MaskPolicy` (None: the
        published RSM); the layout it needs is the family's (MST channels-last, the CNNs channels-first).
        """
        mask_sites = self.trained_mask_sites if mask_sites is None else mask_sites
        mask_rescale = self.trained_mask_rescale if mask_rescale is None else mask_rescale
        masker = SpikeMasker.create(self.site_names, mask_ratio, rng, mask_sites, mask_rescale,
                                    presets=self.mask_site_presets)
        return masker.with_policy(mask_policy, getattr(self.config, "family", "mst") != "mst")

    def make_mode(self, spiking, record=frozenset(), **kwargs):
        """A :class:`~mst_ref.engine.modes.Mode` for this model (its L and its QCFS), with its monitors.

        The monitors (:mod:`mst_ref.engine.monitors`): a :class:`~mst_ref.engine.monitors.Recorder` of the
        ``record`` names, and in the SNN a spike counter and a product-pair counter, plus whatever
        :meth:`extra_monitors` adds for the family.
        """
        monitors = [Recorder(record)]
        if spiking:
            monitors += [SpikeCounter(), ProductCounter(), *self.extra_monitors()]
        return Mode(spiking=spiking, levels=self.config.qcfs_levels, quantizer=self.quantizer, monitors=monitors,
                    **kwargs)

    def extra_monitors(self):
        """Monitors a family adds to every SNN run (none here; the CNNs count synapses by position)."""
        return []

    # ------------------------------------------------------------------ public entry points

    def ann_forward(self, images, quantize=True, mask_ratio=0.0, rng=None, record=None,
                    mask_sites=None, mask_rescale=None, mask_policy=None):
        """The ANN: every site is QCFS (or clip).

        Parameters
        ----------
        images : (B, in_chans, img_size, img_size) float ndarray
            Normalised images; or a time-varying input ``(T, B, ...)``, of which the ANN sees the mean
            over T (the input an SNN of many steps integrates).
        quantize : bool
            QCFS with L levels (True), or its continuous limit clip(x, 0, lambda) (False).
        mask_ratio : float or dict
            RSM ratio p (the published code masks in the ANN too), or a dict of site / block patterns
            -> p (:func:`mst_ref.engine.masking.site_ratios`).
        rng : np.random.Generator
            Required when masking.
        record : None, str or iterable of str
            Sites whose activations to return (names or glob patterns, or "all").
        mask_sites : str, tuple of str or None
            Which sites RSM may mask: a preset of the family ("published", "paper", ...) or site suffixes;
            None: the sites the model was trained with (:attr:`trained_mask_sites`).
        mask_rescale : bool or None
            Divide kept values by 1 - p; None: as the model was trained (:attr:`trained_mask_rescale`).
        mask_policy : MaskPolicy or None
            Which spikes RSM drops (:mod:`mst_ref.engine.mask_policies`; None: the published random one).
            In the ANN "regular" scales by 1 - p and "schedule" is refused (no steps).

        Returns
        -------
        logits : (B, K) ndarray
            When ``record`` is given: ``(logits, records)`` with records a dict site -> activations.
        """
        images = self.check_images(images, timed=True)
        if images.ndim == 5:
            images = images.mean(axis=0)  # (B, Cin, H, W): the mean frame
        mode = self.make_mode(False, quantize=quantize,
                              masker=self.masker(mask_ratio, rng, mask_sites, mask_rescale, mask_policy),
                              record=self.select_sites(record))
        logits = self.forward(images, mode)  # (B, K)
        if record is None:
            return logits
        return logits, {name: values[0] for name, values in mode.monitor(Recorder).records.items()}  # forward order

    def snn_forward(self, images, timesteps, mask_ratio=0.0, rng=None, record=None, chunk=None,
                    compensation="none", mask_sites=None, mask_rescale=None, fast=True, neuron="if",
                    burst_max=None, mask_policy=None):
        """The SNN: IF neurons (or another ``neuron``), the image fed unchanged at every step (direct coding).

        Parameters
        ----------
        images : (B, in_chans, img_size, img_size) or (T_in, B, in_chans, img_size, img_size) float ndarray
            A static image, fed at every step; or one input per step (event frames), step t seeing
            ``images[t % T_in]`` (a shorter input is repeated).
        timesteps : int
            T >= 1.
        mask_ratio, rng, mask_sites, mask_rescale, mask_policy
            RSM, as in :meth:`ann_forward`; masks are fresh at every step. Every policy runs on every path
            (MST's fused kernels take the policy's masks; "regular" runs MST on the readable path).
        record : None, str or iterable of str
            Sites whose spike trains ``(T, B, ...)`` to keep.
        chunk : int or None
            Steps computed per multi-step pass (memory ~ chunk); None: :meth:`default_chunk`. Results
            do not depend on it.
        compensation : {"none", "expectation"}
            Faithful per-step analog ops, or their expectation form (:mod:`mst_ref.engine.modes`). A CNN has
            no analog op, so both are the same for it.
        fast : bool
            Run through the family's fused kernels where it has them, or one NumPy op at a time.
        neuron : {"if", "signed", "burst", "signed-burst"}
            The neuron at every site (:mod:`mst_ref.core.neurons`): the published IF neuron, or one for fewer
            time steps (signed: takes back over-firing with negative spikes; burst: up to ``burst_max``
            spikes of lambda / K per step). Only "if" runs on fused kernels.
        burst_max : int or None
            K of the burst neurons (None: the model's L; then a burst SNN at T = 1 is its ANN).

        Returns
        -------
        SNNResult
            :class:`mst_ref.engine.simulate.SNNResult`.
        """
        timesteps = check_timesteps(timesteps, "timesteps")
        sim = self.step_simulator(images, mask_ratio, rng, compensation, record, mask_sites, mask_rescale, fast,
                                  neuron, burst_max, mask_policy)
        if chunk is None:
            chunk = self.default_chunk(sim.batch_size, timesteps, sim.mode)
        return sim.run(timesteps, chunk)

    def step_simulator(self, images, mask_ratio=0.0, rng=None, compensation="none", record=None,
                       mask_sites=None, mask_rescale=None, fast=True, neuron="if", burst_max=None, mask_policy=None):
        """A :class:`mst_ref.engine.simulate.StepSimulator`: the SNN one step (or chunk) at a time.

        ``fast``, ``neuron``, ``burst_max`` and ``mask_policy`` as in :meth:`snn_forward`.
        """
        sim = StepSimulator(self, images, mask_ratio, rng, compensation, record, mask_sites, mask_rescale,
                            neuron=neuron, burst_max=burst_max, mask_policy=mask_policy)
        sim.mode.fast = bool(fast)
        return sim
