"""Datasets: images and labels from disk, then float32 model inputs.

``load_dataset`` reads a folder of IDX files (MNIST, Fashion-MNIST), a CIFAR-10/100 "python version"
batches folder (pickles, read by a restricted unpickler), an image folder (one subfolder per class) or an
``.npz`` with ``images`` and ``labels`` (the shipped sample), into a ``Dataset`` of uint8 (n, H, W, C)
images. ``prepare_images`` / ``iterate_batches`` turn those into the (B, Cin, img, img) float32 inputs of
``MST.ann_forward`` and ``MST.snn_forward``: scaled to [0, 1] and normalised; converted to the model's
channel count and size only when asked (``resize=True``), since a model run on data of another shape is
usually a mistake. Image folders get their labels by matching folder names to the model's class names.
"""

import gzip
import importlib.resources
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_MEAN = (0.2860,)  # per-channel mean of the training images in [0, 1]
FASHION_MNIST_STD = (0.3530,)  # per-channel standard deviation
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_WRONG_PATH_HINT = ("expected a folder of IDX files, a CIFAR-10/100 batches folder, "
                    "an image folder or an .npz with images and labels")


class DataError(ValueError):
    """A dataset file or folder is missing, malformed or not one of the supported layouts."""


@dataclass
class Dataset:
    """Images and labels in memory, as ``load_dataset`` returns them."""

    images: np.ndarray  # (n, H, W, C) uint8
    labels: np.ndarray  # (n,) int64
    classes: list = None  # class names (str), indexed by label; None -> "0", "1", ...
    name: str = ""  # where the data came from, for messages
    label_note: str = ""  # how an image folder's labels were assigned, when the caller should say it

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8 or self.labels.shape != self.images.shape[:1]:
            raise DataError(f"Dataset needs uint8 images (n, H, W, C) and labels (n,); got "
                            f"{self.images.dtype} {self.images.shape} and {self.labels.shape}")
        self.labels = self.labels.astype(np.int64, copy=False)
        if self.classes is None:
            self.classes = [str(k) for k in range(int(self.labels.max(initial=0)) + 1)]

    def __len__(self):
        return len(self.images)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
