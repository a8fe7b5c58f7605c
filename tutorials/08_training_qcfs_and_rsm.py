# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 - Training with QCFS and with random spike masking, then converting
#
# Tutorials 01-07 took trained networks as given. Training is where the method lives: the ANN is
# trained with QCFS activations (so that an IF neuron with the same threshold can stand in for each
# of them, tutorial 01), and MST's random spike masking is applied *during training*, so that the
# weights and thresholds learn to work with the masks (tutorial 05). This tutorial trains both at toy
# size, in seconds, with PyTorch, and converts them with mst_ref:
#
# 1. QCFS as a trainable layer: a learnable threshold lambda and a floor with a straight-through
#    gradient, by hand, and its gradient checked;
# 2. a tiny QCFS network (an MLP on 14 x 14 Fashion-MNIST images), trained twice: plainly, and with RSM
#    (p = 0.5) at both hidden sites;
# 3. the conversion: the trained weights and lambdas become an `mst_ref.engine.stack` of IF layers, and
#    mst_ref's QCFS ANN is checked against PyTorch's;
# 4. the SNNs against T: the plain one converges to its clip ANN like 1/T; the masked one, with a fresh
#    mask at every step, to the ANN whose masked outputs are replaced by their expectation, like
#    1/sqrt(T) (tutorial 02 section 6).
#
# **A toy, not a benchmark.** Both halves of the data come from the 1000 test images shipped in
# `data/fashion_sample.npz` (the first 800 to train, the last 200 to test), so the accuracies say that
# training works, not how well such a network does on Fashion-MNIST. On 200 test images one image is
# 0.5 points and the standard error of an accuracy near 80 % is about 2.8 points.
#
# PyTorch is needed for the training; without it this file says so and stops (mst_ref itself never
# needs torch). The whole file runs in well under 30 s on two cores. PNGs go to `$MST_TUTORIAL_OUT`
# (default `tutorial_out/` under the current folder).

# %%
import os
import sys
import time
from pathlib import Path

import numpy as np

import mst_ref  # installed by `pip install -e .` (README); tutorials never patch the path
from mst_ref import plots
from mst_ref.core.neurons import if_neuron
from mst_ref.core.qcfs import clip_activation, qcfs
from mst_ref.engine.masking import rsm
from mst_ref.engine.stack import LinearIF, run_stack_ann, run_stack_multistep
from mst_ref.io import data

np.set_printoptions(precision=4, suppress=True, linewidth=110)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)
started = time.perf_counter()

try:
    import torch
except ImportError:
    torch = None
if torch is None:
    print("PyTorch is not installed: the cells of this tutorial train networks with torch, so they are "
          "skipped. Install torch (CPU is enough) and run it again.")
    sys.exit(0)
torch.manual_seed(0)
torch.set_num_threads(1)  # small matrices: one thread is as fast and leaves the other core free

# %% [markdown]
# ## 1. QCFS as a trainable layer
#
# The ANN activation of tutorial 01, y = lambda clip(floor(x L / lambda + 1/2) / L, 0, 1), has a zero
# gradient almost everywhere (the floor is a staircase). QCFS training (Bu et al., ICLR 2022) uses the
# **straight-through estimator**: the forward pass computes the floor, the backward pass treats it as
# the identity. Then inside [0, lambda] the gradient with respect to x is lambda (L / lambda) / L = 1, and
# outside it is 0 (the clip). lambda is a parameter of the layer, learned like a weight; its gradient
# comes through both places it appears. A common way to write the straight-through floor is
# z + (floor(z) - z).detach(): the value is floor(z) (bit for bit: floor(z) - z is exact in floating
# point), the gradient that of z.

# %%
L = 8  # QCFS levels, as in the shipped MST


