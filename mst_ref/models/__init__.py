"""The model families mst_ref runs, each on the shared machinery of the package.

- :mod:`mst_ref.models.mst`: the Masked Spiking Transformer (its layout, fused fast path and energy
  table beside it: ``mst_layout``, ``mst_fast``, ``mst_energy``);
- :mod:`mst_ref.models.qcfs_cnn`: the QCFS-converted CNN baselines, ResNet-18 and VGG-16 (``cnn_energy``
  beside it).

Imports go one way: a model family imports the shared modules of :mod:`mst_ref` (layers, modes,
masking, simulate, energy), never another family, and nothing shared imports a family.
"""
