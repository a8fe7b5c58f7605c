"""Folders of event recordings as datasets, and the coding of a recording for a model's input.

A dataset of recordings is laid out as N-MNIST is (and as ``mst-ref events make-saccades`` writes)::

    DIR/train/<label>/<name>.bin    DIR/test/<label>/<name>.bin     (label: the class index)

:class:`EventFolder` lists one split, ordered by file name (so that the first N recordings mix the
classes), and reads and codes recordings ``[a, b)`` on demand: nothing but the file list is held in
memory, and each file is read with :func:`mst_ref.io.events.read_events` (any format it knows; every
file untrusted, one :class:`~mst_ref.io.data.DataError` naming it).

Two codings (:func:`model_input`):

* ``voxel`` -- the MST authors' voxel grid, ``2 * bins`` channels, one static input fed at every step;
* ``frames`` -- one input per step: for a 2-channel model the ``bins`` event frames
  (:func:`~mst_ref.io.event_frames.frame_input`); for a ``2 * bins``-channel (voxel-trained) model the
  voxel grid one time bin per step (step t holds bin ``t mod bins``, times ``bins``, and zeros
  elsewhere), whose mean over ``bins`` steps is the voxel grid itself. The ANN sees the mean frame.
"""

from pathlib import Path

import numpy as np

from .data import DataError
from .event_frames import frame_input, voxel_input
from .events import read_events

__all__ = ["CODINGS", "EventFolder", "check_coding", "model_input"]

CODINGS = ("voxel", "frames")


def check_coding(coding, bins, in_chans):
    """ValueError unless ``coding`` with ``bins`` time bins makes the model's ``in_chans`` channels."""
    if coding not in CODINGS:
        raise ValueError(f"the event coding must be one of {CODINGS}; got {coding!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1; got {bins!r}")
    if coding == "voxel" and in_chans != 2 * bins:
        raise ValueError(f"the voxel coding with {bins} bins makes {2 * bins} channels; the model takes {in_chans}")
    if coding == "frames" and in_chans not in (2, 2 * bins):
        raise ValueError(f"the frames coding needs a 2-channel model or one of 2 * bins = {2 * bins} channels; "
                         f"the model takes {in_chans}")


def model_input(events, sensor_size, coding, bins, img_size, in_chans):
    """One recording as the model's input, unnormalised counts.

    Returns
    -------
    ndarray of float32
        ``voxel``: ``(2 bins, img, img)``; ``frames``: ``(bins, in_chans, img, img)``.
    """
    check_coding(coding, bins, in_chans)
    if coding == "voxel":
        return voxel_input(events, sensor_size, img_size, bins)
    if in_chans == 2:
        return frame_input(events, sensor_size, img_size, bins)  # (bins, 2, img, img)
    vox = voxel_input(events, sensor_size, img_size, bins).reshape(2, bins, img_size, img_size)
    out = np.zeros((bins, 2, bins, img_size, img_size), np.float32)
    for k in range(bins):  # step k: bin k of both polarities, times bins (the mean over bins steps is vox)
        out[k, :, k] = bins * vox[:, k]
    return out.reshape(bins, 2 * bins, img_size, img_size)


class EventFolder:
    """One split of a folder of recordings: ``files`` and ``labels`` ordered by file name.

    Raises
    ------
    DataError
        The split folder is missing, a class folder is not named by an index, or there is no recording.
    """

    def __init__(self, folder, split="test"):
        root = Path(folder) / split
        if not root.is_dir():
            raise DataError(f"{folder} has no {split}/ folder of event recordings (one subfolder per class, "
                            "named by class index, as `mst-ref events make-saccades` writes)")
        files, labels = [], []
        for sub in sorted(root.iterdir(), key=lambda p: p.name):
            if sub.is_dir():
                if not sub.name.isdigit():
                    raise DataError(f"{sub}: class folders of event recordings must be named by class index "
                                    "(0, 1, ...)")
                found = sorted(f for f in sub.iterdir() if f.is_file() and not f.name.startswith("."))
                files += found
                labels += [int(sub.name)] * len(found)
        if not files:
            raise DataError(f"{root} holds no event recordings")
        order = sorted(range(len(files)), key=lambda i: (files[i].name, labels[i]))  # by name: mixes classes
        self.name = f"event recordings {root}"
        self.files = [files[i] for i in order]
        self.labels = np.array(labels, np.int64)[order]  # (n,)

    def __len__(self):
        return len(self.files)

    def coded(self, start, stop, coding, bins, img_size, in_chans):
        """Recordings ``[start, stop)`` read and coded (:func:`model_input`), stacked along the batch axis.

        Returns
        -------
        ndarray of float32
            ``voxel``: ``(B, 2 bins, img, img)``; ``frames``: ``(bins, B, in_chans, img, img)``.
        """
        xs = [model_input(*read_events(f), coding, bins, img_size, in_chans) for f in self.files[start:stop]]
        return np.stack(xs, axis=-4)
