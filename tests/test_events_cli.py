"""The event commands: make-saccades writes readable N-MNIST folders (and resumes), inspect reports them,
eval --events runs a checkpoint on them; bad input is one error line."""

import struct

import numpy as np
import pytest

from mst_ref.cli.app import main
from mst_ref.io import data
from mst_ref.io.events import read_events
from mst_ref.io.saccades import SaccadeConfig, recording_rng, simulate_saccades


def write_idx(folder, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", images, labels), ("t10k", images, labels)):
        (folder / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(x), 28, 28) + x.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(y)) + y.tobytes())


@pytest.fixture(scope="module")
def saccade_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    sample = data.load_dataset(data.sample_path())
    write_idx(root / "idx", sample.images[:4, ..., 0].copy(), sample.labels[:4].astype(np.uint8))
    assert main(["events", "make-saccades", "--data", str(root / "idx"), "--out", str(root / "out")]) == 0
    return root, sample


def test_make_saccades_writes_the_simulated_recordings(saccade_dir, capsys):
    root, sample = saccade_dir
    for i in range(4):
        f = root / "out" / "test" / str(sample.labels[i]) / f"{i:05d}.bin"
        ev, sensor = read_events(f)
        assert sensor == (34, 34)
        assert np.array_equal(ev, simulate_saccades(sample.images[i, ..., 0], SaccadeConfig(),
                                                    recording_rng(0, "test", i)))
    capsys.readouterr()
    assert main(["events", "make-saccades", "--data", str(root / "idx"), "--out", str(root / "out")]) == 0
    assert "(0 events newly written)" in capsys.readouterr().out  # a rerun resumes: nothing to redo


def test_make_saccades_in_processes_writes_the_same_files(saccade_dir, tmp_path, monkeypatch):
    import mst_ref.cli.events as events_cli

    root, _ = saccade_dir
    monkeypatch.setattr(events_cli, "_BLOCK", 3)  # 4 recordings per split: blocks of 3 and 1
    assert main(["events", "make-saccades", "--data", str(root / "idx"), "--out", str(tmp_path),
                 "--workers", "2"]) == 0
    one = sorted(p.relative_to(root / "out") for p in (root / "out").rglob("*.bin"))
    two = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.bin"))
    assert one == two and len(one) == 8
    assert all((root / "out" / p).read_bytes() == (tmp_path / p).read_bytes() for p in one)


def test_inspect_reports_and_draws(saccade_dir, capsys):
    root, sample = saccade_dir
    f = root / "out" / "test" / str(sample.labels[0]) / "00000.bin"
    ev, _ = read_events(f)
    assert main(["events", "inspect", str(f), "--png", str(root / "frames.png")]) == 0
    out = capsys.readouterr().out
    assert "format nmnist, sensor 34 x 34" in out and f"{len(ev):,} events" in out
    assert f"{int((ev['p'] == 1).sum()):,} events" in out
    assert (root / "frames.png").stat().st_size > 0


def test_eval_events_runs_the_shipped_model(saccade_dir, capsys):
    root, _ = saccade_dir
    ckpt = data.shipped_file("mst_events_voxel.pth")
    for coding in ("voxel", "frames"):
        assert main(["eval", str(ckpt), "--data", str(root / "out"), "--events", coding, "--timesteps", "1,2,4",
                     "--json", str(root / f"{coding}.json")]) == 0
        out = capsys.readouterr().out
        assert "ANN (QCFS, L=8)" in out and "evaluating 4" in out
    import json
    v, f = (json.loads((root / f"{c}.json").read_text()) for c in ("voxel", "frames"))
    assert v["ann_accuracy"] == f["ann_accuracy"]  # the ANN sees the mean frame: the voxel grid
    assert f["macs_per_image"] > v["macs_per_image"]  # the first layer runs every step


