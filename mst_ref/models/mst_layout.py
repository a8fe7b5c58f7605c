"""The architecture as numbers: MSTConfig, the checkpoint layout it implies, and the way back.

An MST is fixed by a handful of integers (docs/mst.md section 3). From them follow every stage's width,
token grid and window, the 124 activation-site names of Swin-T, and every key and shape of the official
state dict (docs/mst.md section 7). Conversely, everything but the image size can be read off the shapes of
a state dict, and the image size too when a shifted-window block stores its ``attn_mask``.

This module holds that bookkeeping, so that :mod:`mst_ref.models.mst` only assembles the forward pass:
:class:`MSTConfig`, :func:`site_names`, :func:`expected_shapes`, :func:`infer_config`,
:func:`check_state` / :func:`state_problems` and :func:`random_state_dict` (random weights in the official layout, for tests,
tutorials and benchmarks).
"""

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..nn.windows import relative_position_index, shift_attention_mask

__all__ = ["MSTConfig", "Stage", "site_names", "expected_shapes", "infer_config", "check_state",
           "state_problems", "random_state_dict"]


class Stage(NamedTuple):
    """Geometry of stage i: channels, token grid side, effective window, heads, blocks, MLP width."""

    dim: int  # C of the stage, embed_dim * 2**i
    resolution: int  # H = W of the token grid
    window: int  # Ws actually used: the configured one, or the resolution if that is not larger
    heads: int  # nH
    depth: int  # blocks
    hidden: int  # MLP hidden channels, int(dim * mlp_ratio)

    def shift(self, j):
        """Roll of block j: 0 for even j, Ws // 2 for odd j, 0 when one window covers the grid."""
        return self.window // 2 if j % 2 == 1 and self.window < self.resolution else 0


