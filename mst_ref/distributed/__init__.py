"""Sharded evaluation: one run over many processes or machines, identical to one process.

A run over n images is cut into shards of whole batches (:mod:`.shard`); each shard is evaluated by one
pure, picklable function (:func:`~.shard.evaluate_shard`) in a worker that loads the checkpoint and reads
its images itself, and the results are merged by image index (:func:`~.shard.merge`). The workers are
local processes or a Dask cluster, both behind ``concurrent.futures`` (:mod:`.runner`); finished shards
can be kept on disk so that a rerun resumes (:mod:`.cache`). Masks derive from (seed, image index)
(:mod:`mst_ref.engine.mask_streams`), so the result depends on none of: shard size, worker count, order.
Design and usage: docs/distributed.md.
"""

from .cache import ShardCache, run_key
from .runner import DaskBackend, InlineBackend, ProcessBackend, RunReport, ShardError, run_shards
from .shard import (EvalSpec, check_shards, evaluate_images, evaluate_shard, file_digest, grid_batches, merge,
                    shard_ranges)

__all__ = ["EvalSpec", "evaluate_images", "evaluate_shard", "grid_batches", "merge", "check_shards",
           "shard_ranges", "file_digest", "ShardCache", "run_key", "ShardError", "ProcessBackend",
           "DaskBackend", "InlineBackend", "RunReport", "run_shards"]