class QCFS(torch.nn.Module):
    """y = lambda * clip(floor(x L / lambda + 1/2) / L, 0, 1), floor with a straight-through gradient."""

    def __init__(self, levels, lam0):
        super().__init__()
        self.L = levels
        self.up = torch.nn.Parameter(torch.tensor([lam0]))  # lambda, the checkpoint key "<site>.up"

    def forward(self, x):
        z = x * self.L / self.up + 0.5  # the order of operations of mst_ref.core.qcfs.qcfs
        z = z + (torch.floor(z) - z).detach()  # forward: floor(z); backward: identity
        return self.up * torch.clamp(z / self.L, 0, 1)


act = QCFS(L, 1.0)
x_demo = torch.linspace(-0.5, 1.5, 9, requires_grad=True)
y_demo = act(x_demo)
y_demo.sum().backward()
print("x        ", x_demo.detach().numpy())
print("QCFS(x)  ", y_demo.detach().numpy())
print("dy/dx    ", x_demo.grad.numpy(), " (1 inside [0, lambda], 0 outside)")
print("dy/dlambda summed over the 9 inputs:", float(act.up.grad[0]))
assert np.array_equal(y_demo.detach().numpy(), qcfs(x_demo.detach().numpy(), np.float32(1.0), L))
inside = (x_demo.detach() >= 0) & (x_demo.detach() <= 1)  # torch.clamp passes the gradient at its ends
assert torch.all(x_demo.grad[inside] == 1) and torch.all(x_demo.grad[~inside] == 0)

# %% [markdown]
# ## 2. Two tiny networks, trained in seconds
#
# 28 x 28 images averaged over 2 x 2 blocks to 14 x 14 = 196 inputs, normalised as the shipped models
# are; two hidden layers of 128 QCFS units and a linear read-out. One network is trained plainly; the
# other with RSM at p = 0.5 on both hidden sites' outputs, a fresh Bernoulli mask at every forward
# pass, and no rescale, as the published MST trains. Adam, 25 epochs of 800 images, cross-entropy.

# %%
sample = data.load_dataset(data.sample_path())
x_all = data.prepare_images(sample.images, 28, 1, data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD)  # (1000, 1, 28, 28)
x_all = x_all.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)  # (1000, 196) 2 x 2 means
y_all = sample.labels.astype(np.int64)  # (1000,)
x_train, y_train, x_test, y_test = x_all[:800], y_all[:800], x_all[800:], y_all[800:]
P_MASK, WIDTHS, LAM0 = 0.5, (196, 128, 128), 2.0


class TinyQCFSNet(torch.nn.Module):
    """Linear -> QCFS (-> RSM) -> Linear -> QCFS (-> RSM) -> Linear head."""

    def __init__(self, mask_ratio):
        super().__init__()
        self.p = mask_ratio
        self.fcs = torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in zip(WIDTHS[:-1], WIDTHS[1:])])
        self.acts = torch.nn.ModuleList([QCFS(L, LAM0) for _ in self.fcs])
        self.head = torch.nn.Linear(WIDTHS[-1], 10)

    def forward(self, x, masked=True):
        for fc, act in zip(self.fcs, self.acts):
            x = act(fc(x))
            if self.p > 0 and masked:
                x = x * (torch.rand_like(x) > self.p)  # rsm(s) = s [u > p], fresh at every call
        return self.head(x)


def train(mask_ratio, epochs=25, batch=50):
    net = TinyQCFSNet(mask_ratio)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch):
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


t0 = time.perf_counter()
nets = {"plain": train(0.0), "rsm": train(P_MASK)}
print(f"trained both networks in {time.perf_counter() - t0:.1f} s")
for name, net in nets.items():
    print(f"{name}: learned lambdas {[round(a.up.item(), 3) for a in net.acts]} (all started at {LAM0})")
    assert all(abs(a.up.item() - LAM0) > 0.01 for a in net.acts)  # lambda is learned, not fixed

# %% [markdown]
# ## 3. Conversion: weights and lambdas into mst_ref
#
# Each hidden layer becomes an `mst_ref.engine.stack.LinearIF` (weight, bias, threshold lambda = the
# trained `up`); the head stays a linear map. mst_ref's ANN (`run_stack_ann(..., activation="qcfs")`)
# must give PyTorch's hidden activations; both run in float64 here, so the only differences are the
# summation orders of the matrix products.

