"""Thread counts of BLAS and of the Numba kernels, set at run time.

mst_ref's time goes to two kinds of work that take turns: BLAS matrix products (OpenBLAS behind NumPy) and
the fused Numba kernels (:mod:`mst_ref.kernels`). Each has its own pool of threads. Environment variables
(``OPENBLAS_NUM_THREADS``, ``NUMBA_NUM_THREADS``) are read once, when the libraries load, so a program that
has imported NumPy cannot change them that way; ``threadpoolctl`` sets the BLAS library's thread count
through the library's own API at any time, and :func:`numba.set_num_threads` does the same for Numba.

The default (:func:`default_threads`): one thread, unless the caller asks for more (``threads=`` here,
``--threads`` on the command line, or the ``MST_REF_THREADS`` environment variable). Why not all cores:
OpenBLAS's worker threads spin for a while after each product, waiting for the next one. On cores that
another process also uses, a spinning worker takes time from the thread doing the work, and a product
split in two waits for its slower half; mst_ref makes thousands of small products, so the waits add up.
Measured on a two-core machine with one competing CPU-bound process (benchmarks/bench_threads.py), two
threads ran up to several times slower than one; on idle cores two threads gain less than 2x (the kernels
stream memory). A user with idle cores gains from ``--threads 2``; a user on a shared machine loses
nothing by default.

Inside a :func:`limit_threads` block with n > 1, the Numba kernels run on n threads while BLAS uses n
threads too; :func:`kernel_threads` tells :mod:`mst_ref.models.mst_fast` how many to use during a pass
(one when BLAS may spin on the other cores, see there).
"""

import os
from contextlib import contextmanager

import numba

__all__ = ["default_threads", "limit_threads", "blas_threads", "kernel_threads", "available_cores"]

_CONTROLLER = []  # the threadpoolctl controller, created at first use (it scans the loaded libraries)


def available_cores():
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads():
    """Threads to use when the caller does not say: ``MST_REF_THREADS`` if set (a positive integer), else 1."""
    value = os.environ.get("MST_REF_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MST_REF_THREADS must be a positive integer; got {value!r}")
        return int(value)
    return 1


def _controller(refresh=False):
    """threadpoolctl's view of the loaded thread pools (rescanned on ``refresh``: a library may load late)."""
    if refresh or not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER[:] = [ThreadpoolController()]
    return _CONTROLLER[0]


def blas_threads():
    """The BLAS libraries' current thread count (the largest over the loaded ones; 1 if none is found)."""
    libs = _controller().select(user_api="blas").lib_controllers
    return max([lib.num_threads for lib in libs], default=1)


def kernel_threads():
    """Threads for the fused kernels during a pass: Numba's setting if BLAS runs on one thread, else 1.

    BLAS and the kernels take turns; while OpenBLAS's workers spin after a product, parallel kernels would
    share the cores with them (on two cores that halved the speed).
    """
    return numba.get_num_threads() if blas_threads() == 1 else 1


@contextmanager
def limit_threads(threads=None):
    """Run the block with ``threads`` BLAS threads and ``threads`` Numba threads (then restore both).

    Parameters
    ----------
    threads : int or None
        Threads for BLAS and for the Numba kernels; None takes :func:`default_threads`. Numba cannot run
        more threads than it started with (``NUMBA_NUM_THREADS``, by default the number of cores), so the
        Numba count is capped there; BLAS takes the number as given.

    Examples
    --------
    >>> with limit_threads(2):
    ...     result = model.snn_forward(images, 32)  # doctest: +SKIP
    """
    n = default_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer; got {threads!r}")
    saved = numba.get_num_threads()
    controller = _controller(refresh=True)
    with controller.limit(limits=n, user_api="blas"):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield n
        finally:
            numba.set_num_threads(saved)
