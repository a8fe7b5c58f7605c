"""Checkpoints: the official ``.pth`` files, mst_ref's ``.npz`` format, and ``.safetensors``.

Every loader returns the same thing, ``(state, meta)``: ``state`` maps the official key names
(docs/mst.md section 7, e.g. ``layers.0.blocks.1.attn.q_if.up``) to ndarrays, ``meta`` holds the plain
data saved beside them (``config`` as a dict, ``epoch``, ``max_accuracy``, ...) and ``format``.

- ``.pth`` / ``.pt`` / ``.pth.tar``: ``torch.save`` zip files, read by :mod:`mst_ref.io.torchzip`
  without torch and without executing anything from the file. The official training script saves
  ``{'model': state_dict, 'optimizer': ..., 'lr_scheduler': ..., 'max_accuracy': ..., 'scaler': ...,
  'epoch': ..., 'config': yacs CfgNode}``; a bare state dict, or one with a ``module.`` prefix
  (DataParallel), is read too. Entries holding tensors besides the model (optimizer moments) are dropped.
- ``.npz``: mst_ref's own format. One array per key under its official name, plus ``__config__``:
  the config as UTF-8 JSON in a uint8 array (a 0-d unicode array is accepted too). Read with
  ``allow_pickle=False``: no code, no objects.
- ``.safetensors``: through the optional ``safetensors`` package; the config is JSON in the metadata.

Every unreadable, damaged or refused file raises :class:`CheckpointError` (a ValueError, defined in
:mod:`mst_ref.io.safepickle`); a path with no file raises FileNotFoundError.
"""
import collections
import dataclasses
import io
import json
import math
import os
import re
import secrets
import zipfile

import numpy as np

from .safepickle import CheckpointError, brief
from .torchzip import (FILE_ERRORS, MAX_ELEMENTS, Budget, bfloat16_to_float32, owned_copies, read_limit,
                              read_member, read_torch_checkpoint)

TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "relative_position_index",
                   "attn_mask")                       # state entries that are not trained parameters
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
THRESHOLD_SUFFIXES = (".up", ".thresh")               # QCFS thresholds lambda: MST says up, the CNNs thresh
INTEGER_SUFFIXES = ("relative_position_index", "num_batches_tracked")
MAX_KEYS = 100_000                                    # Swin-B has about 500 keys, ResNet-18 about 130
SAFE_NAME = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")   # dotted names: no /, .., NUL or spaces


def checkpoint_format(path):
    """'npz', 'safetensors' or 'torch' (anything else: the torch reader explains what a file is not)."""
    name = os.fspath(path).lower()
    if name.endswith((".npz", ".safetensors")):
        return name.rsplit(".", 1)[1]
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(9)                            # safetensors: u64 header length, then a JSON header
    return "safetensors" if head[8:9] == b"{" else "torch"


