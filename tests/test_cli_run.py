"""Tests for mst_ref.cli_run: ``demo`` writes its pictures, ``eval`` reports per-T accuracy as JSON."""

import argparse
import gzip
import json
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from mst_ref import cli_run
from mst_ref.checkpoint import save_npz
from mst_ref.cli_run import parse_timesteps
from mst_ref.data import sample_path
from mst_ref.models.mst_layout import MSTConfig, random_state_dict

# a tiny 3-channel model: 8x8 images, patch 2 -> 4x4 tokens, window 2, one stage of two blocks
TINY = MSTConfig(img_size=8, patch_size=2, in_chans=3, num_classes=3, embed_dim=8, depths=(2,),
                 num_heads=(2,), window_size=2, mlp_norm=False, qcfs_levels=4)


def run(*argv):
    """Parse ``argv`` with a parser holding only this module's commands and run it."""
    parser = argparse.ArgumentParser(prog="mst-ref")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_run.add_eval_parser(sub)
    cli_run.add_demo_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    state = random_state_dict(TINY, np.random.default_rng(0))
    path = folder / "tiny.npz"
    save_npz(path, state, {"img_size": 8, "mask_ratio": 0.5, "qcfs_levels": 4})  # no mean/std: defaults
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes x 4 RGB images of 10x10 pixels (resized to 8x8 by the loader's preparation)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for k in range(3):
        (root / f"class{k}").mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / f"class{k}" / f"{i}.png")
    return root


def test_parse_timesteps_expands_lists_and_rejects_junk():
    assert parse_timesteps("1,2,4,...,128") == [1, 2, 4, 8, 16, 32, 64, 128]
    assert parse_timesteps("8,16,24,...,40") == [8, 16, 24, 32, 40]
    assert parse_timesteps("1,2,...,5") == [1, 2, 3, 4, 5]  # two values: a constant step
    assert parse_timesteps("1,2,4,...,50") == [1, 2, 4, 8, 16, 32, 50]  # the last value is always kept
    assert parse_timesteps("16, 4,4") == [4, 16]
    for bad in ["", "0,2", "a,b", "1,...,8", "1,2,5,...,20", "4,2,...,64"]:
        with pytest.raises(ValueError, match="--timesteps"):
            parse_timesteps(bad)


def test_eval_on_a_tiny_random_checkpoint_writes_consistent_json(tiny_checkpoint, image_folder, tmp_path,
                                                                  capsys):
    out = tmp_path / "res" / "eval.json"
    assert run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "1,2,...,6",
               "--batch-size", "5", "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 12 and result["timesteps"] == [1, 2, 3, 4, 5, 6]
    assert result["mask_ratio"] == 0.5 == result["trained_mask_ratio"]  # default: the trained ratio
    assert result["mean"] == list(cli_run.IMAGENET_MEAN)  # 3 channels, no mean in the checkpoint
    assert sorted(result["snn_accuracy"], key=int) == ["1", "2", "3", "4", "5", "6"]
    for t, acc in result["snn_accuracy"].items():
        assert acc == result["snn_correct"][t] / 12
    assert result["ann_accuracy"] == result["ann_correct"] / 12
    assert result["spikes_per_image"] > 0
    text = capsys.readouterr()
    assert "evaluating 12" in text.out and f"{result['snn_correct']['6']:>8}" in text.out
    assert "84/84 image-steps" in text.err  # the progress bar: 12 images x (6 SNN steps + the ANN)
    # same seed and settings -> the same numbers (RSM draws from --seed); another seed -> its own masks
    again = tmp_path / "again.json"
    run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "1,2,...,6", "--batch-size", "5",
        "--json", again)
    assert json.loads(again.read_text()) == result
    unmasked = tmp_path / "p0.json"
    run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "6", "--mask-ratio", "0",
        "--json", unmasked, "--limit", "7")
    assert json.loads(unmasked.read_text())["mask_ratio"] == 0 and json.loads(unmasked.read_text())["n"] == 7


