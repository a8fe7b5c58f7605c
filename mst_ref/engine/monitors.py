"""Monitors: what a forward pass observes, kept apart from what it computes.

A :class:`~mst_ref.engine.modes.Mode` decides what each activation site, analog op and product
*computes*. Everything that is only *observed* (the outputs of some sites, the spikes of every site,
the synapses those spikes reach, the multiplies of the products) is a monitor: a small object the mode
notifies, one concern each, in the way Brian2 attaches a ``SpikeMonitor`` or a ``StateMonitor`` to a
group of neurons. A new measure is a new monitor; the model code and the mode stay as they are.

The hooks (a monitor overrides the ones it needs):

=========================  ===================================================================
``wants(name)``            True if the site / probe ``name``'s values must be kept (the fused
                           path then writes them out; the readable path always has them)
``on_site(ev)``            one call of an activation site, a :class:`SiteEvent`
``on_probe(n, v)``         a recorded probe (``<site>.membrane``)
``on_analog(n, y, f, x)``  one call of a non-spiking op f (softmax, LayerNorm): inputs x, output y
``on_product(ev)``         one call of a product of two activations, a :class:`ProductEvent`
=========================  ===================================================================

The four monitors every SNN run carries (:meth:`mst_ref.engine.network.SpikingNetwork.make_mode`):
:class:`Recorder`, :class:`SpikeCounter`, :class:`ProductCounter`, and for the families whose spikes
reach different numbers of synapses at different positions (the CNNs) :class:`SynapseCounter`. The
fused kernels (:mod:`mst_ref.models.mst_fast`) count spikes and pairs inside their loops and hand the
counts to the same monitors through the same events, so the two paths report the same numbers.
"""

import numpy as np

__all__ = ["Monitor", "SiteEvent", "ProductEvent", "Recorder", "SpikeCounter", "SynapseCounter",
           "ProductCounter", "nonzero_pairs", "event_pairs", "spike_events"]


def _nonzero(x):
    """[x != 0] with subnormal floats counted as zero (as flush-to-zero hardware and the kernels do)."""
    return np.abs(x) >= np.finfo(x.dtype).tiny if x.dtype.kind == "f" else x != 0


def spike_events(y, unit):
    """Spikes per neuron and step of a signed / burst site's (masked) outputs: ``|y| / unit``.

    Parameters
    ----------
    y : (T, ...) ndarray
        The site's outputs after RSM: k lambda / K, times 1 / (1 - p) with rescaled RSM.
    unit : float
        The output of one spike, lambda / K (x 1 / (1 - p) with rescaled RSM).

    Returns
    -------
    events : (T, ...) int64 ndarray
        \\|k\\|: a burst of k spikes is k events, a negative spike one.
    """
    # |k| = |y| / (lambda / K), rounded to the nearest integer
    return np.rint(np.abs(y) / unit).astype(np.int64)  # (T, ...)


def nonzero_pairs(a, b):
    """Per step, the multiplies of ``a @ b`` whose two operands are both nonzero (for energy accounting).

    Parameters
    ----------
    a : (T, ..., n, k) ndarray
    b : (T, ..., k, m) ndarray

    Returns
    -------
    pairs : (T,) int64 ndarray

    Notes
    -----
    .. math:: \\mathrm{pairs}_t = \\sum_{\\ldots, k} \\mathrm{nnz}(a_t[\\ldots, :, k])\\,
              \\mathrm{nnz}(b_t[\\ldots, k, :])

    For binary q and k this is the number of (query, key, d) triples where both spike: the
    accumulates an event-driven q k^T performs (:mod:`mst_ref.engine.energy`). Subnormal values count as
    zero (\\|x\\| < the dtype's smallest normal number): the softmax weights across Swin's shift mask,
    exp(-100), are such values.
    """
    na = np.count_nonzero(_nonzero(a), axis=-2).astype(np.int64)  # (T, ..., k)
    nb = np.count_nonzero(_nonzero(b), axis=-1).astype(np.int64)  # (T, ..., k)
    return (na * nb).reshape(a.shape[0], -1).sum(axis=1)  # (T,)