def load_state_dict(path):
    """Read a checkpoint of any supported format.

    Parameters
    ----------
    path : str or os.PathLike
        ``.pth`` / ``.pt`` / ``.pth.tar`` (torch zip), ``.npz`` (mst_ref) or ``.safetensors``.

    Returns
    -------
    state : dict[str, ndarray]
        Official key names -> arrays (bfloat16 widened to float32, other dtypes as saved).
    meta : dict
        ``format``, ``config`` (a dict) where the file has one, and the checkpoint's other plain entries.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {os.fspath(path)}")
    kind = checkpoint_format(path)
    if kind == "npz":
        state, meta = _read_npz(path)
    elif kind == "safetensors":
        state, meta = _read_safetensors(path)
    else:
        state, meta = _split_torch_checkpoint(read_torch_checkpoint(path), path)
    if len(state) > MAX_KEYS:
        raise CheckpointError(f"{os.fspath(path)} holds {len(state)} tensors; mst_ref refuses more than "
                              f"{MAX_KEYS} (a model has hundreds)")
    return state, meta


def _split_torch_checkpoint(obj, path):
    """The top-level dict of a .pth -> (state, meta)."""
    if isinstance(obj.get("model"), dict):
        state, rest = obj["model"], {k: v for k, v in obj.items() if k != "model"}
    elif obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state, rest = obj, {}
    else:
        keys = ", ".join(brief(k) for k in list(obj)[:8])
        raise CheckpointError(f"{path}: no state dict found; top-level keys are {keys}; expected a 'model' "
                              "entry or a dict of tensors")
    bad = [k for k, v in state.items() if type(k) is not str or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: state dict entry {brief(bad[0])} is not a named tensor")
    if len(state) > MAX_KEYS:
        raise CheckpointError(f"{path}: the state dict holds {len(state)} tensors; mst_ref refuses more than "
                              f"{MAX_KEYS} (a model has hundreds)")
    # DataParallel / DistributedDataParallel save every key as 'module.<key>'
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    # the tensors are read-only views of the file's storages: copy the model's, once, and no more
    # than the file can hold (twice its read limit, for bfloat16 widened to float32, plus 64 MiB)
    state = owned_copies(state, 2 * read_limit(path) + 2**26)
    meta = {"format": "torch"}
    meta.update({k: v for k, v in rest.items() if type(k) is str and not _holds_arrays(v)})
    return state, meta


def _holds_arrays(obj):
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return isinstance(obj, np.ndarray) or any(_holds_arrays(v) for v in items)


def _read_npz(path):
    """An .npz of .npy members (no pickles, nothing else), read as a stream under the file's budget."""
    state, limit = {}, read_limit(path)
    budget = Budget(limit)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_KEYS + 1:
                raise CheckpointError(f"{path} holds {len(infos)} members; mst_ref refuses more than {MAX_KEYS}")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {info.filename[:100]!r} is not a .npy array; an "
                                          "mst_ref .npz holds only .npy members (np.savez writes them)")
                name = info.filename[: -len(".npy")]
                if name in state:
                    raise CheckpointError(f"{path}: member {info.filename[:100]!r} appears twice")
                state[name] = _parse_npy(read_member(archive, info, limit, budget), name)
    except CheckpointError as e:
        raise e if str(e).startswith(os.fspath(path)) else CheckpointError(f"{os.fspath(path)}: {e}") from e
    except FILE_ERRORS as e:
        raise CheckpointError(f"{path}: cannot read this .npz ({type(e).__name__}: {str(e)[:200]}); the file "
                              "is corrupt or not an .npz archive") from e
    meta = {"format": "npz"}
    if "__config__" in state:
        meta["config"] = _parse_config(state.pop("__config__"), path)
    return state, meta


