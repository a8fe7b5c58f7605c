"""The integrate-and-fire (IF) neuron: the SNN twin of a QCFS site.

One IF neuron replaces each QCFS activation, with the same threshold lambda (docs/mst.md section 2; the
conversion of Bu et al., ICLR 2022, as run by the official MST code's ``snn_validate``)::

    before step 1:  v = lambda / 2                  (pre-charge: fires at step 1 when x_1 >= lambda / 2)
    each step t:    v = v + x_t
                    s_t = [v >= lambda]             (at most one spike per step)
                    v = v - s_t * lambda            (reset by subtraction)
                    out_t = s_t * lambda

Three ways to run it, all computing the same numbers bit for bit:

- :func:`if_neuron_reference`: the recurrence above in NumPy, a loop over t vectorised over neurons;
- :func:`if_neuron`: the same contract, checked, then run by the Numba kernel
  :func:`mst_ref.core.kernels.if_scan`; pass ``v`` to carry the membrane across chunks of time;
- :class:`IFState`: one step at a time, keeping ``v`` between calls (the step-by-step simulator).

The published MST code divides by lambda and thresholds at 1; that form is algebraically equal but
``v / lambda >= 1`` and ``v >= lambda`` can disagree when v lies within an ulp or so of lambda. What is
exact and what is not (``tests/test_fidelity.py``, against the PyTorch reference): in float64 the spike
counts of every site at every step are identical and the logits agree to 1e-10 (relative); in
float32 the ANN logits agree to 1e-4, and the SNN's cumulative logits to 1e-4 up to T = 16 and 2e-2 up
to T = 64, where a threshold tie can flip a spike that then propagates (docs/mst.md section 9). The
three implementations below agree with each other bit for bit. Here everything is computed in
``x.dtype`` with lambda cast to that dtype.

Neurons for fewer time steps (not in the published code; :func:`multilevel_neuron_reference`, Numba
twin :func:`mst_ref.core.kernels.multilevel_scan`). One recurrence covers three kinds, with K spikes of
lambda / K allowed per step and, for a signed neuron, negative spikes that take back earlier ones::

    before step 1:  v = 0, n = 0                    (the + 1/2 below is the pre-charge, in units of lambda/K)
    each step t:    u = v + x_t
                    k_t = clip(floor(u K / lambda + 1/2), lo, K)     lo = -min(K, n) signed, else 0
                    out_t = (k_t / K) lambda        (k_t spikes of lambda / K, or -k_t negative ones)
                    v = u - out_t ;  n = n + k_t

- ``"signed"`` (K = 1, signed; the signed neuron with memory of SNM, ternary ST-BIF+ of SpikeZIP-TF):
  an IF neuron that may also emit -lambda when its membrane falls below -lambda / 2, but never more
  negative spikes than positive ones so far;
- ``"burst"`` (K = ``burst_max``, default L; multi-threshold / burst neurons): up to K spikes of
  lambda / K in one step; at T = 1 with K = L it *is* QCFS with L levels;
- ``"signed-burst"``: both.

The floor is written as the family's QCFS writes it (``clamp_first`` for
:func:`mst_ref.core.qcfs.qcfs_clamp_first`), so that at T = 1 the burst neuron rounds exactly as the ANN does.
"""

import operator

import numpy as np

from . import kernels
from .qcfs import _FLOAT_DTYPES, _as_float_array, _as_threshold

__all__ = ["NEURONS", "if_neuron", "if_neuron_reference", "IFState", "spike_counts", "site_scan_reference",
           "neuron_kind", "multilevel_neuron", "multilevel_neuron_reference", "signed_neuron", "burst_neuron",
           "signed_burst_neuron"]

NEURONS = ("if", "signed", "burst", "signed-burst")  # "if" is the published neuron


