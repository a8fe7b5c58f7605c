"""What an activation site and an analog operation do: the one thing that differs between ANN and SNN.

The model (:mod:`mst_ref.models.mst`) is written once. At each of its activation sites it calls
``mode.site(name, x, threshold)``; at each non-spiking nonlinearity (softmax, LayerNorm) it calls
``mode.analog(name, f, x)``; at each product of two activations (q k^T, p v) it calls
``mode.product(name, a, b)``. A :class:`Mode` decides what these mean:

=================  ==========================  ===================================================
                   site                        analog op / product
=================  ==========================  ===================================================
ANN                qcfs (or clip, quantize     f(x), a @ b
                   =False); no time axis
SNN, faithful      IF neuron scanned over the  f(x_t), a_t @ b_t: each step's own values
                   leading time axis           (the published ``snn_validate``)
SNN, compensated   same                        expectation form (docs/mst.md section 8), below
=================  ==========================  ===================================================

Every site also applies RSM when masked (:mod:`mst_ref.engine.masking`). What is observed (records, spike
counts, synapses reached, product pairs) is not the mode's business: the mode notifies its
``monitors`` (:mod:`mst_ref.engine.monitors`) at every site, analog op and product. State that must survive from one call to the next (membrane
potentials, running sums of the compensation) lives in ``Mode.state``, keyed by site or op name, so a
run can be split into time chunks, or single steps, and give the same numbers.

Neurons. ``Mode.neuron`` chooses the SNN's neuron at every site: ``"if"`` (the published IF neuron, the
default) or a neuron for fewer time steps, ``"signed"``, ``"burst"`` (up to ``burst_max`` spikes of
lambda / K per step, K = ``burst_max``, default L) or ``"signed-burst"`` (:mod:`mst_ref.core.neurons`). Their
energy is counted honestly: a burst of k spikes is k synaptic events, a negative spike is one, and in a
product of two spike trains a pair of bursts of a and b spikes is a b events (:func:`event_pairs`).
Every neuron works with both compensations: the analog ops only see the sites' outputs. The compensated
ops' own work (dense running sums) is not priced by the energy accounting (docs/energy.md).

Expectation compensation (in the style of the expectation compensation module of ECMT, Huang et al., ACM
Multimedia 2024; not in the published code): for an op f fed with the running sum
X_t of its inputs, emit the increment of t f(X_t / t),

    y_t = t f(X_t / t) - (t - 1) f(X_{t-1} / (t - 1)),

and for a product of two trains with running sums A_t, B_t, the increment of A_t B_t / t,

    y_t = A_t B_t / t - A_{t-1} B_{t-1} / (t - 1).

The outputs then sum to t f(mean input) and A_t B_t / t, so the mean output of every layer tends to
the ANN's value with QCFS replaced by clip(x, 0, lambda), and the whole SNN converges to that ANN.
"""

from dataclasses import dataclass, field

import numpy as np

from .masking import SpikeMasker
from .monitors import ProductEvent, SiteEvent
from ..core.neurons import NEURONS, if_neuron, multilevel_neuron, neuron_kind
from ..core.qcfs import clip_activation, qcfs, qcfs_clamp_first

__all__ = ["COMPENSATIONS", "Carry", "Mode", "running_sum", "expectation_op", "expectation_product",
           "NEURONS", "PROBES", "membrane_before_reset"]

COMPENSATIONS = ("none", "expectation")

# Recordable quantities beyond the sites' outputs, named "<site>.membrane" / "<op>.softmax" in ``record``
PROBES = {
    "membrane": "SNN: membrane potential v of a site's IF neurons after adding the input, before the reset",
    "softmax": "the attention probabilities p = softmax(a + B_rel (+ mask)), the output of the analog op",
}