def _parse_npy(raw, name):
    """The bytes of one .npy member -> native-endian C-contiguous ndarray; refuses objects, complex
    numbers and any member whose data is not exactly what its header declares."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise CheckpointError(f"member {name[:100]}.npy is .npy version {version}; expected 1.0 or 2.0")
        shape, fortran, dtype = read_header(f)
    except CheckpointError:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError) as e:
        raise CheckpointError(f"member {name[:100]}.npy has no valid .npy header ({str(e)[:200]})") from e
    text = name == "__config__" and dtype.kind == "U"
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf" and not text:
        raise CheckpointError(f"member {name[:100]}.npy has dtype {str(dtype)[:60]}; mst_ref reads bool, "
                              "integer and float arrays only")
    if len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
        raise CheckpointError(f"member {name[:100]}.npy has shape {str(shape)[:60]}; expected at most 32 "
                              "non-negative ints")
    count, data = math.prod(shape), memoryview(raw)[f.tell():]
    if count > MAX_ELEMENTS or count * dtype.itemsize != len(data):
        raise CheckpointError(f"member {name[:100]}.npy declares {count} {dtype} elements but holds "
                              f"{len(data)} bytes of data; the file is corrupt")
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


def _parse_config(array, path):
    """__config__: UTF-8 JSON as a uint8 array, or a 0-d unicode array -> dict."""
    try:
        if array.dtype == np.uint8 and array.ndim == 1:
            text = array.tobytes().decode("utf-8")
        elif array.dtype.kind == "U" and array.ndim == 0:
            text = str(array[()])
        else:
            raise CheckpointError(f"{path}: __config__ must be uint8 JSON bytes or a 0-d string; "
                                  f"got {array.dtype} of shape {array.shape}")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:    # ValueError: also ints over 4300 digits
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: __config__ is not valid UTF-8 JSON ({str(e)[:200]})") from e


def _import_safetensors(path):
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as e:
        raise CheckpointError(f"{path}: reading or writing .safetensors needs the optional safetensors "
                              "package: pip install safetensors") from e
    return safetensors


def _read_safetensors(path):
    safetensors = _import_safetensors(path)
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as f:
            metadata = f.metadata() or {}
        try:
            state = safetensors.numpy.load_file(os.fspath(path))
        except TypeError:           # a dtype NumPy lacks (bfloat16): decode the raw bytes here
            with open(path, "rb") as f:
                specs = safetensors.deserialize(f.read())    # [(name, {dtype, shape, data}), ...]
            state = {name: _decode_safetensor(name, spec) for name, spec in specs}
        meta = {"format": "safetensors"}
        if "config" in metadata:
            meta["config"] = json.loads(metadata["config"])
    except CheckpointError:
        raise
    except (safetensors.SafetensorError, *FILE_ERRORS) as e:
        raise CheckpointError(f"{path}: cannot read this .safetensors file ({type(e).__name__}: "
                              f"{str(e)[:200]})") from e
    bad = [f"{name[:100]} ({value.dtype})" for name, value in state.items() if value.dtype.kind not in "biuf"]
    if bad:
        raise CheckpointError(f"{path}: tensors {', '.join(bad[:5])} are not bool, integer or float; "
                              "mst_ref reads those only")
    return state, meta


def _decode_safetensor(name, spec):
    raw, dtype = bytes(spec["data"]), spec["dtype"]
    if dtype == "BF16":
        flat = bfloat16_to_float32(np.frombuffer(raw, dtype="<u2"))
    elif dtype in SAFETENSORS_DTYPES:           # little-endian on disk -> native
        wire = np.dtype(SAFETENSORS_DTYPES[dtype])
        flat = np.frombuffer(raw, dtype=wire).astype(wire.newbyteorder("="))
    else:
        raise CheckpointError(f"tensor {name} has dtype {dtype}, which mst_ref does not read")
    return flat.reshape(spec["shape"])


def _checked_arrays(state):
    if len(state) > MAX_KEYS:
        raise ValueError(f"state has {len(state)} entries; mst_ref writes at most {MAX_KEYS}")
    arrays = {}
    for name, value in state.items():
        if type(name) is not str or name == "__config__" or not isinstance(value, np.ndarray):
            raise ValueError(f"state must map key names to ndarrays; got {brief(name)}: {type(value).__name__}")
        if not SAFE_NAME.fullmatch(name) or len(name) > 1000:
            raise ValueError(f"key {name[:100]!r} is not a dotted name of letters, digits, _ and -; refusing "
                             "to write it (it could name a path outside the archive)")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{name} has dtype {value.dtype}; only bool, integer and float arrays are saved")
        arrays[name] = value if value.flags.c_contiguous else value.copy(order="C")   # keeps 0-d as 0-d
    return arrays


def _write_atomically(path, write, check=None):
    """Call ``write(tmp)`` on a new file beside ``path`` (created with mode 0666 less the umask), then
    ``check(tmp)``, then rename it to ``path``: a failure leaves no partial output behind."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    suffix = ".safetensors" if base.lower().endswith(".safetensors") else ".npz"
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp{suffix}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = os.stat(tmp).st_mode & 0o777       # 0666 less the umask, as open() gives any new file
    try:
        write(tmp)
        os.chmod(tmp, mode)                   # safetensors re-creates the file with mode 0600
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _to_json(config):
    """JSON text of a config; tuples become lists, sets sorted lists, anything else its str()."""
    def fallback(obj):
        return sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else str(obj)
    return json.dumps(config, default=fallback, sort_keys=True)