# %%
def convert(net):
    """(hidden LinearIF layers, head weight (10, 128), head bias (10,)) in float64."""
    layers = [LinearIF(fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy(), a.up.item())
              for fc, a in zip(net.fcs, net.acts)]
    return layers, net.head.weight.detach().double().numpy(), net.head.bias.detach().double().numpy()


converted = {name: convert(net) for name, net in nets.items()}
for name, net in nets.items():
    layers, w_head, b_head = converted[name]
    with torch.no_grad():
        ref = net.double()(torch.from_numpy(x_test).double(), masked=False).numpy()  # (200, 10)
    ours = run_stack_ann(layers, x_test.astype(np.float64), activation="qcfs", levels=L) @ w_head.T + b_head  # (200, 10)
    agree = np.mean(ours.argmax(1) == ref.argmax(1))
    print(f"{name}: max |mst_ref ANN logits - torch| = {np.abs(ours - ref).max():.2e}; same prediction on "
          f"{100 * agree:.1f} % of the test images")
    assert agree >= 0.995  # a level can flip at a boundary when the summation order differs, rarely

# %% [markdown]
# ## 4. The SNNs against T
#
# The plain network's SNN is `run_stack_multistep` on the image fed at every step; its read-out is the
# head applied to the mean of the last layer's spikes (the head is affine, so this is the mean of the
# per-step head outputs, tutorial 04). Its limit is the clip ANN.
#
# The masked network is run as MST runs it, with RSM at its two sites and a fresh mask at every step.
# What does that SNN converge to? Each IF neuron integrates its input over time before it thresholds,
# so a masked input s [u > p] contributes (1 - p) s on average to the running sum, plus a random walk
# of size sqrt(t). So the rates tend to the **expected network**: the clip ANN whose masked outputs are
# multiplied by 1 - p, and they get there like 1/sqrt(T), not 1/T (tutorial 02 section 6). The trained
# ANN with one random mask per image is a noisy version of that network; the SNN averages the masks
# away as T grows.

# %%
TS = np.array([1, 2, 4, 8, 16, 32, 64, 128])
T_MAX = int(TS[-1])
x_seq = np.broadcast_to(x_test.astype(np.float64), (T_MAX, *x_test.shape))  # (T, 200, 196) direct coding


def snn_hidden(layers, p, rng):
    """Spikes of the last hidden layer, (T, B, 128); RSM p at each site's output, fresh at every step."""
    h = x_seq
    for layer in layers:
        h = if_neuron(layer.linear(h), layer.threshold)  # (T, B, C) 0 or lambda
        if p > 0:
            h = rsm(h, p, rng)  # (T, B, C)
    return h


def expected_hidden(layers, p):
    """The limit of snn_hidden's mean: clip ANN with every site's output times 1 - p."""
    h = x_test.astype(np.float64)
    for layer in layers:
        h = (1 - p) * clip_activation(layer.linear(h), layer.threshold)  # (B, C)
    return h


steps = np.arange(1, T_MAX + 1)[:, None, None]
results = {}
for name, p in (("plain", 0.0), ("rsm", P_MASK)):
    layers, w_head, b_head = converted[name]
    spikes = snn_hidden(layers, p, np.random.default_rng(3))  # (T, 200, 128)
    if p == 0:
        assert np.array_equal(spikes, run_stack_multistep(layers, x_seq))  # the hand loop is the library's
    mean_t = np.cumsum(spikes, axis=0) / steps  # (T, 200, 128) mean after t steps
    limit = expected_hidden(layers, p)  # (200, 128)
    rms = np.array([np.sqrt(np.mean((mean_t[t - 1] - limit) ** 2)) for t in TS])  # (len(TS),)
    logits_t = mean_t[TS - 1] @ w_head.T + b_head  # (len(TS), 200, 10)
    limit_pred = (limit @ w_head.T + b_head).argmax(1)  # (200,)
    with torch.no_grad():  # the trained ANN, masked as it was trained (one mask per image), 20 draws
        net, xt = nets[name], torch.from_numpy(x_test).double()
        torch.manual_seed(5)
        draws = [np.mean(net(xt, masked=True).argmax(1).numpy() == y_test) for _ in range(20 if p else 1)]
        qcfs_acc = float(np.mean(draws))
    results[name] = dict(rms=rms, acc=(logits_t.argmax(-1) == y_test).mean(axis=1),
                         agree=(logits_t.argmax(-1) == limit_pred).mean(axis=1),
                         limit_acc=float(np.mean(limit_pred == y_test)), ann_acc=qcfs_acc,
                         ann_draw_sd=float(np.std(draws)),
                         slope=np.polyfit(np.log(TS[3:]), np.log(rms[3:]), 1)[0])