def membrane_before_reset(x, out, v):
    """The IF neurons' membrane potential after integrating each step's input, before the reset.

    Parameters
    ----------
    x : (T, ...) ndarray, input currents
    out : (T, ...) ndarray, the neurons' outputs (0 or lambda), before masking
    v : (...) ndarray, potentials before the first step (not modified)

    Returns
    -------
    (T, ...) ndarray: :math:`v_{t-1} + x_t`, the value compared with lambda at step t

    Notes
    -----
    The same operations, in the same order, as :func:`mst_ref.core.neurons.if_neuron_reference`:
    ``v <- v + x_t`` (kept), ``v <- v - out_t``; so ``out_t = lambda [trace_t >= lambda]`` exactly.
    """
    trace = np.empty_like(x)  # (T, ...)
    v = v.copy()
    for t in range(x.shape[0]):
        # v <- v + x_t   (recorded)
        v = v + x[t]
        trace[t] = v
        # v <- v - s_t lambda
        v = v - out[t]
    return trace


def running_sum(x, start=0.0):
    """Running sum over the leading time axis, continuing from ``start``.

    Parameters
    ----------
    x : (T, ...) ndarray
    start : (...) ndarray or float
        The sum of all earlier steps (0 before the first chunk).

    Returns
    -------
    S : (T, ...) ndarray, dtype of x

    Notes
    -----
    .. math:: S_t = \\mathrm{start} + \\sum_{s \\le t} x_s

    added strictly in time order, ``((start + x_1) + x_2) + ...``, so a run split into chunks adds
    exactly the same numbers as one pass.
    """
    s = np.array(x)  # (T, ...) a contiguous copy
    s[0] += start
    return np.cumsum(s, axis=0, out=s)  # (T, ...)


def _increments(cumulative, previous):
    """y_t = Y_t - Y_{t-1} along axis 0, with Y_0 = ``previous``."""
    y = np.empty_like(cumulative)  # (T, ...)
    y[0] = cumulative[0] - previous
    y[1:] = cumulative[1:] - cumulative[:-1]
    return y


def _time_column(t0, steps, ndim, dtype):
    """t = t0 + 1, ..., t0 + steps as a (steps, 1, ..., 1) array of ``dtype``."""
    t = np.arange(t0 + 1, t0 + steps + 1).astype(dtype)  # (T,)
    return t.reshape(steps, *([1] * (ndim - 1)))  # (T, 1, ..., 1)


@dataclass
class Carry:
    """What the expectation form of one op carries from one time chunk to the next.

    Attributes
    ----------
    steps : int
        Steps done so far (t of the last step).
    sums : tuple of ndarray or float
        Running sums of the op's inputs after the last step (X, or A and B).
    total : ndarray or float
        The op's cumulative output after the last step: t f(X_t / t), or A_t B_t / t.
    """

    steps: int = 0
    sums: tuple = (0.0, 0.0)
    total: object = 0.0


def expectation_op(f, x, carry):
    """Expectation-compensated non-spiking op over a chunk of steps.

    Parameters
    ----------
    f : callable
        The op, acting on the last axes (softmax, LayerNorm).
    x : (T, ...) ndarray
        This chunk's inputs.
    carry : Carry
        State after the previous chunk (``Carry()`` before the first).

    Returns
    -------
    y : (T, ...) ndarray
        Per-step outputs.
    carry : Carry
        State after this chunk.

    Notes
    -----
    .. math:: y_t = t\\, f(X_t / t) - (t-1)\\, f(X_{t-1} / (t-1)), \\qquad X_t = \\sum_{s \\le t} x_s

    so that :math:`\\sum_{s \\le t} y_s = t\\, f(X_t / t)`: the mean output is f of the mean input.
    At t = 1 this is f(x_1), the faithful output.
    """
    X = running_sum(x, carry.sums[0])  # (T, ...)
    t = _time_column(carry.steps, x.shape[0], x.ndim, x.dtype)  # (T, 1, ..., 1)
    # Y_t = t f(X_t / t)
    Y = t * f(X / t)  # (T, ...)
    # y_t = Y_t - Y_{t-1}
    y = _increments(Y, carry.total)
    return y, Carry(carry.steps + x.shape[0], (X[-1].copy(),), Y[-1].copy())


