"""Patch merging: halve the token grid, double the channels (between stages).

Reproduces ``SpikingPatchMerging.forward`` of the official MST code (github
bic-L/Masked-Spiking-Transformer, models/mst.py), docs/mst.md section 3: the four tokens of every 2 x 2
block are concatenated (in the order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]),
batch-normalised, linearly reduced from 4C to 2C channels without bias, and passed through the site
``downsample.reduction_if``. Everything but the site is linear, so the SNN needs no correction here.
"""

import numpy as np

from .layers import batch_norm, bn_params, linear

__all__ = ["merge_tokens", "patch_merging"]


def merge_tokens(x, resolution):
    """Concatenate the 2 x 2 neighbours of the token grid.

    Parameters
    ----------
    x : (..., H*W, C) ndarray
        Tokens in row-major grid order, H = W = ``resolution`` (even).
    resolution : int

    Returns
    -------
    merged : (..., H/2 * W/2, 4C) ndarray

    Notes
    -----
    .. math:: m[i, j] = [x_{2i, 2j},\\; x_{2i+1, 2j},\\; x_{2i, 2j+1},\\; x_{2i+1, 2j+1}]
    """
    *lead, n, c = x.shape
    grid = x.reshape(*lead, resolution, resolution, c)  # (..., H, W, C)
    x0 = grid[..., 0::2, 0::2, :]  # (..., H/2, W/2, C)
    x1 = grid[..., 1::2, 0::2, :]  # (..., H/2, W/2, C)
    x2 = grid[..., 0::2, 1::2, :]  # (..., H/2, W/2, C)
    x3 = grid[..., 1::2, 1::2, :]  # (..., H/2, W/2, C)
    merged = np.concatenate([x0, x1, x2, x3], axis=-1)  # (..., H/2, W/2, 4C)
    return merged.reshape(*lead, n // 4, 4 * c)  # (..., N/4, 4C)


def patch_merging(x, state, prefix, resolution, mode):
    """Patch merging layer with its activation site.

    Parameters
    ----------
    x : (..., H*W, C) ndarray
        Output tokens of a stage.
    state : dict of {str: ndarray}
        The model's state dict; the keys ``<prefix>.*`` are used.
    prefix : str
        e.g. ``layers.0.downsample``.
    resolution : int
        H = W of the input grid.
    mode : Mode
        What the site does (:class:`mst_ref.engine.modes.Mode`).

    Returns
    -------
    y : (..., H/2 * W/2, 2C) ndarray
        Spikes (activations) of ``<prefix>.reduction_if``.

    Notes
    -----
    .. math:: y = Q_{reduction}\\big(\\mathrm{BN}(\\mathrm{merge}(x))\\, W_{reduction}^\\top\\big)
    """
    m = merge_tokens(x, resolution)  # (..., N/4, 4C)
    m = batch_norm(m, *bn_params(state, f"{prefix}.norm"))  # (..., N/4, 4C)
    y = linear(m, state[f"{prefix}.reduction.weight"])  # (..., N/4, 2C)
    return mode.site(f"{prefix}.reduction_if", y, state[f"{prefix}.reduction_if.up"])
