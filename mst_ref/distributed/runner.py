"""Running shards on an executor: local processes, a Dask cluster, or this process; lost workers, errors.

Every backend is reached through ``concurrent.futures`` (``submit`` returns a Future):

- :class:`ProcessBackend` (``--workers N``): N single-process ``ProcessPoolExecutor`` s (spawn start
  method). One pool per worker, so that a worker that dies (killed, out of memory) breaks only its
  own pool: its shard is rerun on a fresh process and the others go on.
- :class:`DaskBackend` (``--scheduler ADDRESS``): a running Dask scheduler, through
  ``Client.get_executor()``. Dask itself reschedules the tasks of a worker it loses; after
  ``distributed.scheduler.allowed-failures`` losses of one task it raises ``KilledWorker``, which stops
  the run like an error. Dask is imported only here, only when this backend is built.
- :class:`InlineBackend`: this process, one shard at a time (a resumable run without workers).

:func:`run_shards` keeps at most ``backend.capacity`` shards in flight, writes each finished one to the
cache, and reports what happened; a shard that raises stops the run with :class:`ShardError`.
"""

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from .shard import evaluate_shard

__all__ = ["ShardError", "ProcessBackend", "DaskBackend", "InlineBackend", "RunReport", "run_shards"]


class ShardError(ValueError):
    """A shard failed with a real error (bad data, a bug), or its worker died too many times."""


class InlineBackend:
    """Shards computed in this process, in order, one at a time."""

    name, capacity = "this process", 1

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # handed to the driver like a worker's error
            future.set_exception(err)
        return future

    def finished(self, future, lost):
        pass

    def close(self, cancel=False):
        pass


class ProcessBackend:
    """``workers`` local processes (spawn), each its own one-process pool."""

    def __init__(self, workers):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer; got {workers!r}")
        self.name, self.capacity = f"{workers} local process{'es' if workers > 1 else ''}", workers
        self._pools = [None] * workers
        self._slot_of = {}  # future -> slot

    def submit(self, fn, *args):
        busy = set(self._slot_of.values())
        slot = min(set(range(self.capacity)) - busy)
        for attempt in range(2):
            if self._pools[slot] is None:
                self._pools[slot] = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            try:
                future = self._pools[slot].submit(fn, *args)
                break
            except BrokenProcessPool:  # its worker died while idle: a fresh one (once; twice is an error)
                self._pools[slot] = None
                if attempt:
                    raise
        self._slot_of[future] = slot
        return future

    def busy_pids(self):
        """Process ids of the workers now computing a shard (pids start with the first task)."""
        pools = [self._pools[s] for s in set(self._slot_of.values())]
        return [pid for pool in pools if pool is not None for pid in list(getattr(pool, "_processes", {}) or {})]

    def finished(self, future, lost):
        """Free the future's worker; a lost worker's pool is broken and is replaced at the next submit."""
        slot = self._slot_of.pop(future)
        if lost:
            self._pools[slot].shutdown(wait=False, cancel_futures=True)
            self._pools[slot] = None

    def close(self, cancel=False):
        for pool in self._pools:
            if pool is None:
                continue
            if cancel:  # stop now: the run has failed, running shards are not waited for
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=not cancel, cancel_futures=True)
        self._pools = [None] * self.capacity
        self._slot_of.clear()


class DaskBackend:
    """A Dask cluster: ``address`` of its scheduler (``tcp://host:8786``), or a ``client`` already open.

    ``timeout``: how long to try to reach the scheduler.
    """

    def __init__(self, address=None, client=None, timeout="20s"):
        try:
            from distributed import Client
        except ImportError:
            raise ValueError("--scheduler needs Dask, an optional extra: pip install 'mst_ref[distributed]'") \
                from None
        self._own = client is None
        if client is None:
            try:
                client = Client(address, timeout=timeout)
            except (OSError, TimeoutError) as err:
                raise ValueError(f"could not reach a Dask scheduler at {address}: {err}") from None
        self.client = client
        self.executor = client.get_executor(pure=False)  # pure=False: a rerun recomputes, never memoises
        threads = sum(client.nthreads().values())
        self.name = f"Dask at {client.scheduler.address} ({len(client.nthreads())} workers, {threads} threads)"
        self.capacity = max(1, 2 * threads)  # a queue ahead of each thread, few enough to cancel fast

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args)

    def finished(self, future, lost):
        pass

    def close(self, cancel=False):
        self.executor.shutdown(wait=False)
        if self._own:
            self.client.close()