def save_npz(path, state, config=None, check=None):
    """Write ``state`` (``config`` as JSON under ``__config__``) as an uncompressed .npz, no pickles.

    The archive is written as ``np.savez`` does, but under exactly the given name, through a temporary
    file renamed into place once written (and once ``check(tmp)`` returns, when given). Keys must be
    dotted names (letters, digits, ``_``, ``-``): no path can be smuggled into the archive."""
    arrays = _checked_arrays(state)
    if config is not None:
        arrays["__config__"] = np.frombuffer(_to_json(config).encode("utf-8"), dtype=np.uint8)

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
    _write_atomically(path, write, check)


def save_safetensors(path, state, config=None, check=None):
    """Write ``state`` as .safetensors, ``config`` as JSON in the metadata (``pip install safetensors``),
    through a temporary file renamed into place, as :func:`save_npz` does."""
    safetensors = _import_safetensors(path)
    metadata = {"format": "mst_ref"}
    if config is not None:
        metadata["config"] = _to_json(config)
    arrays = _checked_arrays(state)
    _write_atomically(path, lambda tmp: safetensors.numpy.save_file(arrays, tmp, metadata=metadata), check)


def convert_checkpoint(source, target, overwrite=False):
    """Read ``source`` (any supported format) and write ``target`` (.npz or .safetensors, from its
    suffix), keeping the config. The output is read back with its own reader before it is renamed
    into place, and must hold the same arrays. Returns ``(state, meta)`` of ``source``."""
    target = os.fspath(target)
    if not target.lower().endswith((".npz", ".safetensors")):
        raise CheckpointError(f"the output must end in .npz or .safetensors; got {target}")
    if os.path.exists(target) and not overwrite:
        raise CheckpointError(f"{target} exists; pass --force to overwrite it")
    state, meta = load_state_dict(source)

    def check(tmp):
        back, _ = load_state_dict(tmp)
        same = sorted(back) == sorted(state) and all(
            back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes()
            for k, v in state.items())
        if not same:
            raise CheckpointError(f"{target}: the written file does not read back as the arrays of {source}")

    save = save_npz if target.lower().endswith(".npz") else save_safetensors
    try:
        save(target, state, meta.get("config"), check=check)
    except ValueError as e:                   # keys that are not safe names, too many keys
        raise e if isinstance(e, CheckpointError) else CheckpointError(f"{source}: {e}") from e
    return state, meta


def _lookup(config, *keys):
    for key in keys:
        config = config.get(key) if isinstance(config, dict) else None
    return config


def config_img_size(config):
    """Image size from a config: ours ``img_size``, official yacs ``DATA.IMG_SIZE``; None if absent."""
    for size in (_lookup(config, "img_size"), _lookup(config, "DATA", "IMG_SIZE")):
        if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
            size = size[0]                            # (H, W) with H = W
        if _positive_int(size):
            return size
    return None


def config_mask_ratio(config, depth=0):
    """Masking ratio p from a config: ours ``mask_ratio``, official ``MODEL.MST.MASKING_RATIO``, else
    the first key (depth first) matching MASK...RATIO; None if absent. Only numbers in [0, 1] count."""
    found = [_lookup(config, "mask_ratio"), _lookup(config, "MODEL", "MST", "MASKING_RATIO")]
    if isinstance(config, dict) and depth < 8:
        found += [config_mask_ratio(v, depth + 1) if isinstance(v, dict) else v for k, v in config.items()
                  if isinstance(v, dict) or re.search("mask.*ratio", str(k), re.I)]
    ratios = [float(p) for p in found if type(p) in (int, float) and 0 <= p <= 1]
    return ratios[0] if ratios else None


def _positive_int(v):
    return type(v) is int and v > 0


def config_qcfs_levels(config, default=16):
    """L from our config (``qcfs_levels``); the shapes cannot tell it. Else ``default`` (published: 16)."""
    levels = config.get("qcfs_levels")
    return levels if _positive_int(levels) else default


