"""The one evaluation core: a shard of images in, per-image results out; and the merge.

A run over n images is cut into shards, ``[start, stop)`` index ranges. :func:`evaluate_shard` is a pure,
picklable function of (:class:`EvalSpec`, start, stop): it runs in a worker process (local or on a Dask
worker), loads the checkpoint and the dataset there, once per process, and returns plain Python (lists
of ints), which :func:`merge` sorts by image index and adds up. A single-process run is
:func:`evaluate_images` over one shard; the workers call the same function, so there is one code path.

Why the merged result equals the one-process result bit for bit:

- Batches lie on one global grid: images ``[k B, (k + 1) B)`` form batch k whatever the shard, because
  a shard starts on a multiple of the batch size B (:func:`check_shards`). A batch's floats depend on
  which images it holds (a product's rounding depends on its shape), so the grid must not move.
- Masks derive from (seed, image index) (:mod:`mst_ref.engine.mask_streams`), not from the batch.
- Everything summed across shards is an integer (correct counts, spikes, SOPs, MACs); the energy is
  computed once from the summed SOPs and MACs (:func:`mst_ref.engine.energy.energy_pj` is linear).
"""

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..engine import energy
from ..engine.mask_streams import ImageSeeds
from ..io import data
from ..io.checkpoint import load_checkpoint
from ..io.event_folders import EventFolder
from ..threads import limit_threads

__all__ = ["EvalSpec", "evaluate_images", "evaluate_shard", "merge", "check_shards", "shard_ranges",
           "file_digest"]

STEP_PASS = 8  # SNN steps per multi-step pass (results do not depend on it; progress is reported per pass)


@dataclass(frozen=True)
class EvalSpec:
    """Everything a worker needs to evaluate any shard of a run (small: paths and numbers, no arrays).

    Attributes
    ----------
    checkpoint, data : str
        Paths, readable by every worker (a shared file system on a cluster).
    split : str
        Part of the dataset (``mst_ref.io.data.load_dataset``).
    class_names : tuple of str or None
        The checkpoint's class names (matches an image folder's subfolders to labels).
    pad : int
        Zero-padding in pixels of each image side, as the model was trained (0: none); applied when
        the padded stored images are the model's input size, as ``mst_ref.cli.common.load_data`` does.
    resize : bool
        Convert images of another size or channel count (``prepare_images``).
    mean, std : tuple of float
        Normalisation.
    timesteps : tuple of int
        Increasing T values; the SNN runs to the last, the prediction is read at each.
    mask_ratio : float
        RSM ratio p, in the ANN and the SNN; masks from (seed, image index).
    mask_sites : str or tuple or None
        Which sites RSM masks (None: as trained).
    seed : int
    batch_size : int
        Images per forward pass; shards start on multiples of it.
    neuron : tuple of (str, object)
        ``neuron`` / ``burst_max`` keyword arguments of the SNN, as (name, value) pairs.
    ann : bool
        Also run the ANN (its predictions are returned).
    checkpoint_sha256 : str or None
        When given, each worker checks the checkpoint file against it, once, before its first shard.
    threads : int
        Numba / product threads of each worker (BLAS runs one): workers x threads <= cores.
    events : {"voxel", "frames"} or None
        ``data`` is a folder of event recordings (:class:`mst_ref.io.event_folders.EventFolder`), each
        coded for the model this way (``pad`` and ``resize`` do not apply); None: images.
    bins : int
        Time bins of the event coding.
    """

    checkpoint: str
    data: str
    split: str = "test"
    class_names: tuple = None
    pad: int = 0
    resize: bool = False
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    timesteps: tuple = (1,)
    mask_ratio: float = 0.0
    mask_sites: object = None
    seed: int = 0
    batch_size: int = 50
    neuron: tuple = field(default_factory=tuple)
    ann: bool = True
    checkpoint_sha256: str = None
    threads: int = 1
    events: str = None
    bins: int = 9

    def options(self):
        """The settings that decide the results (all but the thread count), as a JSON-ready dict."""
        out = asdict(self)
        out.pop("threads")
        return out


