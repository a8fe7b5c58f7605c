"""Products fed by spikes: ``x W^T`` as a sum of the weight rows that the nonzero inputs select.

A linear layer after an IF site sees spikes, 0 or lambda (times the RSM gain), and in the shipped MST
only 9-35% of them are nonzero. The dense product multiplies every input; the event-driven one adds, for
each nonzero input x_rk, the weight row W^T_k times x_rk into its output row (a spike of lambda adds
lambda times the row, a silent or masked input adds nothing and costs nothing). Its work is the
synaptic operations, nnz(x) * Cout additions, against R * K * Cout multiply-adds for the dense form.

:func:`spike_linear_reference` is the readable form of :func:`mst_ref.core.kernels.spike_linear` (same
signature, same bits); :mod:`mst_ref.models.mst_fast` picks, per product and step, the event-driven kernel
or the dense BLAS product by the step's spike density (:func:`event_steps`).
"""

import numpy as np

__all__ = ["spike_linear_reference", "event_steps"]


def spike_linear_reference(x, wt, steps, out):
    """Event-driven ``x W^T`` at the chosen steps, the readable twin of :func:`mst_ref.core.kernels.spike_linear`.

    Parameters
    ----------
    x : (T, R, K) ndarray of float32 or float64
        Inputs, mostly zero (spikes).
    wt : (K, Cout) ndarray, x's dtype
        ``W^T``.
    steps : (T,) bool ndarray
        Steps to compute; the others of ``out`` are left as they are.
    out : (T, R, Cout) ndarray, x's dtype
        Receives ``x[t] W^T`` at the chosen steps.

    Returns
    -------
    out : (T, R, Cout) ndarray

    Notes
    -----
    .. math:: y_{r,:} = \\sum_{k:\\, x_{rk} \\ne 0} x_{rk}\\, W^T_{k,:}

    summed in the order of k from +0. Written here over all k: a zero input adds x_rk W^T_k = +-0, which
    leaves every partial sum's bits as they are (s + 0 = s, and +0 + -0 = +0), so the sum over all k
    equals the sum over the nonzero k that the kernel takes, bit for bit.
    """
    for t in np.nonzero(steps)[0]:
        y = np.zeros((x.shape[1], wt.shape[1]), dtype=x.dtype)  # (R, Cout)
        for k in range(x.shape[2]):
            # y_r <- y_r + x_rk W^T_k   (x_rk = 0: no change)
            y += x[t, :, k, None] * wt[k]  # (R, 1) * (Cout,) -> (R, Cout)
        out[t] = y
    return out


def event_steps(x, crossover):
    """The steps of ``x`` (T, R, K) whose density of nonzero inputs is below ``crossover``.

    Returns
    -------
    steps : (T,) bool ndarray
        True where nnz(x[t]) < crossover * R * K (the event-driven product is then the cheaper one).
    density : (T,) float ndarray
        nnz(x[t]) / (R * K).
    """
    T = x.shape[0]
    size = max(1, x[0].size) if T else 1
    density = np.array([np.count_nonzero(x[t]) for t in range(T)], dtype=np.float64) / size  # (T,)
    return density < crossover, density