def expectation_product(a, b, carry):
    """Expectation-compensated product of two spike trains over a chunk of steps.

    Parameters
    ----------
    a : (T, ..., n, k) ndarray
    b : (T, ..., k, m) ndarray
    carry : Carry
        State after the previous chunk (``Carry()`` before the first).

    Returns
    -------
    y : (T, ..., n, m) ndarray
        Per-step outputs.
    carry : Carry
        State after this chunk.

    Notes
    -----
    .. math:: y_t = \\frac{A_t B_t}{t} - \\frac{A_{t-1} B_{t-1}}{t-1}, \\qquad
              A_t = \\sum_{s \\le t} a_s, \\; B_t = \\sum_{s \\le t} b_s

    so that :math:`\\sum_{s \\le t} y_s = t\\, \\bar a_t \\bar b_t`: the mean output is the product of the
    mean inputs (the faithful per-step product instead tends to the mean of the products).
    """
    A = running_sum(a, carry.sums[0])  # (T, ..., n, k)
    B = running_sum(b, carry.sums[1])  # (T, ..., k, m)
    t = _time_column(carry.steps, a.shape[0], a.ndim, a.dtype)  # (T, 1, ..., 1)
    # P_t = A_t B_t / t
    P = (A @ B) / t  # (T, ..., n, m)
    # y_t = P_t - P_{t-1}
    y = _increments(P, carry.total)
    return y, Carry(carry.steps + a.shape[0], (A[-1].copy(), B[-1].copy()), P[-1].copy())


