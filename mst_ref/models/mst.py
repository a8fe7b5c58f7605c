"""The Masked Spiking Transformer: one forward pass for the ANN and the SNN.

Assembles the pieces in forward order (docs/mst.md section 3; official code: github
bic-L/Masked-Spiking-Transformer, models/mst.py)::

    patch embed -> BN -> Q[proj_if]
    for each stage i, block j:
        h = Q[shortcut1_if](BN[norm1](x)) -> roll(-s) -> windows -> attention -> reverse -> roll(+s)
        x = BN[norm2](x + h)                       # the MLP residual is added to the BN output
        x = x + MLP(Q[shortcut2_if](x))
    (patch merging between stages)
    LayerNorm -> mean over tokens -> Linear

The same code runs the ANN (``(B, ...)`` arrays) and the multi-step SNN (``(T, B, ...)``: every layer
computes all T steps at once; the IF neurons scan the time axis). Only the :class:`~mst_ref.engine.modes.Mode`
passed to :meth:`MST.forward` differs: see :mod:`mst_ref.engine.modes`. The SNN's time loop, chunking and
results live in :mod:`mst_ref.engine.simulate`.
"""

import functools

import numpy as np

from . import mst_fast as fused
from ..nn.attention import window_attention
from ..nn.layers import batch_norm, bn_params, head, layer_norm, linear, patch_embed
from .mst_layout import MSTConfig, check_state, infer_config, random_state_dict, readable_chunk, site_names
from ..nn.merging import patch_merging
from ..engine.network import SpikingNetwork
from ..nn.windows import cyclic_shift, window_partition, window_reverse

__all__ = ["MST", "MSTConfig"]

_INTEGER_KEYS = ("relative_position_index", "num_batches_tracked")


