"""The QCFS CNNs' energy table: what one spike of each site costs, exactly, borders included.

:mod:`mst_ref.engine.energy` turns spike counts into SOPs and energy; this module says, for ResNet-18 and
VGG-16, how many synapses a spike reaches. Every site of these networks feeds a convolution or a
linear layer:

========================================  ==========================================================
site (its spikes feed ...)                synapses reached by one spike at input position (i, j)
========================================  ==========================================================
ResNet ``residual_function.2``            the block's second Conv3x3: ``C_out a(i) a(j)``
ResNet ``conv1.2``, ``act`` (not last)    the next block's first Conv3x3 (``C_out a_s(i) a_s(j)``,
                                          stride s) + its shortcut: a Conv1x1 with stride s
                                          (``C_out`` at positions the stride reads, 0 elsewhere) or,
                                          for the identity, one add into the residual sum
ResNet last ``act``                       the global average pool folded into ``fc``: K
VGG conv site, not before a pool          the next Conv3x3: ``C_out a(i) a(j)``
VGG conv site, before a pool              the 2x2 average pool folded into the next Conv3x3:
                                          that conv's count at (i // 2, j // 2) (0 on a cropped row)
VGG ``layer5`` last site                  pool folded into ``classifier.1``: hidden units
VGG ``classifier.2`` / ``.5``             ``classifier.4`` / ``.7``: hidden units / K
========================================  ==========================================================

``a(i)`` (:func:`mst_ref.nn.conv.conv_fan_out_map`) counts the output positions whose k x k window covers
input row i: k / s in the interior, fewer at the borders, where taps fall on the zero padding (they
are not synapses). An SNN run counts each site's spikes per position and weighs them with this map
(``Mode.fan_out_maps``), so its SOPs are exact; ``fan_outs`` gives the mean per spike.

MACs: the first convolution reads the analog image; the image is static, so the SNN computes it once
per image (``input_macs``), as for MST. Nothing else is analog: BN folds into the convolution before
it, pooling into the layer after it, and the head's input is pooled spikes (counted as SOPs). The ANN
runs the same network densely: input MACs + neurons x mean fan-out (the true multiply count of each
layer, padding taps excluded).
"""

import numpy as np

from ..nn.conv import conv_fan_out_map, conv_output_size
from .cnn_layout import cnn_site_names, resnet_blocks, vgg_convs

__all__ = ["site_names", "fan_out_maps", "fan_outs", "site_neurons", "product_names", "products_after",
           "dense_product_macs", "input_macs", "analog_macs", "INPUT_NAME"]

site_names = cnn_site_names


def _conv_map(side, c_out, kernel, stride, padding):
    a = conv_fan_out_map(side, kernel, stride, padding)  # (side,)
    return c_out * np.outer(a, a)  # (side, side)


def _site_geometry(config):
    """Site -> (side, channels) of its output, in forward order."""
    out = {}
    if config.arch == "resnet18":
        out["conv1.2"] = (config.img_size, config.widths[0])
        for prefix, c_in, c_out, stride, side, _ in resnet_blocks(config):
            so = conv_output_size(side, 3, stride, 1)
            out[f"{prefix}.residual_function.2"] = (so, c_out)
            out[f"{prefix}.act"] = (so, c_out)
        return out
    for _, site, c_in, c_out, side, _ in vgg_convs(config):
        out[site] = (side, c_out)
    out["classifier.2"] = out["classifier.5"] = (1, config.hidden)
    return out


def fan_out_maps(config):
    """Site -> ``(H, W)`` int64 map: synapses reached by one spike of any channel at each position.

    Linear-layer sites (VGG's ``classifier.2`` / ``classifier.5``) have a ``(1, 1)`` map.
    """
    maps = {}
    if config.arch == "resnet18":
        blocks = resnet_blocks(config)
        feeders = ["conv1.2"] + [f"{b[0]}.act" for b in blocks[:-1]]
        for feeder, (prefix, c_in, c_out, stride, side, has_sc) in zip(feeders, blocks):
            m = _conv_map(side, c_out, 3, stride, 1)  # the block's first conv
            m = m + (_conv_map(side, c_out, 1, stride, 0) if has_sc else 1)  # its shortcut
            maps[feeder] = m
        for prefix, c_in, c_out, stride, side, _ in blocks:
            so = conv_output_size(side, 3, stride, 1)
            maps[f"{prefix}.residual_function.2"] = _conv_map(so, c_out, 3, 1, 1)
        last = blocks[-1]
        so = conv_output_size(last[4], 3, last[3], 1)
        maps[f"{last[0]}.act"] = np.full((so, so), config.num_classes, dtype=np.int64)
        return {name: maps[name] for name in site_names(config)}
    convs = vgg_convs(config)
    for n, (_, site, c_in, c_out, side, pooled) in enumerate(convs):
        if n + 1 < len(convs):
            nxt = convs[n + 1]
            m = _conv_map(nxt[4], nxt[3], 3, 1, 1)  # the next conv, at its input resolution
        else:
            m = np.full((side // 2, side // 2), config.hidden, dtype=np.int64)  # classifier.1
        if pooled:  # average pool folded into the next layer: position (i, j) -> (i // 2, j // 2)
            full = np.zeros((side, side), dtype=np.int64)
            h = side // 2
            full[: 2 * h, : 2 * h] = np.kron(m, np.ones((2, 2), dtype=np.int64))
            m = full
        maps[site] = m
    maps["classifier.2"] = np.full((1, 1), config.hidden, dtype=np.int64)
    maps["classifier.5"] = np.full((1, 1), config.num_classes, dtype=np.int64)
    return maps


def site_neurons(config):
    """Site -> neurons per image (one step's output size), in forward order."""
    return {name: side * side * c for name, (side, c) in _site_geometry(config).items()}


def fan_outs(config):
    """Site -> mean synapses reached per spike (exact average over positions; a float)."""
    maps = fan_out_maps(config)
    return {name: float(maps[name].mean()) for name in site_names(config)}


def product_names(config):
    """A CNN has no product of two activations."""
    return []


def products_after(config):
    """No products: nothing is booked after a site."""
    return {}


def dense_product_macs(config):
    """No products."""
    return {}


INPUT_NAME = "conv1.0"  # for VGG-16 the first convolution is layer1.0; the name only labels a row


def input_macs(config):
    """MACs of the first convolution on the analog image, per image (padding taps excluded)."""
    c_out = config.widths[0]  # conv1.0 (ResNet-18) or layer1.0 (VGG-16)
    a = conv_fan_out_map(config.img_size, 3, 1, 1)
    return int(config.in_chans * c_out * a.sum() ** 2)


def analog_macs(config):
    """Analog operations of one step: none (BN, pooling and the head fold into spike-driven layers)."""
    return {}