@dataclass
class Mode:
    """The meaning of the activation sites and analog ops during a forward pass.

    Attributes
    ----------
    spiking : bool
        False: ANN, arrays without a time axis. True: SNN, arrays ``(T, ...)`` with ``steps`` steps.
    quantize : bool
        ANN only: QCFS with ``levels`` (True) or its continuous limit clip(x, 0, lambda) (False).
    levels : int
        L of QCFS.
    compensation : {"none", "expectation"}
        SNN only: faithful per-step analog ops, or the expectation form.
    steps : int
        SNN: number of time steps of the current call (a chunk).
    masker : SpikeMasker
        RSM at the masked sites (none by default).
    state : dict
        SNN state carried between calls: site name -> membrane potentials ``(...)``; op name ->
        :class:`Carry`.
    quantizer : callable
        ANN: the QCFS of the model family, ``f(x, threshold, levels)`` (:func:`mst_ref.core.qcfs.qcfs` for MST,
        :func:`mst_ref.core.qcfs.qcfs_clamp_first` for the QCFS CNNs: the same function, each family's own
        order of floating-point operations).
    neuron : {"if", "signed", "burst", "signed-burst"}
        SNN: the neuron at every site (:mod:`mst_ref.core.neurons`); "if" is the published one. Only "if" runs
        on the fused kernels (:func:`mst_ref.models.mst_fast.supports`).
    burst_max : int or None
        K of the burst neurons: at most K spikes of lambda / K per step (None: L, so that at T = 1 the
        burst neuron is the ANN's QCFS). Refused for "if" and "signed" (one spike per step).
    fast : bool
        SNN without compensation: run :meth:`mst_ref.models.mst.MST.forward` through the fused kernels of
        :mod:`mst_ref.models.mst_fast` (same numbers within float rounding, same state and the same
        monitor events). False: the readable path, one NumPy op at a time through :meth:`site`,
        :meth:`analog` and :meth:`product` (needed by anything that hooks into those methods).
    monitors : list of Monitor
        The observers notified at every site, analog op and product (:mod:`mst_ref.engine.monitors`);
        none by default.
    timed_input : bool
        SNN: the input already has its time axis, one input per step of this call (event frames),
        instead of a static image fed at every step (:meth:`enter_time`).
    """

    spiking: bool = False
    quantize: bool = True
    levels: int = 16
    compensation: str = "none"
    steps: int = 1
    masker: SpikeMasker = field(default_factory=SpikeMasker)
    state: dict = field(default_factory=dict)
    fast: bool = True
    quantizer: object = qcfs
    neuron: str = "if"
    burst_max: object = None
    monitors: list = field(default_factory=list)
    timed_input: bool = False

    def __post_init__(self):
        if self.compensation not in COMPENSATIONS:
            raise ValueError(f"compensation must be one of {COMPENSATIONS}; got {self.compensation!r}")
        if self.neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}; got {self.neuron!r}")
        if self.neuron == "if" and self.burst_max is not None:
            raise ValueError(f"burst_max applies to the burst neurons ('burst', 'signed-burst'); got "
                             f"burst_max={self.burst_max!r} with neuron='if'")
        if self.neuron != "if":
            neuron_kind(self.neuron, self.levels, self.burst_max)  # checks burst_max
        self.monitors = list(self.monitors)

    @property
    def max_spikes(self):
        """K: spikes a neuron may emit in one step (1 for "if" and "signed")."""
        return 1 if self.neuron == "if" else neuron_kind(self.neuron, self.levels, self.burst_max)[0]

    # ------------------------------------------------------------------ the monitors

    def monitor(self, kind):
        """The first attached monitor of class ``kind``, or None."""
        return next((m for m in self.monitors if isinstance(m, kind)), None)

    def wants(self, name):
        """Whether a monitor needs the values of site / probe / op ``name`` kept."""
        return any(m.wants(name) for m in self.monitors)

    @property
    def probing(self):
        """Whether a :data:`PROBES` quantity is wanted (the fused kernels do not produce them)."""
        return any(n.rsplit(".", 1)[-1] in PROBES for m in self.monitors for n in getattr(m, "names", ()))

    def observe(self, name, shape, counts=None, y=None, x=None, threshold=None, unit=None):
        """Notify the monitors of one call of site ``name`` (the fused kernels call this too).

        Parameters
        ----------
        name : str
        shape : tuple
            One step's output shape ``(B, ...)`` (SNN), or the output shape (ANN).
        counts : (steps,) int ndarray or None
            SNN: spikes at each step after RSM, when a kernel counted them (else counted from ``y``).
        y : ndarray or None
            The outputs, ``(steps, *shape)`` (SNN).
        x, threshold, unit
            The site's inputs and lambda (readable path), the output of one spike (signed / burst).
        """
        event = SiteEvent(name, self.spiking, shape, y, x, threshold, unit, counts)
        for m in self.monitors:
            m.on_site(event)

    def observe_product(self, name, a=None, b=None, pairs=None):
        """Notify the monitors of one product ``a @ b`` (or of its pairs, counted by a kernel)."""
        if self.spiking:
            event = ProductEvent(name, a, b, pairs)
            for m in self.monitors:
                m.on_product(event)

    # ------------------------------------------------------------------ what the sites compute

    def enter_time(self, x):
        """Give the (static) input its time axis: the image is fed unchanged at every step.

        ``x (...)`` -> ``(steps, ...)`` in the SNN (a broadcast view, no copy); unchanged in the ANN.
        With ``timed_input`` the input already has it, ``x (steps, ...)``, and passes through (the
        caller, :class:`mst_ref.engine.simulate.StepSimulator`, sliced it to this call's steps).
        """
        if not self.spiking:
            return x
        if self.timed_input:
            if x.shape[0] != self.steps:
                raise ValueError(f"a time-varying input must have one entry per step: {self.steps} steps, "
                                 f"got {x.shape[0]}")
            return x
        return np.broadcast_to(x, (self.steps, *x.shape))  # (T, ...)

    def site(self, name, x, threshold):
        """One activation site: QCFS / clip (ANN) or IF neurons (SNN), then RSM; the monitors told.

        Parameters
        ----------
        name : str
            Site name, the checkpoint key without ``.up`` (e.g. ``layers.0.blocks.1.attn.q_if``).
        x : (...) or (T, ...) ndarray
            Pre-activations (ANN) or input currents of ``steps`` steps (SNN).
        threshold : (1,) ndarray
            lambda, the site's ``up``.

        Returns
        -------
        y : ndarray, shape and dtype of x
            Activations, or spikes (0 or lambda) per step; masked if the site is.

        Notes
        -----
        ANN: :math:`y = \\lambda\\, \\mathrm{clip}(\\lfloor x L / \\lambda + 1/2 \\rfloor / L, 0, 1)`.
        SNN: :math:`v \\leftarrow v + x_t;\\; s_t = [v \\ge \\lambda];\\; v \\leftarrow v - s_t \\lambda`,
        with v kept in ``state[name]`` (lambda / 2 before the first step). Other neurons (``neuron``):
        :func:`mst_ref.core.neurons.multilevel_neuron`, with ``state[name] = (v, n)``.
        """
        probe = f"{name}.membrane" if self.wants(f"{name}.membrane") else None
        unit = None
        if not self.spiking:
            if probe:
                raise ValueError(f"{probe}: membrane potentials exist only in the SNN (snn_forward)")
            y = self.quantizer(x, threshold, self.levels) if self.quantize else clip_activation(x, threshold)
        elif self.neuron != "if":
            y, unit = self._multilevel_site(name, x, threshold)  # (T, ...) signed / burst neurons
        else:
            v = self.state.get(name)
            if v is None:
                # pre-charge: v = lambda / 2
                v = self.state[name] = np.full(x.shape[1:], x.dtype.type(threshold[0]) / 2, dtype=x.dtype)
            v_before = v.copy() if probe else None
            y = if_neuron(x, threshold, v, check=False)  # (T, ...); v updated in place
            if probe:
                trace = membrane_before_reset(x, y, v_before)
                for m in self.monitors:
                    m.on_probe(probe, trace)
        y = self.masker(name, y, self.spiking)
        self.observe(name, y.shape[1:] if self.spiking else y.shape, None, y, x, threshold, unit)
        return y

    def _multilevel_site(self, name, x, threshold):
        """SNN site of a signed / burst neuron: the scan, state (v, n) carried in ``state[name]``.

        Returns the outputs and the output of one spike, lambda / K (x 1 / (1 - p) when RSM rescales).
        """
        if self.wants(f"{name}.membrane"):
            raise ValueError(f"{name}.membrane: membrane potentials are recorded for the IF neuron only; "
                             f"got neuron={self.neuron!r}")
        K, signed = neuron_kind(self.neuron, self.levels, self.burst_max)
        if name not in self.state:
            # v = 0, n = 0 (the pre-charge is the + 1/2 inside the neuron's floor)
            self.state[name] = (np.zeros(x.shape[1:], x.dtype), np.zeros(x.shape[1:] if signed else 0, np.int64))
        v, n = self.state[name]
        p = self.masker.ratios.get(name, 0.0)
        gain = 1.0 / (1.0 - p) if self.masker.rescale and 0.0 < p < 1.0 else 1.0
        # one spike: lambda / K (x 1 / (1 - p) when RSM rescales)
        unit = float(x.dtype.type(threshold[0])) / K * gain
        y = multilevel_neuron(x, threshold, K, signed, v, n, self.quantizer is qcfs_clamp_first, check=False)
        return y, unit

    def analog(self, name, f, x):
        """A non-spiking nonlinearity (softmax, LayerNorm): f(x) per step, or its expectation form.

        Parameters
        ----------
        name : str
            Op name, unique in the model (e.g. ``layers.0.blocks.1.attn.softmax``, ``norm``).
        f : callable
            Acts on the last axes.
        x : (...) or (T, ...) ndarray

        Returns
        -------
        y : ndarray, shape of f(x)
        """
        if not (self.spiking and self.compensation == "expectation"):
            y = f(x)
        else:
            y, self.state[name] = expectation_op(f, x, self.state.get(name, Carry()))
        for m in self.monitors:  # e.g. the attention probabilities, "<block>.attn.softmax", recorded
            m.on_analog(name, y, f, x)
        return y

    def product(self, name, a, b):
        """A product of two activations (q k^T, p v): a @ b per step, or its expectation form.

        Parameters
        ----------
        name : str
            Op name, unique in the model (e.g. ``layers.0.blocks.1.attn.qk``).
        a : (..., n, k) ndarray
        b : (..., k, m) ndarray

        Returns
        -------
        y : (..., n, m) ndarray
        """
        self.observe_product(name, a, b)  # energy accounting: the multiplies that meet two nonzero operands
        if not (self.spiking and self.compensation == "expectation"):
            return a @ b  # (..., n, m)
        y, self.state[name] = expectation_product(a, b, self.state.get(name, Carry()))
        return y