def _check_inputs(x, threshold, v):
    """Validate the (x, threshold, v) of the multi-step functions; return x, lambda and the membrane."""
    x = _as_float_array(x, "x")
    if x.ndim < 1:
        raise ValueError("x must have a leading time axis, shape (T, ...); got a 0-d array")
    if x.shape[0] == 0:
        raise ValueError(f"x must have at least one time step (T >= 1); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite; got NaN or inf values")
    lam = _as_threshold(threshold, x.dtype)
    if v is None:
        # pre-charge: v = lambda / 2
        v = np.full(x.shape[1:], lam / 2, dtype=x.dtype)
    else:
        if not isinstance(v, np.ndarray):
            raise ValueError(f"v must be a numpy array (updated in place); got {type(v).__name__}")
        if v.shape != x.shape[1:] or v.dtype != x.dtype:
            raise ValueError(
                f"v must have shape x.shape[1:] = {x.shape[1:]} and dtype {x.dtype}; "
                f"got shape {v.shape} and dtype {v.dtype}"
            )
        if not v.flags.writeable:
            raise ValueError("v must be writeable: it is updated in place")
        if not np.isfinite(v).all():
            raise ValueError("v must be finite; got NaN or inf values")
    return x, lam, v


def if_neuron_reference(x, threshold, v=None):
    """Multi-step IF neuron, readable NumPy version (the oracle for the Numba kernel).

    Parameters
    ----------
    x : (T, ...) ndarray of float32 or float64
        Input current at each of T steps, for any number of neurons.
    threshold : float or (1,) ndarray
        lambda (key ``<site>.up``); cast to ``x.dtype``.
    v : (...) ndarray, optional
        Membrane potentials before step 1, shape ``x.shape[1:]``, dtype ``x.dtype``; UPDATED IN PLACE
        to the potentials after step T, so that a later call continues where this one stopped.
        None: start from the pre-charge lambda / 2.

    Returns
    -------
    out : (T, ...) ndarray, same shape and dtype as x
        0 or lambda at each step.

    Notes
    -----
    .. math:: v \\leftarrow v + x_t ;\\quad s_t = [v \\ge \\lambda] ;\\quad v \\leftarrow v - s_t \\lambda ;
              \\quad \\mathrm{out}_t = s_t \\lambda

    For a constant input x the mean output over T steps is exactly ``qcfs(x, lambda, levels=T)``, and
    for any inputs in [0, lambda], ``|mean(out) - mean(x)| <= lambda / (2T)``.
    """
    x, lam, v_in = _check_inputs(x, threshold, v)
    v = v_in.copy()  # (...)
    out = np.empty_like(x)  # (T, ...)
    for t in range(x.shape[0]):
        # v <- v + x_t
        v = v + x[t]
        # s = [v >= lambda]
        s = v >= lam
        # v <- v - s * lambda
        v = v - s * lam
        # out_t = s * lambda
        out[t] = s * lam
    v_in[...] = v
    return out


def if_neuron(x, threshold, v=None, check=True):
    """Multi-step IF neuron; the fast path (Numba kernel :func:`mst_ref.core.kernels.if_scan`).

    Same contract and same numbers as :func:`if_neuron_reference`.

    Parameters
    ----------
    x : (T, ...) ndarray of float32 or float64
        Input current at each of T steps, for any number of neurons.
    threshold : float or (1,) ndarray
        lambda (key ``<site>.up``); cast to ``x.dtype``.
    v : (...) ndarray, optional
        Membrane potentials before step 1, shape ``x.shape[1:]``, dtype ``x.dtype``; UPDATED IN PLACE.
        None: start from the pre-charge lambda / 2.
    check : bool
        Validate the arguments (shapes, dtypes, finite values). False skips the checks and their passes
        over x, for callers that validated their inputs once at the entry (the model's sites).

    Returns
    -------
    out : (T, ...) ndarray, same shape and dtype as x
        0 or lambda at each step.

    Notes
    -----
    .. math:: v \\leftarrow v + x_t ;\\quad s_t = [v \\ge \\lambda] ;\\quad v \\leftarrow v - s_t \\lambda ;
              \\quad \\mathrm{out}_t = s_t \\lambda
    """
    if check:
        x, lam, v = _check_inputs(x, threshold, v)
    else:
        lam = x.dtype.type(np.asarray(threshold).reshape(-1)[0])
        v = np.full(x.shape[1:], lam / 2, dtype=x.dtype) if v is None else v
    T = x.shape[0]
    M = v.size
    x2 = np.ascontiguousarray(x.reshape(T, M))  # (T, M)
    v1 = np.ascontiguousarray(v.reshape(M))  # (M,); a view of v when v is contiguous
    out = kernels.if_scan(x2, float(lam), v1)  # (T, M)
    if not np.may_share_memory(v1, v):
        v[...] = v1.reshape(v.shape)  # v was not contiguous: copy the new potentials back
    return out.reshape(x.shape)  # (T, ...)


