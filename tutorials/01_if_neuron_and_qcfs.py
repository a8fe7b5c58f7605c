# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 - The IF neuron and QCFS: why a spiking neuron can stand in for an activation
#
# MST is trained as an ordinary (artificial) transformer whose activations are **QCFS** functions,
# then *converted*: every QCFS activation is replaced by an **integrate-and-fire (IF) neuron** with
# the same threshold, and the network is run for T time steps. This tutorial builds the two pieces
# by hand and shows, with numbers, why the conversion works:
#
# 1. QCFS, the activation the ANN is trained with;
# 2. the IF neuron: its recurrence, written in five NumPy lines, with a membrane trace and a raster;
# 3. why the pre-charge lambda/2 and the reset by subtraction make the firing rate equal QCFS with
#    L = T levels, **exactly**, for a constant input;
# 4. the error bound lambda/(2T) for any input sequence in [0, lambda];
# 5. the three conversion errors of Bu et al. (ICLR 2022): clipping, quantization, unevenness;
# 6. the hand-written neuron checked against `mst_ref.if_neuron`.
#
# Run it as `python tutorials/01_if_neuron_and_qcfs.py`; pictures go to `$MST_TUTORIAL_OUT`
# (default `tutorial_out/` under the current folder).

# %%
import os
from pathlib import Path

import numpy as np

import mst_ref  # installed by `pip install -e .` (README); tutorials never patch the path
from mst_ref import plots
from mst_ref.core.neurons import if_neuron, if_neuron_reference, spike_counts
from mst_ref.core.qcfs import clip_activation, qcfs

np.set_printoptions(precision=4, suppress=True, linewidth=110, threshold=5000)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. QCFS: a clipped staircase
#
# Each activation site of MST has one learned scalar, its threshold lambda (checkpoint key
# `<site>.up`). The trained activation is the quantization-clip-floor-shift function with L levels
#
# $$ \mathrm{QCFS}_{\lambda,L}(x) = \lambda\,\mathrm{clip}\!\left(\frac{\lfloor x L/\lambda + 1/2\rfloor}{L},\ 0,\ 1\right), $$
#
# a staircase of L steps of height lambda/L between 0 and lambda. The "+1/2" (the shift) makes the
# floor round to the *nearest* level instead of rounding down. As L grows it tends to
# clip(x, 0, lambda). One line of NumPy:

# %%
lam, L = 1.0, 4
x = np.linspace(-0.25, 1.25, 13)  # (13,)
# y = lambda * clip(floor(x L / lambda + 1/2) / L, 0, 1)
y_hand = lam * np.clip(np.floor(x * L / lam + 0.5) / L, 0, 1)  # (13,)
print("x            :", x)
print("QCFS, by hand:", y_hand)
print("clip(x, 0, 1):", clip_activation(x, lam))
err = np.abs(y_hand - qcfs(x, lam, levels=L)).max()
print(f"max |by hand - mst_ref.qcfs| = {err}")
assert err == 0.0
assert np.all(np.abs(y_hand - clip_activation(x, lam)) <= lam / (2 * L))  # rounding: at most half a step

# %% [markdown]
# ## 2. The IF neuron
#
# An IF neuron holds a membrane potential v. Before the first step it is **pre-charged** to
# lambda/2. At each step t it
#
# $$ v \leftarrow v + x_t, \qquad s_t = [v \ge \lambda], \qquad v \leftarrow v - s_t\lambda, \qquad \mathrm{out}_t = s_t\lambda : $$
#
# it integrates the input current, fires (at most one spike per step) when v reaches the threshold,
# and resets **by subtraction**, so that whatever exceeded the threshold is kept for later. Its
# output is 0 or lambda. The loop below is the whole neuron; it also keeps v just before each reset
# (the "trace") for plotting.


