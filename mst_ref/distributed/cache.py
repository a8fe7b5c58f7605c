"""Resumable runs: finished shards on disk, keyed by what decides their results.

``--cache DIR`` keeps one JSON file per finished shard under ``DIR/<key>/``, where ``key`` is the SHA-256
of the run's identity (:func:`run_key`): the checkpoint's bytes, the dataset's bytes (a file, or a
folder's file names and bytes), every option that changes a result (:meth:`EvalSpec.options`), the
command and mst_ref's version. A rerun with the same identity skips the shards already there; any change
gives another key, so a stale shard is never reused. Each file is written to a temporary name in the
same folder and renamed (``os.replace``, atomic on POSIX), so a run killed mid-write leaves either the
whole file or none. A file that does not parse (a disk fault, an edit by hand) is recomputed.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .. import __version__

__all__ = ["run_key", "ShardCache"]


def run_key(command, options, checkpoint_sha256, data_sha256):
    """The SHA-256 naming a run's cache folder, and the identity it hashes (a JSON-ready dict)."""
    identity = {"command": command, "mst_ref": __version__, "checkpoint_sha256": checkpoint_sha256,
                "data_sha256": data_sha256, "options": options}
    text = json.dumps(identity, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest(), identity


class ShardCache:
    """Finished shards of one run under ``root/<key>/``, one ``images_<start>_<stop>.json`` each."""

    def __init__(self, root, key, identity):
        self.folder = Path(root) / key[:24]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.unreadable = []  # shards whose file did not parse (recomputed)
        ident = self.folder / "run.json"
        if not ident.exists():
            self._write(ident, identity)

    def path(self, start, stop):
        return self.folder / f"images_{start:09d}_{stop:09d}.json"

    def load(self, start, stop):
        """The stored result of shard ``[start, stop)``, or None (absent, or unreadable: then noted)."""
        path = self.path(start, stop)
        if not path.exists():
            return None
        try:
            result = json.loads(path.read_text())
            if result.get("start") != start or result.get("stop") != stop:
                raise ValueError("range mismatch")
            # JSON keys are strings: T back to int
            result["snn_pred"] = {int(t): v for t, v in result["snn_pred"].items()}
            return result
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            self.unreadable.append((start, stop))
            return None

    def store(self, result):
        self._write(self.path(result["start"], result["stop"]), result)

    def _write(self, path, obj):
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic: the whole file or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