def spike_counts(out):
    """Number of spikes of each neuron over the time axis.

    Parameters
    ----------
    out : (T, ...) ndarray
        Output of an IF neuron (0 or lambda at each step).

    Returns
    -------
    counts : (...) ndarray of int64
        ``sum_t [out_t != 0]``; between 0 and T.
    """
    out = np.asarray(out)
    if out.ndim < 1:
        raise ValueError("out must have a leading time axis, shape (T, ...); got a 0-d array")
    return np.count_nonzero(out, axis=0).astype(np.int64, copy=False)


class IFState:
    """IF neurons run one time step at a time, keeping their membrane potentials between calls.

    Parameters
    ----------
    threshold : float or (1,) ndarray
        lambda, cast to ``dtype``.
    shape : tuple of int
        Shape of one step's input, e.g. (B, N, C).
    dtype : float32 or float64

    Attributes
    ----------
    v : (...) ndarray
        Membrane potentials, shape ``shape``; lambda / 2 after construction or :meth:`reset`.
    spike_count : (...) ndarray of int64
        Spikes emitted by each neuron since the last reset.
    t : int
        Steps taken since the last reset.

    Notes
    -----
    ``step`` runs the same kernel as :func:`if_neuron` with T = 1 and this object's ``v``, so T calls
    of ``step`` give exactly the outputs of one ``if_neuron`` call over T steps.
    """

    def __init__(self, threshold, shape, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        self.threshold = _as_threshold(threshold, self.dtype)
        try:
            self.shape = tuple(operator.index(n) for n in ((shape,) if np.ndim(shape) == 0 else shape))
        except TypeError:
            raise ValueError(f"shape must be a tuple of non-negative ints; got {shape!r}") from None
        if any(n < 0 for n in self.shape):
            raise ValueError(f"shape must be a tuple of non-negative ints; got {shape!r}")
        self.v = np.empty(self.shape, dtype=self.dtype)
        self.spike_count = np.empty(self.shape, dtype=np.int64)
        self.reset()

    def reset(self):
        """Back to the state before step 1: v = lambda / 2, no spikes counted."""
        self.v[...] = self.threshold / 2
        self.spike_count[...] = 0
        self.t = 0

    def step(self, x):
        """Advance one time step.

        Parameters
        ----------
        x : (...) ndarray of ``dtype``, shape ``shape``
            Input current of this step (no time axis).

        Returns
        -------
        out : (...) ndarray
            0 or lambda for each neuron.
        """
        x = _as_float_array(x, "x")
        if x.shape != self.shape or x.dtype != self.dtype:
            raise ValueError(
                f"x must have shape {self.shape} and dtype {self.dtype} (this IFState's); "
                f"got shape {x.shape} and dtype {x.dtype}"
            )
        out = if_neuron(x[None], self.threshold, v=self.v)[0]  # (...)
        self.spike_count += out != 0
        self.t += 1
        return out


def site_scan_reference(x, T, add, add_rows, bias, scale, shift, lam, gain, v, u, p, pre, post, out):
    """One activation site over T steps: readable NumPy version of :func:`mst_ref.core.kernels.site_scan`.

    Same signature, contract and numbers (see the kernel's docstring): optional arrays have zero size
    when absent; ``v``, ``pre``, ``post`` and ``out`` are written in place; returns the ``(T,)`` int64
    counts of nonzero outputs and of the spikes fired before RSM.

    Notes
    -----
    .. math:: y = ((x + a) + b) \\cdot s + h ;\\quad v \\leftarrow v + y ;\\quad z = [v \\ge \\lambda] ;
              \\quad v \\leftarrow v - z \\lambda ;\\quad \\mathrm{out} = z\\, [u > p]\\, \\lambda g
    """
    dt = v.dtype.type
    lam, spike = dt(lam), dt(lam) * dt(gain)
    counts = np.zeros(T, dtype=np.int64)
    fired = np.zeros(T, dtype=np.int64)
    for t in range(T):
        y = x[t if x.shape[0] > 1 else 0].copy()  # (R, C)
        if add.size:
            y = y + (add[t][add_rows] if add_rows.size else add[t])
        if bias.size:
            y = y + bias
        if scale.size:
            y = y * scale
        if shift.size:
            y = y + shift
        if pre.size:
            pre[t] = y
        # v <- v + y ; z = [v >= lambda] ; v <- v - z lambda
        v += y
        z = v >= lam
        v -= z * lam
        fired[t] = np.count_nonzero(z)  # before RSM
        # RSM: keep where u > p; a kept spike is lambda * gain
        if u.size:
            z &= u[t] > p
        o = np.where(z, spike, dt(0))  # (R, C)
        counts[t] = np.count_nonzero(o)
        if out.size:
            out[t] = o
        if post.size:
            post[t] += o
    return counts, fired


# ---------------------------------------------------------------- neurons for fewer time steps


def neuron_kind(neuron, levels, burst_max=None):
    """(K, signed) of a neuron name: spikes allowed per step, and whether negative spikes are.

    Parameters
    ----------
    neuron : {"signed", "burst", "signed-burst"}
    levels : int
        L of the model's QCFS: the default K of the burst neurons.
    burst_max : int or None
        K of the burst neurons (None: L). Not accepted for "signed" (K = 1 by definition).
    """
    if neuron not in NEURONS[1:]:
        raise ValueError(f"neuron must be one of {NEURONS[1:]} here (the IF neuron is if_neuron); got {neuron!r}")
    if burst_max is not None and neuron == "signed":
        raise ValueError(f"burst_max applies to the burst neurons ('burst', 'signed-burst'); got burst_max="
                         f"{burst_max!r} with neuron='signed' (use 'signed-burst' for several spikes per step)")
    K = 1 if neuron == "signed" else (levels if burst_max is None else burst_max)
    if isinstance(K, (bool, np.bool_)) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"burst_max must be an integer >= 1 (spikes per step); got {K!r}")
    return int(K), neuron != "burst"


