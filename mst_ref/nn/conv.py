"""The layers of the QCFS CNNs: 2-D convolution, BatchNorm2d, average pooling, flatten.

Images and feature maps are kept channels-last, ``(B, H, W, C)`` in the ANN and ``(T, B, H, W, C)`` in
the SNN (the official PyTorch code is channels-first; the checkpoint's conv weights keep their
``(C_out, C_in, k, k)`` layout and are read as such). Channels-last makes BatchNorm act on the last axis
as it does for MST's tokens (:func:`mst_ref.nn.layers.batch_norm` serves both) and turns a convolution into
one matrix product over image patches (im2col).

Every layer here is affine or linear, so it commutes with the mean over time: the SNN of a CNN needs no
correction anywhere but at its activation sites (unlike MST's softmax, LayerNorm and products).

Reproduces ``nn.Conv2d``, ``nn.BatchNorm2d`` (eval mode), ``nn.AvgPool2d(2, 2)``,
``nn.AdaptiveAvgPool2d(1)`` and ``nn.Flatten`` of the official QCFS code (github putshua/ANN_SNN_QCFS).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core import kernels

__all__ = ["to_channels_last", "conv2d", "conv2d_events", "conv2d_events_reference", "conv_output_size",
           "avg_pool2", "global_avg_pool", "flatten_chw", "conv_fan_out_map"]


def to_channels_last(images):
    """``(B, C, H, W)`` images -> ``(B, H, W, C)`` (a contiguous copy)."""
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (B, H, W, C)


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: ``floor((size + 2 padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (torch ``nn.Conv2d``, cross-correlation) on channels-last maps, as im2col + matmul.

    Parameters
    ----------
    x : (B, H, W, Cin) or (T, B, H, W, Cin) ndarray
    weight : (Cout, Cin, k, k) ndarray
        The checkpoint's ``<conv>.weight``.
    bias : (Cout,) ndarray or None
    stride, padding : int

    Returns
    -------
    y : (B, Ho, Wo, Cout) or (T, B, Ho, Wo, Cout) ndarray, dtype of x

    Notes
    -----
    .. math:: y[b, i, j, o] = \\sum_{c, u, v} x_{pad}[b, s i + u, s j + v, c]\\, W[o, c, u, v] + b[o]

    The patches are gathered with ``sliding_window_view`` (a view; the reshape into rows copies them),
    then multiplied by the weight as one ``(rows, Cin k^2) @ (Cin k^2, Cout)`` product per image batch in
    the ANN and per step in the SNN: a step computed alone is the same product, with the same bits, as
    that step inside a ``(T, ...)`` stack, so step-by-step and multi-step runs agree exactly.
    """
    cout, cin, k, _ = weight.shape
    pads = [(0, 0)] * (x.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
    xp = np.pad(x, pads) if padding else x  # (..., H + 2p, W + 2p, Cin)
    win = sliding_window_view(xp, (k, k), axis=(-3, -2))  # (..., H', W', Cin, k, k) a view
    win = win[..., ::stride, ::stride, :, :, :]  # (..., Ho, Wo, Cin, k, k)
    ho, wo = win.shape[-5], win.shape[-4]
    lead = x.shape[:-3]  # (B,) or (T, B)
    rows = win.reshape(lead[0], -1, cin * k * k)  # (B, Ho*Wo, Cin k^2) or (T, B*Ho*Wo, Cin k^2): a copy
    if x.ndim == 4:
        rows = rows.reshape(-1, cin * k * k)  # ANN: (B*Ho*Wo, Cin k^2), one product for the batch
    # y = patches @ W^T + b
    y = rows @ weight.reshape(cout, cin * k * k).T  # (..., Cout)
    if bias is not None:
        y += bias
    return y.reshape(*lead, ho, wo, cout)  # (..., Ho, Wo, Cout)


def conv2d_events_reference(x, weight, bias=None, stride=1, padding=0):
    """The convolution as a sum over taps and input channels, in the order of the event-driven kernel.

    Parameters and result as :func:`conv2d`.

    Notes
    -----
    .. math:: y[\\ldots, i, j, :] = b + \\sum_{u, v} \\sum_c x[\\ldots, \\sigma i + u - p, \\sigma j + v - p, c]\\,
              W[:, c, u, v]

    added one (tap, channel) at a time, in the order (u, v, c): the same additions in the same order as
    :func:`mst_ref.core.kernels.conv2d_events`, which skips the zero inputs (adding ``0 * w`` changes nothing),
    so the two agree bit for bit. :func:`conv2d` adds the same products in BLAS's order (a few ulps
    apart).
    """
    cout, cin, k, _ = weight.shape
    h, w_ = x.shape[-3], x.shape[-2]
    ho, wo = conv_output_size(h, k, stride, padding), conv_output_size(w_, k, stride, padding)
    pads = [(0, 0)] * (x.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
    xp = np.pad(x, pads)  # (..., H + 2p, W + 2p, Cin)
    y = np.zeros((*x.shape[:-3], ho, wo, cout), dtype=x.dtype)  # (..., Ho, Wo, Cout)
    for u in range(k):
        for v in range(k):
            tap = xp[..., u: u + stride * (ho - 1) + 1: stride, v: v + stride * (wo - 1) + 1: stride, :]  # (..., Ho, Wo, Cin)
            for c in range(cin):
                # y += x[..., c] * W[:, c, u, v]
                y += tap[..., c:c + 1] * weight[:, c, u, v]  # (..., Ho, Wo, Cout)
    if bias is not None:
        y += bias
    return y


def conv2d_events(x, weight, bias=None, stride=1, padding=0, bn=None):
    """:func:`conv2d_events_reference` through the Numba kernel :func:`mst_ref.core.kernels.conv2d_events`.

    The fast path of the CNNs' SNN: a convolution fed by spikes costs one row of W per spike (its SOPs),
    not a dense product; with a few tens of percent of neurons spiking per step this beats im2col + BLAS
    on the narrow layers of the small models. Same bits as the reference.

    ``bn``: optional ``(scale, shift)`` of the BatchNorm after the convolution
    (:func:`mst_ref.nn.layers.bn_affine`), applied in the kernel's last pass with the same rounding as
    :func:`mst_ref.nn.layers.batch_norm` on the result.
    """
    cout, cin, k, _ = weight.shape
    lead = x.shape[:-3]
    h, w_ = x.shape[-3], x.shape[-2]
    ho, wo = conv_output_size(h, k, stride, padding), conv_output_size(w_, k, stride, padding)
    xs = np.ascontiguousarray(x.reshape(-1, h, w_, cin))  # (S, H, W, Cin)
    taps = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # (k, k, Cin, Cout)
    out = np.empty((xs.shape[0], ho, wo, cout), dtype=x.dtype)  # (S, Ho, Wo, Cout), zeroed by the kernel
    none = np.zeros(0, dtype=x.dtype)
    b = none if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    scale, shift = (none, none) if bn is None else (np.ascontiguousarray(a, dtype=x.dtype) for a in bn)
    return kernels.conv2d_events(xs, taps, stride, padding, ho, wo, b, scale, shift, out).reshape(
        *lead, ho, wo, cout)


def avg_pool2(x):
    """``nn.AvgPool2d(2, 2)`` on channels-last maps (odd trailing rows / columns are dropped, as torch).

    Parameters
    ----------
    x : (..., H, W, C) ndarray

    Returns
    -------
    y : (..., H // 2, W // 2, C) ndarray

    Notes
    -----
    .. math:: y[i, j] = \\tfrac14 (x[2i, 2j] + x[2i, 2j+1] + x[2i+1, 2j] + x[2i+1, 2j+1])

    QCFS uses average pooling where VGG has max pooling: an average is linear, so the mean over time
    of pooled spikes is the pooled mean (a max of spike trains is not the max of their rates).
    """
    h, w = x.shape[-3] // 2, x.shape[-2] // 2
    x = x[..., : 2 * h, : 2 * w, :]
    blocks = x.reshape(*x.shape[:-3], h, 2, w, 2, x.shape[-1])  # (..., h, 2, w, 2, C)
    # y = (x00 + x01 + x10 + x11) / 4
    return (blocks[..., 0, :, 0, :] + blocks[..., 0, :, 1, :] + blocks[..., 1, :, 0, :]
            + blocks[..., 1, :, 1, :]) / x.dtype.type(4)  # (..., h, w, C)


def global_avg_pool(x):
    """``nn.AdaptiveAvgPool2d(1)`` + flatten: the mean over H and W; ``(..., H, W, C)`` -> ``(..., C)``."""
    return x.mean(axis=(-3, -2))  # (..., C)


def flatten_chw(x):
    """``nn.Flatten`` of a channels-first map: ``(..., H, W, C)`` -> ``(..., C*H*W)`` in (C, H, W) order."""
    return np.ascontiguousarray(np.moveaxis(x, -1, -3)).reshape(*x.shape[:-3], -1)  # (..., C*H*W)


def conv_fan_out_map(size, kernel, stride, padding):
    """How many output positions along one axis read each input position of a convolution.

    Parameters
    ----------
    size, kernel, stride, padding : int
        The input length and the convolution's geometry along the axis.

    Returns
    -------
    counts : (size,) int64 ndarray
        ``counts[i]`` = number of outputs o with ``s o - p <= i <= s o - p + k - 1``.

    Notes
    -----
    A spike at input (i, j) of any channel reaches ``C_out * counts[i] * counts[j]`` synapses: about
    ``C_out k^2 / s^2`` in the interior, fewer at the borders (taps that fall on the zero padding are not
    synapses), and none at positions a stride skips.
    """
    out = conv_output_size(size, kernel, stride, padding)
    counts = np.zeros(size, dtype=np.int64)
    for o in range(out):
        lo, hi = stride * o - padding, stride * o - padding + kernel  # taps [lo, hi)
        counts[max(lo, 0):max(min(hi, size), 0)] += 1
    return counts
