"""The QCFS CNN baselines of the MST poster: ResNet-18 and VGG-16, converted to IF neurons.

The architecture, its site names and the official state-dict keys are in
:mod:`mst_ref.models.cnn_layout` (whose docstring says what the official QCFS code computes); this module
runs them: the ANN and the SNN through the shared machinery, on the readable or the event-driven path.
"""

import numpy as np

from ..core.qcfs import qcfs_clamp_first
from ..engine.monitors import SynapseCounter
from ..engine.network import SpikingNetwork
from ..nn.conv import (avg_pool2, conv2d, conv2d_events, conv_output_size, flatten_chw, global_avg_pool,
                       to_channels_last)
from ..nn.layers import batch_norm, bn_affine, bn_params, linear
from . import cnn_energy
from .cnn_sites import cnn_mask_presets
from .cnn_layout import (ARCHS, CNNConfig, check_cnn_state, cnn_site_names, cnn_state_problems,  # noqa: F401
                         expected_cnn_shapes, infer_cnn_config, is_cnn_state, random_cnn_state_dict,
                         rename_legacy_keys, resnet_blocks, vgg_convs)

__all__ = ["QCFSCNN", "CNNConfig", "ARCHS", "is_cnn_state", "rename_legacy_keys", "infer_cnn_config",
           "cnn_site_names", "expected_cnn_shapes", "check_cnn_state", "cnn_state_problems", "random_cnn_state_dict",
           "resnet_blocks", "vgg_convs"]


# ---------------------------------------------------------------------------------- the model