def _check_multilevel(x, threshold, max_spikes, signed, v, n):
    """Validate the arguments of the multilevel neurons; return x, lambda, v and n (fresh if None)."""
    x = _as_float_array(x, "x")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a leading time axis with T >= 1 steps, shape (T, ...); got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite; got NaN or inf values")
    lam = _as_threshold(threshold, x.dtype)
    if isinstance(max_spikes, (bool, np.bool_)) or not isinstance(max_spikes, (int, np.integer)) or max_spikes < 1:
        raise ValueError(f"max_spikes must be an integer >= 1; got {max_spikes!r}")
    if v is None:
        v = np.zeros(x.shape[1:], dtype=x.dtype)
    elif not (isinstance(v, np.ndarray) and v.shape == x.shape[1:] and v.dtype == x.dtype and v.flags.writeable):
        raise ValueError(f"v must be a writeable ndarray of shape x.shape[1:] = {x.shape[1:]} and dtype {x.dtype}; "
                         f"got {getattr(v, 'shape', type(v).__name__)}")
    if not signed:
        n = np.zeros(0, dtype=np.int64)
    elif n is None:
        n = np.zeros(x.shape[1:], dtype=np.int64)
    elif not (isinstance(n, np.ndarray) and n.shape == x.shape[1:] and n.dtype == np.int64 and n.flags.writeable):
        raise ValueError(f"n must be a writeable int64 ndarray of shape x.shape[1:] = {x.shape[1:]} "
                         f"(net spike counts); got {getattr(n, 'shape', type(n).__name__)}")
    return x, lam, v, n