def event_pairs(ea, eb):
    """Per step, the synaptic events of ``a @ b`` from the events of each operand (for energy accounting).

    Parameters
    ----------
    ea : (T, ..., n, k) int ndarray
        Spikes of each element of a at each step (1 for an analog nonzero value; a burst of j spikes
        is j, a negative spike 1).
    eb : (T, ..., k, m) int ndarray

    Returns
    -------
    pairs : (T,) int64 ndarray

    Notes
    -----
    .. math:: \\mathrm{pairs}_t = \\sum_{\\ldots, k} \\Big(\\sum_n e^a_t[\\ldots, n, k]\\Big)
              \\Big(\\sum_m e^b_t[\\ldots, k, m]\\Big)

    each spike of a meeting each spike of b is one accumulate; for 0/1 events this is
    :func:`nonzero_pairs`.
    """
    na = ea.sum(axis=-2, dtype=np.int64)  # (T, ..., k)
    nb = eb.sum(axis=-1, dtype=np.int64)  # (T, ..., k)
    return (na * nb).reshape(ea.shape[0], -1).sum(axis=1)  # (T,)


class SiteEvent:
    """One call of an activation site, as the monitors see it.

    Attributes
    ----------
    name : str
    spiking : bool
    shape : tuple
        One step's output shape ``(B, ...)`` (SNN), or the output shape (ANN).
    output : ndarray or None
        The outputs after RSM, ``(T, *shape)`` in the SNN; None on the fused path when no monitor
        wanted them.
    input : ndarray or None
        The site's input currents / pre-activations (readable path only).
    threshold : (1,) ndarray or None
        lambda (readable path only).
    unit : float or None
        The output of one spike of a signed / burst neuron (None for the IF neuron and the ANN).
    """

    def __init__(self, name, spiking, shape, output=None, input=None, threshold=None, unit=None, counts=None):
        self.name, self.spiking, self.shape = name, spiking, tuple(shape)
        self.output, self.input, self.threshold, self.unit = output, input, threshold, unit
        self._counts = None if counts is None else np.asarray(counts).astype(np.int64, copy=False)
        self._per_pixel = None

    @property
    def per_pixel(self):
        """(T, pixels) int64: spikes per step and pixel (all axes but the channels), counted once.

        A nonzero output is one spike for the IF neuron; a burst of k is k and a negative spike one.
        """
        if self._per_pixel is None:
            if self.output is None:
                raise ValueError(f"{self.name}: per-pixel counts need the site's outputs (readable path)")
            y = self.output
            T, C = y.shape[0], y.shape[-1]
            if self.unit is None:
                self._per_pixel = np.count_nonzero(y.reshape(T, -1, C), axis=2)  # (T, pixels)
            else:
                self._per_pixel = spike_events(y, self.unit).reshape(T, -1, C).sum(axis=2)  # (T, pixels)
        return self._per_pixel

    @property
    def counts(self):
        """(T,) int64: spikes at each step after RSM (from the kernel, or from :attr:`per_pixel`)."""
        if self._counts is None:
            self._counts = self.per_pixel.sum(axis=1).astype(np.int64, copy=False)
        return self._counts


class ProductEvent:
    """One call of a product of two activations ``a @ b`` (q k^T, p v).

    Attributes
    ----------
    name : str
    a : (T, ..., n, k) ndarray or None
    b : (T, ..., k, m) ndarray or None
    pairs : (T,) int64 ndarray or None
        Counted by a fused kernel; None on the readable path (the :class:`ProductCounter` counts).
    """

    def __init__(self, name, a=None, b=None, pairs=None):
        self.name, self.a, self.b, self.pairs = name, a, b, pairs


class Monitor:
    """A do-nothing observer; subclasses override the hooks they need (see the module docstring)."""

    def wants(self, name):
        return False

    def on_site(self, event):
        pass

    def on_probe(self, name, value):
        pass

    def on_analog(self, name, y, f=None, x=None):
        pass

    def on_product(self, event):
        pass