def test_eval_on_the_shipped_sample_matches_the_library(tmp_path):
    out = tmp_path / "shipped.json"
    assert run("eval", cli_run.data.shipped_file("mst_fashion.pth"), "--data", sample_path(),
               "--timesteps", "2,8", "--limit", "20", "--batch-size", "10", "--json", out) == 0
    result = json.loads(out.read_text())
    model, mean, std, _ = cli_run.load_model(cli_run.data.shipped_file("mst_fashion.pth"))
    assert (mean, std) == ((0.286,), (0.353,))  # from the checkpoint's config
    ds = cli_run.data.load_dataset(sample_path())
    x = cli_run.data.prepare_images(ds.images[:20], 28, 1, mean, std)
    ann = int((model.ann_forward(x).argmax(-1) == ds.labels[:20]).sum())
    predictions = model.snn_forward(x, 8).predictions  # (T, B): no masking, so batching does not matter
    assert result["ann_correct"] == ann and result["n"] == 20 and result["mask_ratio"] == 0
    assert result["snn_correct"] == {str(t): int((predictions[t - 1] == ds.labels[:20]).sum()) for t in (2, 8)}


def write_idx_folder(folder, images, labels):
    """Fashion-MNIST's test files (gzipped IDX: magic 0x0803 / 0x0801, big-endian sizes, bytes)."""
    for name, array, magic in [("t10k-images-idx3-ubyte.gz", images, 0x0803), ("t10k-labels-idx1-ubyte.gz",
                                                                                labels.astype(np.uint8), 0x0801)]:
        header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
        (folder / name).write_bytes(gzip.compress(header + array.tobytes()))


def write_cifar_folder(folder, images, labels):
    """A CIFAR-10 'python version' folder: test_batch = {'data': (n, 3072) uint8, 'labels': [...]}."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # rows: 1024 R, 1024 G, 1024 B
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": labels.tolist()}, protocol=2))


@pytest.mark.parametrize("layout", ["idx", "cifar"])
def test_eval_reads_idx_and_cifar_folders(layout, tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array([0, 1, 2, 2, 1, 0])
    if layout == "idx":  # 28x28 gray, made RGB and resized to 8x8 for the tiny model
        write_idx_folder(tmp_path, rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), labels)
    else:  # 32x32 RGB
        write_cifar_folder(tmp_path, rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), labels)
    out = tmp_path / "r.json"
    assert run("eval", tiny_checkpoint, "--data", tmp_path, "--timesteps", "1,3", "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 6 and set(result["snn_correct"]) == {"1", "3"}
    assert 0 <= result["ann_correct"] <= 6 and all(0 <= c <= 6 for c in result["snn_correct"].values())


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/folder"], "no such file or directory: /no/such/folder"),
    (["--data", "SAMPLE", "--timesteps", "1,x"], "--timesteps must be integers"),
    (["--data", "SAMPLE", "--mask-ratio", "1.5"], "--mask-ratio must be in"),
    (["--data", "SAMPLE", "--limit", "0"], "--limit must be >= 1"),
    (["--data", "SAMPLE"], "has labels up to 9 but the checkpoint has 3 classes"),
])
def test_eval_bad_arguments_fail_with_a_message_not_a_traceback(tiny_checkpoint, argv, message, capsys):
    argv = [str(sample_path()) if a == "SAMPLE" else a for a in argv]
    assert run("eval", tiny_checkpoint, *argv) == 2
    err = capsys.readouterr().err
    assert "mst-ref eval: error:" in err and message in err and "Traceback" not in err


def test_eval_bad_checkpoint_fails_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert run("eval", bad, "--data", sample_path(), "--limit", "2") == 2
    assert "mst-ref eval: error:" in capsys.readouterr().err


def test_demo_writes_its_pngs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--out", out, "--limit", "16", "--timesteps", "1,2,4,8", "--batch-size", "8") == 0
    text = capsys.readouterr().out
    assert "16 of the 1000 shipped" in text and "spikes per image" in text
    assert "reproduces the model's spikes of 3 neurons: yes" in text
    assert str(out.resolve()) in text
    sizes = {"accuracy_vs_T.png": (640, 420), "spike_raster.png": (640, 420),
             "membrane_traces.png": (640, 420), "attention_map.png": (3 * 28 * 6 + 4 * 6 + 8, 28 * 6 + 26)}
    for name in [*sizes, "attention_window.png"]:
        assert name in text
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            a = np.asarray(im.convert("RGB")).astype(int)
        if name in sizes:
            assert im.size == sizes[name], name
        # not blank: beyond the white background, many pixels in colour (curves, spikes, maps)
        colourful = (a.max(axis=-1) - a.min(axis=-1) > 60).sum()
        assert colourful > 300, (name, colourful)
