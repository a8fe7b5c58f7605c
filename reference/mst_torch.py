"""PyTorch reference of the QCFS Masked Spiking Transformer and its per-step SNN evaluation.

Written from docs/mst.md, independently of the NumPy package, with the official
state_dict key names (bic-L/Masked-Spiking-Transformer). It serves three purposes:

* golden fixtures and live fidelity tests for ``mst_ref`` (tests/fixtures/make_golden.py),
* training the shipped Fashion-MNIST model (reference/train_fashion.py),
* the "published way" baseline of the benchmarks (one full forward per time step).

Only this folder imports torch; ``mst_ref`` never does.

Dimension letters: T steps, B batch, N tokens, C channels, nH heads, hd head dim, Ws window, L levels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RefConfig:
    img_size: int = 224              # input resolution (square)
    patch_size: int = 4              # patch embedding kernel = stride
    in_chans: int = 3                # image channels
    num_classes: int = 1000          # classes of the head
    embed_dim: int = 96              # channels of stage 0
    depths: list = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7             # Ws
    mlp_ratio: float = 4.0
    mlp_norm: bool = True            # BatchNorm inside the MLP ('imagenet' variant)
    qcfs_levels: int = 16            # L
    mask_ratio: float = 0.0          # RSM ratio p at the published sites (q, k, attention scores)
    mask_sites: str = "published"    # "paper": the MLP input spikes (shortcut2_if) are masked too

    def to_dict(self):
        return asdict(self)


# --------------------------------------------------------------------------- activation sites
class _GradFloor(torch.autograd.Function):
    """floor in the forward pass, identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):
        return g


class QCFS(nn.Module):
    """One activation site: QCFS in ANN mode, an IF neuron in SNN mode (same threshold ``up``).

    ANN:  y = up * clip(floor(x * L / up + 0.5) / L, 0, 1)
    SNN (published form, divided by the threshold): mem starts at 0.5; each step
          mem += x / up; s = mem >= 1; mem -= s; out = s * up.
    """

    def __init__(self, levels=16, up=1.0):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([float(up)]))
        self.levels = levels
        self.snn = False
        self.mem = None
        self.recorded = None    # set to a list to record outputs

    def reset(self):
        self.mem = None

    def forward(self, x):
        if self.snn:
            if self.mem is None:
                self.mem = torch.full_like(x, 0.5)
            self.mem = self.mem + x / self.up
            spike = (self.mem >= 1.0).to(x.dtype)
            self.mem = self.mem - spike
            out = spike * self.up
        elif self.training:
            # clamp first then floor: equal to the spec form, and gradient-friendly for `up`
            y = torch.clamp(x / self.up, 0, 1)
            out = _GradFloor.apply(y * self.levels + 0.5) / self.levels * self.up
        else:
            out = torch.clamp(torch.floor(x * self.levels / self.up + 0.5) / self.levels, 0, 1) * self.up
        if self.recorded is not None:
            self.recorded.append(out.detach().clone())
        return out


def rsm(s, p, generator=None):
    """Random spike masking: s * (u > p), u ~ U[0, 1) per element; no rescale."""
    if p <= 0:
        return s
    u = torch.rand(s.shape, generator=generator, device=s.device, dtype=s.dtype)
    return s * (u > p).to(s.dtype)


class TokenBN(nn.BatchNorm1d):
    """BatchNorm1d over the channel (last) axis of (..., C) tokens."""

    def forward(self, x):
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


# --------------------------------------------------------------------------- windows
def window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)          # (B*nW, Ws, Ws, C)


def window_reverse(windows, ws, H, W):
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)             # (B, H, W, C)


def relative_position_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = torch.flatten(coords, 1)                                      # (2, N)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # (N, N, 2)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)                                                   # (N, N)