def _lost(err):
    """Whether an exception means the worker died (rerun the shard), not that the shard failed."""
    if isinstance(err, BrokenProcessPool):
        return True
    return False  # Dask's KilledWorker comes after Dask's own retries: an error


@dataclass
class RunReport:
    """What a run did: shards computed and read from the cache, workers lost, cache files unreadable."""

    backend: str = ""
    computed: list = field(default_factory=list)  # (start, stop) per shard computed here
    cached: list = field(default_factory=list)  # (start, stop) read from the cache
    lost: list = field(default_factory=list)  # (start, stop, message): a worker died, the shard was rerun
    unreadable: list = field(default_factory=list)  # cache files that did not parse (recomputed)


def run_shards(spec, ranges, backend, cache=None, on_shard=None, on_event=None, fn=evaluate_shard,
               max_losses=2, close=True):
    """Evaluate ``fn(spec, start, stop)`` for every range; return (results in range order, RunReport).

    Parameters
    ----------
    spec : EvalSpec
    ranges : list of (start, stop)
    backend : InlineBackend, ProcessBackend or DaskBackend
    cache : ShardCache or None
        Shards found there are not computed; finished ones are stored there at once.
    on_shard : callable or None
        ``on_shard(result)`` for each finished or cached shard (a progress bar).
    on_event : callable or None
        ``on_event(text)`` when a worker is lost and its shard rerun.
    max_losses : int
        A shard whose worker died more than this many times stops the run (it may be what kills them).
    close : bool
        Close the backend at the end (False: keep its workers, which keep their loaded model, for another
        run; the backend is closed anyway when a shard fails).

    Raises
    ------
    ShardError
        A shard raised (the first one, one line, naming the images), or kept killing its worker.
    """
    report, results, pending = RunReport(backend.name), {}, []
    for r in ranges:
        found = cache.load(*r) if cache is not None else None
        if found is None:
            pending.append(tuple(r))
        else:
            results[tuple(r)] = found
            report.cached.append(tuple(r))
            if on_shard:
                on_shard(found)
    if cache is not None:
        report.unreadable = list(cache.unreadable)
    losses, inflight = {}, {}
    try:
        while pending or inflight:
            while pending and len(inflight) < backend.capacity:
                r = pending.pop(0)
                inflight[backend.submit(fn, spec, *r)] = r
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for future in done:
                r = inflight.pop(future)
                err = future.exception()
                backend.finished(future, _lost(err))
                if err is not None and _lost(err):
                    losses[r] = losses.get(r, 0) + 1
                    text = (f"a worker died while evaluating images {r[0]}-{r[1] - 1} ({type(err).__name__}); "
                            f"that shard is rerun on a fresh worker")
                    report.lost.append((*r, text))
                    if losses[r] > max_losses:
                        raise ShardError(f"images {r[0]}-{r[1] - 1}: the worker died {losses[r]} times on this "
                                         "shard (out of memory? try a smaller --shard-size or --batch-size)")
                    if on_event:
                        on_event(text)
                    pending.insert(0, r)
                    continue
                if err is not None:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    kind = "" if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: "
                    raise ShardError(f"images {r[0]}-{r[1] - 1}: {kind}{first}") from None
                result = future.result()
                results[r] = result
                report.computed.append(r)
                if cache is not None:
                    cache.store(result)
                if on_shard:
                    on_shard(result)
    except BaseException:
        backend.close(cancel=True)
        raise
    if close:
        backend.close()
    return [results[tuple(r)] for r in ranges], report