def multilevel_neuron_reference(x, threshold, max_spikes=1, signed=False, v=None, n=None, clamp_first=False):
    """Signed / burst neurons over T steps, readable NumPy version (the oracle of the Numba kernel).

    Parameters
    ----------
    x : (T, ...) ndarray of float32 or float64
        Input current at each of T steps.
    threshold : float or (1,) ndarray
        lambda, the site's threshold; a spike is lambda / K.
    max_spikes : int
        K >= 1, spikes allowed per step (1: one spike of lambda, as the IF neuron).
    signed : bool
        Allow negative spikes (at most as many as the positive ones so far).
    v : (...) ndarray, optional
        Residual membranes before step 1 (None: 0); UPDATED IN PLACE, so a later call continues.
    n : (...) int64 ndarray, optional
        Signed only: net spikes so far (None: 0); UPDATED IN PLACE.
    clamp_first : bool
        Round in the order of :func:`mst_ref.core.qcfs.qcfs_clamp_first` (the QCFS CNNs) instead of
        :func:`mst_ref.core.qcfs.qcfs` (MST).

    Returns
    -------
    out : (T, ...) ndarray, same shape and dtype as x
        k lambda / K, with k an integer in [-K, K] (in [0, K] unless signed).

    Notes
    -----
    .. math:: u = v + x_t ;\\quad k_t = \\mathrm{clip}(\\lfloor u K / \\lambda + 1/2 \\rfloor, lo, K) ;
              \\quad \\mathrm{out}_t = (k_t / K)\\, \\lambda ;\\quad v \\leftarrow u - \\mathrm{out}_t ;
              \\quad n \\leftarrow n + k_t

    lo = -min(K, n) when signed, else 0. The residual v is the pre-charged membrane of an IF neuron
    with threshold lambda / K, minus lambda / (2K): the + 1/2 in the floor is the pre-charge.

    *Burst at T = 1 is QCFS.* With v = 0, u = x exactly, and k = clip(floor(x K / lambda + 1/2), 0, K)
    is the very floor of ``qcfs(x, lambda, levels=K)`` (same operations, same order, same dtype), so
    ``(k / K) lambda`` equals ``qcfs`` bit for bit (``clip(f / L, 0, 1) = clip(f, 0, L) / L`` for an
    integer f). With ``clamp_first`` it equals :func:`mst_ref.core.qcfs.qcfs_clamp_first` the same way.

    *Constant input.* Write theta = lambda / K. While unclipped, v stays in [-theta/2, theta/2), so the
    net count after t steps is N_t = floor(t x / theta + 1/2) (v_t = t x - N_t theta); the clips keep it
    in [0, tK]: N_T = clip(floor(T K x / lambda + 1/2), 0, T K), and the mean output N_T theta / T is
    ``qcfs(x, lambda, levels=T K)`` -- QCFS with L = T for K = 1 (signed, like IF), L = T K for bursts.

    *Signed: tracks QCFS of the running mean.* Let X_t = x_1 + ... + x_t and
    N*_t = clip(floor(X_t / lambda + 1/2), 0, t), so lambda N*_t = t qcfs(X_t / t, lambda, levels=t)
    (exact arithmetic). With K = 1, u = X_t - N_{t-1} lambda, so N_{t-1} + floor(u / lambda + 1/2) is
    floor(X_t / lambda + 1/2); the neuron adds clip(floor(u / lambda + 1/2), -min(1, N_{t-1}), 1), and
    checking the three cases (floor >= 1, = 0, <= -1) against 0 <= N_{t-1} <= t - 1 gives

        N_t = N_{t-1} + sign(N*_t - N_{t-1}).

    Hence N_t >= 0 always (the cumulative output is never negative), and if \\|x_t\\| < lambda at every step
    then \\|N*_t - N*_{t-1}\\| <= 1, so by induction from N_0 = N*_0 = 0 the cumulative output equals
    t qcfs(X_t / t, lambda, levels=t) exactly, within lambda / 2 of clip(X_t, 0, t lambda). An IF
    neuron instead can never take a spike back: a large early input overshoots for good. Larger inputs
    can move N*_t by more than one spike per step; the neuron then closes the gap one spike per step.
    """
    x, lam, v_in, n_in = _check_multilevel(x, threshold, max_spikes, signed, v, n)
    dt = x.dtype.type
    K, half = dt(max_spikes), dt(0.5)
    v = v_in.copy()  # (...)
    count = n_in.copy()  # (...) or (0,)
    out = np.empty_like(x)  # (T, ...)
    for t in range(x.shape[0]):
        # u = v + x_t
        u = v + x[t]
        # k = clip(floor(u K / lambda + 1/2), lo, K),  lo = -1 (x K) when signed, else 0
        if clamp_first:
            k = np.floor(np.clip(u / lam, dt(-1 if signed else 0), dt(1)) * K + half)
        else:
            k = np.clip(np.floor(u * K / lam + half), dt(-1 if signed else 0) * K, K)
        if signed:
            # a negative spike only takes back an earlier positive one: k >= -n
            k = np.maximum(k, (-count).astype(x.dtype))
            count = count + k.astype(np.int64)
        # out = (k / K) lambda ; v <- u - out
        out[t] = k / K * lam
        v = u - out[t]
    v_in[...] = v
    if signed:
        n_in[...] = count
    return out