# %%
def if_by_hand(x, lam, v0=None):
    """IF neurons over time: x (T, ...) -> spikes (T, ...) of 0 / lam, and v before each reset."""
    v = np.full(x.shape[1:], lam / 2) if v0 is None else np.array(v0, dtype=float)  # (...)
    out, trace = np.zeros_like(x), np.zeros_like(x)  # (T, ...)
    for t in range(x.shape[0]):
        v = v + x[t]  # v <- v + x_t
        trace[t] = v
        s = v >= lam  # s_t = [v >= lambda]
        v = v - s * lam  # v <- v - s_t lambda
        out[t] = s * lam  # out_t = s_t lambda
    return out, trace


# %% [markdown]
# Four steps of one neuron with lambda = 1 and the constant input x = 0.375, by hand:
#
# | t | v + x_t | spike? | v after reset |
# |---|---|---|---|
# | 1 | 0.5 + 0.375 = 0.875 | no | 0.875 |
# | 2 | 0.875 + 0.375 = 1.25 | yes | 0.25 |
# | 3 | 0.25 + 0.375 = 0.625 | no | 0.625 |
# | 4 | 0.625 + 0.375 = 1.0 | yes (v >= lambda) | 0.0 |
#
# Two spikes in four steps: a rate of 0.5. (0.375 is a binary fraction, so the computer adds it
# exactly and we can assert exact values.)

# %%
out, trace = if_by_hand(np.full((4, 1), 0.375), lam=1.0)
print("v before reset:", trace[:, 0])
print("output        :", out[:, 0])
assert trace[:, 0].tolist() == [0.875, 1.25, 0.625, 1.0]
assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]

# %% [markdown]
# Three neurons with constant inputs 0.15, 0.4 and 0.85 (lambda = 1) over 20 steps: the membrane
# climbs by x each step and drops by lambda at each spike. The stronger the input, the more often
# the neuron fires.

# %%
T = 20
x3 = np.tile([0.15, 0.4, 0.85], (T, 1))  # (T, 3) constant inputs
out3, trace3 = if_by_hand(x3, lam=1.0)  # (T, 3) each
print("spikes (rows = neurons, columns = steps):")
print((out3.T > 0).astype(int))
print("spike counts:", spike_counts(out3), " rates:", out3.mean(axis=0))
png1 = plots.traces_png(OUT / "01_membrane_traces.png", trace3, 1.0,
                        "Membrane potential of 3 IF neurons with constant inputs, lambda = 1",
                        labels=["input x = 0.15", "input x = 0.4", "input x = 0.85"],
                        ylabel="v after the input, before the reset")
png2 = plots.raster_png(OUT / "01_spike_raster.png", out3 > 0,
                        "Spikes of 3 IF neurons, constant inputs 0.15 / 0.4 / 0.85 (top to bottom), lambda = 1",
                        ylabel="neuron (input 0.15, 0.4, 0.85)")
print("wrote", png1, "and", png2)
assert spike_counts(out3).tolist() == [3, 8, 17]  # = floor(20 x + 1/2), as section 3 shows

# %% [markdown]
# ## 3. Why the rate is QCFS with L = T
#
# Take a constant input x in [0, lambda] and let n_t be the number of spikes after t steps. The
# potential after step t is everything that came in minus everything that was fired:
#
# $$ v_t = \frac{\lambda}{2} + t\,x - n_t\lambda . $$
#
# It always stays in [0, lambda): it starts at lambda/2; adding x in [0, lambda] brings it into
# [0, 2 lambda); if it is now >= lambda the neuron fires and subtracts lambda. So
# 0 <= lambda/2 + T x - n_T lambda < lambda, that is
#
# $$ n_T = \left\lfloor \frac{T x}{\lambda} + \frac12 \right\rfloor, \qquad
#    \text{rate} = \frac{n_T\,\lambda}{T} = \mathrm{QCFS}_{\lambda, L=T}(x). $$
#
# For x < 0 the neuron never fires (rate 0), for x > lambda it fires every step (rate lambda):
# exactly QCFS's clip. Both design choices matter:
#
# * the **pre-charge** lambda/2 is the "+1/2" of QCFS: it turns round-down into round-to-nearest;
# * the **reset by subtraction** keeps the remainder v_t, so nothing is lost between spikes. A
#   reset *to zero* throws the remainder away at every spike, so the neuron fires too rarely
#   (shown below).
#
# We check it on a grid of inputs (multiples of 1/64: binary fractions, so every addition is exact
# and equality is exact too; on arbitrary floats the two can differ by one spike when
# T x/lambda + 1/2 lands within rounding of an integer).