@dataclass
class MSTConfig:
    """Hyper-parameters of a Masked Spiking Transformer (defaults: the published Swin-T MST)."""

    img_size: int = 224  # input resolution (square images)
    patch_size: int = 4  # patch embedding kernel = stride
    in_chans: int = 3  # image channels
    num_classes: int = 1000  # classes of the head
    embed_dim: int = 96  # channels of stage 0
    depths: tuple = (2, 2, 6, 2)  # blocks per stage
    num_heads: tuple = (3, 6, 12, 24)  # attention heads per stage
    window_size: int = 7  # Ws
    mlp_ratio: float = 4.0  # MLP hidden width / channels
    mlp_norm: bool = True  # BatchNorm inside the MLP (the official 'imagenet' variant)
    qcfs_levels: int = 16  # L of QCFS (not stored in checkpoints)
    qkv_bias: bool = True  # bias of the qkv projection
    mask_ratio: float = 0.0  # RSM ratio the model was trained with (metadata: pass it as mask_ratio)

    def __post_init__(self):
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        names = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "window_size")
        values = {k: getattr(self, k) for k in (*names, "qcfs_levels")}
        values |= {f"depths[{i}]": d for i, d in enumerate(self.depths)}
        values |= {f"num_heads[{i}]": h for i, h in enumerate(self.num_heads)}
        bad = [f"{k}={v!r} (a positive int)" for k, v in values.items() if not _positive_int(v)]
        if not self.depths or len(self.num_heads) != len(self.depths):
            bad.append(f"depths={self.depths}, num_heads={self.num_heads} (one entry per stage)")
        if not self.mlp_ratio > 0:
            bad.append(f"mlp_ratio={self.mlp_ratio!r} (positive)")
        if not 0 <= self.mask_ratio <= 1:
            bad.append(f"mask_ratio={self.mask_ratio!r} (in [0, 1])")
        if bad:
            raise ValueError(f"invalid MSTConfig: {'; '.join(bad)}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        for i, s in enumerate(self.stages):
            last = i == len(self.depths) - 1
            if s.resolution < 1:
                raise ValueError(f"stage {i} has no tokens: img_size {self.img_size} / patch_size "
                                 f"{self.patch_size} / 2**{i} < 1; use fewer stages or larger images")
            if s.resolution % s.window or (not last and s.resolution % 2) or s.dim % s.heads or s.hidden < 1:
                raise ValueError(f"stage {i} does not fit: {s.resolution}x{s.resolution} tokens must split "
                                 f"into {s.window}x{s.window} windows (and halve if not the last stage), "
                                 f"{s.dim} channels into {s.heads} heads; change img_size, patch_size, "
                                 "window_size or num_heads")

    @property
    def stages(self):
        """list of :class:`Stage`, one per stage."""
        out = []
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            dim, res = self.embed_dim * 2**i, self.img_size // self.patch_size // 2**i
            # Swin: if the grid is not larger than the window, one window covers it and nothing shifts
            window = min(self.window_size, res)
            out.append(Stage(dim, res, window, heads, depth, int(dim * self.mlp_ratio)))
        return out

    @property
    def num_features(self):
        """F, channels of the last stage (the head's input)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    family = "mst"

    # the module that prices this family's spikes, loaded by name by mst_ref.engine.energy (it imports
    # this module, so this module cannot import it)
    energy_module = "mst_ref.models.mst_energy"


def _positive_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


def site_names(config):
    """Names of all activation sites in forward order (the checkpoint keys without ``.up``).

    Swin-T has 124: ``patch_embed.proj_if``, ten per block
    (``layers.{i}.blocks.{j}.`` + shortcut1_if, attn.q_if, attn.k_if, attn.attn_if, attn.v_if,
    attn.attn_v_if, attn.proj_if, shortcut2_if, mlp.fc1_if, mlp.fc2_if) and
    ``layers.{i}.downsample.reduction_if`` after every stage but the last.
    """
    block_sites = ("shortcut1_if", "attn.q_if", "attn.k_if", "attn.attn_if", "attn.v_if", "attn.attn_v_if",
                   "attn.proj_if", "shortcut2_if", "mlp.fc1_if", "mlp.fc2_if")
    names = ["patch_embed.proj_if"]
    for i, stage in enumerate(config.stages):
        names += [f"layers.{i}.blocks.{j}.{s}" for j in range(stage.depth) for s in block_sites]
        if i < len(config.depths) - 1:
            names.append(f"layers.{i}.downsample.reduction_if")
    return names


def _bn(prefix, c):
    """Keys of BatchNorm ``prefix`` over c channels."""
    keys = {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}
    return keys | {f"{prefix}.num_batches_tracked": ()}


def _attention(prefix, c, stage, qkv_bias):
    """Keys of one window attention."""
    n = stage.window * stage.window
    keys = {f"{prefix}.relative_position_bias_table": ((2 * stage.window - 1) ** 2, stage.heads),
            f"{prefix}.relative_position_index": (n, n),
            f"{prefix}.qkv.weight": (3 * c, c)}
    keys |= {f"{prefix}.qkv.bias": (3 * c,)} if qkv_bias else {}
    keys |= {f"{prefix}.{q}.up": (1,) for q in ("q_if", "k_if", "v_if", "attn_if", "attn_v_if")}
    return keys | {f"{prefix}.proj.weight": (c, c), f"{prefix}.proj.bias": (c,), f"{prefix}.proj_if.up": (1,)}


def _mlp(prefix, c, hidden, mlp_norm):
    """Keys of one MLP (with BatchNorms in the 'imagenet' variant)."""
    keys = {f"{prefix}.fc1.weight": (hidden, c), f"{prefix}.fc1.bias": (hidden,)}
    keys |= _bn(f"{prefix}.norm1", hidden) if mlp_norm else {}
    keys |= {f"{prefix}.fc1_if.up": (1,), f"{prefix}.fc2.weight": (c, hidden), f"{prefix}.fc2.bias": (c,)}
    keys |= _bn(f"{prefix}.norm2", c) if mlp_norm else {}
    return keys | {f"{prefix}.fc2_if.up": (1,)}


def expected_shapes(config):
    """Every key of the official state dict and its shape (docs/mst.md section 7), in module order.

    Returns
    -------
    shapes : dict of {str: tuple}
        Swin-T: 518 keys with ``mlp_norm``, 398 without.
    """
    c0, p = config.embed_dim, config.patch_size
    out = {"patch_embed.proj.weight": (c0, config.in_chans, p, p), "patch_embed.proj.bias": (c0,),
           "patch_embed.proj_if.up": (1,), **_bn("patch_embed.norm", c0)}
    for i, s in enumerate(config.stages):
        c = s.dim
        for j in range(s.depth):
            b = f"layers.{i}.blocks.{j}"
            if s.shift(j):
                n = s.window * s.window
                out[f"{b}.attn_mask"] = ((s.resolution // s.window) ** 2, n, n)
            out |= _bn(f"{b}.norm1", c) | {f"{b}.shortcut1_if.up": (1,)}
            out |= _attention(f"{b}.attn", c, s, config.qkv_bias)
            out |= _bn(f"{b}.norm2", c) | {f"{b}.shortcut2_if.up": (1,)}
            out |= _mlp(f"{b}.mlp", c, s.hidden, config.mlp_norm)
        if i < len(config.depths) - 1:
            d = f"layers.{i}.downsample"
            out |= {f"{d}.reduction.weight": (2 * c, 4 * c), **_bn(f"{d}.norm", 4 * c)}
            out[f"{d}.reduction_if.up"] = (1,)
    f = config.num_features
    out |= {"norm.weight": (f,), "norm.bias": (f,), "head.weight": (config.num_classes, f),
            "head.bias": (config.num_classes,)}
    return out


def _window_of_table(rows, key):
    """Ws from the (2 Ws - 1)^2 rows of a relative position bias table."""
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise ValueError(f"{key} has {rows} rows; a relative position bias table has (2 Ws - 1)^2")
    return (side + 1) // 2


def infer_config(state, img_size=None, qcfs_levels=16):
    """Read an :class:`MSTConfig` off the shapes of a state dict.

    Parameters
    ----------
    state : dict of {str: array-like}
        Official layout (docs/mst.md section 7).
    img_size : int or None
        Needed only when the checkpoint does not determine it; checked against it otherwise.
    qcfs_levels : int
        L; checkpoints do not store it.

    Returns
    -------
    config : MSTConfig

    Raises
    ------
    ValueError
        Naming the key whose shape does not fit, for any state dict (degenerate shapes included).

    Notes
    -----
    embed_dim, in_chans and the patch size come from ``patch_embed.proj.weight``; depths from counting
    blocks; heads and the window from the relative position bias tables ((2 Ws - 1)^2 rows, nH
    columns); mlp_ratio from ``mlp.fc1.weight``; num_classes from ``head.weight``; the MLP variant from
    ``mlp.norm1`` keys. The image size from a shifted block: its ``attn_mask`` has nW = (H / Ws)^2
    windows, so H = Ws sqrt(nW) and img_size = H 2^i patch; or from a stage whose window is smaller
    than stage 0's (then Ws = H). Block indices must run 0, 1, ..., n - 1 in every stage, and stage i
    must hold ``qkv.weight`` of shape (3 C_i, C_i) with C_i = embed_dim 2^i, so the depths and the number
    of stages are bounded by the keys and shapes present. Shapes are only read here;
    :func:`check_state` checks them all.
    """

    def shape(key, ndim):
        if key not in state:
            raise ValueError(f"cannot read the architecture off this state dict: it has no {key!r} "
                             f"(an official MST state dict is expected; its keys start {sorted(state)[:4]})")
        dims = np.shape(state[key])
        if len(dims) != ndim or not all(n > 0 for n in dims):
            raise ValueError(f"{key} must have {ndim} positive dimensions; got shape {dims}")
        return dims

    embed_dim, in_chans, patch, side = shape("patch_embed.proj.weight", 4)
    if patch != side:
        raise ValueError(f"patch_embed.proj.weight must be (C, in_chans, p, p); got {(embed_dim, in_chans, patch, side)}")
    blocks = {}
    for key in state:
        m = re.match(r"layers\.(\d{1,9})\.blocks\.(\d{1,9})\.", key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ValueError(f"the state dict's stages must be layers.0, layers.1, ...; found {sorted(blocks)[:10]}")
    for i in range(len(blocks)):
        if sorted(blocks[i]) != list(range(len(blocks[i]))):
            raise ValueError(f"the blocks of stage {i} must be layers.{i}.blocks.0, 1, ...; found "
                             f"{sorted(blocks[i])[:10]}{' ...' if len(blocks[i]) > 10 else ''}")
        dim = embed_dim * 2**i
        if shape(f"layers.{i}.blocks.0.attn.qkv.weight", 2) != (3 * dim, dim):
            raise ValueError(f"layers.{i}.blocks.0.attn.qkv.weight must be (3 C, C) with C = {dim} "
                             f"(embed_dim * 2**{i}); got {np.shape(state[f'layers.{i}.blocks.0.attn.qkv.weight'])}")
    depths = [len(blocks[i]) for i in range(len(blocks))]
    tables = [shape(f"layers.{i}.blocks.0.attn.relative_position_bias_table", 2) for i in range(len(depths))]
    windows = [_window_of_table(t[0], f"layers.{i}.blocks.0.attn.relative_position_bias_table")
               for i, t in enumerate(tables)]

    found = None
    for i, depth in enumerate(depths):
        for j in range(depth):
            if found is None and f"layers.{i}.blocks.{j}.attn_mask" in state:
                n_windows = shape(f"layers.{i}.blocks.{j}.attn_mask", 3)[0]
                found = math.isqrt(n_windows) * windows[i] * 2**i * patch
        if found is None and windows[i] < windows[0]:
            found = windows[i] * 2**i * patch  # a window smaller than stage 0's is the whole grid
    if img_size is None and found is None:
        raise ValueError("this checkpoint does not determine the image size (no shifted-window block): "
                         "pass img_size=")
    if img_size is not None and found is not None and img_size != found:
        raise ValueError(f"img_size={img_size} disagrees with the checkpoint, whose attention windows "
                         f"imply img_size={found}")
    return MSTConfig(
        img_size=img_size if img_size is not None else found, patch_size=patch, in_chans=in_chans,
        num_classes=shape("head.weight", 2)[0], embed_dim=embed_dim, depths=tuple(depths),
        num_heads=tuple(t[1] for t in tables), window_size=windows[0],
        mlp_ratio=shape("layers.0.blocks.0.mlp.fc1.weight", 2)[0] / embed_dim,
        mlp_norm=any(".mlp.norm1." in k for k in state), qcfs_levels=qcfs_levels,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state)


def state_problems(state, config):
    """Every way a state dict does not fit the layout of ``config``; [] if it fits.

    Missing, unexpected, mis-shaped and mistyped keys, and ``relative_position_index`` entries outside
    [0, (2 Ws - 1)^2) (the rows of the bias table they index: a negative one would wrap silently).

    Returns
    -------
    problems : list of str
        One line per kind of problem, listing the keys.
    """
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k}: expected {expected[k]}, got {np.shape(v)}" for k, v in state.items()
                 if k in expected and np.shape(v) != expected[k]]
    integer = ("relative_position_index", "num_batches_tracked")
    mistyped = [f"{k}: {np.asarray(v).dtype}" for k, v in state.items() if k in expected and
                np.asarray(v).dtype.kind not in ("iu" if k.endswith(integer) else "fiu")]
    out_of_range = []
    for k, v in state.items():
        if k.endswith(".relative_position_index") and k in expected and np.shape(v) == expected[k] and \
                np.asarray(v).dtype.kind in "iu" and np.size(v):
            rows = expected[k.replace("relative_position_index", "relative_position_bias_table")][0]
            if np.min(v) < 0 or np.max(v) >= rows:
                out_of_range.append(f"{k}: values in [{np.min(v)}, {np.max(v)}], expected [0, {rows - 1}]")
    problems = {"missing keys": missing, "unexpected keys": unexpected, "mis-shaped keys": misshaped,
                "non-numeric keys": mistyped, "index buffers out of range": out_of_range}
    return [f"{title} ({len(items)}): {', '.join(items[:20])}{' ...' if len(items) > 20 else ''}"
            for title, items in problems.items() if items]


def check_state(state, config):
    """Check every key, shape, dtype and index buffer of a state dict against the layout of ``config``.

    Raises
    ------
    ValueError
        Listing all problems of :func:`state_problems` at once.
    """
    problems = state_problems(state, config)
    if problems:
        raise ValueError(f"state dict does not match the MST layout of {config}:\n  " + "\n  ".join(problems))


def random_state_dict(config, rng, dtype=np.float32):
    """Random weights in the official layout, with non-trivial thresholds and BN statistics.

    Parameters
    ----------
    config : MSTConfig
    rng : np.random.Generator
    dtype : float dtype of the float entries

    Returns
    -------
    state : dict of {str: ndarray}
        Keys and shapes of :func:`expected_shapes`. Thresholds ``up`` ~ U(0.5, 2); weights
        ~ N(0, 1 / fan_in); BN weight ~ U(0.5, 1.5), bias ~ N(0, 0.3^2), running mean ~ N(0, 0.2^2),
        running var ~ U(0.5, 2); bias tables ~ N(0, 0.5^2); index and shift masks as Swin builds them.
    """
    stages = config.stages
    state = {}
    for key, shape in expected_shapes(config).items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = np.array(0, dtype=np.int64)
            continue
        if leaf == "relative_position_index":
            state[key] = relative_position_index(math.isqrt(shape[0]))
            continue
        if leaf == "attn_mask":
            s = stages[int(key.split(".")[1])]
            value = shift_attention_mask(s.resolution, s.window, s.window // 2)
        elif leaf == "up":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "relative_position_bias_table":
            value = rng.normal(0.0, 0.5, shape)
        elif leaf == "weight" and len(shape) > 1:  # linear / conv: N(0, 1 / fan_in)
            value = rng.normal(0.0, 1.0, shape) / math.sqrt(math.prod(shape[1:]))
        elif leaf == "weight":  # BN or LayerNorm scale
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            value = rng.normal(0.0, 0.2, shape)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # biases
            value = rng.normal(0.0, 0.3 if ".norm" in key or key.startswith("norm") else 0.1, shape)
        state[key] = np.asarray(value, dtype=dtype)
    return state


def readable_chunk(config, batch_size, dtype, timesteps, budget_bytes=2**30):
    """Steps per multi-step pass that keep one pass within about ``budget_bytes``.

    The estimate: a dozen live arrays of the largest per-step activation (the MLP hidden layer or the
    attention scores, whose masks draw float64 uniforms) per image. Swin-T at 224, batch 1, float32:
    18 steps per pass.
    """
    largest = max(max(s.resolution**2 * max(s.hidden, 3 * s.dim),
                      2 * s.resolution**2 * s.window**2 * s.heads) for s in config.stages)
    per_step = 12 * batch_size * largest * np.dtype(dtype).itemsize
    return max(1, min(timesteps, budget_bytes // per_step))