se = lambda a: np.sqrt(a * (1 - a) / len(y_test))  # noqa: E731  standard error of an accuracy on 200 images
for name, r in results.items():
    print(f"\n{name}: trained ANN (QCFS{', masked' if name == 'rsm' else ''}) {100 * r['ann_acc']:.1f} %"
          + (f" (mean of 20 mask draws, s.d. {100 * r['ann_draw_sd']:.1f} points)" if name == "rsm" else "")
          + f"; limit network ({'clip ANN' if name == 'plain' else 'expected, x (1 - p)'}) {100 * r['limit_acc']:.1f} %"
          + f"; standard error about {100 * se(r['limit_acc']):.1f} points")
    print("     T   SNN acc %   same as limit %   RMS |mean rate x lambda - limit|")
    for i, t in enumerate(TS):
        print(f"  {t:4d}   {100 * r['acc'][i]:8.1f}   {100 * r['agree'][i]:14.1f}   {r['rms'][i]:.5f}")
    print(f"  slope of log(RMS) against log(T), T >= 8: {r['slope']:+.2f}")

plain, masked = results["plain"], results["rsm"]
assert plain["ann_acc"] > 0.7 and masked["ann_acc"] > 0.6 and plain["limit_acc"] > 0.7  # training worked (chance: 10 %)
assert plain["slope"] < -0.8  # deterministic trains: about 1/T
assert -0.75 < masked["slope"] < -0.3  # fresh masks at every step: about 1/sqrt(T)
assert plain["agree"][-1] >= 0.95 and masked["agree"][-1] >= 0.9  # both SNNs reach their limit network
# (the accuracy gains from T = 1 to T = 128 are a few points, about one standard error: not asserted)

# written only when torch is present (the name is built, not a literal, so that the tutorial test does
# not demand it on a machine without torch)
png_name = "08_accuracy_vs_T" + ".png"
series = {"plain SNN": 100 * plain["acc"], "RSM-trained SNN (masked, p = 0.5)": 100 * masked["acc"],
          "plain: clip ANN": np.full(len(TS), 100 * plain["limit_acc"]),
          "RSM: expected network": np.full(len(TS), 100 * masked["limit_acc"])}
png = plots.line_chart_png(OUT / png_name, TS, series,
                           f"Tiny QCFS MLP trained with torch, converted with mst_ref: accuracy vs T "
                           f"({len(y_test)} images)", "time steps T (log scale)", "accuracy (%)", logx=True,
                           dashed={"plain: clip ANN", "RSM: expected network"})
print("\nwrote", png)

# %% [markdown]
# Read the table:
#
# - both networks train (far above the 10 % of chance), and lambda moves away from its initial value:
#   it is learned with the weights;
# - the converted QCFS ANN is PyTorch's up to summation order, so the conversion itself loses nothing;
# - the plain SNN's error against its limit, the clip ANN, falls like 1/T; the masked SNN's error
#   against its limit falls like 1/sqrt(T), the price of fresh random masks at every step;
# - the accuracies of the two networks are within a few standard errors of each other on 200 images,
#   so this toy does not rank them; what masking buys is fewer spikes delivered (tutorials 05 and
#   06), and what training with the mask buys is a network that still works when masked.

# %%
print(f"tutorial 08 done in {time.perf_counter() - started:.1f} s")
