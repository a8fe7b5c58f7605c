"""The affine and normalising layers of MST: BatchNorm, LayerNorm, linear, patch embedding, head.

Every function acts on the last axes and broadcasts over any leading ones, so the same call serves the
ANN, ``(B, N, C)``, and the multi-step SNN, ``(T, B, N, C)``: the time axis is just one more leading
axis. Nothing here is spiking; the activation sites live in :mod:`mst_ref.engine.modes`.

Reproduces the layers of the official MST code (github bic-L/Masked-Spiking-Transformer, models/mst.py):
``nn.BatchNorm1d`` in eval mode over the channel axis of tokens, ``nn.LayerNorm`` (the final norm, the
only LayerNorm), ``nn.Linear``, the stride = kernel ``nn.Conv2d`` of the patch embedding, and the head
``avgpool -> Linear``.
"""

import numpy as np

__all__ = ["BN_EPS", "LN_EPS", "bn_params", "bn_affine", "batch_norm", "layer_norm", "linear", "patch_embed",
           "head"]

BN_EPS = 1e-5  # torch.nn.BatchNorm1d default
LN_EPS = 1e-5  # torch.nn.LayerNorm default


def bn_params(state, prefix):
    """The four eval-mode arrays of BatchNorm ``prefix`` in a state dict, in :func:`batch_norm` order.

    Returns
    -------
    (weight, bias, running_mean, running_var) : tuple of (C,) ndarray
    """
    return tuple(state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var"))


def batch_norm(x, weight, bias, running_mean, running_var, eps=BN_EPS):
    """BatchNorm1d in eval mode, over the last (channel) axis.

    Parameters
    ----------
    x : (..., C) ndarray
    weight, bias, running_mean, running_var : (C,) ndarray
        The ``<prefix>.{weight, bias, running_mean, running_var}`` entries of the checkpoint.
    eps : float

    Returns
    -------
    y : (..., C) ndarray, dtype of x

    Notes
    -----
    .. math:: y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta

    with the running statistics mu, sigma^2 (docs/mst.md section 3), computed in the folded form
    ``x a + (beta - mu a)`` that torch's CPU kernel uses. Affine, so it commutes with the mean over
    time: the SNN needs no correction here.
    """
    a, shift = bn_affine(weight, bias, running_mean, running_var, eps)  # (C,), (C,)
    y = x * a  # (..., C)
    y += shift
    return y


def bn_affine(weight, bias, running_mean, running_var, eps=BN_EPS):
    """Eval-mode BatchNorm as the per-channel affine map ``y = x * a + shift`` that :func:`batch_norm` applies.

    Returns
    -------
    a, shift : (C,) ndarray
        ``a = gamma / sqrt(var + eps)``, ``shift = beta - mu * a`` (the fused kernels apply the same two
        arrays, so they round exactly as :func:`batch_norm` does).
    """
    # y = (x - mu) / sqrt(var + eps) * gamma + beta = x * a + (beta - mu * a),  a = gamma / sqrt(var + eps)
    a = weight * (1.0 / np.sqrt(running_var + eps))  # (C,)
    return a, bias - running_mean * a


def layer_norm(x, weight, bias, eps=LN_EPS):
    """LayerNorm over the last axis (biased variance, as torch).

    Parameters
    ----------
    x : (..., C) ndarray
    weight, bias : (C,) ndarray
    eps : float

    Returns
    -------
    y : (..., C) ndarray, dtype of x

    Notes
    -----
    .. math:: y = \\frac{x - \\bar x}{\\sqrt{\\overline{(x - \\bar x)^2} + \\epsilon}} \\gamma + \\beta

    Not affine in x: in the SNN it acts on each step's values (faithful) or, with compensation, on the
    running mean of its input (:mod:`mst_ref.engine.modes`).
    """
    # mean and biased variance over the channels
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    # y = (x - mean) / sqrt(var + eps) * gamma + beta
    return xc / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias=None):
    """Fully connected layer, ``x W^T + b`` (torch ``nn.Linear``).

    Parameters
    ----------
    x : (..., Cin) ndarray
    weight : (Cout, Cin) ndarray
    bias : (Cout,) ndarray or None

    Returns
    -------
    y : (..., Cout) ndarray, dtype of x

    Notes
    -----
    .. math:: y = x W^\\top + b

    One BLAS matrix product per index of the first axis (per step of ``(T, B, ...)``, per image of
    ``(B, N, ...)``): the other leading axes are folded into the rows. So a step computed alone is the
    same matrix product, with the same bits, as that step inside a ``(T, ...)`` stack, and each product
    is large enough for BLAS to run near its peak (one product per window would be thousands of tiny ones).
    """
    lead = x.shape[:-1]
    if x.ndim > 3:
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # (T, B*..., Cin): one matrix per step
    # y = x W^T + b
    y = x @ weight.T  # (T, B*..., Cout)
    if bias is not None:
        y += bias
    return y.reshape(*lead, weight.shape[0])  # (..., Cout)


def patch_embed(images, weight, bias):
    """Patch embedding: a Conv2d with kernel = stride = p, written as reshape + matmul.

    Parameters
    ----------
    images : (..., Cin, H, W) ndarray
        H and W divisible by p.
    weight : (C, Cin, p, p) ndarray
        ``patch_embed.proj.weight``.
    bias : (C,) ndarray
        ``patch_embed.proj.bias``.

    Returns
    -------
    tokens : (..., H/p * W/p, C) ndarray
        Tokens in row-major order of the patch grid (torch ``conv(x).flatten(2).transpose(1, 2)``).

    Notes
    -----
    .. math:: y_{ij} = \\sum_{c, u, v} W_{c u v} \\, x_{c, ip+u, jp+v} + b

    Non-overlapping patches make the convolution one matmul of flattened patches with the flattened
    kernel.
    """
    *lead, cin, h, w = images.shape
    p = weight.shape[-1]
    x = images.reshape(*lead, cin, h // p, p, w // p, p)  # (..., Cin, H/p, p, W/p, p)
    # axes (Cin, H/p, p, W/p, p) -> (H/p, W/p, Cin, p, p): one patch's pixels become contiguous
    x = np.moveaxis(x, (-5, -4, -3, -2, -1), (-3, -5, -2, -4, -1))  # (..., H/p, W/p, Cin, p, p)
    x = x.reshape(*lead, (h // p) * (w // p), cin * p * p)  # (..., N, Cin*p*p)
    return linear(x, weight.reshape(weight.shape[0], -1), bias)  # (..., N, C)


def head(x, weight, bias):
    """Classifier head after the final LayerNorm: mean over tokens, then a linear layer.

    Parameters
    ----------
    x : (..., N, F) ndarray
        Normalised tokens of the last stage.
    weight : (K, F) ndarray
        ``head.weight``.
    bias : (K,) ndarray
        ``head.bias``.

    Returns
    -------
    logits : (..., K) ndarray

    Notes
    -----
    .. math:: z = \\Big(\\frac{1}{N} \\sum_n x_n\\Big) W^\\top + b

    In the SNN the read-out is the cumulative sum over steps of this output, bias included
    (docs/mst.md section 4).
    """
    # z = mean_n(x_n) W^T + b
    pooled = x.mean(axis=-2)  # (..., F)
    return linear(pooled, weight, bias)  # (..., K)
