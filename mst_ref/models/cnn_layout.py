"""The QCFS CNN baselines' layout: their config, geometry, site names and official state-dict keys.

The model that computes with them is :mod:`mst_ref.models.qcfs_cnn`; the energy table that prices
their spikes is :mod:`mst_ref.models.cnn_energy` (it reads this module; this module imports neither).


What the official QCFS code computes (github putshua/ANN_SNN_QCFS: Models/layer.py, Models/ResNet.py,
Models/VGG.py, main_test.py), in our words; docs/qcfs_cnn.md has the longer version.

Activation site (``IF`` in the official code; one learned scalar threshold ``thresh``, shape (1,),
called ``up`` in the older putshua/SNN_conversion_QCFS checkpoints):

- ANN: ``y = thresh * floor(clip(x / thresh, 0, 1) * L + 1/2) / L`` with L = 8 (the official test
  sets L = 8; L is not stored in a checkpoint) - :func:`mst_ref.core.qcfs.qcfs_clamp_first`;
- SNN: the membrane starts at ``thresh / 2`` at every forward call (no state survives between
  images), then per step ``v += x_t; s = [v >= thresh]; out = s * thresh; v -= out`` (reset by
  subtraction, at most one spike per step; L plays no part) - the IF neuron of :mod:`mst_ref.engine.modes`.

ResNet-18 (CIFAR variant; widths 64/128/256/512 scaled by the width multiplier)::

    conv1 = Conv3x3(Cin -> c0) -> BN -> IF[conv1.2]
    conv{2,3,4,5}_x: 2 BasicBlocks each, strides 1/2/2/2:
        h = Conv3x3(stride) -> BN -> IF[residual_function.2] -> Conv3x3 -> BN
        shortcut = Conv1x1(stride) -> BN  if the stride or the width changes, else the identity
        x = IF[act](h + shortcut(x))                   # the site is after the residual add
    AdaptiveAvgPool2d(1) -> Linear(c5 -> K)             # 17 sites

VGG-16 (CIFAR variant): five ``layerN`` Sequentials of [Conv3x3(pad 1, bias) -> BN -> IF -> Dropout]
per conv (widths 64,64 | 128,128 | 256 x3 | 512 x3 | 512 x3, scaled), each ending with
AvgPool2d(2, 2) (max pooling replaced by average pooling); then Flatten -> Linear(C*(S/32)^2 -> 4096)
-> IF[classifier.2] -> Dropout -> Linear(4096 -> 4096) -> IF[classifier.5] -> Dropout -> Linear(-> K)
(hidden width scaled too; 15 sites). Five poolings: the image side must be a multiple of 32.

SNN read-out (official ``val``): the analog image is repeated at every step (direct coding), the head
outputs of the T steps are averaged and the argmax is the prediction; the cumulative sum used by
:class:`mst_ref.engine.simulate.SNNResult` has the same argmax at every step.

Unlike MST, nothing between the sites is a per-step analog operation (convolution, BN, average pooling
and the residual add are all affine), so the SNN's mean output converges to the QCFS ANN's as T grows,
with no plateau.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from ..nn.conv import conv_output_size

__all__ = ["CNNConfig", "ARCHS", "is_cnn_state", "rename_legacy_keys", "infer_cnn_config",
           "cnn_site_names", "expected_cnn_shapes", "check_cnn_state", "cnn_state_problems", "random_cnn_state_dict",
           "resnet_blocks", "vgg_convs"]

ARCHS = ("resnet18", "vgg16")
RESNET_STAGES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")
RESNET_WIDTHS = (64, 128, 256, 512)
RESNET_STRIDES = (1, 2, 2, 2)
VGG16_LAYERS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG_HIDDEN = 4096
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _scaled(c, width):
    return max(1, int(round(c * width)))


@dataclass(frozen=True)
class CNNConfig:
    """Architecture of a QCFS ResNet-18 or VGG-16.

    Attributes
    ----------
    arch : {"resnet18", "vgg16"}
    in_chans : int
        Image channels (3 in the official code; 1 for Fashion-MNIST).
    img_size : int
        Image side (32 for CIFAR; a multiple of 32 for VGG-16).
    num_classes : int
        K.
    widths : tuple of int
        ResNet-18: channels of conv1 and of the four stages (c0, c2, c3, c4, c5); VGG-16: the 13 conv
        widths. The official models have (64, 64, 128, 256, 512) and (64, 64, 128, ..., 512).
    hidden : int
        VGG-16: units of the two hidden classifier layers (4096 officially); 0 for ResNet-18.
    width : float
        The width multiplier the channel counts were scaled by (1.0 officially), for the record.
    qcfs_levels : int
        L of the ANN's QCFS (8, as the official evaluation sets).
    mask_ratio : float
        The RSM ratio the model was trained with (0: none), for the record.
    class_names : tuple of str
        Names of the K classes, when the checkpoint records them.
    """

    arch: str = "resnet18"
    in_chans: int = 3
    img_size: int = 32
    num_classes: int = 10
    widths: tuple = (64, 64, 128, 256, 512)
    hidden: int = 0
    width: float = 1.0
    qcfs_levels: int = 8
    mask_ratio: float = 0.0
    class_names: tuple = field(default=())

    family = "qcfs_cnn"

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        for name in ("in_chans", "img_size", "num_classes", "qcfs_levels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
        n = 5 if self.arch == "resnet18" else 13
        if len(self.widths) != n or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1
                                         for w in self.widths):
            raise ValueError(f"widths of {self.arch} must be {n} integers >= 1; got {self.widths!r}")
        if self.arch == "vgg16":
            if self.img_size % 32:
                raise ValueError(f"VGG-16 pools five times: img_size must be a multiple of 32; got "
                                 f"{self.img_size} (pad 28-px images to 32)")
            if self.hidden < 1:
                raise ValueError(f"VGG-16 needs hidden >= 1 classifier units; got {self.hidden}")
        elif self.img_size < 8:
            raise ValueError(f"ResNet-18 halves the image three times: img_size must be >= 8; got {self.img_size}")

    @classmethod
    def official(cls, arch, in_chans=3, img_size=32, num_classes=10, width=1.0, **kwargs):
        """The official architecture with channel counts scaled by ``width`` (at least 1 each)."""
        if arch == "resnet18":
            widths = tuple(_scaled(c, width) for c in (64,) + RESNET_WIDTHS)
            return cls("resnet18", in_chans, img_size, num_classes, widths, 0, width, **kwargs)
        widths = tuple(_scaled(c, width) for layer in VGG16_LAYERS for c in layer)
        return cls("vgg16", in_chans, img_size, num_classes, widths, _scaled(VGG_HIDDEN, width), width, **kwargs)

    # the module that prices this family's spikes, loaded by name by mst_ref.engine.energy (it imports
    # this module, so this module cannot import it)
    energy_module = "mst_ref.models.cnn_energy"


# ---------------------------------------------------------------------------------- layout


def resnet_blocks(config):
    """(prefix, c_in, c_out, stride, input side, has shortcut conv) of the 8 BasicBlocks, in order."""
    out, c_in, side = [], config.widths[0], config.img_size
    for stage, c_out, stride in zip(RESNET_STAGES, config.widths[1:], RESNET_STRIDES):
        for j in range(2):
            s = stride if j == 0 else 1
            out.append((f"{stage}.{j}", c_in, c_out, s, side, s != 1 or c_in != c_out))
            side, c_in = conv_output_size(side, 3, s, 1), c_out
    return out


def vgg_convs(config):
    """(prefix, site, c_in, c_out, input side, pooled after) of the 13 convolutions, in order."""
    out, c_in, side, n = [], config.in_chans, config.img_size, 0
    for i, layer in enumerate(VGG16_LAYERS):
        for m in range(len(layer)):
            c_out = config.widths[n]
            out.append((f"layer{i + 1}.{4 * m}", f"layer{i + 1}.{4 * m + 2}", c_in, c_out, side, m == len(layer) - 1))
            c_in, n = c_out, n + 1
        side //= 2
    return out


def cnn_site_names(config):
    """The activation sites in forward order (threshold key without ``.thresh``): 17 or 15."""
    if config.arch == "resnet18":
        names = ["conv1.2"]
        for prefix, *_ in resnet_blocks(config):
            names += [f"{prefix}.residual_function.2", f"{prefix}.act"]
        return names
    return [site for _, site, *_ in vgg_convs(config)] + ["classifier.2", "classifier.5"]


def _bn_shapes(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def expected_cnn_shapes(config):
    """Every state-dict key of the architecture and its shape (official names)."""
    shapes = {}
    if config.arch == "resnet18":
        c0 = config.widths[0]
        shapes["conv1.0.weight"] = (c0, config.in_chans, 3, 3)
        shapes |= _bn_shapes("conv1.1", c0) | {"conv1.2.thresh": (1,)}
        for prefix, c_in, c_out, stride, side, has_sc in resnet_blocks(config):
            r = f"{prefix}.residual_function"
            shapes[f"{r}.0.weight"] = (c_out, c_in, 3, 3)
            shapes |= _bn_shapes(f"{r}.1", c_out) | {f"{r}.2.thresh": (1,), f"{r}.3.weight": (c_out, c_out, 3, 3)}
            shapes |= _bn_shapes(f"{r}.4", c_out)
            if has_sc:
                shapes[f"{prefix}.shortcut.0.weight"] = (c_out, c_in, 1, 1)
                shapes |= _bn_shapes(f"{prefix}.shortcut.1", c_out)
            shapes[f"{prefix}.act.thresh"] = (1,)
        shapes |= {"fc.weight": (config.num_classes, config.widths[-1]), "fc.bias": (config.num_classes,)}
        return shapes
    for conv, site, c_in, c_out, side, pooled in vgg_convs(config):
        layer, idx = conv.rsplit(".", 1)
        shapes |= {f"{conv}.weight": (c_out, c_in, 3, 3), f"{conv}.bias": (c_out,)}
        shapes |= _bn_shapes(f"{layer}.{int(idx) + 1}", c_out) | {f"{site}.thresh": (1,)}
    spatial = (config.img_size // 32) ** 2
    h, k = config.hidden, config.num_classes
    shapes |= {"classifier.1.weight": (h, config.widths[-1] * spatial), "classifier.1.bias": (h,),
               "classifier.2.thresh": (1,), "classifier.4.weight": (h, h), "classifier.4.bias": (h,),
               "classifier.5.thresh": (1,), "classifier.7.weight": (k, h), "classifier.7.bias": (k,)}
    return shapes


def is_cnn_state(state):
    """The CNN architecture a state dict's keys belong to ("resnet18", "vgg16"), or None."""
    keys = set(state)
    if "conv1.0.weight" in keys and "fc.weight" in keys:
        return "resnet18"
    if "layer1.0.weight" in keys and "classifier.1.weight" in keys:
        return "vgg16"
    return None


