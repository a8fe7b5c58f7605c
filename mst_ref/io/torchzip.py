"""Read PyTorch's zip checkpoint format (``torch.save`` since 1.6) without torch and without running code.

A ``torch.save`` file is a zip archive of uncompressed records::

    <prefix>/data.pkl     a pickle of the saved object (usually a dict)
    <prefix>/data/<key>   the raw bytes of storage <key>
    <prefix>/byteorder    b"little" or b"big" (absent before torch 1.10, meaning little)

Inside data.pkl a tensor is the call ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)`` and a storage the persistent id
``("storage", torch.FloatStorage, key, location, numel)``. :class:`TorchUnpickler` answers those two
with NumPy on top of the restricted unpickler of :mod:`mst_ref.io.safepickle`, which refuses every other
global: a storage is read once into a flat read-only array, and every tensor is a read-only strided
view of it, so a file cannot multiply its size by viewing one storage many times. :func:`owned_copies`
copies what the caller keeps, once, under a byte limit.

Nothing in the zip's directory is trusted: :func:`read_member` inflates a record as a stream into a
buffer sized before inflating (refusing any record longer or shorter than declared), and one
:class:`Budget` caps the bytes read from all records of a file together (:func:`read_limit`), so
records that overlap in the file or inflate far cannot exhaust memory.
"""
import lzma
import math
import os
import pickle
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from .safepickle import Allowed, CheckpointError, Leaf, RestrictedUnpickler, brief

MAX_ELEMENTS = 2**31            # per storage and per tensor
MAX_PICKLE_BYTES = 2**22        # data.pkl of Swin-B with its optimizer state is 0.35 MiB
MAX_SLACK_BYTES = 2**27         # bytes a file may inflate to beyond twice its size (compressed .npz)
CHUNK_BYTES = 2**20             # a record is inflated this much at a time
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."   # pickle of torch's pre-1.6 magic number

# torch's typed storage classes, as named in the pickle, and the dtype of their elements
STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}


class StorageType(NamedTuple):
    """What ``torch.FloatStorage`` etc. resolve to: a name and a dtype, nothing callable."""
    name: str
    dtype: str


class Storage(NamedTuple):
    """One storage record as a flat read-only array, shared by every tensor that views it."""
    key: str
    dtype: str
    array: np.ndarray


class Budget:
    """Bytes that the records of one file may still inflate to, all records together."""

    def __init__(self, limit):
        self.left = self.limit = limit

    def take(self, nbytes, what):
        if nbytes > self.left:
            raise CheckpointError(f"{what} would take the file's records past {self.limit} bytes in all "
                                  "(twice the file's size plus 128 MiB); refusing a zip bomb")
        self.left -= nbytes


def read_limit(path):
    """Bytes all records of the file at ``path`` may inflate to: twice its size plus ``MAX_SLACK_BYTES``."""
    return 2 * os.path.getsize(path) + MAX_SLACK_BYTES


def read_member(archive, info, limit, budget):
    """The bytes of one zip record, at most ``limit`` of them, charged to ``budget``.

    The size the directory declares is checked against both before inflating, and the stream is
    inflated a chunk at a time into a buffer of that size: a record that runs longer than declared
    is refused before it is read further, and one that ends early too. zipfile checks the CRC.
    """
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"record {info.filename[:100]} is compressed with method {info.compress_type}; "
                              "mst_ref reads stored and deflated records only")
    if info.file_size > limit:
        raise CheckpointError(f"record {info.filename[:100]} declares {info.file_size} bytes; at most "
                              f"{limit} are allowed there")
    budget.take(info.file_size, f"record {info.filename[:100]}")
    buffer, got = bytearray(info.file_size), 0
    with archive.open(info) as stream:
        while got < info.file_size:
            chunk = stream.read(min(CHUNK_BYTES, info.file_size - got))
            if not chunk:
                break
            buffer[got:got + len(chunk)] = chunk
            got += len(chunk)
        if got != info.file_size or stream.read(1):
            raise CheckpointError(f"record {info.filename[:100]} does not hold the {info.file_size} bytes its "
                                  "directory entry declares; the file is corrupt")
    return buffer


