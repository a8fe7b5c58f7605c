"""The files mst_ref ships: checkpoints, the Fashion-MNIST test sample, its licence, training logs.

setup.py installs this folder inside the package as ``mst_ref.shipped``; code finds the files with
``mst_ref.io.data.shipped_file(name)`` (``importlib.resources``), never by a path relative to the cwd.
"""
