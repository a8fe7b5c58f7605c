"""Thread counts of BLAS and of the Numba kernels, set at run time.

mst_ref's time goes to two kinds of work that take turns: BLAS matrix products (OpenBLAS behind NumPy) and
the fused Numba kernels (:mod:`mst_ref.core.kernels`). Each library has its own pool of threads. Environment
variables (``OPENBLAS_NUM_THREADS``, ``NUMBA_NUM_THREADS``) are read once, when the libraries load, so a
program that has imported NumPy cannot change them that way; ``threadpoolctl`` sets the BLAS library's
thread count through the library's own API at any time, and :func:`numba.set_num_threads` does the same
for Numba.

Policy (:func:`limit_threads`): ``threads`` is the number of threads of the Numba kernels and of the SNN
fast path's matrix products, which :mod:`mst_ref.models.mst_fast` splits by rows over a pool of its own;
BLAS itself runs one thread (``blas=`` to change it). The reason is spinning: OpenBLAS's workers keep
spinning for a while after each product, waiting for the next one, and so did Numba's OpenMP workers
(:mod:`mst_ref.core.kernels` now makes them sleep). A spinning thread takes a core from the thread doing the
work: the kernels and the products take turns thousands of times per run, and on a busy machine the
cores are shared with other processes too. Measured on a two-core machine with other processes running,
two spinning BLAS threads made the fast path 3x slower than one thread (173 against 453-561
image-steps/s, shipped model, batch 32); threads that sleep when idle do not collapse.

The default (:func:`default_threads`): ``MST_REF_THREADS`` if set, else one thread (BLAS on one thread
too). Two threads that sleep when idle did not collapse on a busy two-core machine (0.9-1.8x of one
thread on the long commands, benchmarks/bench_threads.py), but under heavier load a product split in
two waits for its slower half: ``mst-ref eval`` ran 0.81x of one thread at a load average of 12
(benchmarks/bench_eval.py, one run; README, Performance). One thread is never slower than itself; on idle cores
``--threads N`` on the command line (mst_ref.cli) or ``limit_threads(N)`` gains up to ~N x in the
kernels and products.
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
def limit_threads(threads=None, blas=1):
    """Run the block with ``threads`` Numba threads and ``blas`` BLAS threads (then restore both).

    Parameters
    ----------
    threads : int or None
        Threads of the Numba kernels and of the fast path's row-split products; None takes
        :func:`default_threads`. Numba cannot run more threads than it started with
        (``NUMBA_NUM_THREADS``, by default the number of cores), so the count is capped there.
    blas : int or None
        Threads of the BLAS library itself (default 1: the fast path parallelises its products itself;
        more makes OpenBLAS's spinning workers compete with the kernels, and the kernels then run on one
        thread, :func:`kernel_threads`). None: as many as ``threads``.

    Yields
    ------
    n : int
        The thread count in force.

    Examples
    --------
    >>> with limit_threads(2):
    ...     result = model.snn_forward(images, 32)  # doctest: +SKIP
    """
    n = default_threads() if threads is None else threads
    nb = n if blas is None else blas
    for value, name in ((n, "threads"), (nb, "blas")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    saved = numba.get_num_threads()
    controller = _controller(refresh=True)
    with controller.limit(limits=nb, user_api="blas"):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield n
        finally:
            numba.set_num_threads(saved)
