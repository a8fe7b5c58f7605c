"""Packaging for mst_ref: pip install -e ".[test]" (add ",torch" for the PyTorch reference)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "mst_ref" / "__init__.py").read_text(), re.M).group(1)

EXTRAS = {
    "test": ["pytest", "hypothesis", "safetensors"],
    "torch": ["torch"],  # reference/ (PyTorch definition of the model, training); mst_ref never imports it
    "safetensors": ["safetensors"],
    # the documentation site (docs/conf.py): Sphinx with the scientific-Python set, since hand-written
    # HTML would neither render the numpydoc docstrings nor run the tutorials to show their figures
    "docs": ["sphinx", "sphinx-gallery", "myst-parser", "numpydoc", "pydata-sphinx-theme"],
    # --scheduler (mst_ref.distributed.runner.DaskBackend): a Dask cluster (LocalCluster, SLURM / PBS via
    # dask-jobqueue, Kubernetes) is a well-kept engine for scheduling, lost workers and retries, instead of a
    # home-made one; imported only when --scheduler is used (--workers needs nothing beyond the standard library)
    "distributed": ["dask[distributed]"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="mst_ref",
    version=VERSION,
    description="Masked Spiking Transformer reference in NumPy: QCFS ANN, IF-neuron SNN, RSM masking",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The repository's data/ folder (shipped checkpoints, the Fashion-MNIST sample, its licence) is
    # installed inside the package as mst_ref/shipped/, so a wheel, `pip install .` and an editable
    # install all find it with importlib.resources (mst_ref.io.data.shipped_file), from any folder.
    packages=find_packages(include=["mst_ref", "mst_ref.*"]) + ["mst_ref.shipped"],
    package_dir={"mst_ref.shipped": "data"},
    package_data={"mst_ref": ["*.json", "*.txt"],
                  "mst_ref.shipped": ["*.pth", "*.npz", "*.md", "*.json", "*.log"]},
    exclude_package_data={"mst_ref.shipped": ["*.py"]},
    include_package_data=False,
    zip_safe=False,  # numba's cache=True writes compiled kernels next to mst_ref/core/kernels.py
    # threadpoolctl: mst_ref.threads sets the BLAS thread count at run time (--threads), which the
    # OPENBLAS_NUM_THREADS variable, read once when NumPy loads, cannot
    install_requires=["numpy", "scipy", "numba", "pillow", "threadpoolctl"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mst-ref = mst_ref.cli:main"]},
)