def _read_idx(path, magic):
    """Return the array stored in one IDX file, checking the header against the file length."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from None
    # header: magic (4 bytes, big-endian: 0x0000, type 0x08 = uint8, ndim), then ndim uint32 sizes
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file of this kind: magic {raw[:4].hex()}, expected {magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx(images_path, labels_path):
    """Read an IDX image file and its IDX label file (gzipped or not; detected by content).

    Parameters
    ----------
    images_path, labels_path : str or Path

    Returns
    -------
    images : (n, H, W) uint8 ndarray
    labels : (n,) int64 ndarray

    Notes
    -----
    Format of LeCun et al., "The MNIST database" (also used by Fashion-MNIST): a big-endian magic
    number 0x00000803 (images) / 0x00000801 (labels), one uint32 per dimension, then the bytes.
    """
    images = _read_idx(images_path, 0x00000803)
    labels = _read_idx(labels_path, 0x00000801).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return images, labels


def _load_idx_folder(folder, split):
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    paths = []  # names like train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte, t10k-images.idx3-ubyte
    for kind, ndim in [("images", "idx3"), ("labels", "idx1")]:
        found = sorted(p for p in folder.iterdir() if p.name.startswith(prefixes) and kind in p.name and ndim in p.name)
        if not found:
            raise DataError(f"{folder}: no {split} {kind} IDX file ({prefixes[0]}-{kind}-{ndim}-ubyte[.gz])")
        paths.append(found[0])
    images, labels = load_idx(*paths)
    fashion = "fashion" in (folder.resolve().name + folder.resolve().parent.name).lower()
    classes = list(FASHION_MNIST_CLASSES) if fashion else [str(k) for k in range(10)]  # MNIST: digits
    return Dataset(images[..., None], labels, classes, f"{folder.name}:{split}")  # (n, H, W, 1)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 batches
_ARRAY = np.arange(1)
_ALLOWED = {  # the only globals a pickle may name: what numpy's own array pickles refer to
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3's protocol 2 writes bytes as _codecs.encode(str, 'latin1'); no other codec is offered
    ("_codecs", "encode"): lambda text, encoding: text.encode("latin1"),
}
for _type in (list, dict, tuple, set, frozenset):  # under their Python 3 and Python 2 module names
    _ALLOWED["builtins", _type.__name__] = _ALLOWED["__builtin__", _type.__name__] = _type


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and plain containers, and refuses every other global."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise DataError(f"refusing to load {module}.{name} from a pickle: only numpy arrays, "
                            "lists, dicts and plain values are allowed in dataset files")
        return _ALLOWED[module, name]


def _read_pickle(path):
    """A CIFAR batch as a dict with str keys (the real files, pickled by Python 2, have bytes keys)."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as err:  # corrupt pickles raise many types: EOFError, UnpicklingError, ...
        raise DataError(f"{path}: not a readable CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _load_cifar_folder(folder, split, cifar100):
    if cifar100:  # train, test, meta with 'fine_labels' / 'fine_label_names'
        files, label_key, meta, names_key = [folder / split], "fine_labels", folder / "meta", "fine_label_names"
    else:  # data_batch_1..5, test_batch, batches.meta with 'labels' / 'label_names'
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        files = [folder / n for n in names]
        label_key, meta, names_key = "labels", folder / "batches.meta", "label_names"
    images, labels = [], []
    for path in files:
        if not path.exists():
            raise DataError(f"{folder}: CIFAR batch {path.name} is missing for split {split!r}")
        batch = _read_pickle(path)
        data = np.asarray(batch.get("data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' must be uint8 (n, 3072); got {data.dtype} {data.shape}")
        if label_key not in batch or len(batch[label_key]) != len(data):
            raise DataError(f"{path}: expected {len(data)} {label_key!r} for {len(data)} images")
        # each row is 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row order
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (n, 32, 32, 3)
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    classes = None
    if meta.exists():
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _read_pickle(meta)[names_key]]
    images = np.ascontiguousarray(np.concatenate(images))  # (n, 32, 32, 3)
    return Dataset(images, np.concatenate(labels), classes, f"{folder.name}:{split}")


# ---------------------------------------------------------------- image folder and .npz
def class_key(name):
    """A class or folder name as compared: lowercase, with '/', '-', '_' and runs of spaces alike.

    A folder cannot be called "T-shirt/top", so "t-shirt_top", "T shirt top" and "T-SHIRT-TOP" all
    name that class.
    """
    return " ".join(str(name).lower().translate(str.maketrans("/-_", "   ")).split())


def folder_labels(folder_names, class_names=None):
    """The class index of each image-folder name, and a note when the labels are a guess.

    Parameters
    ----------
    folder_names : list of str
        Names of the class subfolders.
    class_names : list of str or None
        The model's classes, indexed by label (a checkpoint records them as ``class_names``).

    Returns
    -------
    labels : list of int, one per folder
    classes : list of str, the class names indexed by label
    note : str, empty unless the labels follow the sorted folder names (no class names to match)

    Notes
    -----
    A folder whose name is an integer holds that class index. Otherwise, with class names, a folder
    name must equal one of them as :func:`class_key` compares them; without, folders are numbered in
    sorted order, which is right only if the model was trained with that order.
    """
    labels, numeric = [], all(n.isdigit() for n in folder_names)
    if class_names is not None:
        keys = {class_key(c): k for k, c in enumerate(class_names)}
        for n in folder_names:
            k = int(n) if n.isdigit() else keys.get(class_key(n))
            if k is None or k >= len(class_names):
                raise DataError(f"image folder {n!r} names no class of this model; folder names must be "
                                f"one of {list(class_names)} (case, '/', '-', '_' and spaces are ignored) "
                                f"or a class index 0..{len(class_names) - 1}")
            labels.append(k)
        if len(set(labels)) != len(labels):
            raise DataError(f"two image folders name the same class: {folder_names} -> labels {labels}")
        return labels, list(class_names), ""
    if numeric:
        labels = [int(n) for n in folder_names]
        return labels, [str(k) for k in range(max(labels) + 1)], ""
    return (list(range(len(folder_names))), list(folder_names),
            f"labels follow the sorted folder names ({', '.join(f'{n}={k}' for k, n in enumerate(folder_names))}) "
            "because the model records no class names; they are right only if it was trained in that order")


def _load_image_folder(folder, split, class_names=None):
    if (folder / split).is_dir() and any(p.is_dir() for p in (folder / split).iterdir()):
        folder = folder / split  # root/test/<class>/*.png
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    dir_labels, classes, note = folder_labels([d.name for d in class_dirs], class_names) if class_dirs \
        else ([], [], "")
    files = [(path, label) for label, d in zip(dir_labels, class_dirs)
             for path in sorted(d.iterdir()) if path.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{folder}: no images found in class subfolders; {_WRONG_PATH_HINT}")
    arrays = []
    for path, _ in files:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            arrays.append(np.asarray(im.convert("L" if gray else "RGB")).reshape(im.height, im.width, -1))
        if arrays[-1].shape[:2] != arrays[0].shape[:2]:
            raise DataError(f"all images must have one size: {files[0][0]} is {arrays[0].shape[:2]} "
                            f"but {path} is {arrays[-1].shape[:2]}; resize them first")
    channels = max(a.shape[2] for a in arrays)  # 'L' if all are gray, else 'RGB' (gray repeated)
    images = np.stack([np.repeat(a, channels // a.shape[2], axis=2) for a in arrays])  # (n, H, W, C)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return Dataset(images, labels, classes, folder.name, note)


def _load_npz(path):
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] != b"PK\x03\x04":  # an .npz is a zip archive of .npy files
        kind = "a single .npy array" if magic == b"\x93NUMPY" else f"not a zip archive (it starts with {magic!r})"
        raise DataError(f"{path} is {kind}; an .npz dataset is a zip of arrays 'images' and 'labels', "
                        "as written by np.savez(path, images=..., labels=...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except KeyError:
        raise DataError(f"{path}: an .npz dataset needs arrays 'images' and 'labels'") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz ({err})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'images' must be uint8 (n, H, W) or (n, H, W, C) and 'labels' integers; "
                        f"got {images.dtype} {images.shape} and {labels.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # (n, H, W, 1)
    return Dataset(images, labels.astype(np.int64), classes, path.stem)


def load_dataset(path, split="test", class_names=None):
    """Load a dataset from a folder of IDX files, CIFAR batches, an image folder or an .npz.

    Parameters
    ----------
    path : str or Path
    split : {'test', 'train'}
        Which part of an IDX or CIFAR folder to read; an image folder uses ``path/split`` when it
        exists and ``path`` itself otherwise. An .npz holds one set of images, read as 'test';
        ``split='train'`` on an .npz is an error rather than silently the same images.
    class_names : list of str or None
        The model's class names, indexed by label: an image folder's subfolders are matched to them
        (:func:`folder_labels`). Without them, integer folder names are labels and other names are
        numbered in sorted order (``Dataset.label_note`` then says so).

    Returns
    -------
    Dataset
        images (n, H, W, C) uint8, labels (n,) int64, class names, name.
    """
    path = Path(path)
    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train'; got {split!r}")
    if not path.exists():
        raise DataError(f"no such file or directory: {path}; {_WRONG_PATH_HINT}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            if split != "test":
                raise DataError(f"{path} is an .npz, which holds one set of images; split={split!r} cannot "
                                "be chosen from it: pass a file (or folder) of those images instead")
            return _load_npz(path)
        raise DataError(f"{path} is a file but not an .npz; {_WRONG_PATH_HINT}")
    for sub in ("cifar-10-batches-py", "cifar-100-python"):  # the folders the CIFAR archives unpack to
        if (path / sub).is_dir():
            path = path / sub
    names = {p.name for p in path.iterdir()}
    cifar100 = (path / "meta").is_file() and ((path / "train").is_file() or (path / "test").is_file())
    if cifar100 or names & {"batches.meta", "test_batch", "data_batch_1"}:
        return _load_cifar_folder(path, split, cifar100)
    if any("idx1" in n or "idx3" in n for n in names):
        return _load_idx_folder(path, split)
    return _load_image_folder(path, split, class_names)


# ---------------------------------------------------------------- model inputs
def normalize(x, mean, std):
    """Per-channel ``(x - mean) / std`` of x : (B, C, H, W) floats; mean, std : C (or 1) values each."""
    mean = np.asarray(mean, dtype=x.dtype).reshape(-1, 1, 1)  # (C or 1, 1, 1)
    std = np.asarray(std, dtype=x.dtype).reshape(-1, 1, 1)  # (C or 1, 1, 1)
    if mean.shape[0] not in (1, x.shape[1]) or std.shape[0] not in (1, x.shape[1]) or (std <= 0).any():
        want = "1 value each" if x.shape[1] == 1 else f"1 value or {x.shape[1]} (one per channel) each"
        raise DataError(f"mean and std need {want}, std > 0, for {x.shape[1]}-channel images; "
                        f"got mean {mean.ravel().tolist()} and std {std.ravel().tolist()}")
    # x_hat = (x - mu_c) / sigma_c
    return (x - mean) / std


def prepare_images(images, img_size, in_chans, mean, std, resize=False):
    """Turn stored uint8 images into normalised float32 model inputs.

    Parameters
    ----------
    images : (n, H, W, C) or (n, H, W) uint8 ndarray, C = 1 or 3
    img_size : int, side of the square model input
    in_chans : int, 1 or 3, channels the model takes
    mean, std : sequences of in_chans (or 1) floats, for images scaled to [0, 1]
    resize : bool
        Convert images whose size or channel count differs from the model's (see Notes); False: such
        images are an error, since a model run on data it was not trained for gives numbers that
        look plausible and mean little.

    Returns
    -------
    (n, in_chans, img_size, img_size) float32 ndarray

    Notes
    -----
    x = I / 255; gray -> RGB repeats the channel, RGB -> gray is ITU-R BT.601 luma
    Y = 0.299 R + 0.587 G + 0.114 B; resizing is pillow's bilinear filter (antialiased when shrinking,
    as torchvision's ``Resize``); then x_hat = (x - mean) / std per channel.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]  # (n, H, W, 1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"images must be uint8 (n, H, W, 1 or 3); got {images.dtype} {images.shape}")
    if not resize and (images.shape[3] != in_chans or images.shape[1:3] != (img_size, img_size)):
        raise DataError(f"images are {images.shape[3]} x {images.shape[1]} x {images.shape[2]} (channels x "
                        f"height x width) but the model takes {in_chans} x {img_size} x {img_size}; "
                        "convert them first, or pass resize=True to " + describe_conversion(
                            images.shape[1:], img_size, in_chans))
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # (n, C, H, W) in [0, 1]
    if x.shape[1] == 1 and in_chans == 3:
        x = np.repeat(x, 3, axis=1)  # (n, 3, H, W)
    elif x.shape[1] == 3 and in_chans == 1:
        # Y = 0.299 R + 0.587 G + 0.114 B
        x = np.tensordot(np.float32([0.299, 0.587, 0.114]), x, axes=([0], [1]))[:, None]  # (n, 1, H, W)
    elif x.shape[1] != in_chans:
        raise DataError(f"cannot convert {x.shape[1]}-channel images to in_chans={in_chans}")
    if x.shape[2:] != (img_size, img_size):
        n, c = x.shape[:2]
        x = np.stack([np.asarray(Image.fromarray(plane).resize((img_size, img_size), Image.BILINEAR))
                      for plane in x.reshape(n * c, *x.shape[2:])]).reshape(n, c, img_size, img_size)
    return np.ascontiguousarray(normalize(x, mean, std), dtype=np.float32)


def describe_conversion(shape, img_size, in_chans):
    """What ``prepare_images(..., resize=True)`` does to images of ``shape`` (H, W, C), in words."""
    h, w, c = (tuple(shape) + (1,))[:3]
    steps = []
    if c != in_chans:
        steps.append("repeat the gray channel 3 times" if c == 1 else "turn RGB into gray (luma 0.299 R + "
                     "0.587 G + 0.114 B)")
    if (h, w) != (img_size, img_size):
        steps.append(f"resize {h} x {w} to {img_size} x {img_size} pixels (bilinear)")
    return " and ".join(steps) if steps else "leave them as they are"


def iterate_batches(dataset, batch_size, img_size, in_chans, mean, std, limit=None, resize=False):
    """Yield model-ready batches in order, preparing one batch at a time.

    Parameters
    ----------
    dataset : Dataset
    batch_size : int >= 1
    img_size, in_chans, mean, std : as in ``prepare_images``
    limit : int or None, use only the first ``limit`` items
    resize : bool, as in ``prepare_images``

    Yields
    ------
    x : (B, in_chans, img_size, img_size) float32 ndarray
    y : (B,) int64 ndarray
    """
    if batch_size < 1 or (limit is not None and limit < 0):
        raise DataError(f"batch_size must be >= 1 and limit >= 0 or None; got {batch_size}, {limit}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield (prepare_images(dataset.images[start:stop], img_size, in_chans, mean, std, resize),
               dataset.labels[start:stop].copy())


# ---------------------------------------------------------------- shipped files
def shipped_file(name):
    """Path of a file shipped with mst_ref: the repository's ``data/`` folder, wherever it is installed.

    setup.py installs ``data/`` inside the package as ``mst_ref/shipped/`` (a wheel, ``pip install .``
    and an editable install all do), so ``importlib.resources`` finds it from any folder; a plain
    checkout that was never installed reads ``data/`` next to the package.
    """
    try:
        resource = importlib.resources.files("mst_ref.shipped") / name  # installed (any kind)
        if resource.is_file():
            return Path(str(resource))
    except (ImportError, TypeError):  # not installed: a checkout on sys.path
        pass
    candidate = Path(__file__).resolve().parent.parent / "data" / name  # checkout, never installed
    if candidate.is_file():
        return candidate
    raise DataError(f"shipped file {name!r} is not in this mst_ref installation (looked in the package "
                    f"data mst_ref/shipped and in {candidate.parent}); reinstall mst_ref from the "
                    "repository folder: pip install .")


def sample_path():
    """Path of ``fashion_sample.npz``: the first 1000 Fashion-MNIST test images and labels."""
    return shipped_file("fashion_sample.npz")