def validate_state(state):
    """Problems with the values of a state dict that any model family depends on; [] if none.

    Thresholds (keys ending in ``.up`` or ``.thresh``, the QCFS lambda) must be float, non-empty,
    finite and positive (an IF neuron divides by lambda and fires against it); every float array
    finite; ``running_var`` non-negative (BatchNorm takes its square root); index buffers
    (``relative_position_index``, ``num_batches_tracked``) integers.

    Parameters
    ----------
    state : dict of {str: ndarray}

    Returns
    -------
    problems : list of str
        One line per problem key, naming it and what was expected.
    """
    problems = []
    for key, value in state.items():
        kind = value.dtype.kind
        if key.endswith(THRESHOLD_SUFFIXES):
            if kind != "f" or value.size == 0:
                problems.append(f"{key}: a threshold must be a non-empty float array; got {value.dtype} "
                                f"of shape {value.shape}")
            elif not (np.isfinite(value).all() and (value > 0).all()):
                problems.append(f"{key}: thresholds must be positive and finite; got min {value.min()!r}, "
                                f"max {value.max()!r}")
        elif kind == "f" and not np.isfinite(value).all():
            problems.append(f"{key}: holds {int(np.size(value) - np.isfinite(value).sum())} NaN or inf values")
        if key.endswith("running_var") and kind == "f" and (value < 0).any():
            problems.append(f"{key}: a BatchNorm variance must be non-negative; got min {value.min()!r}")
        if key.endswith(INTEGER_SUFFIXES) and kind not in "iu":
            problems.append(f"{key}: an index buffer must hold integers; got {value.dtype}")
    return problems


def _refuse(path, problems):
    """One CheckpointError listing every problem (the first 50, and how many more)."""
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    raise CheckpointError(f"{os.fspath(path)}: the checkpoint cannot be loaded ({len(problems)} problems):\n  "
                          + "\n  ".join(problems[:50]) + more)


def load_checkpoint(path, img_size=None, dtype=np.float32, qcfs_levels=None):
    """Load a checkpoint into the model of its family: an MST, or a QCFS ResNet-18 / VGG-16.

    The family is read off the keys (:func:`mst_ref.models.qcfs_cnn.is_cnn_state`: ``conv1.0.weight``
    + ``fc.weight`` is a ResNet-18, ``layer1.0.weight`` + ``classifier.1.weight`` a VGG-16, older
    ``up`` names renamed to ``thresh``); anything else is read as an MST. ``qcfs_levels``: L of the
    ANN's QCFS; None means the checkpoint's recorded ``qcfs_levels``, else the family's published
    default (16 for MST, 8 for the QCFS CNNs).

    MST:

    ``img_size`` defaults to the checkpoint's config (``DATA.IMG_SIZE`` / ``img_size``); the model
    raises ValueError when it is neither given nor inferable from ``attn_mask``. ``qcfs_levels`` (L,
    not visible in the shapes) comes from our config where present, else the model's default (16).
    The ratio p the model was trained with (a model trained with p is run with p) is kept as
    ``model.trained_mask_ratio`` and ``model.config.mask_ratio``.
    """
    from ..models.mst import MST      # imported here: the model modules do not depend on this one
    from ..models.mst_layout import infer_config, state_problems
    from ..models.qcfs_cnn import is_cnn_state, rename_legacy_keys

    if qcfs_levels is not None and not _positive_int(qcfs_levels):
        raise ValueError(f"qcfs_levels must be an integer >= 1 or None; got {qcfs_levels!r}")
    state, meta = load_state_dict(path)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    renamed = rename_legacy_keys(state)
    if is_cnn_state(renamed):
        return _load_cnn(path, renamed, config, img_size, dtype, qcfs_levels)
    # every problem at once, before a model is built: values (any family), then the MST layout
    problems = validate_state(state)
    try:
        arch = infer_config(state, img_size or config_img_size(config), qcfs_levels or config_qcfs_levels(config))
        problems += state_problems(state, arch)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        _refuse(path, problems)
    model = MST.from_state_dict(state, img_size=img_size or config_img_size(config), dtype=dtype,
                                qcfs_levels=qcfs_levels or config_qcfs_levels(config))
    _trained_masking(model, config)
    ratio = config_mask_ratio(config)
    if ratio is not None:
        model.trained_mask_ratio = ratio
        if dataclasses.is_dataclass(model.config) and hasattr(model.config, "mask_ratio"):
            model.config = dataclasses.replace(model.config, mask_ratio=ratio)
    return model


