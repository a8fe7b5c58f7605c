"""The integrate-and-fire (IF) neuron: the SNN twin of a QCFS site.

One IF neuron replaces each QCFS activation, with the same threshold lambda (MST_SPEC section 2; the
conversion of Bu et al., ICLR 2022, as run by the official MST code's ``snn_validate``):

    before step 1:  v = lambda / 2                  (pre-charge; cannot fire)
    each step t:    v = v + x_t
                    s_t = [v >= lambda]             (at most one spike per step)
                    v = v - s_t * lambda            (reset by subtraction)
                    out_t = s_t * lambda

Three ways to run it, all computing the same numbers bit for bit:

- :func:`if_neuron_reference`: the recurrence above in NumPy, a loop over t vectorised over neurons;
- :func:`if_neuron`: the same contract, checked, then run by the Numba kernel
  :func:`mst_ref.kernels.if_scan`; pass ``v`` to carry the membrane across chunks of time;
- :class:`IFState`: one step at a time, keeping ``v`` between calls (the step-by-step simulator).

The published code divides by lambda and thresholds at 1; that form is algebraically equal but rounds
differently, so compare against it with a tolerance (MST_SPEC section 9). Here everything is computed in
``x.dtype`` with lambda cast to that dtype.
"""

import operator

import numpy as np

from . import kernels
from .qcfs import _FLOAT_DTYPES, _as_float_array, _as_threshold

__all__ = ["if_neuron", "if_neuron_reference", "IFState", "spike_counts", "site_scan_reference"]


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
    """Multi-step IF neuron; the fast path (Numba kernel :func:`mst_ref.kernels.if_scan`).

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
    """One activation site over T steps: readable NumPy version of :func:`mst_ref.kernels.site_scan`.

    Same signature, contract and numbers (see the kernel's docstring): optional arrays have zero size
    when absent; ``v``, ``pre``, ``post`` and ``out`` are written in place; returns the ``(T,)`` int64
    counts of nonzero outputs.

    Notes
    -----
    .. math:: y = ((x + a) + b) \\cdot s + h ;\\quad v \\leftarrow v + y ;\\quad z = [v \\ge \\lambda] ;
              \\quad v \\leftarrow v - z \\lambda ;\\quad \\mathrm{out} = z\\, [u > p]\\, \\lambda g
    """
    dt = v.dtype.type
    lam, spike = dt(lam), dt(lam) * dt(gain)
    counts = np.zeros(T, dtype=np.int64)
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
        # RSM: keep where u > p; a kept spike is lambda * gain
        if u.size:
            z &= u[t] > p
        o = np.where(z, spike, dt(0))  # (R, C)
        counts[t] = np.count_nonzero(o)
        if out.size:
            out[t] = o
        if post.size:
            post[t] += o
    return counts
