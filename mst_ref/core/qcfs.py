"""QCFS: the quantization-clip-floor-shift activation of the ANN side.

Every activation site of the Masked Spiking Transformer is trained with QCFS (Bu et al., ICLR 2022,
"Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency spiking neural networks"), the
activation that an integrate-and-fire neuron with the same threshold reproduces on average. This module
holds QCFS, its continuous limit ``clip(x, 0, lambda)``, and the small argument checks shared with
:mod:`mst_ref.core.neurons`.

Reproduces ``myfloor``/QCFS of the official MST code (github bic-L/Masked-Spiking-Transformer), which
computes ``torch.clamp(torch.floor(x * L / up + 0.5) / L, 0, 1) * up`` in that order.
"""

import operator

import numpy as np

__all__ = ["qcfs", "qcfs_clamp_first", "clip_activation"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_float_array(x, name="x"):
    """Return ``x`` as a float32 or float64 ndarray (no copy), or raise ValueError naming ``name``."""
    x = np.asarray(x)
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be a float32 or float64 array; got {x.dtype}")
    return x


def _as_threshold(threshold, dtype):
    """Return the threshold lambda as a scalar of ``dtype``, or raise ValueError naming ``threshold``.

    Accepted: a python or numpy real scalar, or an array of shape () or (1,) (the ``<site>.up`` entries
    of a checkpoint have shape (1,)). The value is cast to ``dtype`` first, then checked, so that a
    float64 threshold which overflows or underflows float32 is caught.
    """
    t = np.asarray(threshold)
    if t.dtype.kind not in "fiu" or t.ndim > 1 or t.size != 1:
        raise ValueError(
            "threshold must be a positive finite real scalar (a float, or an array of shape () or (1,)); "
            f"got {t.dtype} array of shape {t.shape}"
        )
    with np.errstate(over="ignore"):  # an overflow to inf is reported below
        lam = np.dtype(dtype).type(t.reshape(()))
    if not (np.isfinite(lam) and lam > 0):
        value = t.reshape(()).item()
        raise ValueError(f"threshold must be positive and finite in {np.dtype(dtype)}; got {value!r}")
    return lam


def _as_levels(levels):
    """Return the number of QCFS levels L as a python int >= 1, or raise ValueError naming ``levels``."""
    if isinstance(levels, (bool, np.bool_)):
        raise ValueError(f"levels must be an integer >= 1; got {levels!r}")
    try:
        L = operator.index(levels)
    except TypeError:
        kind = type(levels).__name__
        raise ValueError(f"levels must be an integer >= 1; got {levels!r} ({kind})") from None
    if L < 1:
        raise ValueError(f"levels must be an integer >= 1; got {L}")
    return L


def qcfs(x, threshold, levels=16):
    """Quantization-clip-floor-shift activation.

    Parameters
    ----------
    x : (...) ndarray of float32 or float64
        Pre-activations, any shape.
    threshold : float or (1,) ndarray
        lambda, the site's learned clipping level (key ``<site>.up``); cast to ``x.dtype``.
    levels : int
        L, the number of quantization steps (16 in the published training).

    Returns
    -------
    y : (...) ndarray, same shape and dtype as x
        Values on the grid {0, lambda/L, 2 lambda/L, ..., lambda}.

    Notes
    -----
    .. math:: y = \\lambda \\, \\mathrm{clip}\\left(\\frac{\\lfloor x L / \\lambda + 1/2 \\rfloor}{L}, 0, 1\\right)

    The shift 1/2 rounds half up: ``x = (k - 1/2) lambda / L`` maps to ``k lambda / L``, which is also
    what the IF neuron does at a tie (it fires on ``v >= lambda``). ``|y - clip(x, 0, lambda)| <=
    lambda / (2L)`` for every x, so a large L tends to :func:`clip_activation`. NaN inputs propagate.
    """
    x = _as_float_array(x, "x")
    lam = _as_threshold(threshold, x.dtype)
    L = _as_levels(levels)
    # y = lambda * clip(floor(x * L / lambda + 0.5) / L, 0, 1)   (the published order of operations)
    y = np.clip(np.floor(x * L / lam + 0.5) / L, 0, 1) * lam
    return np.asarray(y, dtype=x.dtype)


def clip_activation(x, threshold):
    """The continuous limit of QCFS (L -> infinity): ``clip(x, 0, lambda)``.

    Parameters
    ----------
    x : (...) ndarray of float32 or float64
    threshold : float or (1,) ndarray
        lambda, cast to ``x.dtype``.

    Returns
    -------
    y : (...) ndarray, same shape and dtype as x

    Notes
    -----
    .. math:: y = \\min(\\max(x, 0), \\lambda)

    This is the function an IF neuron's mean output tends to as T grows (the ANN a long-running SNN
    actually converges to), as opposed to QCFS with the trained L.
    """
    x = _as_float_array(x, "x")
    lam = _as_threshold(threshold, x.dtype)
    # y = min(max(x, 0), lambda)
    return np.asarray(np.clip(x, 0, lam), dtype=x.dtype)


def qcfs_clamp_first(x, threshold, levels=8):
    """QCFS in the order of operations of the official QCFS CNN code (putshua/ANN_SNN_QCFS).

    Parameters
    ----------
    x : (...) ndarray of float32 or float64
    threshold : float or (1,) ndarray
        lambda (key ``<site>.thresh``); cast to ``x.dtype``.
    levels : int
        L (8 in the official QCFS evaluation).

    Returns
    -------
    y : (...) ndarray, same shape and dtype as x

    Notes
    -----
    .. math:: y = \\lambda \\, \\lfloor \\mathrm{clip}(x / \\lambda, 0, 1) L + 1/2 \\rfloor / L

    The same function as :func:`qcfs` in exact arithmetic (clipping before or after the floor gives
    the same grid), but the published QCFS code divides first, ``x / lambda`` then times L, where MST
    computes ``x * L / lambda``. When L is a power of two the two orders agree bit for bit (scaling by
    2^k is exact, so both round the same real number once); for other L (3, 5, 6, 7, 10, 12, ...) an
    input within a few ulps of a level boundary lambda (k + 1/2) / L can land one level apart
    (``tests/test_qcfs_order.py`` checks both statements at every boundary, in float32 and float64).
    Each family uses its own order.
    """
    x = _as_float_array(x, "x")
    lam = _as_threshold(threshold, x.dtype)
    L = _as_levels(levels)
    # y = lambda * floor(clip(x / lambda, 0, 1) * L + 0.5) / L
    y = np.floor(np.clip(x / lam, 0, 1) * L + 0.5) / L * lam
    return np.asarray(y, dtype=x.dtype)