class Recorder(Monitor):
    """Keeps the outputs of the named sites, probes and analog ops, one array per call.

    Parameters
    ----------
    names : iterable of str
        Site names, ``<site>.membrane`` probes (SNN: potentials after integrating, before the reset)
        and analog op names such as ``<block>.attn.softmax``.

    Attributes
    ----------
    records : dict of {str: list of ndarray}
        Name -> values of each call, in the order the forward pass met them.
    """

    def __init__(self, names=()):
        self.names = frozenset(names)
        self.records = {}

    def wants(self, name):
        return name in self.names

    def _keep(self, name, value):
        if name in self.names:
            self.records.setdefault(name, []).append(value)

    def on_site(self, event):
        self._keep(event.name, event.output)

    def on_probe(self, name, value):
        self._keep(name, value)

    def on_analog(self, name, y, f=None, x=None):
        self._keep(name, y)

    def joined(self):
        """Name -> all calls' values joined along the time axis (SNN chunks), forward order."""
        return {n: np.concatenate(v) for n, v in self.records.items()}


class SpikeCounter(Monitor):
    """Counts each site's spikes per step (after RSM) and notes each site's output shape.

    Attributes
    ----------
    counts : dict of {str: list of (T,) int64 ndarray}
        SNN: site -> spikes at each step, one array per call (a burst of k is k, a negative spike 1).
    site_shapes : dict of {str: tuple}
        Site -> one step's output shape ``(B, ...)``, in forward order.
    """

    def __init__(self):
        self.counts, self.site_shapes = {}, {}

    def on_site(self, event):
        self.site_shapes[event.name] = event.shape
        if event.spiking:
            self.counts.setdefault(event.name, []).append(event.counts)


class SynapseCounter(Monitor):
    """Counts the synapses each site's spikes reach, position by position (exact at a conv's borders).

    Parameters
    ----------
    fan_out_maps : dict of {str: (H, W) int ndarray}
        Site -> synapses one spike at position (i, j) reaches (:func:`mst_ref.models.cnn_energy.fan_out_maps`).

    Attributes
    ----------
    events : dict of {str: list of (T,) int64 ndarray}

    Notes
    -----
    .. math:: \\mathrm{events}_t = \\sum_{b, i, j} s_t[b, i, j]\\, F[i, j]

    with s the spikes summed over channels and F the site's map; a plain count x mean fan-out would
    only be close.
    """

    def __init__(self, fan_out_maps):
        self.fan_out_maps = dict(fan_out_maps)
        self.events = {}

    def on_site(self, event):
        if not event.spiking or event.name not in self.fan_out_maps:
            return
        T, B = event.output.shape[:2]
        per_position = event.per_pixel.reshape(T, B, -1).sum(axis=1, dtype=np.int64)  # (T, H*W)
        # events_t = sum over positions of spikes x fan-out
        fan_out = self.fan_out_maps[event.name].reshape(-1).astype(np.int64)  # (H*W,)
        self.events.setdefault(event.name, []).append(per_position @ fan_out)  # (T,)


class ProductCounter(Monitor):
    """Counts, per step, the accumulates an event-driven product of two activations performs.

    For the IF neuron, the multiplies whose operands are both nonzero (:func:`nonzero_pairs`); for
    signed / burst neurons, spike pairs (:func:`event_pairs`: a burst of a spikes meeting a burst of b
    is a b). It recognises an operand that came out of a signed / burst site by memory sharing with the
    last few site outputs it saw.

    Attributes
    ----------
    pairs : dict of {str: list of (T,) int64 ndarray}
    """

    def __init__(self):
        self.pairs = {}
        self._recent = []  # (output, unit) of the last signed / burst sites

    def on_site(self, event):
        if event.spiking and event.unit is not None:
            self._recent = (self._recent + [(event.output, event.unit)])[-4:]

    def _operand_events(self, x):
        for y, unit in self._recent:
            if np.may_share_memory(x, y):
                return spike_events(x, unit)
        return _nonzero(x).astype(np.int64)

    def on_product(self, event):
        pairs = event.pairs
        if pairs is None:
            if not self._recent:
                pairs = nonzero_pairs(event.a, event.b)
            else:
                pairs = event_pairs(self._operand_events(event.a), self._operand_events(event.b))
        self.pairs.setdefault(event.name, []).append(pairs)