def multilevel_neuron(x, threshold, max_spikes=1, signed=False, v=None, n=None, clamp_first=False, check=True):
    """Signed / burst neurons over T steps; the fast path (Numba kernel :func:`mst_ref.core.kernels.multilevel_scan`).

    Same contract and same numbers as :func:`multilevel_neuron_reference`; ``check=False`` skips the
    argument checks (for callers that validated once, as :meth:`mst_ref.engine.modes.Mode.site` does).
    """
    if check:
        x, lam, v, n = _check_multilevel(x, threshold, max_spikes, signed, v, n)
    else:
        lam = x.dtype.type(np.asarray(threshold).reshape(-1)[0])
        v = np.zeros(x.shape[1:], dtype=x.dtype) if v is None else v
        n = (np.zeros(x.shape[1:], np.int64) if n is None else n) if signed else np.zeros(0, np.int64)
    T, M = x.shape[0], v.size
    x2 = np.ascontiguousarray(x.reshape(T, M))  # (T, M)
    v1 = np.ascontiguousarray(v.reshape(M))  # (M,) a view of v when v is contiguous
    n1 = np.ascontiguousarray(n.reshape(-1))  # (M,) or (0,)
    out = kernels.multilevel_scan(x2, float(lam), int(max_spikes), bool(signed), bool(clamp_first), v1, n1)
    if not np.may_share_memory(v1, v):
        v[...] = v1.reshape(v.shape)
    if signed and not np.may_share_memory(n1, n):
        n[...] = n1.reshape(n.shape)
    return out.reshape(x.shape)  # (T, ...)


def signed_neuron(x, threshold, v=None, n=None, clamp_first=False):
    """Signed IF neuron: at most one spike of +-lambda per step, never more negative than positive ones.

    :func:`multilevel_neuron` with K = 1, signed: ``k_t = clip(floor(u / lambda + 1/2), -min(1, n), 1)``.
    """
    return multilevel_neuron(x, threshold, 1, True, v, n, clamp_first)


def burst_neuron(x, threshold, max_spikes, v=None, clamp_first=False):
    """Burst neuron: up to K spikes of lambda / K per step (K = L: QCFS exactly at T = 1).

    :func:`multilevel_neuron` with K = ``max_spikes``, unsigned: ``k_t = clip(floor(u K / lambda + 1/2), 0, K)``.
    """
    return multilevel_neuron(x, threshold, max_spikes, False, v, None, clamp_first)


def signed_burst_neuron(x, threshold, max_spikes, v=None, n=None, clamp_first=False):
    """Signed burst neuron: up to K spikes of +-lambda / K per step, net count never negative.

    :func:`multilevel_neuron` with K = ``max_spikes``, signed.
    """
    return multilevel_neuron(x, threshold, max_spikes, True, v, n, clamp_first)
