"""Tests for mst_ref.cli.run: ``demo`` writes its pictures, ``eval`` reports per-T accuracy as JSON."""

import argparse
import gzip
import json
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from mst_ref.cli import common as cli_common
from mst_ref.cli import run as cli_run
from mst_ref.io.checkpoint import save_npz
from mst_ref.io.data import sample_path
from mst_ref.models.mst_layout import MSTConfig, random_state_dict

# a tiny 3-channel model: 8x8 images, patch 2 -> 4x4 tokens, window 2, one stage of two blocks
TINY = MSTConfig(img_size=8, patch_size=2, in_chans=3, num_classes=3, embed_dim=8, depths=(2,),
                 num_heads=(2,), window_size=2, mlp_norm=False, qcfs_levels=4)


def run(*argv):
    """Parse ``argv`` with a parser holding only this module's commands and run it (errors propagate;
    ``cli_common.run_command(name, run, argv)`` turns them into the CLI's message and status 2)."""
    if len(argv) == 1 and isinstance(argv[0], list):
        argv = argv[0]
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


def test_eval_on_a_tiny_random_checkpoint_writes_consistent_json(tiny_checkpoint, image_folder, tmp_path,
                                                                  capsys):
    out = tmp_path / "res" / "eval.json"
    assert run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "1,2,3,...,6",
               "--batch-size", "5", "--json", out, "--resize") == 0
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
    assert "--resize: the images are converted to the model's input: resize 10 x 10 to 8 x 8" in text.out
    assert "labels follow the sorted folder names" in text.out  # the tiny model records no class names
    assert "84/84 image-steps" in text.err  # the progress bar: 12 images x (6 SNN steps + the ANN)
    # same seed and settings -> the same numbers (RSM draws from --seed); another seed -> its own masks
    again = tmp_path / "again.json"
    run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "1,2,3,...,6", "--batch-size", "5",
        "--json", again, "--resize")
    assert json.loads(again.read_text()) == result
    unmasked = tmp_path / "p0.json"
    run("eval", tiny_checkpoint, "--data", image_folder, "--timesteps", "6", "--mask-ratio", "0",
        "--json", unmasked, "--limit", "7", "--resize")
    assert json.loads(unmasked.read_text())["mask_ratio"] == 0 and json.loads(unmasked.read_text())["n"] == 7


def test_eval_on_the_shipped_sample_matches_the_library(tmp_path):
    out = tmp_path / "shipped.json"
    assert run("eval", cli_run.data.shipped_file("mst_fashion.pth"), "--data", sample_path(),
               "--timesteps", "2,8", "--limit", "20", "--batch-size", "10", "--json", out) == 0
    result = json.loads(out.read_text())
    loaded = cli_common.load_model(cli_run.data.shipped_file("mst_fashion.pth"))
    model, mean, std = loaded.model, loaded.mean, loaded.std
    assert (mean, std) == ((0.286,), (0.353,))  # from the checkpoint's config
    assert loaded.class_names[0] == "T-shirt/top" and result["class_names"] == loaded.class_names
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
    assert run("eval", tiny_checkpoint, "--data", tmp_path, "--timesteps", "1,3", "--json", out, "--resize") == 0
    result = json.loads(out.read_text())
    assert result["n"] == 6 and set(result["snn_correct"]) == {"1", "3"}
    assert 0 <= result["ann_correct"] <= 6 and all(0 <= c <= 6 for c in result["snn_correct"].values())


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/folder"], "no such file or directory: /no/such/folder"),
    (["--data", "SAMPLE", "--timesteps", "1,x"], "--timesteps must be integers"),
    (["--data", "SAMPLE", "--mask-ratio", "1.5"], "--mask-ratio must be in"),
    (["--data", "SAMPLE", "--limit", "0"], "--limit must be >= 1"),
    (["--data", "SAMPLE"], "has labels up to 9 but the checkpoint has 3 classes"),
    (["--data", "GRAY28"], "pass --resize to repeat the gray channel 3 times and resize 28 x 28 to 8 x 8"),
    (["--data", "SAMPLE", "--timesteps", "8,4"], "--timesteps values must increase"),
    (["--data", "SAMPLE", "--mean", "0.1,0.2"], "--mean needs 1 or 3 values; got 2"),
    (["--data", "SAMPLE", "--split", "train"], "holds one set of images; split='train' cannot"),
    (["--data", "SAMPLE", "--json", "/proc/no/such/dir/x.json"], "--json /proc/no/such/dir/x.json cannot be written"),
])
def test_eval_bad_arguments_fail_with_a_message_not_a_traceback(tiny_checkpoint, argv, message, capsys, tmp_path):
    gray = tmp_path / "gray28.npz"  # Fashion-MNIST-shaped images with labels the tiny model has
    np.savez(gray, images=np.zeros((4, 28, 28), np.uint8), labels=np.array([0, 1, 2, 0]))
    argv = [str(sample_path()) if a == "SAMPLE" else str(gray) if a == "GRAY28" else a for a in argv]
    assert cli_common.run_command("eval", run, ["eval", tiny_checkpoint, *argv]) == 2
    err = capsys.readouterr().err
    assert "mst-ref eval: error:" in err and message in err and "Traceback" not in err


def test_eval_bad_checkpoint_fails_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert cli_common.run_command("eval", run, ["eval", bad, "--data", sample_path(), "--limit", "2"]) == 2
    assert "mst-ref eval: error:" in capsys.readouterr().err


def test_demo_writes_its_pngs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--out", out, "--limit", "16", "--timesteps", "1,2,4,8", "--batch-size", "8") == 0
    text = capsys.readouterr().out
    assert "16 of the 1000 shipped" in text and "spikes per image" in text
    assert "reach lambda exactly when the model's 3 neurons spike: yes" in text
    assert "image 0: a Ankle boot" in text  # class names from the checkpoint's config
    assert str(out.resolve()) in text
    sizes = {"accuracy_vs_T.png": (720, 460), "spike_raster.png": (720, 460), "membrane_traces.png": (720, 460)}
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


def test_folders_named_by_class_score_like_folders_named_by_index(tmp_path, capsys):
    """The shipped model on sample images saved as PNGs, one folder per class: named "Ankle boot",
    "T-shirt_top", ... or 9, 0, ... must give the same labels, so the same accuracy."""
    ds = cli_run.data.load_dataset(sample_path())
    names = cli_run.data.FASHION_MNIST_CLASSES
    for layout in ("by_name", "by_index"):
        for i in range(30):
            label = int(ds.labels[i])
            folder = tmp_path / layout / (names[label].replace("/", "_") if layout == "by_name" else str(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i, :, :, 0]).save(folder / f"{i:03d}.png")
    results = {}
    for layout in ("by_name", "by_index"):
        out = tmp_path / f"{layout}.json"
        assert run("eval", cli_run.data.shipped_file("mst_fashion.pth"), "--data", tmp_path / layout,
                   "--timesteps", "1", "--json", out) == 0
        results[layout] = json.loads(out.read_text())
    assert "sorted folder names" not in capsys.readouterr().out  # labels came from the class names
    assert results["by_name"]["ann_correct"] == results["by_index"]["ann_correct"] >= 24  # ~90% of 30
