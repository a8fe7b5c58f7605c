"""Tests for mst_ref.io.data: every on-disk format round-trips, bad files fail loudly, inputs are exact."""

import builtins
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from mst_ref.io import data
from mst_ref.io.data import (FASHION_MNIST_CLASSES, folder_labels, FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataError, Dataset,
                          iterate_batches, load_dataset, load_idx, prepare_images, sample_path, shipped_file)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- writers for small test files

def idx_bytes(array):
    """IDX encoding of a uint8 array: 0x0000, type 0x08, ndim, big-endian uint32 sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_idx(path, array, gz):
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def random_images(n, h=5, w=4, c=None):
    return RNG.integers(0, 256, size=(n, h, w) if c is None else (n, h, w, c), dtype=np.uint8)


def py2_pickle(obj):
    """Hand-written protocol-2 pickle as Python 2 / numpy 1 wrote the real CIFAR files (str = bytes)."""
    def s(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v):
        return b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v) if 0 <= v < 65536 \
            else b"J" + struct.pack("<i", v)

    def o(v):
        if isinstance(v, bytes):
            return s(v)
        if isinstance(v, int):
            return i(v)
        if isinstance(v, list):
            return b"](" + b"".join(map(o, v)) + b"e"
        if isinstance(v, dict):
            return b"}(" + b"".join(o(k) + o(x) for k, x in v.items()) + b"u"
        dtype = b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN" \
            + i(-1) + i(-1) + i(0) + b"tb"
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R("
                + i(1) + b"(" + b"".join(i(d) for d in v.shape) + b"t" + dtype + b"\x89" + s(v.tobytes()) + b"tb")
    return b"\x80\x02" + o(obj) + b"."


def write_cifar10(folder, sizes, protocol=pickle.DEFAULT_PROTOCOL):
    """data_batch_1..5 and test_batch with `sizes[k]` images each; returns {name: (data, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in zip([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"], sizes):
        d = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, size=n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": d,
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        raw = py2_pickle(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol)
        (folder / name).write_bytes(raw)
        batches[name] = (d, labels)
    meta = {b"label_names": [c.encode() for c in ["airplane", "automobile", "bird", "cat", "deer",
                                                   "dog", "frog", "horse", "ship", "truck"]],
            b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta) if protocol == "py2" else pickle.dumps(meta))
    return batches


def write_png_folder(root, spec):
    """spec: {class: [uint8 (H, W) or (H, W, 3) arrays]}, written as PNGs in class subfolders."""
    for cls, arrays in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, a in enumerate(arrays):
            Image.fromarray(a).save(root / cls / f"{k:03d}.png")


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("names", [("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),  # Fashion/MNIST
                                   ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte")])  # Kaggle MNIST
def test_idx_round_trip(tmp_path, gz, names):
    images, labels = random_images(7, 6, 5), RNG.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / (names[0] + suffix), images, gz)
    write_idx(tmp_path / (names[1] + suffix), labels, gz)
    got_images, got_labels = load_idx(tmp_path / (names[0] + suffix), tmp_path / (names[1] + suffix))
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    ds = load_dataset(tmp_path, split="test")
    assert ds.images.shape == (7, 6, 5, 1) and ds.classes == [str(k) for k in range(10)]
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    images, labels = random_images(3), np.array([1, 2, 3], np.uint8)
    write_idx(tmp_path / "imgs", images, gz=True)  # gzipped, no .gz
    write_idx(tmp_path / "labs.gz", labels, gz=False)  # plain, named .gz
    got_images, got_labels = load_idx(tmp_path / "imgs", tmp_path / "labs.gz")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_folder_train_split_and_fashion_class_names(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for split, n in [("train", 4), ("t10k", 2)]:
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", random_images(n), True)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.full(n, n, np.uint8), True)
    train, test = load_dataset(folder, "train"), load_dataset(folder, "test")
    assert len(train) == 4 and len(test) == 2 and set(train.labels) == {4} and set(test.labels) == {2}
    assert train.classes == FASHION_MNIST_CLASSES


@pytest.mark.parametrize("damage, match", [
    (lambda raw: raw[:-1], "file has"),  # truncated data
    (lambda raw: raw + b"\x00", "file has"),  # trailing garbage
    (lambda raw: raw[:10], "truncated IDX header"),
    (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic"),  # a labels magic on an images file
    (lambda raw: gzip.compress(raw)[:-12], "gzip"),  # truncated gzip stream
    (lambda raw: b"", "magic"),
])
def test_idx_corrupt_files_raise(tmp_path, damage, match):
    raw = idx_bytes(random_images(3))
    (tmp_path / "images").write_bytes(damage(raw))
    write_idx(tmp_path / "labels", np.zeros(3, np.uint8), gz=False)
    with pytest.raises(DataError, match=match):
        load_idx(tmp_path / "images", tmp_path / "labels")


def test_idx_count_mismatch_names_both_counts(tmp_path):
    write_idx(tmp_path / "i", random_images(5), gz=False)
    write_idx(tmp_path / "l", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DataError, match=r"5 images.*4 labels"):
        load_idx(tmp_path / "i", tmp_path / "l")


def test_idx_labels_file_given_as_images_is_refused(tmp_path):
    write_idx(tmp_path / "l", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(DataError, match="00000803"):
        load_idx(tmp_path / "l", tmp_path / "l")


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", [2, 3, 1, 2, 2, 4], protocol)
    test = load_dataset(tmp_path, "test")  # the folder the archive unpacks to is found inside
    d, labels = batches["test_batch"]
    assert test.images.shape == (4, 32, 32, 3) and test.images.dtype == np.uint8
    assert test.classes[:2] == ["airplane", "automobile"] and len(test.classes) == 10
    np.testing.assert_array_equal(test.labels, labels)
    # pixel (row r, col c, channel ch) is byte ch * 1024 + r * 32 + c of the row
    for k, r, c, ch in [(0, 0, 0, 0), (1, 5, 7, 1), (3, 31, 30, 2), (2, 17, 0, 2)]:
        assert test.images[k, r, c, ch] == d[k, ch * 1024 + r * 32 + c]
    np.testing.assert_array_equal(test.images.reshape(4, -1, 3).transpose(0, 2, 1).reshape(4, 3072), d)
    train = load_dataset(tmp_path / "cifar-10-batches-py", "train")
    assert len(train) == 10
    np.testing.assert_array_equal(train.labels, sum((batches[f"data_batch_{k}"][1] for k in range(1, 6)), []))


def test_cifar100_round_trip(tmp_path):
    d = RNG.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    (tmp_path / "test").write_bytes(pickle.dumps({b"data": d, b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 2, 3]}))
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{k}".encode() for k in range(100)]}))
    ds = load_dataset(tmp_path, "test")
    np.testing.assert_array_equal(ds.labels, [5, 99, 0])
    assert len(ds.classes) == 100 and ds.classes[99] == "c99"
    np.testing.assert_array_equal(ds.images[1].transpose(2, 0, 1).reshape(-1), d[1])
    with pytest.raises(DataError, match="train is missing"):
        load_dataset(tmp_path, "train")


class _Payload:
    """Unpickling this would call `func(*args)`: what a malicious dataset file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("make", [
    lambda marker: _Payload(os.system, f"touch {marker}"),
    lambda marker: _Payload(builtins.open, str(marker), "w"),
    lambda marker: _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    lambda marker: _Payload(Path.touch, Path(marker)),
    lambda marker: _Payload(bytearray, 2**40),  # a memory bomb, not code, but refused the same way
])
def test_cifar_malicious_pickle_is_refused_and_not_run(tmp_path, make):
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [make(marker)]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset(tmp_path, "test")
    assert not marker.exists()


def test_cifar_corrupt_pickle_and_bad_data(tmp_path):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20])
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        load_dataset(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"uint8 \(n, 3072\)"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- image folder, .npz, wrong paths

def test_image_folder_gray(tmp_path):
    dog, cat = random_images(2, 6, 7), random_images(3, 6, 7)
    write_png_folder(tmp_path, {"dog": list(dog), "cat": list(cat)})
    ds = load_dataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.images.shape == (5, 6, 7, 1)
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.images[..., 0], np.concatenate([cat, dog]))


def test_image_folder_mixed_modes_become_rgb_and_split_subfolder(tmp_path):
    gray, rgb = random_images(1, 4, 4)[0], random_images(1, 4, 4, 3)[0]
    write_png_folder(tmp_path / "test", {"a": [gray], "b": [rgb]})
    write_png_folder(tmp_path / "train", {"a": [gray, gray]})
    ds = load_dataset(tmp_path, "test")
    assert ds.images.shape == (2, 4, 4, 3) and ds.classes == ["a", "b"]
    np.testing.assert_array_equal(ds.images[0], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(ds.images[1], rgb)
    assert len(load_dataset(tmp_path, "train")) == 2


def test_image_folder_errors(tmp_path):
    write_png_folder(tmp_path, {"a": [random_images(1, 4, 4)[0]], "b": [random_images(1, 5, 4)[0]]})
    with pytest.raises(DataError, match="one size"):
        load_dataset(tmp_path)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "empty")


@pytest.mark.parametrize("shape", [(6, 5, 4), (6, 5, 4, 3)])
def test_npz_round_trip(tmp_path, shape):
    images, labels = RNG.integers(0, 256, shape, dtype=np.uint8), np.arange(6) % 3
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    ds = load_dataset(tmp_path / "s.npz")
    np.testing.assert_array_equal(ds.images.reshape(shape), images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.images.ndim == 4 and ds.classes == ["0", "1", "2"] and ds.name == "s"


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="'images' and 'labels'"):
        load_dataset(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 3, 3)), labels=np.zeros(2, int))
    with pytest.raises(DataError, match="uint8"):
        load_dataset(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="c.npz is not a zip archive .* an .npz dataset is a zip of arrays"):
        load_dataset(tmp_path / "c.npz")
    (tmp_path / "t.npz").write_text("images,labels\n1,2\n")  # a text file named .npz: not numpy's pickle advice
    with pytest.raises(DataError, match="not a zip archive") as err:
        load_dataset(tmp_path / "t.npz")
    assert "allow_pickle" not in str(err.value)
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError, match="a single .npy array"):
        load_dataset(tmp_path / "one.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04" + b"\0" * 20)  # zip magic, then garbage
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "broken.npz")
    # an .npz holds one set of images: split='train' is refused, not silently the same images
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(DataError, match="holds one set of images; split='train' cannot be chosen"):
        load_dataset(tmp_path / "s.npz", split="train")


def test_wrong_paths(tmp_path):
    with pytest.raises(DataError, match="no such file or directory: .*nope; expected a folder of IDX files"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(DataError, match="split"):
        load_dataset(tmp_path, split="val")
    with pytest.raises(DataError, match="not in this mst_ref installation"):
        shipped_file("no_such_file.npz")


# ---------------------------------------------------------------- model inputs

def test_prepare_images_gray_no_resize_is_exact():
    images = random_images(3, 5, 5, 1)
    x = prepare_images(images, 5, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - 0.2860) / 0.3530  # float64 oracle
    assert x.dtype == np.float32 and x.shape == (3, 1, 5, 5)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)


def test_prepare_images_channel_conversion():
    rgb = random_images(2, 4, 4, 3)
    with pytest.raises(DataError, match=r"images are 3 x 4 x 4 .* model takes 1 x 4 x 4; .* resize=True to turn RGB"):
        prepare_images(rgb, 4, 1, (0.0,), (1.0,))  # a mismatch is refused unless asked for
    gray = prepare_images(rgb, 4, 1, (0.0,), (1.0,), resize=True)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0  # ITU-R 601
    np.testing.assert_allclose(gray[:, 0], luma, atol=1e-6)
    # gray -> RGB repeats the channel, then each channel gets its own mean and std
    g = random_images(2, 4, 4, 1)
    x = prepare_images(g, 4, 3, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0), resize=True)
    for ch, (m, s) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)]):
        np.testing.assert_allclose(x[:, ch], (g[..., 0] / 255.0 - m) / s, atol=1e-5)
    with pytest.raises(DataError, match="in_chans=2"):
        prepare_images(rgb, 4, 2, (0.0,), (1.0,), resize=True)
    with pytest.raises(DataError, match=r"mean and std need 1 value or 3 \(one per channel\) each"):
        prepare_images(rgb, 4, 3, (0.0, 0.0), (1.0,))
    with pytest.raises(DataError, match="mean and std need 1 value each, std > 0, for 1-channel images"):
        prepare_images(g, 4, 1, (0.0, 0.0), (1.0,))


@pytest.mark.parametrize("size", [14, 28, 40, 56])
def test_prepare_images_resize_matches_pillow(size):
    images = random_images(2, 28, 28, 1)
    if size != 28:
        with pytest.raises(DataError, match=f"resize 28 x 28 to {size} x {size} pixels"):
            prepare_images(images, size, 1, (0.0,), (1.0,))
    x = prepare_images(images, size, 1, (0.0,), (1.0,), resize=True)
    assert x.shape == (2, 1, size, size)
    for k in range(2):  # pillow's own 8-bit bilinear path, an independent oracle up to its rounding
        ref = np.asarray(Image.fromarray(images[k, :, :, 0]).resize((size, size), Image.BILINEAR)) / 255.0
        np.testing.assert_allclose(x[k, 0], ref, atol=1.01 / 255)
    const = np.full((1, 9, 9, 3), 200, np.uint8)  # bilinear keeps a constant image constant
    np.testing.assert_allclose(prepare_images(const, size, 3, (0.0,), (1.0,), resize=True), 200 / 255, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 23), batch_size=st.integers(1, 9), limit=st.one_of(st.none(), st.integers(0, 30)))
def test_iterate_batches_covers_each_item_once(n, batch_size, limit):
    ds = Dataset(random_images(n, 3, 3, 1), np.arange(n), ["x"] * max(n, 1), "toy")
    batches = list(iterate_batches(ds, batch_size, 3, 1, (0.5,), (0.5,), limit=limit))
    expected = n if limit is None else min(limit, n)
    ys = np.concatenate([y for _, y in batches]) if batches else np.zeros(0, np.int64)
    np.testing.assert_array_equal(ys, np.arange(expected))  # every item once, in order
    assert all(len(y) == batch_size for _, y in batches[:-1]) and all(0 < len(y) <= batch_size for _, y in batches)
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, prepare_images(ds.images[y], 3, 1, (0.5,), (0.5,)))


def test_iterate_batches_prepares_only_the_batch_in_hand(monkeypatch):
    seen = []
    real = data.prepare_images
    monkeypatch.setattr(data, "prepare_images", lambda im, *a: seen.append(len(im)) or real(im, *a))
    ds = Dataset(random_images(10, 4, 4, 1), np.zeros(10, np.int64), ["a"])
    it = iterate_batches(ds, 4, 4, 1, (0.0,), (1.0,))
    next(it)
    assert seen == [4]  # lazy: nothing beyond the first batch prepared yet
    list(it)
    assert seen == [4, 4, 2]
    with pytest.raises(DataError, match="batch_size"):
        next(iterate_batches(ds, 0, 4, 1, (0.0,), (1.0,)))


# ---------------------------------------------------------------- the shipped sample

def test_shipped_sample():
    ds = load_dataset(sample_path())
    assert ds.images.shape == (1000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels.min() >= 0 and ds.labels.max() <= 9
    assert ds.classes == FASHION_MNIST_CLASSES
    if not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("system Fashion-MNIST files not installed; shape checks done")
    images, labels = load_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz", FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), np.bincount(labels[:1000], minlength=10))
    np.testing.assert_array_equal(ds.labels, labels[:1000])
    np.testing.assert_array_equal(ds.images[..., 0], images[:1000])


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="no system Fashion-MNIST")
def test_fashion_mnist_mean_std_constants():
    images, _ = load_idx(FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz")
    x = images.reshape(-1)
    mean = x.mean(dtype=np.float64) / 255
    std = np.sqrt((x.astype(np.float64) ** 2).mean() / 255**2 - mean**2)
    assert abs(mean - FASHION_MNIST_MEAN[0]) < 5e-5 and abs(std - FASHION_MNIST_STD[0]) < 5e-5


# ---------------------------------------------------------------- image folders named by class

FASHION_FOLDERS = ["Ankle boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker",
                   "T-shirt_top", "Trouser"]  # as a user names them (a folder cannot hold '/')


def test_folders_named_by_class_get_the_models_labels(tmp_path):
    for k, name in enumerate(FASHION_FOLDERS):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((4, 4), k, np.uint8)).save(tmp_path / name / "a.png")
    ds = load_dataset(tmp_path, class_names=FASHION_MNIST_CLASSES)
    # sorted folders are Ankle boot, Bag, ...: each image is labelled by its class name, not its position
    by_pixel = {int(img[0, 0, 0]): int(label) for img, label in zip(ds.images, ds.labels)}
    assert {FASHION_FOLDERS[p]: FASHION_MNIST_CLASSES[lab] for p, lab in by_pixel.items()} == {
        f: {"T-shirt_top": "T-shirt/top"}.get(f, f) for f in FASHION_FOLDERS}
    assert ds.classes == FASHION_MNIST_CLASSES and ds.label_note == ""


@pytest.mark.parametrize("folder, label", [("t-shirt top", 0), ("T_SHIRT-TOP", 0), ("ankle_boot", 9),
                                           ("ANKLE   BOOT", 9), ("7", 7), ("0", 0)])
def test_folder_names_match_case_and_separators_alike_and_integers_are_indices(folder, label):
    assert folder_labels([folder], FASHION_MNIST_CLASSES)[0] == [label]


def test_unknown_folder_name_lists_the_known_ones():
    with pytest.raises(DataError, match=r"'Boots' names no class of this model; .*'Ankle boot'\]"):
        folder_labels(["Bag", "Boots"], FASHION_MNIST_CLASSES)
    with pytest.raises(DataError, match="class index 0..9"):
        folder_labels(["12"], FASHION_MNIST_CLASSES)
    with pytest.raises(DataError, match="same class"):
        folder_labels(["bag", "8"], FASHION_MNIST_CLASSES)


def test_without_class_names_integers_are_labels_and_names_fall_back_to_sorted_order_with_a_note():
    assert folder_labels(["0", "1", "3"]) == ([0, 1, 3], ["0", "1", "2", "3"], "")
    labels, classes, note = folder_labels(["bag", "coat"])
    assert labels == [0, 1] and classes == ["bag", "coat"]
    assert "sorted folder names (bag=0, coat=1)" in note and "no class names" in note


@pytest.mark.parametrize("name", ["mst_fashion.pth", "mst_fashion_rsm75.pth"])
def test_shipped_checkpoints_record_their_class_names(name):
    from mst_ref.io.checkpoint import load_state_dict
    assert load_state_dict(shipped_file(name))[1]["config"]["class_names"] == FASHION_MNIST_CLASSES