def rename_legacy_keys(state):
    """Official key names from those of putshua/SNN_conversion_QCFS (``relu.up`` -> ``act.thresh``,
    ``*.up`` -> ``*.thresh``), as the official main_test.py renames them; other keys unchanged."""
    out = {}
    for key, value in state.items():
        if key.endswith(".relu.up"):
            key = key[: -len("relu.up")] + "act.thresh"
        elif key.endswith(".up"):
            key = key[: -len("up")] + "thresh"
        out[key] = value
    return out


def _shape_of(state, key, ndim):
    shape = tuple(np.shape(state[key])) if key in state else None
    if shape is None or len(shape) != ndim or 0 in shape:
        return None
    return shape


def infer_cnn_config(state, img_size=None, qcfs_levels=8, meta_config=None):
    """Read the architecture of an official QCFS ResNet-18 / VGG-16 state dict off its shapes.

    Parameters
    ----------
    state : dict of {str: array-like}
        Official key names (``rename_legacy_keys`` applied).
    img_size : int or None
        Image side. None: the checkpoint's recorded ``img_size`` if any, else VGG-16's from its
        classifier's input width, else 32 (ResNet-18's global pooling accepts any size).
    qcfs_levels : int
        L.
    meta_config : dict or None
        The plain config saved beside the weights (width, mask ratio, class names), if any.

    Raises
    ------
    ValueError
        Not a ResNet-18 / VGG-16 layout, or shapes from which no such network can be read. The other
        keys and the values are checked by :func:`cnn_state_problems` (the model's constructor runs it).
    """
    arch = is_cnn_state(state)
    meta = meta_config if isinstance(meta_config, dict) else {}
    if arch is None:
        raise ValueError("not a QCFS ResNet-18 (conv1.0.weight, fc.weight) or VGG-16 (layer1.0.weight, "
                         "classifier.1.weight) state dict")
    if arch == "resnet18":
        c1 = _shape_of(state, "conv1.0.weight", 4)
        fc = _shape_of(state, "fc.weight", 2)
        heads = [_shape_of(state, f"{st}.0.residual_function.0.weight", 4) for st in RESNET_STAGES]
        if c1 is None or fc is None or None in heads:
            raise ValueError("ResNet-18 state dict: conv1.0.weight, fc.weight and conv{2..5}_x.0."
                             "residual_function.0.weight must be present with 4-d / 2-d non-empty shapes")
        widths = (c1[0],) + tuple(h[0] for h in heads)
        kwargs = dict(arch=arch, in_chans=c1[1], num_classes=fc[0], widths=widths, hidden=0)
        default_size = 32
    else:
        widths = []
        for conv, *_ in vgg_convs(CNNConfig.official("vgg16", 1, 32)):
            shape = _shape_of(state, f"{conv}.weight", 4)
            if shape is None:
                raise ValueError(f"VGG-16 state dict: {conv}.weight must be present with a 4-d non-empty shape "
                                 "(13 convolutions in layer1..layer5)")
            widths.append(shape[0])
        first = _shape_of(state, "layer1.0.weight", 4)
        c1 = _shape_of(state, "classifier.1.weight", 2)
        c7 = _shape_of(state, "classifier.7.weight", 2)
        if c1 is None or c7 is None:
            raise ValueError("VGG-16 state dict: classifier.1.weight and classifier.7.weight must be 2-d, non-empty")
        spatial = c1[1] // widths[-1]
        side = math.isqrt(spatial)
        default_size = 32 * side if side * side == spatial and spatial * widths[-1] == c1[1] else 32
        kwargs = dict(arch=arch, in_chans=first[1], num_classes=c7[0], widths=tuple(widths), hidden=c1[0])
    if img_size is None:
        img_size = meta.get("img_size", default_size)
    width = meta.get("width", widths[0] / 64)
    names = meta.get("class_names") or ()
    ratio = meta.get("mask_ratio", 0.0)
    try:
        return CNNConfig(img_size=img_size, qcfs_levels=qcfs_levels, width=float(width),
                         mask_ratio=float(ratio), class_names=tuple(str(n) for n in names), **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint config: {err}") from None


def check_cnn_state(state, config):
    """Raise ValueError listing every problem of :func:`cnn_state_problems` at once."""
    problems = cnn_state_problems(state, config)
    if problems:
        raise ValueError(f"{config.arch} state dict does not match the architecture ({len(problems)} "
                         "problem(s)): " + "; ".join(problems[:40]) + (" ..." if len(problems) > 40 else ""))


def cnn_state_problems(state, config):
    """Every missing, unexpected, mis-shaped or invalid entry of ``state`` (non-finite values,
    thresholds <= 0, negative variances), one line each; [] if none."""
    want = expected_cnn_shapes(config)
    problems = [f"missing {k} {want[k]}" for k in want if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in want]
    for k, shape in want.items():
        if k in state:
            got = tuple(np.shape(state[k]))
            if got != shape and not (k.endswith("num_batches_tracked") and got in ((), (1,))):
                problems.append(f"{k}: shape {got}, expected {shape}")
                continue
            v = np.asarray(state[k])
            if v.dtype.kind not in "fiu" and not k.endswith("num_batches_tracked"):
                problems.append(f"{k}: dtype {v.dtype}, expected a real number array")
            elif v.dtype.kind == "f" and not np.isfinite(v).all():
                problems.append(f"{k}: NaN or inf values")
            elif k.endswith(".thresh") and not (v > 0).all():
                problems.append(f"{k}: threshold {v.reshape(-1)[0]!r} must be > 0")
            elif k.endswith("running_var") and not (v >= 0).all():
                problems.append(f"{k}: negative variance")
    return problems


def random_cnn_state_dict(config, rng, dtype=np.float32):
    """Random weights in the official layout (He-scaled convs, BN statistics away from identity,
    thresholds in [0.5, 2])."""
    state = {}
    for key, shape in expected_cnn_shapes(config).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(0, dtype=np.int64)
        elif key.endswith("running_var"):
            state[key] = (rng.random(shape) + 0.5).astype(dtype)
        elif key.endswith("running_mean"):
            state[key] = (0.1 * rng.standard_normal(shape)).astype(dtype)
        elif key.endswith(".thresh"):
            state[key] = (0.5 + 1.5 * rng.random(shape)).astype(dtype)
        elif len(shape) == 1:
            centre = 1.0 if key.endswith(".weight") else 0.0
            state[key] = (centre + 0.2 * rng.standard_normal(shape)).astype(dtype)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)
    return state