def file_digest(path, chunk=1 << 20):
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the core
def evaluate_images(model, batches, spec, on_progress=None):
    """Evaluate batches of one shard; per-image predictions and integer totals.

    Parameters
    ----------
    model : MST or QCFSCNN
    batches : iterable of (indices, x, y)
        ``indices`` : (B,) int, the images' dataset indices; ``x`` : (B, in_chans, H, W) float32 normalised
        images; ``y`` : (B,) int labels.
    spec : EvalSpec
    on_progress : callable or None
        ``on_progress(images_done, steps_done_in_batch, batch_size)``, after the ANN and each SNN pass.

    Returns
    -------
    dict
        ``indices``, ``labels``, ``ann_pred`` (None without the ANN): lists of ints, one per image;
        ``snn_pred``: {T: list of int}, the argmax of the cumulative logits after T steps;
        ``spikes_by_site``, ``sops_by_site``: {site: int} over the shard's images and all steps;
        ``fired_by_site``: {site: int}, the spikes fired before masking (equal to ``spikes_by_site``
        where nothing is masked);
        ``macs``: int, or None when the model has no energy accounting (then ``sops_by_site`` is {}).
    """
    t_max = max(spec.timesteps)
    neuron = dict(spec.neuron)
    out = {"indices": [], "labels": [], "ann_pred": [] if spec.ann else None,
           "snn_pred": {t: [] for t in spec.timesteps}, "spikes_by_site": {}, "fired_by_site": {},
           "sops_by_site": {}, "macs": 0}
    done = 0
    for indices, x, y in batches:
        idx = tuple(int(i) for i in indices)
        if spec.ann:
            logits = model.ann_forward(x, mask_ratio=spec.mask_ratio, rng=ImageSeeds(spec.seed, idx, "ann"),
                                       mask_sites=spec.mask_sites)  # (B, K)
            out["ann_pred"] += logits.argmax(-1).tolist()
        if on_progress:
            on_progress(done, 0, len(idx))
        sim = model.step_simulator(x, mask_ratio=spec.mask_ratio, rng=ImageSeeds(spec.seed, idx, "snn"),
                                   mask_sites=spec.mask_sites, **neuron)
        while sim.t < t_max:
            sim.advance(min(STEP_PASS, t_max - sim.t))
            if on_progress:
                on_progress(done, sim.t, len(idx))
        result = sim.result()
        predictions = result.predictions  # (T, B): argmax of the cumulative logits after each step
        for t in spec.timesteps:
            out["snn_pred"][t] += predictions[t - 1].tolist()
        out["indices"] += list(idx)
        out["labels"] += [int(v) for v in y]
        _add(out["spikes_by_site"], result.spike_counts_by_site)
        _add(out["fired_by_site"], result.fired_by_site)
        if out["macs"] is not None:
            try:  # SOPs and MACs (mst_ref.engine.energy); without them, spike counts only
                _add(out["sops_by_site"], result.sops_by_site)
                out["macs"] += int(result.macs)
            except (AttributeError, ValueError, NotImplementedError):
                out["sops_by_site"], out["macs"] = {}, None
        done += len(idx)
    return out


def _add(total, counts):
    for name, v in counts.items():
        total[name] = total.get(name, 0) + int(v)


def grid_batches(dataset, start, stop, spec, img_size, in_chans):
    """The batches of images ``[start, stop)`` on the global grid of ``spec.batch_size``, prepared.

    ``dataset.images`` : (n, H, W, C) uint8 as stored; padding and normalisation are applied here, per batch.
    With ``spec.events``, ``dataset`` is an :class:`~mst_ref.io.event_folders.EventFolder`: each batch's
    recordings are read and coded here, ``(B, Cin, H, W)`` (voxel) or ``(bins, B, Cin, H, W)`` (frames).
    """
    for a in range(start, stop, spec.batch_size):
        b = min(a + spec.batch_size, stop)
        if spec.events:
            counts = dataset.coded(a, b, spec.events, spec.bins, img_size, in_chans)  # float32 counts
            mean = np.asarray(spec.mean, np.float64).reshape(-1, 1, 1)  # per channel
            std = np.asarray(spec.std, np.float64).reshape(-1, 1, 1)
            yield np.arange(a, b), ((counts - mean) / std).astype(np.float32), dataset.labels[a:b]
            continue
        images = dataset.images[a:b]  # (B, H, W, C) uint8
        h, w, c = images.shape[1:]
        # zero padding as trained, when it makes the stored images the model's input (cli.common.load_data)
        if spec.pad and (h + 2 * spec.pad, w + 2 * spec.pad, c) == (img_size, img_size, in_chans):
            images = np.pad(images, ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad), (0, 0)))
        x = data.prepare_images(images, img_size, in_chans, spec.mean, spec.std, spec.resize)  # (B, Cin, H, W)
        yield np.arange(a, b), x, dataset.labels[a:b]


# ---------------------------------------------------------------- the worker
_LOADED = {}  # per process: (checkpoint, digest, data, split, class names) -> (model, dataset)