# %%
lam = 2.0
x_grid = np.arange(-32, 160) / 64  # (192,) from -0.5 to 2.48: below 0, inside [0, lambda], above
for T in range(1, 17):
    x_seq = np.broadcast_to(x_grid, (T, x_grid.size))  # (T, 192) the same x at every step
    rate_hand = if_by_hand(x_seq, lam)[0].mean(axis=0)  # (192,)
    rate_lib = if_neuron(np.ascontiguousarray(x_seq), lam).mean(axis=0)  # (192,)
    assert np.array_equal(rate_hand, qcfs(x_grid, lam, levels=T)), T
    assert np.array_equal(rate_lib, qcfs(x_grid, lam, levels=T)), T
print("rate == QCFS(x, lambda, L=T) exactly, for T = 1..16 and all 192 inputs (hand-written and mst_ref)")

x_small = np.array([0.1, 0.3, 0.5, 0.7, 0.9]) * lam  # (5,)
T = 4
counts = spike_counts(if_by_hand(np.tile(x_small, (T, 1)), lam)[0])  # (5,)
print(f"T = {T}, lambda = {lam}: x = {x_small}")
print("  spikes          :", counts)
print("  rate = n lam / T:", counts * lam / T)
print("  QCFS(x, L = 4)  :", qcfs(x_small, lam, levels=T))
assert np.array_equal(counts * lam / T, qcfs(x_small, lam, levels=T))

# %% [markdown]
# The same neurons with a reset *to zero* (v <- 0 after a spike) instead of by subtraction: the
# remainder v - lambda is lost at every spike, and the rate falls below QCFS.


# %%
def if_reset_to_zero(x, lam):
    v, out = np.full(x.shape[1:], lam / 2), np.zeros_like(x)  # (...), (T, ...)
    for t in range(x.shape[0]):
        v = v + x[t]  # v <- v + x_t
        out[t] = (v >= lam) * lam  # s_t = [v >= lambda]
        v = np.where(v >= lam, 0.0, v)  # v <- 0 after a spike: the remainder is lost
    return out


x_r, T, lam = np.array([0.3, 0.6, 0.85]), 20, 1.0
rate_zero_reset = if_reset_to_zero(np.tile(x_r, (T, 1)), lam).mean(axis=0)  # (3,)
rate_subtract = if_by_hand(np.tile(x_r, (T, 1)), lam)[0].mean(axis=0)  # (3,)
print(f"x = {x_r}, T = {T}")
print("  rate, reset by subtraction:", rate_subtract, " = QCFS(x, L = T):", qcfs(x_r, lam, levels=T))
print("  rate, reset to zero       :", rate_zero_reset)
assert np.array_equal(rate_subtract, qcfs(x_r, lam, levels=T))
assert np.all(rate_zero_reset < qcfs(x_r, lam, levels=T))  # every neuron fires too rarely

# %%
# the staircase: IF rate against the input for T = 4 and T = 8, and the limit clip(x, 0, lambda)
x_plot = np.linspace(-0.25, 1.25, 121) * lam  # (121,)
rates = {f"IF rate, T = {T}": if_neuron(np.tile(x_plot, (T, 1)), lam).mean(axis=0) for T in (4, 8)}
png = plots.line_chart_png(OUT / "01_rate_vs_input.png", x_plot,
                           {**rates, "clip(x, 0, lambda)": clip_activation(x_plot, lam)},
                           f"IF mean output = QCFS with L = T (lambda = {lam:g})", "constant input x",
                           "mean output over T steps (rate x lambda)", dashed={"clip(x, 0, lambda)"})
print("wrote", png)