def test_event_errors_are_one_line(saccade_dir, capsys, tmp_path):
    root, _ = saccade_dir
    ckpt = str(data.shipped_file("mst_events_voxel.pth"))
    assert main(["eval", ckpt, "--data", str(root / "out"), "--events", "voxel", "--bins", "4"]) == 2
    assert "makes 8 channels; the model takes 18" in capsys.readouterr().err
    assert main(["eval", ckpt, "--data", str(tmp_path), "--events", "voxel"]) == 2
    assert "no test/ folder" in capsys.readouterr().err
    (tmp_path / "bad.bin").write_bytes(b"\x01\x02\x03")
    assert main(["events", "inspect", str(tmp_path / "bad.bin")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5-byte records" in err


def test_eval_events_same_in_shards(saccade_dir, tmp_path):
    """Event folders go through the sharded core like images: 2 processes, shards of 2 recordings, masked,
    give the JSON of one process."""
    import json

    root, _ = saccade_dir
    argv = ["eval", str(data.shipped_file("mst_events_voxel.pth")), "--data", str(root / "out"), "--events",
            "frames", "--timesteps", "2,4", "--batch-size", "2", "--mask-ratio", "0.5", "--seed", "1"]
    outs = []
    for k, extra in enumerate([[], ["--workers", "2", "--shard-size", "2"]]):
        assert main(argv + extra + ["--json", str(tmp_path / f"{k}.json")]) == 0
        outs.append(json.loads((tmp_path / f"{k}.json").read_text()))
    assert outs[0] == outs[1] and outs[0]["n"] == 4 and outs[0]["spikes_per_image"] > 0


def test_energy_books_the_input_layer_per_coding(saccade_dir, tmp_path, capsys):
    """`energy --events`: the voxel grid runs the input convolution once, frames once per step; the
    table's analog MACs equal what the model booked (eval's JSON of the same run)."""
    import json
    import re

    root, _ = saccade_dir
    ckpt = str(data.shipped_file("mst_events_voxel.pth"))
    macs = {}
    for coding in ("voxel", "frames"):
        assert main(["energy", ckpt, "--data", str(root / "out"), "--events", coding, "--timesteps", "4"]) == 0
        out = capsys.readouterr().out
        macs[coding] = float(re.search(r"\+ MACs (\S+)", out).group(1))
        assert ("(all 4 steps: a frame each)" in out) == (coding == "frames")
        assert main(["eval", ckpt, "--data", str(root / "out"), "--events", coding, "--timesteps", "4",
                     "--json", str(tmp_path / "e.json")]) == 0
        capsys.readouterr()
        assert macs[coding] == pytest.approx(json.loads((tmp_path / "e.json").read_text())["macs_per_image"], rel=1e-3)
    assert macs["frames"] > macs["voxel"]


def test_rsm_table_takes_event_folders(saccade_dir, tmp_path, capsys):
    import json

    root, _ = saccade_dir
    ckpt = str(data.shipped_file("mst_events_voxel.pth"))
    argv = ["rsm-table", "--data", str(root / "out"), "--events", "voxel", "--timesteps", "2", "--ratios", "0,0.75",
            "--seeds", "1"]
    assert main(argv + ["--checkpoints", ckpt, "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["ratio"] for r in rows] == [0, 0.75] and rows[0]["images"] == 4
    assert rows[1]["delivered"] < rows[1]["fired"]
    capsys.readouterr()
    assert main(argv) == 2  # the shipped table's models take images
    assert "--events needs --checkpoints" in capsys.readouterr().err


def test_mask_sweep_takes_event_folders(saccade_dir, capsys):
    root, _ = saccade_dir
    argv = ["mask-sweep", str(data.shipped_file("mst_events_voxel.pth")), "--data", str(root / "out"), "--events",
            "frames", "--timesteps", "2", "--ratios", "0,0.75", "--seeds", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "on event recordings" in out and "first 4 images" in out and "0.75" in out
    assert main(argv + ["--layerwise"]) == 2
    assert "drop --layerwise" in capsys.readouterr().err
