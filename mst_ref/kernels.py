"""Numba twins of the hot loops.

Each kernel here has a readable NumPy version with the same signature and docstring next to the code
that uses it (the IF scan's is :func:`mst_ref.neurons.if_neuron_reference`), and the tests check every
kernel against its NumPy version bit for bit, once compiled and once more as plain Python with
``NUMBA_DISABLE_JIT=1``. Kernels take and return plain contiguous arrays and do no argument checking:
the public wrappers validate and reshape.

Numba options are set once, here: ``cache=True`` keeps compiled code in ``__pycache__`` between runs,
``nogil=True`` lets callers run kernels from several threads. No ``fastmath``: the kernels must round
exactly as NumPy does.
"""

from functools import partial

import numba
import numpy as np
from numba import prange

__all__ = ["njit", "if_scan"]

njit = partial(numba.njit, cache=True, nogil=True)

# Neurons per parallel work item: the block's membrane potentials (4-8 KiB) stay in L1 cache while
# the scan walks over T, and each time step reads and writes one contiguous run of x and out.
_BLOCK = 1024


@njit(parallel=True)
def if_scan(x, threshold, v):
    """Multi-step integrate-and-fire scan over the time axis, fused in one pass.

    Parameters
    ----------
    x : (T, M) C-contiguous ndarray of float32 or float64
        Input current of M neurons over T steps.
    threshold : float
        lambda; cast to ``x.dtype`` before use. Must be positive and finite (not checked here).
    v : (M,) C-contiguous ndarray, same dtype as x
        Membrane potentials before step 1; updated in place to the potentials after step T.

    Returns
    -------
    out : (T, M) ndarray, same dtype as x
        0 or lambda at each step.

    Notes
    -----
    For each neuron and t = 1..T:

    .. math:: v \\leftarrow v + x_t ;\\quad s_t = [v \\ge \\lambda] ;\\quad v \\leftarrow v - s_t \\lambda ;
              \\quad \\mathrm{out}_t = s_t \\lambda

    Parallel over blocks of neurons (``prange``); within a block the loop runs over t, then over the
    block's neurons, so memory is read and written in contiguous runs and the inner loop is branch-free
    (``s`` selects lambda or 0), which lets LLVM vectorise it.
    """
    T, M = x.shape
    out = np.empty_like(x)  # (T, M)
    # lambda in x's dtype, so that float32 inputs are compared and reset in float32
    lam_arr = np.empty(1, dtype=x.dtype)
    lam_arr[0] = threshold
    lam = lam_arr[0]
    zero = lam - lam
    n_blocks = (M + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        lo = b * _BLOCK
        hi = min(lo + _BLOCK, M)
        v_b = v[lo:hi].copy()  # (n,) this block's membranes, a private copy the loop can vectorise over
        for t in range(T):
            x_t = x[t, lo:hi]  # (n,)
            out_t = out[t, lo:hi]  # (n,) view: writes go to out
            for m in range(hi - lo):
                # v <- v + x_t
                vm = v_b[m] + x_t[m]
                # s = [v >= lambda]
                s = vm >= lam
                # v <- v - s * lambda ; out = s * lambda
                v_b[m] = vm - (lam if s else zero)
                out_t[m] = lam if s else zero
        v[lo:hi] = v_b
    return out