def shift_attn_mask(H, W, ws, shift):
    img_mask = torch.zeros((1, H, W, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mw = window_partition(img_mask, ws).view(-1, ws * ws)                # (nW, N)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)                             # (nW, N, N)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


# --------------------------------------------------------------------------- modules
class WindowAttention(nn.Module):
    def __init__(self, dim, ws, num_heads, levels, mask_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.ws = ws
        self.scale = (dim // num_heads) ** -0.5
        self.mask_ratio = mask_ratio
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        for name in ("q_if", "k_if", "v_if", "attn_if", "attn_v_if", "proj_if"):
            setattr(self, name, QCFS(levels))

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        nH = self.num_heads
        qkv = self.qkv(x).reshape(B_, N, 3, nH, C // nH).permute(2, 0, 3, 1, 4)  # (3, B_, nH, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = rsm(self.q_if(q), self.mask_ratio)
        k = rsm(self.k_if(k), self.mask_ratio)
        attn = self.attn_if((q @ k.transpose(-2, -1)) * self.scale)        # (B_, nH, N, N)
        attn = rsm(attn, self.mask_ratio)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, nH, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, nH, N, N)
        attn = F.softmax(attn, dim=-1)
        x = (attn @ self.v_if(v)).transpose(1, 2).reshape(B_, N, C)        # (B_, N, C)
        x = self.attn_v_if(x)
        return self.proj_if(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, levels, mlp_norm):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        if mlp_norm:
            self.norm1 = TokenBN(hidden)
        self.fc1_if = QCFS(levels)
        self.fc2 = nn.Linear(hidden, dim)
        if mlp_norm:
            self.norm2 = TokenBN(dim)
        self.fc2_if = QCFS(levels)
        self.mlp_norm = mlp_norm

    def forward(self, x):
        x = self.fc1(x)
        if self.mlp_norm:
            x = self.norm1(x)
        x = self.fc2(self.fc1_if(x))
        if self.mlp_norm:
            x = self.norm2(x)
        return self.fc2_if(x)


class Block(nn.Module):
    def __init__(self, dim, res, num_heads, ws, shift, cfg):
        super().__init__()
        if res <= ws:
            ws, shift = res, 0
        self.res, self.ws, self.shift = res, ws, shift
        self.norm1 = TokenBN(dim)
        self.shortcut1_if = QCFS(cfg.qcfs_levels)
        self.attn = WindowAttention(dim, ws, num_heads, cfg.qcfs_levels, cfg.mask_ratio)
        self.norm2 = TokenBN(dim)
        self.shortcut2_if = QCFS(cfg.qcfs_levels)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.qcfs_levels, cfg.mlp_norm)
        self.mask_sites = getattr(cfg, "mask_sites", "published")
        if shift > 0:
            self.register_buffer("attn_mask", shift_attn_mask(res, res, ws, shift))
        else:
            self.attn_mask = None

    def forward(self, x):
        B, L, C = x.shape
        H = W = self.res
        shortcut = x
        h = self.shortcut1_if(self.norm1(x)).view(B, H, W, C)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(h, self.ws).view(-1, self.ws * self.ws, C)   # (B*nW, N, C)
        win = self.attn(win, mask=self.attn_mask)
        h = window_reverse(win.view(-1, self.ws, self.ws, C), self.ws, H, W)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + h.reshape(B, L, C)
        x = self.norm2(x)                      # the MLP residual is added to the BN output
        m = self.shortcut2_if(x)
        if self.mask_sites == "paper":         # the paper's MLP-input masking site (Fig. 2e)
            m = rsm(m, self.attn.mask_ratio)
        return x + self.mlp(m)


class PatchMerging(nn.Module):
    def __init__(self, res, dim, levels):
        super().__init__()
        self.res = res
        self.norm = TokenBN(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.reduction_if = QCFS(levels)

    def forward(self, x):
        B, L, C = x.shape
        x = x.view(B, self.res, self.res, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        x = x.view(B, -1, 4 * C)                                           # (B, N/4, 4C)
        return self.reduction_if(self.reduction(self.norm(x)))


class BasicLayer(nn.Module):
    def __init__(self, dim, res, depth, num_heads, cfg, downsample):
        super().__init__()
        ws = cfg.window_size
        self.blocks = nn.ModuleList(
            [Block(dim, res, num_heads, ws, 0 if j % 2 == 0 else ws // 2, cfg) for j in range(depth)])
        self.downsample = PatchMerging(res, dim, cfg.qcfs_levels) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.norm = TokenBN(cfg.embed_dim)
        self.proj_if = QCFS(cfg.qcfs_levels)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)                        # (B, N, C)
        return self.proj_if(self.norm(x))


class MSTTorch(nn.Module):
    """QCFS MST with the official state_dict layout."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        res = cfg.img_size // cfg.patch_size
        self.layers = nn.ModuleList()
        n = len(cfg.depths)
        for i in range(n):
            self.layers.append(BasicLayer(cfg.embed_dim * 2 ** i, res // 2 ** i, cfg.depths[i],
                                          cfg.num_heads[i], cfg, downsample=i < n - 1))
        feat = cfg.embed_dim * 2 ** (n - 1)
        self.norm = nn.LayerNorm(feat)
        self.head = nn.Linear(feat, cfg.num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x).mean(1)                                           # (B, F)
        return self.head(x)

    # ------------------------------------------------------------------ SNN evaluation
    def sites(self):
        return [(n, m) for n, m in self.named_modules() if isinstance(m, QCFS)]

    def set_snn(self, on: bool):
        for _, m in self.sites():
            m.snn = on
            m.reset()

    def set_mask_ratio(self, p: float):
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.mask_ratio = p

    @torch.no_grad()
    def snn_forward(self, x, T):
        """The published snn_validate: feed x every step, cumulative sum of head outputs.

        Returns (T, B, K) cumulative logits.
        """
        self.eval()
        self.set_snn(True)
        try:
            out, acc = [], 0
            for _ in range(T):
                acc = acc + self(x)
                out.append(acc.clone())
            return torch.stack(out)
        finally:
            self.set_snn(False)


def random_init_(model: MSTTorch, generator: torch.Generator, up_range=(0.5, 2.0)):
    """Non-trivial thresholds and BN statistics, for fixtures and benchmarks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".up"):
                p.uniform_(*up_range, generator=generator)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0, 0.3, generator=generator)
            if isinstance(m, WindowAttention):
                m.relative_position_bias_table.normal_(0, 0.5, generator=generator)
    return model
