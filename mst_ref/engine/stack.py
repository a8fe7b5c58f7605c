"""The time loop, shown on a tiny stack of linear layers with IF neurons.

A converted network can be simulated in two orders that give the same numbers:

- multi-step, layer by layer: each layer takes its whole input spike train ``(T, B, C_in)`` at once,
  applies its weights to all T steps in one matrix product, then runs the IF scan over T;
- step by step: for t = 1..T, the step's input goes through every layer, each layer keeping its
  membrane potentials in an :class:`~mst_ref.core.neurons.IFState` between steps (how neuromorphic hardware
  runs, and what a streaming simulator does).

They agree because a linear layer acts on each time step separately and the IF neuron is causal: the
output at step t depends only on inputs up to t. The full model does the same with its time axis in
front (:mod:`mst_ref.engine.simulate`, :mod:`mst_ref.models.mst`). This module keeps the idea small enough to read
and test: ``LinearIF`` layers, the two simulators, and the ANN they converge to.
"""

from dataclasses import dataclass

import numpy as np

from ..core.neurons import IFState, if_neuron
from ..core.qcfs import _as_float_array, clip_activation, qcfs

__all__ = ["LinearIF", "random_stack", "run_stack_multistep", "run_stack_stepwise", "run_stack_ann"]


@dataclass
class LinearIF:
    """A fully connected layer followed by a QCFS site (ANN) or IF neuron (SNN) of threshold lambda."""

    weight: np.ndarray  # (C_out, C_in)
    bias: np.ndarray  # (C_out,)
    threshold: float  # lambda, shared by the layer's QCFS and IF neurons

    def linear(self, h):
        """z = h W^T + b over the last axis; h : (..., C_in) -> (..., C_out)."""
        return h @ self.weight.T + self.bias  # (..., C_out)


def random_stack(rng, widths, threshold=1.0, dtype=np.float64):
    """A random stack of LinearIF layers whose neurons neither all saturate nor all stay silent.

    Parameters
    ----------
    rng : np.random.Generator
    widths : sequence of int
        (C_0, C_1, ..., C_depth): input width, then each layer's output width.
    threshold : float
        lambda of every layer.
    dtype : float32 or float64

    Returns
    -------
    layers : list of LinearIF
        Weights N(0, 1.5^2 / C_in), biases U(0, lambda / 4); meant for inputs in [0, lambda].
    """
    layers = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        weight = rng.normal(0.0, 1.5 / np.sqrt(c_in), size=(c_out, c_in)).astype(dtype)  # (C_out, C_in)
        bias = rng.uniform(0.0, threshold / 4, size=c_out).astype(dtype)  # (C_out,)
        layers.append(LinearIF(weight, bias, threshold))
    return layers


def _check_stack(layers, x, name, ndim):
    if len(layers) == 0:
        raise ValueError("layers must hold at least one LinearIF")
    x = _as_float_array(x, name)
    if x.ndim != ndim or x.shape[-1] != layers[0].weight.shape[1]:
        want = "(T, B, C_in)" if ndim == 3 else "(B, C_in)"
        raise ValueError(f"{name} must be {want} with C_in = {layers[0].weight.shape[1]}; got {x.shape}")
    return x


def run_stack_multistep(layers, x_seq):
    """SNN, layer by layer: each layer sees all T steps at once.

    Parameters
    ----------
    layers : list of LinearIF
    x_seq : (T, B, C_in) ndarray of float32 or float64
        Input current at each step (for a constant image, the same x at every t).

    Returns
    -------
    spikes : (T, B, C_out) ndarray
        Output of the last layer's IF neurons, 0 or lambda at each step.

    Notes
    -----
    For each layer: :math:`z_t = W h_t + b` for all t in one matrix product, then
    :math:`h_t = \\mathrm{IF}_\\lambda(z_1, \\dots, z_t)`.
    """
    h = _check_stack(layers, x_seq, "x_seq", 3)  # (T, B, C_in)
    for layer in layers:
        z = layer.linear(h)  # (T, B, C_out)
        h = if_neuron(z, layer.threshold)  # (T, B, C_out)
    return h


def run_stack_stepwise(layers, x_seq):
    """SNN, step by step: every layer advances one step before the next step starts.

    Same parameters and the same numbers as :func:`run_stack_multistep`; one
    :class:`~mst_ref.core.neurons.IFState` per layer holds the membrane potentials between steps.
    """
    x_seq = _check_stack(layers, x_seq, "x_seq", 3)  # (T, B, C_in)
    T, B, _ = x_seq.shape
    states = [IFState(layer.threshold, (B, layer.weight.shape[0]), x_seq.dtype) for layer in layers]
    outputs = []
    for t in range(T):
        h = x_seq[t]  # (B, C_in)
        for layer, state in zip(layers, states):
            h = state.step(layer.linear(h))  # (B, C_out)
        outputs.append(h)
    return np.stack(outputs)  # (T, B, C_out)


def run_stack_ann(layers, x, activation="clip", levels=16):
    """The ANN the stack was converted from.

    Parameters
    ----------
    layers : list of LinearIF
    x : (B, C_in) ndarray of float32 or float64
    activation : {'clip', 'qcfs'}
        'qcfs': QCFS with ``levels`` levels (the trained network); 'clip': clip(z, 0, lambda), the limit
        the SNN's mean output tends to as T grows.
    levels : int
        L for 'qcfs'.

    Returns
    -------
    y : (B, C_out) ndarray
    """
    if activation not in ("clip", "qcfs"):
        raise ValueError(f"activation must be 'clip' or 'qcfs'; got {activation!r}")
    h = _check_stack(layers, x, "x", 2)  # (B, C_in)
    for layer in layers:
        z = layer.linear(h)  # (B, C_out)
        if activation == "clip":
            h = clip_activation(z, layer.threshold)
        else:
            h = qcfs(z, layer.threshold, levels)
    return h
