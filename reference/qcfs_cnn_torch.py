"""PyTorch twins of the official QCFS CNNs (ResNet-18, VGG-16), for fidelity tests, benchmarks and training.

Written from the official QCFS code (github putshua/ANN_SNN_QCFS: Models/layer.py, Models/ResNet.py,
Models/VGG.py, main_test.py), keeping its module names so that ``state_dict()`` has the official keys
(``conv1.2.thresh``, ``conv2_x.0.residual_function.0.weight``, ``layer1.4.weight``,
``classifier.5.thresh``, ...). What it computes, in our own words, is in docs/qcfs_cnn.md. Differences
from the official files, none of which change the numbers:

- ``in_chans`` and ``width`` (channel counts scaled by ``width``, at least 1; the VGG classifier's 4096
  hidden units too) are arguments; the official code has 3 input channels and width 1.
- The time axis is explicit: ``snn_forward(x, T)`` returns the (T, B, K) head outputs of each step. It
  runs the official way (the image repeated T times and merged into a T*B batch, each IF layer looping
  over its T steps) so it doubles as the "official per-step evaluation" of the benchmarks.
- ``mask_ratio`` adds Random Spike Masking, ``s * (u > p)`` with u ~ U[0, 1) fresh per element and step,
  after every activation site (every site of these CNNs feeds a convolution or linear layer); the
  official QCFS code has no masking (the MST paper adds it for its CNN baselines).
- Thresholds are clamped positive by the training script, not here.

Only reference/ imports torch; mst_ref never does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

VGG16_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def scaled(c, width):
    """Channel count ``c`` scaled by ``width`` (at least 1)."""
    return max(1, int(round(c * width)))


class GradFloor(torch.autograd.Function):
    """floor with a straight-through gradient (official ``myfloor``)."""

    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, g):
        return g


class IF(nn.Module):
    """The official activation site: QCFS in the ANN (T = 0), IF neurons in the SNN (T > 0).

    ANN:  y = thresh * floor(clamp(x / thresh, 0, 1) * L + 0.5) / L
    SNN:  mem = thresh / 2 at every forward call; per step: mem += x_t; s = [mem - thresh >= 0];
          out = s * thresh; mem -= out        (x arrives as a merged (T*B, ...) batch)
    """

    def __init__(self, thresh=8.0, L=8):
        super().__init__()
        self.thresh = nn.Parameter(torch.tensor([thresh]), requires_grad=True)
        self.L = L
        self.T = 0
        self.mask_ratio = 0.0
        self.mask_rescale = False

    def forward(self, x):
        if self.T > 0:
            thre = self.thresh.data
            x = x.view(self.T, x.shape[0] // self.T, *x.shape[1:])
            mem = 0.5 * thre
            spikes = []
            for t in range(self.T):
                mem = mem + x[t]
                spike = (mem - thre >= 0).to(x.dtype) * thre
                mem = mem - spike
                spikes.append(spike)
            x = torch.stack(spikes, 0).flatten(0, 1)
        else:
            x = x / self.thresh
            x = torch.clamp(x, 0, 1)
            x = GradFloor.apply(x * self.L + 0.5) / self.L
            x = x * self.thresh
        if self.mask_ratio > 0:  # RSM: s * (u > p), fresh per element and step (/ (1 - p) if rescaled)
            x = x * (torch.rand_like(x) > self.mask_ratio).to(x.dtype)
            if self.mask_rescale:
                x = x / (1.0 - self.mask_ratio)
        return x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1, L=8):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            IF(L=L),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        self.act = IF(L=L)

    def forward(self, x):
        return self.act(self.residual_function(x) + self.shortcut(x))


@dataclass
class CNNConfig:
    arch: str = "resnet18"  # "resnet18" or "vgg16"
    in_chans: int = 3
    num_classes: int = 10
    width: float = 1.0
    qcfs_levels: int = 8
    mask_ratio: float = 0.0
    mask_rescale: bool = False
    img_size: int = 32

    def to_dict(self):
        return asdict(self)


class _Base(nn.Module):
    def set_T(self, T):
        self.T = T
        for m in self.modules():
            if isinstance(m, IF):
                m.T = T

    def set_mask_ratio(self, p, rescale=None):
        for m in self.modules():
            if isinstance(m, IF):
                m.mask_ratio = p
                m.mask_rescale = self.cfg.mask_rescale if rescale is None else rescale

    def forward(self, x):
        if self.T > 0:  # direct coding: the image repeated T times, merged into the batch
            x = x.unsqueeze(0).repeat(self.T, *([1] * x.ndim)).flatten(0, 1)
        out = self.body(x)
        if self.T > 0:
            out = out.view(self.T, out.shape[0] // self.T, *out.shape[1:])
        return out

    @torch.no_grad()
    def snn_forward(self, x, T):
        """Head outputs of each step, (T, B, K), the official way (merged T*B batch)."""
        was = self.T
        self.set_T(T)
        try:
            return self.forward(x)
        finally:
            self.set_T(was)


class ResNet18(_Base):
    """Official QCFS ``ResNet`` with ``BasicBlock`` and [2, 2, 2, 2] (CIFAR variant, conv2_x stride 1)."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg, self.T = cfg, 0
        w, L = cfg.width, cfg.qcfs_levels
        c0 = scaled(64, w)
        self.conv1 = nn.Sequential(nn.Conv2d(cfg.in_chans, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), IF(L=L))
        inc = c0
        for name, out, stride in (("conv2_x", 64, 1), ("conv3_x", 128, 2), ("conv4_x", 256, 2), ("conv5_x", 512, 2)):
            out = scaled(out, w)
            blocks = [BasicBlock(inc, out, stride, L), BasicBlock(out, out, 1, L)]
            setattr(self, name, nn.Sequential(*blocks))
            inc = out
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inc, cfg.num_classes)
        self.set_mask_ratio(cfg.mask_ratio)

    def body(self, x):
        x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(self.conv1(x)))))
        x = self.avg_pool(x)
        return self.fc(x.view(x.size(0), -1))