# %% [markdown]
# ## 4. The error bound lambda/(2T) for any input sequence
#
# Now let the input vary, x_t in [0, lambda]. Summing the recurrence over all steps telescopes:
#
# $$ \sum_t \mathrm{out}_t = \sum_t x_t + v_0 - v_T = \sum_t x_t + \frac{\lambda}{2} - v_T ,$$
#
# and the argument of section 3 still gives v_T in [0, lambda). Dividing by T:
#
# $$ \Big|\overline{\mathrm{out}} - \overline{x}\Big| = \frac{|\lambda/2 - v_T|}{T} \le \frac{\lambda}{2T}. $$
#
# The mean output tracks the mean input to within half a spike spread over T steps. We check the
# identity (using `if_neuron`'s in-place membrane `v` to read v_T) and the bound on 2000 random
# sequences per T.

# %%
rng = np.random.default_rng(0)
lam = 1.0
print("   T   max |mean out - mean x|   lambda/(2T)   ratio")
for T in (1, 2, 4, 8, 16, 32, 64):
    xs = rng.uniform(0, lam, size=(T, 2000))  # (T, 2000) sequences in [0, lambda]
    v = np.full(2000, lam / 2)  # pre-charge; if_neuron updates it in place to v_T
    outs = if_neuron(xs, lam, v=v)  # (T, 2000)
    assert np.allclose(outs.sum(axis=0), xs.sum(axis=0) + lam / 2 - v, atol=1e-12)  # telescoping sum
    assert np.all((v >= 0) & (v < lam))  # v_T in [0, lambda)
    err = np.abs(outs.mean(axis=0) - xs.mean(axis=0)).max()
    bound = lam / (2 * T)
    print(f"{T:4d}   {err:22.6f}   {bound:11.6f}   {err / bound:5.3f}")
    assert err <= bound + 1e-12  # the bound holds ...
    assert err / bound > 0.9  # ... and is nearly attained: it is the right bound

# %% [markdown]
# ## 5. The three conversion errors (Bu et al., ICLR 2022)
#
# An ANN with ReLU activations, converted naively, differs from its SNN in three ways. QCFS and
# the IF neuron above are designed around them.
#
# ### 5a. Clipping error
# A ReLU is unbounded, but an IF neuron fires at most once per step: its rate never exceeds
# lambda. Inputs above lambda are clipped. (QCFS moves this error into training: the ANN itself
# clips at its learned lambda, so the SNN has nothing left to clip.) With T = 8 and inputs that are
# multiples of lambda/8 there is no rounding, so we see the clipping alone:

# %%
lam, T = 1.0, 8
x_clip = np.array([0.25, 0.5, 1.0, 1.5, 3.0])  # (5,)
rate = if_by_hand(np.tile(x_clip, (T, 1)), lam)[0].mean(axis=0)  # (5,)
relu = np.maximum(x_clip, 0)
print("x                   :", x_clip)
print("ReLU(x)             :", relu)
print("IF rate (T = 8)     :", rate)
print("clipping error      :", relu - rate)
print("clip(x, 0, lambda)  :", clip_activation(x_clip, lam))
assert np.array_equal(relu - rate, [0, 0, 0, 0.5, 2.0])
assert np.array_equal(rate, clip_activation(x_clip, lam))  # the clipped ANN has no clipping error

# %% [markdown]
# ### 5b. Quantization error
# In T steps a neuron emits a whole number of spikes, so its rate lives on the grid k lambda/T:
# any input between grid points is rounded. With the pre-charge lambda/2 the rounding is to the
# nearest point (error at most lambda/(2T), no bias); a neuron that starts at v = 0 rounds *down*
# (error up to lambda/T, always in the same direction).