def _load_cnn(path, state, config, img_size, dtype, qcfs_levels):
    """A :class:`mst_ref.models.qcfs_cnn.QCFSCNN` from an official QCFS state dict, its legacy names
    already renamed (every problem listed in one CheckpointError)."""
    from ..models.qcfs_cnn import QCFSCNN, cnn_state_problems, infer_cnn_config

    levels = qcfs_levels or config_qcfs_levels(config, default=8)
    try:  # the architecture off the shapes, then every key, shape and value it needs (one list)
        arch = infer_cnn_config(state, img_size or config_img_size(config), levels, config)
        problems = cnn_state_problems(state, arch)
    except ValueError as e:
        problems = [str(e)]
    if problems:
        _refuse(path, problems)
    model = QCFSCNN(arch, state, dtype)
    model.trained_mask_ratio = arch.mask_ratio
    _trained_masking(model, config)
    return model


def _trained_masking(model, config):
    """Record on the model how its training masked (config ``mask_sites``, ``mask_rescale``), so that
    masked runs default to the same sites and scaling."""
    sites = config.get("mask_sites")
    if isinstance(sites, str) and sites in model.mask_site_presets:
        model.trained_mask_sites = sites
    if config.get("mask_rescale") is True:
        model.trained_mask_rescale = True


def describe_checkpoint(path, img_size=None):
    """Summary of a checkpoint for ``mst-ref inspect``: a JSON-friendly dict; no model is built.

    The architecture is :func:`mst_ref.models.mst_layout.infer_config` of the shapes, or
    :func:`mst_ref.models.qcfs_cnn.infer_cnn_config` for a QCFS ResNet-18 / VGG-16 (``family``), None
    with the reason under ``architecture_error`` when neither fits; ``problems`` lists what
    :func:`validate_state` finds wrong with the values.
    """
    from ..models.mst_layout import infer_config, site_names
    from ..models.qcfs_cnn import cnn_site_names, infer_cnn_config, is_cnn_state, rename_legacy_keys

    state, meta = load_state_dict(path)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    renamed = rename_legacy_keys(state)
    family = "qcfs_cnn" if is_cnn_state(renamed) else "mst"  # a QCFS ResNet-18 / VGG-16: official names
    if family == "qcfs_cnn":
        state = renamed
    suffix = ".up" if family == "mst" else ".thresh"
    thresholds = {k[: -len(suffix)]: float(v.reshape(-1)[0]) for k, v in state.items()
                  if k.endswith(suffix) and v.size == 1 and v.dtype.kind in "biuf"}
    dtypes = dict(collections.Counter(str(v.dtype) for v in state.values()))
    try:
        size = img_size or config_img_size(config)
        if family == "mst":
            arch = infer_config(state, size, config_qcfs_levels(config))
        else:
            arch = infer_cnn_config(state, size, config_qcfs_levels(config, default=8), config)
        architecture = dataclasses.asdict(arch)
        # forward order (the file's order is the state dict's, e.g. v_if before attn_if)
        order = {name: i for i, name in enumerate(site_names(arch) if family == "mst" else cnn_site_names(arch))}
        thresholds = dict(sorted(thresholds.items(), key=lambda kv: order.get(kv[0], len(order))))
        error = None
    except ValueError as e:
        architecture, error = None, str(e)
    return {
        "path": os.fspath(path), "format": meta["format"], "num_keys": len(state),
        "num_parameters": int(sum(v.size for k, v in state.items() if not k.endswith(BUFFER_SUFFIXES))),
        "num_thresholds": len(thresholds), "thresholds": thresholds, "dtypes": dtypes,
        "family": family,
        "mlp_variant": ("imagenet" if any(".mlp.norm1." in k for k in state) else "no MLP BatchNorm")
        if family == "mst" else None,
        "mask_ratio": config_mask_ratio(config), "architecture": architecture, "architecture_error": error,
        "problems": validate_state(state),
        "config": meta.get("config"),
        "meta": {k: v for k, v in meta.items() if k not in ("config", "format")},
    }