class MST(SpikingNetwork):
    """A Masked Spiking Transformer with its weights.

    Build one with :meth:`from_state_dict` (a checkpoint's state dict) or :meth:`random`.

    Attributes
    ----------
    config : MSTConfig
    state : dict of {str: ndarray}
        The official state dict, float entries in ``dtype``.
    dtype : np.dtype
        float32 (default, as published) or float64; every forward computes in it.
    site_names : list of str
        The activation sites in forward order (124 for Swin-T).
    probe_names : list of str
        What else ``record`` can keep (:data:`mst_ref.engine.modes.PROBES`): each block's attention
        probabilities ``<block>.attn.softmax`` and each site's membrane potential ``<site>.membrane``.
    """

    def __init__(self, config, state, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        check_state(state, config)
        self.state = {k: np.array(v, dtype=np.int64 if k.endswith(_INTEGER_KEYS) else self.dtype, order="C")
                      for k, v in state.items()}
        self.site_names = site_names(config)
        self.probe_names = ([f"layers.{i}.blocks.{j}.attn.softmax" for i, st in enumerate(config.stages)
                             for j in range(st.depth)] + [f"{n}.membrane" for n in self.site_names])

    @classmethod
    def from_state_dict(cls, state, img_size=None, dtype=np.float32, qcfs_levels=16):
        """Build the model from an official state dict, reading the architecture off its shapes.

        Parameters
        ----------
        state : dict of {str: array-like}
            The ``model`` entry of an official checkpoint (docs/mst.md section 7).
        img_size : int or None
            Input resolution; needed only when the checkpoint has no shifted-window block.
        dtype : float32 or float64
        qcfs_levels : int
            L of the QCFS sites (16 in the published training; not stored in checkpoints).

        Raises
        ------
        ValueError
            If the image size cannot be inferred and is not given, or if any key is missing,
            unexpected or mis-shaped (all of them listed).
        """
        return cls(infer_config(state, img_size, qcfs_levels), state, dtype)

    @classmethod
    def random(cls, config, rng, dtype=np.float32):
        """A model with random weights in the official layout (:func:`mst_ref.models.mst_layout.random_state_dict`)."""
        return cls(config, random_state_dict(config, rng, dtype), dtype)

    # ------------------------------------------------------------------ forward pass

    def forward(self, images, mode):
        """The forward pass with a given mode.

        Parameters
        ----------
        images : (B, Cin, H, W) ndarray of ``dtype``
            Checked and cast by the public entry points (:meth:`ann_forward`, :meth:`snn_forward`).
        mode : Mode
            ANN, or SNN with ``mode.steps`` steps.

        Returns
        -------
        logits : (B, K) ndarray (ANN) or (T, B, K) head outputs of each step (SNN)

        Notes
        -----
        A spiking mode without compensation (and ``mode.fast``, the default) runs the same network
        through the fused kernels of :mod:`mst_ref.models.mst_fast`; the code below is the readable version
        (also when a probe, such as the attention probabilities, is recorded: the kernels do not keep them).
        """
        if fused.supports(mode) and not mode.probing:
            return fused.forward(self, images, mode)
        s = self.state
        x = patch_embed(images, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"])  # (B, N, C)
        x = batch_norm(x, *bn_params(s, "patch_embed.norm"))  # (B, N, C)
        x = mode.enter_time(x)  # (T, B, N, C) in the SNN: the image is fed at every step
        x = mode.site("patch_embed.proj_if", x, s["patch_embed.proj_if.up"])
        last = len(self.config.depths) - 1
        for i, stage in enumerate(self.config.stages):
            for j in range(stage.depth):
                x = self._block(x, f"layers.{i}.blocks.{j}", stage, stage.shift(j), mode)
            if i < last:
                x = patch_merging(x, s, f"layers.{i}.downsample", stage.resolution, mode)  # (..., N/4, 2C)
        final_norm = functools.partial(layer_norm, weight=s["norm.weight"], bias=s["norm.bias"])
        x = mode.analog("norm", final_norm, x)  # (..., N, F)
        return head(x, s["head.weight"], s["head.bias"])  # (..., K)

    def _block(self, x, prefix, stage, shift, mode):
        """One MST block; x (..., N, C) -> (..., N, C)."""
        s = self.state
        res, ws = stage.resolution, stage.window
        # h = Q[shortcut1_if](BN[norm1](x))
        h = mode.site(f"{prefix}.shortcut1_if", batch_norm(x, *bn_params(s, f"{prefix}.norm1")),
                      s[f"{prefix}.shortcut1_if.up"])
        h = h.reshape(*h.shape[:-2], res, res, stage.dim)  # (..., H, W, C)
        if shift:
            h = cyclic_shift(h, -shift)  # (..., H, W, C)
        h = window_partition(h, ws)  # (..., nW, Ws*Ws, C)
        h = window_attention(h, s, f"{prefix}.attn", stage.heads, mode, s.get(f"{prefix}.attn_mask"))
        h = window_reverse(h, ws, res, res)  # (..., H, W, C)
        if shift:
            h = cyclic_shift(h, shift)  # (..., H, W, C)
        # x = BN[norm2](x + h); x = x + MLP(Q[shortcut2_if](x))
        x = batch_norm(x + h.reshape(x.shape), *bn_params(s, f"{prefix}.norm2"))  # (..., N, C)
        m = mode.site(f"{prefix}.shortcut2_if", x, s[f"{prefix}.shortcut2_if.up"])
        return x + self._mlp(m, f"{prefix}.mlp", mode)

    def _mlp(self, x, prefix, mode):
        """Linear -> [BN] -> Q[fc1_if] -> Linear -> [BN] -> Q[fc2_if]; x (..., N, C) -> (..., N, C)."""
        s = self.state
        h = linear(x, s[f"{prefix}.fc1.weight"], s[f"{prefix}.fc1.bias"])  # (..., N, rC)
        if self.config.mlp_norm:
            h = batch_norm(h, *bn_params(s, f"{prefix}.norm1"))
        h = mode.site(f"{prefix}.fc1_if", h, s[f"{prefix}.fc1_if.up"])
        h = linear(h, s[f"{prefix}.fc2.weight"], s[f"{prefix}.fc2.bias"])  # (..., N, C)
        if self.config.mlp_norm:
            h = batch_norm(h, *bn_params(s, f"{prefix}.norm2"))
        return mode.site(f"{prefix}.fc2_if", h, s[f"{prefix}.fc2_if.up"])

    # ------------------------------------------------------------------ time chunks

    def default_chunk(self, batch_size, timesteps, mode):
        """Steps per multi-step pass: about 128 MiB per pass on the fused path
        (:func:`mst_ref.models.mst_fast.default_chunk`), 1 GiB on the readable one
        (:func:`mst_ref.models.mst_layout.readable_chunk`). Results do not depend on it."""
        pick = fused.default_chunk if mode is not None and fused.supports(mode) else readable_chunk
        return pick(self.config, batch_size, self.dtype, timesteps)