def bfloat16_to_float32(bits):
    """bits : (n,) uint16 ndarray of bfloat16 values -> (n,) float32, exactly (bf16 = float32's top half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def decode_storage(raw, dtype, byteorder="little"):
    """The bytes of one storage record -> flat native-endian ndarray (bfloat16 -> float32)."""
    order = "<" if byteorder == "little" else ">"
    if dtype == "bfloat16":
        return bfloat16_to_float32(np.frombuffer(raw, dtype=order + "u2"))
    wire = np.dtype(dtype).newbyteorder(order)
    array = np.frombuffer(raw, dtype=wire)
    return array if wire.isnative else array.astype(wire.newbyteorder("="))


def _index(x, what):
    if type(x) is not int or x < 0:
        raise CheckpointError(f"{what} must be a non-negative int; got {brief(x)}")
    return x


def _shape(x, what):
    if type(x) not in (tuple, list) or len(x) > 32:
        raise CheckpointError(f"a tensor's {what} must be a tuple of at most 32 ints; got {brief(x)}")
    return tuple(_index(n, f"each {what} entry") for n in x)


def rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    if type(data) is not Leaf:
        raise CheckpointError(f"a Parameter must wrap a tensor; got {brief(data)}")
    return data


class TorchUnpickler(RestrictedUnpickler):
    """Unpickles ``<prefix>/data.pkl`` of an open archive: tensors -> read-only views of storages."""

    def __init__(self, data, archive, prefix, byteorder, budget):
        allowed = {("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()}
        tensor = Allowed("_rebuild_tensor_v2", self.rebuild_tensor)
        parameter = Allowed("_rebuild_parameter", rebuild_parameter)
        allowed.update({
            ("torch._utils", "_rebuild_tensor"): tensor, ("torch._utils", "_rebuild_tensor_v2"): tensor,
            ("torch._utils", "_rebuild_parameter"): parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): parameter,
            ("torch", "Size"): Allowed("torch.Size", lambda dims=(): _shape(dims, "torch.Size")),
        })
        super().__init__(data, allowed)
        self.archive, self.prefix, self.byteorder, self.budget = archive, prefix, byteorder, budget
        self.storages = {}                        # key -> Storage: tensors sharing a storage share this
        self.views = {}                           # (key, offset, size, stride, neg) -> the one Leaf

    def persistent_load(self, pid):
        # pid = ("storage", storage_type, key, location, numel): the storage lives in <prefix>/data/<key>
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise CheckpointError(f"unsupported persistent id ({brief(pid)}); expected a torch storage")
        _, kind, key, _location, numel = pid
        if type(kind) is not StorageType or type(key) is not str:
            raise CheckpointError(f"malformed storage reference ({brief(kind)}, {brief(key)})")
        numel = _index(numel, f"storage {key[:50]}'s element count")
        if numel > MAX_ELEMENTS:
            raise CheckpointError(f"storage {key[:50]} claims {numel} elements; mst_ref refuses more than 2**31")
        if key in self.storages:
            old = self.storages[key]
            if old.dtype != kind.dtype or old.array.size != numel:
                raise CheckpointError(f"storage {key[:50]} is declared twice with different types or sizes")
            return old
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"record {name[:100]} is missing; the file is incomplete") from None
        nbytes = numel * (2 if kind.dtype == "bfloat16" else np.dtype(kind.dtype).itemsize)
        if info.file_size != nbytes:
            raise CheckpointError(f"storage {key[:50]} holds {info.file_size} bytes but data.pkl declares "
                                  f"{numel} {kind.dtype} elements ({nbytes} bytes); the file is corrupt")
        if info.compress_type != zipfile.ZIP_STORED and nbytes > 64 * info.compress_size + 2**20:
            raise CheckpointError(f"storage {key[:50]} would inflate {info.compress_size} bytes to {nbytes}; "
                                  "torch.save never compresses, and mst_ref refuses zip bombs")
        raw = read_member(self.archive, info, nbytes, self.budget)
        array = decode_storage(raw, kind.dtype, self.byteorder)
        self.storages[key] = Storage(key, kind.dtype, array)
        return self.storages[key]

    def rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        """torch._utils._rebuild_tensor_v2 -> a read-only strided view of ``storage`` (in a Leaf)."""
        if type(storage) is not Storage:
            raise CheckpointError(f"a tensor must view a storage; got {brief(storage)}")
        offset, size, stride = _index(offset, "offset"), _shape(size, "size"), _shape(stride, "stride")
        if len(size) != len(stride):
            raise CheckpointError(f"tensor size {size} and stride {stride} have different lengths")
        if metadata and (type(metadata) is not dict or not set(metadata) <= {"neg", "conj"}):
            raise CheckpointError(f"unsupported tensor metadata ({brief(metadata)})")
        neg = bool(metadata and metadata.get("neg"))    # torch's lazy "neg" bit; conj is a no-op on reals
        numel, flat = math.prod(size), storage.array
        if numel > flat.size:
            raise CheckpointError(f"a tensor of size {size} claims more elements than its storage "
                                  f"{storage.key[:50]} ({flat.size})")
        key = (storage.key, offset, size, stride, neg)
        if key in self.views:                            # the same view twice: one array
            return self.views[key]
        if numel == 0:
            view = np.zeros(size, dtype=flat.dtype)
        else:
            # the last element the view touches: offset + sum_d (size_d - 1) * stride_d
            extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
            if extent > flat.size:
                raise CheckpointError(f"a tensor (offset {offset}, size {size}, stride {stride}) reaches "
                                      f"element {extent} of storage {storage.key[:50]}, which holds {flat.size}")
            view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, writeable=False,
                                                   strides=tuple(s * flat.itemsize for s in stride))
        if neg:
            self.budget.take(view.nbytes, "a negated tensor")
            view = -view
        view.flags.writeable = False
        self.views[key] = Leaf(view)
        return self.views[key]


def read_archive(archive, budget):
    """An open zipfile of a torch.save file -> the unpickled object (containers, scalars, read-only
    ndarrays viewing the file's storages)."""
    names = archive.namelist()
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError("this is a TorchScript archive (torch.jit.save), not a checkpoint; export its "
                              "weights with torch: torch.save(torch.jit.load(f).state_dict(), 'weights.pth')")
    pickles = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if len(pickles) != 1:
        hint = " (it looks like a NumPy .npz archive)" if any(n.endswith(".npy") for n in names) else ""
        raise CheckpointError(f"expected exactly one <prefix>/data.pkl in a torch.save archive; found "
                              f"{len(pickles)} among {[n[:60] for n in names[:5]]}{hint}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        raw = read_member(archive, archive.getinfo(prefix + "byteorder"), 16, budget)
        byteorder = bytes(raw).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"unknown byte order {byteorder[:20]!r} in {prefix}byteorder")
    info = archive.getinfo(pickles[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{pickles[0]} is {info.file_size} bytes; mst_ref refuses pickles over "
                              f"{MAX_PICKLE_BYTES // 2**20} MiB (a checkpoint's tensors are stored beside it)")
    data = bytes(read_member(archive, info, MAX_PICKLE_BYTES, budget))
    return TorchUnpickler(data, archive, prefix, byteorder, budget).load()


def owned_copies(arrays, limit):
    """{name: ndarray} -> {name: C-contiguous writable copy}; an array listed under several names is
    copied once and shared. Raises CheckpointError when the copies (every name counted) pass ``limit``
    bytes: views of one storage cannot multiply a small file into a large state."""
    total, copies = sum(a.nbytes for a in arrays.values()), {}
    if total > limit:
        raise CheckpointError(f"the tensors kept take {total} bytes, more than the file can hold ({limit}); "
                              "they view the same storage many times over")
    for name, array in arrays.items():
        if id(array) not in copies:
            copies[id(array)] = np.array(array, order="C")
    return {name: copies[id(array)] for name, array in arrays.items()}


# what zipfile, its decompressors and NumPy raise on damaged input
FILE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, EOFError, OSError,
               KeyError, IndexError, TypeError, ValueError, AttributeError, UnicodeDecodeError, MemoryError,
               OverflowError, RecursionError, NotImplementedError, RuntimeError, struct.error, zlib.error,
               lzma.LZMAError)


def read_torch_checkpoint(path):
    """Read a ``torch.save`` zip file without torch and without executing anything from it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pth`` / ``.pt`` / ``.pth.tar`` written by ``torch.save`` (torch >= 1.6).

    Returns
    -------
    dict
        The saved dict; tensors as read-only ndarrays viewing the file's storages (bfloat16 as
        float32; copy what you keep, e.g. with :func:`owned_copies`), OrderedDicts and yacs CfgNodes
        as plain dicts.

    Raises
    ------
    CheckpointError
        For a legacy or TorchScript file, a global outside the allow-list, or any damage.
    FileNotFoundError
        If there is no file at ``path``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(LEGACY_MAGIC))
        if head.startswith(LEGACY_MAGIC):
            raise CheckpointError(f"{path} is a legacy (pre-1.6) torch.save file; re-save it in the zip "
                                  "format with torch: "
                                  "torch.save(torch.load(f, weights_only=True), 'new.pth')")
        if not head.startswith(b"PK"):
            raise CheckpointError(f"{path} is not a zip archive, so not a torch.save checkpoint "
                                  "(torch >= 1.6)")
        with zipfile.ZipFile(path) as archive:
            obj = read_archive(archive, Budget(read_limit(path)))
    except CheckpointError as e:
        if str(e).startswith(path):
            raise
        raise CheckpointError(f"{path}: {e}") from e
    except FILE_ERRORS as e:
        raise CheckpointError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                              "the file is corrupt or truncated") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds {brief(obj)}; expected a dict (a state dict or a checkpoint "
                              "with a 'model' entry)")
    return obj