# %%
lam, T = 1.0, 4
x_q = (np.arange(16) + 0.5) / 16  # (16,) inputs spread evenly over [0, lambda], binary fractions
x_seq = np.tile(x_q, (T, 1))  # (T, 16)
rate_pre = if_by_hand(x_seq, lam)[0].mean(axis=0)  # v0 = lambda/2
rate_zero = if_by_hand(x_seq, lam, v0=np.zeros(16))[0].mean(axis=0)  # v0 = 0
rate_zero_lib = if_neuron(x_seq, lam, v=np.zeros(16)).mean(axis=0)
err_pre, err_zero = rate_pre - x_q, rate_zero - x_q
print("x                      :", x_q)
print("rate, v0 = lambda/2    :", rate_pre)
print("error, v0 = lambda/2   :", err_pre)
print("rate, v0 = 0           :", rate_zero)
print("error, v0 = 0          :", err_zero)
print(f"max |error|: {np.abs(err_pre).max()} with pre-charge (bound lambda/2T = {lam / (2 * T)}), "
      f"{np.abs(err_zero).max()} without (bound lambda/T = {lam / T})")
print(f"mean error: {err_pre.mean():+.4f} with pre-charge, {err_zero.mean():+.4f} = -lambda/2T without")
assert np.array_equal(rate_zero, rate_zero_lib)
assert np.abs(err_pre).max() <= lam / (2 * T) and np.abs(err_zero).max() <= lam / T
assert np.all(err_zero <= 0)  # without pre-charge the rate is never above the input: a bias
assert err_pre.mean() == 0.0 and err_zero.mean() == -lam / (2 * T)

# %% [markdown]
# ### 5c. Unevenness error
# Deeper in the network a neuron's input is not constant: it is a weighted sum of *spikes*, which
# arrive unevenly over time and can be negative. A spike, once fired, cannot be taken back. Two
# sequences with the same values in a different order, so the same mean input 0.25, give different
# counts:

# %%
lam, T = 1.0, 4
x_early = np.array([[1.5], [1.5], [-1.0], [-1.0]])  # (T, 1) strong input first
x_late = x_early[::-1].copy()  # (T, 1) the same values, strong input last
for name, xs in (("early", x_early), ("late ", x_late)):
    o, tr = if_by_hand(xs, lam)
    print(f"x {name}: {xs[:, 0]}  v before reset: {tr[:, 0]}  spikes: {o[:, 0]}  rate: {o.mean()}")
print("mean input:", x_early.mean(), "  QCFS(mean input, L = 4):", qcfs(x_early.mean(axis=0), lam, 4)[0])
rate_early, rate_late = if_by_hand(x_early, lam)[0].mean(), if_by_hand(x_late, lam)[0].mean()
assert x_early.mean() == x_late.mean() == 0.25
assert rate_early == 0.5 and rate_late == 0.25  # same input, different spike counts
assert abs(rate_early - x_early.mean()) > lam / (2 * T)  # inputs outside [0, lambda]: section 4's bound fails

# %% [markdown]
# The early burst fired two spikes that the later negative input could not cancel (v ends at
# -0.5, below zero). Section 4's bound assumed every x_t in [0, lambda], which this sequence
# violates. Unevenness is why the deeper layers of an SNN miss their ANN by more than one neuron's
# lambda/(2T): tutorial 02 measures it on a stack of layers.
#
# ## 6. The hand-written neuron against mst_ref
#
# `mst_ref.if_neuron` runs the same recurrence as a Numba kernel (and `if_neuron_reference` as a
# NumPy loop); the three must agree bit for bit.

# %%
rng = np.random.default_rng(1)
x_rand = rng.normal(0.4, 0.6, size=(32, 3, 5))  # (T, B, n) arbitrary currents, some negative
lam = 0.8
out_hand = if_by_hand(x_rand, lam)[0]  # (T, B, n)
out_lib = if_neuron(x_rand, lam)  # (T, B, n) Numba kernel
out_ref = if_neuron_reference(x_rand, lam)  # (T, B, n) NumPy reference
print("spike counts of the first batch row (hand-written):", spike_counts(out_hand)[0])
print("                                   (mst_ref)      :", spike_counts(out_lib)[0])
err_lib, err_ref = np.abs(out_hand - out_lib).max(), np.abs(out_hand - out_ref).max()
print(f"max |hand - if_neuron| = {err_lib}, max |hand - if_neuron_reference| = {err_ref}")
assert err_lib == 0.0 and err_ref == 0.0
print("mst_ref version", mst_ref.__version__, "- tutorial 01 done")