class VGG16(_Base):
    """Official QCFS ``VGG('VGG16', num_classes, dropout)`` for num_classes != 1000 (average pooling)."""

    def __init__(self, cfg: CNNConfig, dropout=0.0):
        super().__init__()
        self.cfg, self.T = cfg, 0
        w, L = cfg.width, cfg.qcfs_levels
        inc = cfg.in_chans
        for i, widths in enumerate(VGG16_CFG):
            layers = []
            for c in widths:
                c = scaled(c, w)
                layers += [nn.Conv2d(inc, c, 3, padding=1), nn.BatchNorm2d(c), IF(L=L), nn.Dropout(dropout)]
                inc = c
            layers.append(nn.AvgPool2d(2, 2))
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        hidden = scaled(4096, w)
        spatial = (cfg.img_size // 32) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(inc * spatial, hidden), IF(L=L), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), IF(L=L), nn.Dropout(dropout), nn.Linear(hidden, cfg.num_classes))
        for m in self.modules():  # the official initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        self.set_mask_ratio(cfg.mask_ratio)

    def body(self, x):
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        return self.classifier(x)


def build(cfg: CNNConfig):
    """The twin of ``cfg.arch``."""
    if cfg.arch == "resnet18":
        return ResNet18(cfg)
    if cfg.arch == "vgg16":
        return VGG16(cfg)
    raise ValueError(f"arch must be 'resnet18' or 'vgg16'; got {cfg.arch!r}")


def randomize_(model, gen, thresh_range=(0.5, 2.0)):
    """Random weights for fidelity fixtures: BN statistics and thresholds away from their defaults."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
            elif name.endswith("running_mean"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif name.endswith(".thresh"):
                lo, hi = thresh_range
                p.copy_(lo + (hi - lo) * torch.rand(p.shape, generator=gen, dtype=p.dtype))
            elif p.ndim == 1:  # BN weight / bias, linear / conv bias
                centre = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(centre + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (2.0 / fan_in) ** 0.5)
    return model
