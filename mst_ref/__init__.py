"""mst_ref: a pure-NumPy reference implementation of the Masked Spiking Transformer.

The Masked Spiking Transformer (Wang et al., ICCV 2023) is a Swin-T-style vision transformer trained
with QCFS activations and converted to a spiking network by replacing each activation with an
integrate-and-fire neuron of the same threshold. mst_ref computes both the ANN and the SNN with NumPy
(and Numba for the neuron scan), reads the published checkpoints without PyTorch, and is written to be
read next to the paper.

Dimension letters, used for shapes in every docstring and comment of the package:

    T   time steps of the SNN (the leading axis of every spike train)
    B   batch (images)
    N   tokens (per window inside attention: N = Ws * Ws)
    C   channels
    nH  attention heads
    hd  head dimension, hd = C / nH
    Ws  window size (side of a square attention window)
    L   QCFS quantization levels
    lambda  the threshold of a QCFS site / IF neuron (its learned ``up``)

A spike train is therefore ``(T, B, N, C)``; the ANN's activations are the same without T.

The package, in import order (each layer imports only the layers above it in this list):

    core/       qcfs, the neurons and their Numba kernels
    nn/         the layers the families share: linear, BN, LayerNorm, conv, windows, attention, merging
    engine/     the mode (what a site computes), the monitors (what is observed), masking, the time
                loop, the entry points every family shares, energy accounting
    models/     the families: MST and the QCFS CNNs (ResNet-18, VGG-16)
    io/         checkpoints (the restricted pickle reader), datasets
    analysis/   per-site conversion errors, ratio search, the masking table
    plots.py    PNG writers (NumPy + Pillow); cli/  the ``mst-ref`` command

``import mst_ref`` loads the core only; the other public names load on first use:
:func:`qcfs`, :func:`clip_activation`, :func:`if_neuron`, :class:`IFState` (core), ``MST``,
``MSTConfig``, ``QCFSCNN``, ``CNNConfig`` (models), ``load_checkpoint``, ``load_dataset``,
``CheckpointError``, ``DataError``, ``read_events`` (io), ``Mode`` and the monitors (engine).
"""

import importlib

from .core.neurons import IFState, if_neuron
from .core.qcfs import clip_activation, qcfs

__version__ = "0.1.0"

__all__ = ["qcfs", "clip_activation", "if_neuron", "IFState", "MST", "MSTConfig", "QCFSCNN", "CNNConfig",
           "load_checkpoint", "load_state_dict", "load_dataset", "CheckpointError", "DataError", "Mode", "read_events"]

# Names imported from their module on first access, so that `import mst_ref` stays light and works
# whichever of these modules exist.
_LAZY = {
    "MST": "mst_ref.models.mst",
    "MSTConfig": "mst_ref.models.mst",
    "QCFSCNN": "mst_ref.models.qcfs_cnn",
    "CNNConfig": "mst_ref.models.qcfs_cnn",
    "load_checkpoint": "mst_ref.io.checkpoint",
    "load_state_dict": "mst_ref.io.checkpoint",
    "CheckpointError": "mst_ref.io.safepickle",
    "load_dataset": "mst_ref.io.data",
    "DataError": "mst_ref.io.data",
    "read_events": "mst_ref.io.events",
    "Mode": "mst_ref.engine.modes",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