def _worker_state(spec):
    """The model and the dataset of ``spec`` in this process, loaded (and the checkpoint checked) once."""
    key = (spec.checkpoint, spec.checkpoint_sha256, spec.data, spec.split, spec.class_names)
    if key not in _LOADED:
        if spec.checkpoint_sha256 is not None and file_digest(spec.checkpoint) != spec.checkpoint_sha256:
            raise ValueError(f"checkpoint {spec.checkpoint} on worker {os.uname().nodename} differs from the "
                             "one the run started with (SHA-256 mismatch): give every worker the same file")
        model = load_checkpoint(spec.checkpoint)
        if spec.events:
            dataset = EventFolder(spec.data, spec.split)
        else:
            dataset = data.load_dataset(spec.data, spec.split, class_names=spec.class_names)
        _LOADED.clear()  # one run's model per worker
        _LOADED[key] = (model, dataset)
    return _LOADED[key]


def evaluate_shard(spec, start, stop):
    """Evaluate images ``[start, stop)`` of ``spec`` in this process: the function workers run.

    Pins the thread pools to ``spec.threads`` (BLAS one), loads the checkpoint and reads the images itself
    (nothing large travels with the task) and returns :func:`evaluate_images`'s dict with ``start``,
    ``stop`` added.
    """
    model, dataset = _worker_state(spec)
    if stop > len(dataset):
        raise ValueError(f"{spec.data} holds {len(dataset)} images on this worker; the shard asks for images "
                         f"{start}-{stop - 1}")
    c = model.config
    with limit_threads(spec.threads):
        out = evaluate_images(model, grid_batches(dataset, start, stop, spec, c.img_size, c.in_chans), spec)
    return {"start": start, "stop": stop, **out}


# ---------------------------------------------------------------- shards and the merge
def check_shards(n, shard_size, batch_size):
    """Check a shard size against the batch grid; returns it (``None``: one shard of all n images)."""
    if shard_size is None:
        return n
    if shard_size < 1 or shard_size % batch_size:
        raise ValueError(f"the shard size must be a positive multiple of the batch size {batch_size} (so that "
                         f"every run cuts the same batches); got {shard_size}")
    return shard_size


def shard_ranges(n, shard_size):
    """``[(start, stop), ...]`` covering ``[0, n)`` in pieces of ``shard_size``."""
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def merge(results, n, timesteps):
    """Sort shard results by image index, check they cover ``[0, n)`` once, and reduce them.

    Returns
    -------
    dict
        ``n``, ``ann_correct`` (None without the ANN), ``snn_correct`` {T: int}, ``spikes`` (int, all sites),
        ``spikes_by_site``, ``sops_by_site`` ({site: int}), ``fired`` and ``fired_by_site`` (spikes fired
        before masking; None for results written without them), ``sops``, ``macs`` and ``energy_pj`` (None
        without energy accounting), and the per-image lists ``labels``, ``ann_pred``, ``snn_pred``.
    """
    results = sorted(results, key=lambda r: r["indices"][0] if r["indices"] else -1)
    indices = [i for r in results for i in r["indices"]]
    if indices != list(range(n)):
        raise ValueError(f"the shards cover images {indices[:3]}...{indices[-3:]}, not 0..{n - 1} once each")
    labels = np.array([v for r in results for v in r["labels"]])  # (n,)
    ann = None if results[0]["ann_pred"] is None else np.array([v for r in results for v in r["ann_pred"]])
    snn = {t: np.array([v for r in results for v in r["snn_pred"][t]]) for t in timesteps}  # (n,) each
    spikes, sops, fired = {}, {}, {}
    for r in results:
        _add(spikes, r["spikes_by_site"])
        _add(sops, r["sops_by_site"])
        _add(fired, r.get("fired_by_site") or {})
    if any("fired_by_site" not in r for r in results):  # a cache written before they were counted
        fired = None
    macs = None if any(r["macs"] is None for r in results) else sum(r["macs"] for r in results)
    total_sops = None if macs is None else sum(sops.values())
    return {"n": n, "ann_correct": None if ann is None else int((ann == labels).sum()),
            "snn_correct": {t: int((snn[t] == labels).sum()) for t in timesteps},
            "spikes": sum(spikes.values()), "spikes_by_site": spikes, "sops_by_site": sops,
            "fired": None if fired is None else sum(fired.values()), "fired_by_site": fired,
            "sops": total_sops, "macs": macs,
            "energy_pj": None if macs is None else energy.energy_pj(total_sops, macs),
            "labels": labels.tolist(), "ann_pred": None if ann is None else ann.tolist(),
            "snn_pred": {t: v.tolist() for t, v in snn.items()}}
