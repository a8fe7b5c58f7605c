"""The command-line side of a sharded run (``--workers``, ``--scheduler``, ``--shard-size``, ``--cache``).

The library (:mod:`mst_ref.distributed`) evaluates and merges; this module picks the backend from the
options, opens the cache, draws one progress bar over all shards (with the ETA) and says on stderr what
happened: shards computed and read from the cache, workers lost and shards rerun.
"""

import sys
from pathlib import Path

from .. import distributed as dist
from ..threads import default_threads
from .common import Progress, UsageError, at_least

__all__ = ["wants_shards", "make_spec", "run_sharded", "backend_of", "ShardedRatios"]

SHARDS_PER_WORKER = 4  # default shard size: about this many shards per worker (balance vs overhead)


def wants_shards(args):
    """Whether the command line asks for a sharded run (any of the four options)."""
    return any(getattr(args, a, None) is not None for a in ("workers", "scheduler", "shard_size", "cache"))


def make_spec(args, loaded, pad, **options):
    """The :class:`~mst_ref.distributed.EvalSpec` of a command: paths from ``args``, the rest from ``options``."""
    return dist.EvalSpec(checkpoint=str(Path(args.checkpoint).resolve()), data=str(Path(args.data).resolve()),
                         split=getattr(args, "split", "test"),
                         class_names=None if loaded.class_names is None else tuple(loaded.class_names),
                         pad=pad, resize=bool(args.resize), mean=tuple(loaded.mean), std=tuple(loaded.std),
                         threads=getattr(args, "threads", None) or default_threads(), **options)


def backend_of(args):
    """The backend ``args`` asks for (``--workers``, ``--scheduler``, else this process); ``close()`` it."""
    return _backend(args)


def _backend(args):
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers and --scheduler exclude each other: local processes, or a Dask cluster")
    if args.scheduler is not None:
        return dist.DaskBackend(args.scheduler)
    if args.workers is not None:
        return dist.ProcessBackend(at_least(args.workers, 1, "--workers"))
    return dist.InlineBackend()


def _shard_size(args, n, capacity):
    if args.shard_size is not None:
        at_least(args.shard_size, 1, "--shard-size")
        try:
            return dist.check_shards(n, args.shard_size, args.batch_size)
        except ValueError as err:
            raise UsageError(f"--shard-size: {err}") from None
    if capacity == 1:
        return n if args.cache is None else args.batch_size * max(1, -(-n // (args.batch_size * 16)))
    per = -(-n // (capacity * SHARDS_PER_WORKER))  # ceil
    return args.batch_size * max(1, -(-per // args.batch_size))  # rounded up to whole batches


def run_sharded(command, args, spec, n, label, backend=None, quiet=False, on_images=None):
    """Evaluate images ``[0, n)`` of ``spec`` in shards as ``args`` says; return the merged dict.

    ``command`` names the run in the cache key (``eval``, ``energy``). ``backend``: one to reuse (left
    open for the next run); None: one from ``args``, closed at the end. ``quiet``: no bar and no closing
    note unless a worker was lost or the cache was used (the caller draws its own bar); ``on_images(k)``
    is then called with the images of each finished shard. Errors: a UsageError for bad
    options, :class:`~mst_ref.distributed.ShardError` (one line) when a shard fails.
    """
    checkpoint_sha = dist.file_digest(spec.checkpoint)
    spec = dist.EvalSpec(**{**spec.__dict__, "checkpoint_sha256": checkpoint_sha})
    keep = backend is not None
    backend = backend if keep else _backend(args)
    try:
        size = _shard_size(args, n, backend.capacity)
        ranges = dist.shard_ranges(n, size)
        cache = None
        if args.cache is not None:
            options = {**spec.options(), "checkpoint": None, "data": None, "n": n}  # paths: by content
            key, identity = dist.run_key(command, options, checkpoint_sha, dist.file_digest(spec.data))
            cache = dist.ShardCache(args.cache, key, identity)
    except BaseException:
        backend.close(cancel=True)
        raise
    if not quiet:
        print(f"{len(ranges)} shard(s) of up to {size} images on {backend.name}"
              + (f"; cache {cache.folder}" if cache else ""), file=sys.stderr)
    bar, done = (None if quiet else Progress(label, n, "images")), [0]

    def on_shard(result):
        done[0] += result["stop"] - result["start"]
        if bar:
            bar.update(done[0])
        if on_images is not None:
            on_images(result["stop"] - result["start"])

    def on_event(text):
        sys.stderr.write(f"\nnote: {text}\n")

    results, report = dist.run_shards(spec, ranges, backend, cache, on_shard, on_event, close=not keep)
    if bar:
        bar.close()
    notes = [f"{len(report.computed)} shard(s) computed"]
    if cache is not None:
        notes.append(f"{len(report.cached)} read from the cache")
    if report.unreadable:
        notes.append(f"{len(report.unreadable)} unreadable cache file(s) recomputed")
    if report.lost:
        notes.append(f"{len(report.lost)} lost to a dead worker and rerun")
    if not quiet or len(notes) > 1:
        print(("\n" if quiet else "") + f"{label}: " * quiet + "; ".join(notes), file=sys.stderr)
    return dist.merge(results, n, spec.timesteps)


class ShardedRatios:
    """``evaluate_ratios`` (:mod:`mst_ref.analysis.ratio_search`) of ``mask-sweep`` run in shards, one backend
    (and its workers, with their loaded model) for all the (ratio, seed) runs; ``close()`` at the end.

    Same results as ``evaluate_ratios``: both draw image i's masks from (seed, i) on the same batch grid.
    """

    def __init__(self, command, args, loaded, pad):
        self.command, self.args, self.loaded, self.pad = command, args, loaded, pad
        self.backend = _backend(args)
        self._runs = 0

    def __call__(self, model, images, labels, timesteps, mask_ratio, seed, mask_sites, batch_size, neuron_opts):
        n = len(images)
        seed = tuple(int(v) for v in seed) if isinstance(seed, (list, tuple)) else int(seed)
        if getattr(self.args, "events", None):  # a folder of event recordings (mst_ref.cli.events)
            from .events import event_spec
            spec = event_spec(self.args, self.loaded, (timesteps,), mask_ratio, neuron_opts or {}, seed=seed,
                              ann=False, mask_sites=mask_sites)
            spec = dist.EvalSpec(**{**spec.__dict__, "batch_size": batch_size})
        else:
            spec = make_spec(self.args, self.loaded, self.pad, timesteps=(timesteps,), mask_ratio=mask_ratio,
                             mask_sites=mask_sites, seed=seed, batch_size=batch_size,
                             neuron=tuple((neuron_opts or {}).items()), ann=False)
        label = f"{self.command} p={mask_ratio if not isinstance(mask_ratio, dict) else 'map'} seed {seed}"
        if not self._runs:
            print(f"each (ratio, seed) run in shards on {self.backend.name}", file=sys.stderr)
        self._runs += 1
        stats = run_sharded(self.command, self.args, spec, n, label, backend=self.backend, quiet=True)
        by_site = {k: v / n for k, v in stats["sops_by_site"].items()}
        return stats["snn_correct"][timesteps] / n, sum(stats["sops_by_site"].values()) / n, by_site

    def close(self):
        self.backend.close()
