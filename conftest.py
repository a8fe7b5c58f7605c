# Root conftest: its presence puts the repository root on sys.path during tests, so that tests can
# import the PyTorch reference as `reference.mst_torch`. Shared fixtures belong in tests/conftest.py.
#
# BLAS threads: on a small shared machine (CI has two cores) OpenBLAS's spinning worker threads fight
# each other and Numba's; one BLAS thread made the suite 2-3x faster in wall time. A value set by the
# caller wins.
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# Hypothesis: the same examples on every run (CI must not turn red on a new random draw); a failing
# example prints the blob that reproduces it.
from hypothesis import settings

settings.register_profile("mst_ref", derandomize=True, print_blob=True)
settings.load_profile("mst_ref")