class QCFSCNN(SpikingNetwork):
    """A QCFS ResNet-18 or VGG-16 with its weights; ANN and SNN through the shared machinery.

    Build one with :meth:`from_state_dict` (an official state dict) or :meth:`random`.

    Attributes
    ----------
    config : CNNConfig
    state : dict of {str: ndarray}
        The official state dict, float entries in ``dtype``.
    dtype : np.dtype
    site_names : list of str
        The activation sites in forward order (17 for ResNet-18, 15 for VGG-16).

    Notes
    -----
    RSM sites: every site of these networks feeds a convolution or a linear layer (directly, through
    the residual add, or through average pooling). "published", "paper" and "all" mean every site;
    the named configurations of :mod:`mst_ref.models.cnn_sites` ("block-input", "stage-input", one
    stage, ...) mask some; a tuple of site suffixes or a dict of per-site / per-block ratios chooses
    others.
    """

    threshold_suffix = "thresh"
    quantizer = staticmethod(qcfs_clamp_first)

    def __init__(self, config, state, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        check_cnn_state(state, config)
        self.state = {k: np.array(v, dtype=np.int64 if k.endswith("num_batches_tracked") else self.dtype, order="C")
                      for k, v in state.items()}
        self.site_names = cnn_site_names(config)
        self.mask_site_presets = cnn_mask_presets(config)  # named masking configurations (cnn_sites)

    @classmethod
    def from_state_dict(cls, state, img_size=None, dtype=np.float32, qcfs_levels=8, meta_config=None):
        """Build from an official (or legacy ``up``-named) state dict; see :func:`infer_cnn_config`."""
        state = rename_legacy_keys(state)
        return cls(infer_cnn_config(state, img_size, qcfs_levels, meta_config), state, dtype)

    @classmethod
    def random(cls, config, rng, dtype=np.float32):
        """A model with random weights in the official layout."""
        return cls(config, random_cnn_state_dict(config, rng, dtype), dtype)

    # ------------------------------------------------------------------ forward pass

    def forward(self, images, mode):
        """The forward pass with a given mode.

        Parameters
        ----------
        images : (B, Cin, H, W) ndarray of ``dtype``
        mode : Mode

        Returns
        -------
        logits : (B, K) ndarray (ANN) or (T, B, K) head outputs of each step (SNN)
        """
        # (B, H, W, Cin); a time-varying SNN input (mode.timed_input) keeps its time axis: (T, B, H, W, Cin)
        x = to_channels_last(images) if images.ndim == 4 else np.ascontiguousarray(np.moveaxis(images, -3, -1))
        if self.config.arch == "resnet18":
            return self._resnet(x, mode)
        return self._vgg(x, mode)

    def _conv_bn(self, x, conv, bn, stride=1, padding=1, mode=None):
        """Conv2d -> BatchNorm2d (eval); x (..., H, W, Cin) -> (..., Ho, Wo, Cout).

        With a spiking ``mode`` on its fast path (``mode.fast``, the default) the convolution of a spike
        map runs event-driven (:func:`mst_ref.nn.conv.conv2d_events`: one row of W per spike); otherwise
        as im2col + one BLAS product per step (:func:`mst_ref.nn.conv.conv2d`). Same numbers up to float
        rounding.
        """
        s = self.state
        if mode is not None and mode.spiking and mode.fast:
            # conv + BN in one kernel: (acc + b) * a + shift, rounded as the two steps below
            return conv2d_events(x, s[f"{conv}.weight"], s.get(f"{conv}.bias"), stride, padding,
                                 bn=bn_affine(*bn_params(s, bn)))  # (..., Ho, Wo, Cout)
        y = conv2d(x, s[f"{conv}.weight"], s.get(f"{conv}.bias"), stride, padding)  # (..., Ho, Wo, Cout)
        return batch_norm(y, *bn_params(s, bn))

    def _site(self, mode, name, x):
        return mode.site(name, x, self.state[f"{name}.thresh"])

    def _resnet(self, x, mode):
        # conv1: Conv3x3 -> BN -> IF. The image is static: its convolution is computed once, then fed
        # at every step.
        x = self._conv_bn(x, "conv1.0", "conv1.1")  # (B, H, W, c0)
        x = self._site(mode, "conv1.2", mode.enter_time(x))  # (T, B, H, W, c0) in the SNN
        for prefix, c_in, c_out, stride, side, has_sc in resnet_blocks(self.config):
            r = f"{prefix}.residual_function"
            # h = BN(Conv3x3(IF(BN(Conv3x3(x)))))
            h = self._conv_bn(x, f"{r}.0", f"{r}.1", stride, mode=mode)  # (..., Ho, Wo, c_out)
            h = self._site(mode, f"{r}.2", h)
            h = self._conv_bn(h, f"{r}.3", f"{r}.4", mode=mode)  # (..., Ho, Wo, c_out)
            # shortcut = BN(Conv1x1(x)) when the shape changes, else x
            sc = self._conv_bn(x, f"{prefix}.shortcut.0", f"{prefix}.shortcut.1", stride, 0, mode) if has_sc else x
            # x = IF(h + shortcut)
            x = self._site(mode, f"{prefix}.act", h + sc)  # (..., Ho, Wo, c_out)
        x = global_avg_pool(x)  # (..., c5)
        return linear(x, self.state["fc.weight"], self.state["fc.bias"])  # (..., K)

    def _vgg(self, x, mode):
        first = True
        for conv, site, c_in, c_out, side, pooled in vgg_convs(self.config):
            layer, idx = conv.rsplit(".", 1)
            x = self._conv_bn(x, conv, f"{layer}.{int(idx) + 1}", mode=None if first else mode)  # (..., H, W, c_out)
            if first:  # the image's convolution once, then fed at every step
                x, first = mode.enter_time(x), False
            x = self._site(mode, site, x)
            if pooled:
                x = avg_pool2(x)  # (..., H/2, W/2, c_out)
        s = self.state
        x = flatten_chw(x)  # (..., C*h*w)
        x = self._site(mode, "classifier.2", linear(x, s["classifier.1.weight"], s["classifier.1.bias"]))
        x = self._site(mode, "classifier.5", linear(x, s["classifier.4.weight"], s["classifier.4.bias"]))
        return linear(x, s["classifier.7.weight"], s["classifier.7.bias"])  # (..., K)

    def extra_monitors(self):
        """A synapse counter that weighs each site's spikes by its fan-out map (exact SOPs at the borders)."""
        if not hasattr(self, "_fan_out_maps"):
            self._fan_out_maps = cnn_energy.fan_out_maps(self.config)
        return [SynapseCounter(self._fan_out_maps)]

    def block_prefixes(self):
        """The blocks a per-block masking ratio map addresses, in forward order."""
        if self.config.arch == "resnet18":
            return ["conv1"] + [prefix for prefix, *_ in resnet_blocks(self.config)]
        return [f"layer{i}" for i in range(1, 6)] + ["classifier"]

    # ------------------------------------------------------------------ time chunks

    def default_chunk(self, batch_size, timesteps, mode, budget_bytes=2**28):
        """Steps per pass that keep the largest im2col buffer (a few live copies) within ``budget_bytes``."""
        c = self.config
        if c.arch == "resnet18":
            largest = max(side * side * c_in * 9 for _, c_in, _, _, side, _ in resnet_blocks(c))
        else:
            largest = max(side * side * c_in * 9 for _, _, c_in, _, side, _ in vgg_convs(c))
        per_step = 4 * batch_size * largest * self.dtype.itemsize
        return max(1, min(timesteps, budget_bytes // per_step))
