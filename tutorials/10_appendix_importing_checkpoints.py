# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 10 (appendix) - Importing checkpoints: what is inside a `.pth`, and how to read one safely
#
# The published MST weights are PyTorch `.pth` files. mst_ref reads them **without torch and
# without executing anything from the file**. This tutorial takes the shipped checkpoint
# `data/mst_fashion.pth` apart by hand:
#
# 1. the zip archive and its records;
# 2. `data.pkl`, a *pickle*: a small stack program, read opcode by opcode;
# 3. the raw bytes of one tensor, decoded with `np.frombuffer`;
# 4. a 20-line unpickler that rebuilds every tensor, checked against mst_ref's reader;
# 5. why `pickle.load` / an unguarded `torch.load` of an untrusted file is dangerous: we build a
#    malicious checkpoint (never running it) and watch mst_ref refuse it;
# 6. converting to `.npz`, inspecting it, and checking that both files give the same logits.
#
# Run it as `python tutorials/10_appendix_importing_checkpoints.py`; files go to `$MST_TUTORIAL_OUT`
# (default `tutorial_out/` under the current folder).

# %%
import atexit
import contextlib
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

import mst_ref  # installed by `pip install -e .` (README); tutorials never patch the path
from mst_ref import cli, plots
from mst_ref.io import data
from mst_ref.io.checkpoint import (CheckpointError, describe_checkpoint, load_checkpoint, load_state_dict,
                                save_npz)

np.set_printoptions(precision=4, suppress=True, linewidth=110, threshold=5000)
OUT = Path(os.environ.get("MST_TUTORIAL_OUT", "tutorial_out"))
OUT.mkdir(parents=True, exist_ok=True)
PTH = data.shipped_file("mst_fashion.pth")
print("checkpoint:", PTH, f"({PTH.stat().st_size:,} bytes)")

# %% [markdown]
# ## 1. A `.pth` is a zip archive
#
# Since PyTorch 1.6, `torch.save(obj, f)` writes a zip file of **uncompressed** ("stored")
# records under one folder `<prefix>/`:
#
# | record | holds |
# |---|---|
# | `<prefix>/data.pkl` | a pickle of `obj` (here a dict) in which every tensor is a *reference* to a storage |
# | `<prefix>/data/<key>` | the raw bytes of storage `<key>` |
# | `<prefix>/byteorder` | `little` or `big`: how the bytes of multi-byte numbers are ordered |
# | `<prefix>/version`, `.format_version`, `.storage_alignment`, ... | bookkeeping |
#
# Python's `zipfile` lists them; nothing is decoded yet.

# %%
archive = zipfile.ZipFile(PTH)
infos = archive.infolist()
print(f"{len(infos)} records; the first 8:")
for info in infos[:8]:
    print(f"  {info.filename:<40} {info.file_size:>7} bytes  compress_type={info.compress_type}")
storage_records = [i for i in infos if "/data/" in i.filename and "/.data/" not in i.filename]
other_records = [i.filename for i in infos if i not in storage_records]
print(f"{len(storage_records)} storage records; the others: {other_records}")
assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)  # torch.save never compresses
assert len(infos) == len(storage_records) + len(other_records) == 146 and len(storage_records) == 140

prefix = other_records[0].split("/")[0] + "/"
for name in [".format_version", ".storage_alignment", "byteorder", "version"]:
    print(f"  {prefix + name:<32} {archive.read(prefix + name)!r}")
byteorder = archive.read(prefix + "byteorder").decode()
alignment = int(archive.read(prefix + ".storage_alignment"))
assert byteorder == "little" and alignment == 64

# %% [markdown]
# ## 2. `data.pkl` is a program
#
# A pickle is a sequence of opcodes for a tiny stack machine. `pickletools.dis` *decodes* the
# opcodes without running them (safe on any file). The first entries of our checkpoint:

# %%
pkl = archive.read(prefix + "data.pkl")
listing = io.StringIO()
pickletools.dis(pkl, out=listing)
lines = listing.getvalue().splitlines()
print(f"data.pkl: {len(pkl)} bytes, {len(lines)} opcodes; the first 45:")
print("\n".join(lines[:45]))

# %% [markdown]
# Read the listing as a program:
#
# - `EMPTY_DICT` / `MARK` ... `SETITEMS` build the dict `{'model': {...}, ...}`;
# - `GLOBAL 'torch._utils _rebuild_tensor_v2'` **imports a function by name**, and `REDUCE` later
#   **calls** it with the tuple built in between:
#   `_rebuild_tensor_v2(storage, offset=0, size=(48, 1, 2, 2), stride=(4, 4, 2, 1), False, OrderedDict())`;
# - the storage itself is the tuple `('storage', torch.FloatStorage, '0', 'cpu', 192)` handed to
#   `BINPERSID` ("persistent id"): the unpickler's `persistent_load` turns it into the bytes of
#   record `data/0` (192 float32 numbers).
#
# `GLOBAL` + `REDUCE` = "import anything, call it with anything". That is the whole danger of
# pickle (section 5). Which globals does *this* file name? `pickletools.genops` walks the opcodes,
# again without running them:

# %%
globals_named = sorted({arg for op, arg, pos in pickletools.genops(pkl) if op.name in ("GLOBAL", "INST")})
stack_globals = [pos for op, arg, pos in pickletools.genops(pkl) if op.name == "STACK_GLOBAL"]
print("globals named by data.pkl:", globals_named)
assert globals_named == ["collections OrderedDict", "torch FloatStorage", "torch LongStorage",
                         "torch._utils _rebuild_tensor_v2"]
assert not stack_globals  # protocol 2: every import is a GLOBAL opcode with its name in the clear

# %% [markdown]
# Four names, none of which needs to be *executed*: two storage types (just dtypes), an empty
# `OrderedDict` (autograd hooks), and the tensor constructor, which we can write ourselves.
#
# ## 3. One tensor by hand: bytes -> `np.frombuffer`
#
# The first tensor is `patch_embed.proj.weight`: storage `'0'`, 192 float32, offset 0,
# size (48, 1, 2, 2), stride (4, 4, 2, 1) (in elements). We read its bytes *straight from the file*,
# without `zipfile`'s help: a stored zip record is a 30-byte local header, the file name, an
# "extra" field, then the data. torch pads the extra field so that each storage starts on a
# multiple of 64 bytes (`.storage_alignment`), which lets torch memory-map storages.

# %%
info = archive.getinfo(prefix + "data/0")
with open(PTH, "rb") as f:
    f.seek(info.header_offset)
    header = struct.unpack("<4sHHHHHIIIHH", f.read(30))  # signature ... name length, extra length
    start = info.header_offset + 30 + header[9] + header[10]
    f.seek(start)
    raw = f.read(info.file_size)
print(f"local header signature {header[0]!r}, name {header[9]} bytes, extra {header[10]} bytes")
print(f"data/0 starts at byte {start} = {start // alignment} x {alignment}; {len(raw)} bytes")
print("its first 16 bytes:", raw[:16].hex(" "))
assert header[0] == b"PK\x03\x04" and start % alignment == 0 and raw == archive.read(info)

# byteorder 'little' -> '<f4': little-endian 4-byte floats
flat = np.frombuffer(raw, dtype="<f4")  # (192,)
# element (i, j, k, l) sits at offset + i*4 + j*4 + k*2 + l*1
weight = np.lib.stride_tricks.as_strided(flat, shape=(48, 1, 2, 2), strides=(16, 16, 8, 4))  # (48, 1, 2, 2)
print("first 4 floats:", flat[:4])
print("weight[0, 0] (the first 2x2 patch filter):\n", weight[0, 0])

state, meta = load_state_dict(PTH)  # mst_ref's reader
err = np.abs(weight - state["patch_embed.proj.weight"]).max()
print(f"max |by hand - mst_ref| = {err}")
assert np.array_equal(weight, state["patch_embed.proj.weight"])

# %% [markdown]
# ## 4. A complete reader in 20 lines
#
# `pickle.Unpickler` lets us override the two hooks that matter:
#
# - `find_class(module, name)` is what `GLOBAL` calls. We answer only the four names above, each
#   with our own stand-in; any other name is refused, so the file can call nothing else.
# - `persistent_load(pid)` answers `BINPERSID`: we return the storage's bytes as a NumPy array.
#
# and our `rebuild_tensor_v2` is the strided view of section 3, copied.

# %%
STORAGE_DTYPE = {"FloatStorage": "<f4", "LongStorage": "<i8"}  # little-endian (byteorder record)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * itemsize for s in stride])
    return view.copy()  # C-contiguous, writeable, native


class TinyTorchUnpickler(pickle.Unpickler):
    ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
               ("collections", "OrderedDict"): OrderedDict,
               ("torch", "FloatStorage"): "FloatStorage", ("torch", "LongStorage"): "LongStorage"}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return self.ALLOWED[module, name]

    def persistent_load(self, pid):
        _, storage_type, key, location, numel = pid  # ('storage', 'FloatStorage', '0', 'cpu', 192)
        return np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=STORAGE_DTYPE[storage_type])


tiny = TinyTorchUnpickler(io.BytesIO(pkl)).load()
print("top-level keys:", list(tiny))
print("non-model entries:", {k: v for k, v in tiny.items() if k != "model"})
mismatched = [k for k in state if not np.array_equal(state[k], tiny["model"][k])
              or state[k].dtype != tiny["model"][k].dtype]
print(f"{len(tiny['model'])} tensors rebuilt by hand; {len(mismatched)} differ from mst_ref's reader")
assert list(tiny["model"]) == list(state) and len(state) == 140 and not mismatched
assert tiny["config"] == meta["config"] and tiny["epoch"] == meta["epoch"] == 31

# %% [markdown]
# mst_ref's reader (`mst_ref/torchzip.py` on top of `mst_ref/safepickle.py`) is this idea plus
# defences a teaching version leaves out: it first *reads* the whole opcode stream
# (`check_pickle`) and refuses absurd memo indices, deeply nested tuples and dict keys costly to
# hash before running anything; it checks every storage's size against its record and every
# tensor's strides against its storage; and it turns the result into plain dicts and arrays.
# It also knows more storage types (half, bfloat16, int, bool, ...), big-endian files and the
# DataParallel `module.` prefix.
#
# ## 5. Why loading an untrusted pickle is dangerous
#
# Plain `pickle.load` resolves *any* `GLOBAL` and `REDUCE` calls it. A file can therefore say
# "import `os.system` and call it with `'rm -rf ~'`" and the loader obeys. Old `torch.load`
# (`weights_only=False`, the default before torch 2.6) is `pickle.load` underneath.
#
# We build such a file in a temporary folder. Its payload is harmless but visible:
# `open(marker, 'w')`, which would create a file named `marker`. We write the pickle
# with `pickle.dumps` of an object whose `__reduce__` returns that call: pickling only
# *records* the call, it never performs it. And we never unpickle it with plain `pickle`.

# %%
tmp = Path(tempfile.mkdtemp(prefix="mst_tutorial_10_"))
atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the malicious file goes away with its folder
marker = tmp / "marker_created_by_payload.txt"


class Payload:
    """Pickles as the instruction 'call open(marker, "w")'; pickling it calls nothing."""

    def __reduce__(self):
        return (open, (str(marker), "w"))


evil_pkl = pickle.dumps({"model": {}, "epoch": Payload()}, protocol=2)
evil = tmp / "evil.pth"
with zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as z:  # laid out exactly as torch.save does
    z.writestr("evil/data.pkl", evil_pkl)
    z.writestr("evil/byteorder", "little")
print(f"wrote {evil} ({evil.stat().st_size} bytes); its program (decoded, not run):")
pickletools.dis(evil_pkl)
evil_globals = [arg for op, arg, pos in pickletools.genops(evil_pkl) if op.name == "GLOBAL"]
print("globals it names:", evil_globals)
assert evil_globals == ["io open"]  # the built-in open() lives in module io
assert not marker.exists()

# %% [markdown]
# `GLOBAL 'io open'` (the built-in `open`) then `REDUCE`: loading this with `pickle.load` would create the
# marker file (or, with `os.system`, run any command). mst_ref refuses it: `check_pickle` reads the
# opcodes first and finds a global outside its allow-list, so the program never starts.

# %%
try:
    load_state_dict(evil)
    refused = None
except CheckpointError as e:
    refused = e
print("load_state_dict(evil.pth) ->", type(refused).__name__, ":", refused)
print("marker file exists:", marker.exists())
assert isinstance(refused, CheckpointError) and "io.open" in str(refused)
assert not marker.exists()

# the same for the whole-model loader and for `mst-ref inspect`
try:
    load_checkpoint(evil)
    raise AssertionError("load_checkpoint accepted a malicious file")
except CheckpointError as e:
    print("load_checkpoint(evil.pth) ->", type(e).__name__)
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    status = cli.main(["inspect", str(evil)])
print(f"mst-ref inspect evil.pth -> exit status {status}: {stderr.getvalue().strip()}")
assert status == 2 and "refusing" in stderr.getvalue()
assert not marker.exists()

# %% [markdown]
# Our 20-line reader of section 4 refuses it too, for the same reason (its `find_class`):

# %%
try:
    TinyTorchUnpickler(io.BytesIO(evil_pkl)).load()
    raise AssertionError("the tiny reader accepted a malicious file")
except pickle.UnpicklingError as e:
    print("TinyTorchUnpickler ->", e)
assert not marker.exists()

# %% [markdown]
# ## 6. Reading safely, converting to `.npz`, inspecting
#
# `load_state_dict(path)` returns `(state, meta)`: the official key names -> arrays, and the
# plain entries saved beside them. `load_checkpoint(path)` builds the model from it, reading the
# architecture off the tensor shapes.

# %%
print(f"state: {len(state)} arrays, e.g.")
for key in ["patch_embed.proj.weight", "layers.0.blocks.1.attn.relative_position_index",
            "layers.0.blocks.0.attn.q_if.up", "head.weight"]:
    print(f"  {key:<48} {state[key].dtype} {state[key].shape}")
print("meta:", json.dumps(meta))
model = load_checkpoint(PTH)
print(model.config)
assert model.config.embed_dim == 48 and model.config.depths == (2, 2) and len(model.site_names) == 42

# %% [markdown]
# mst_ref's own format is an `.npz`: one `.npy` array per key under its official name, plus the
# config as UTF-8 JSON bytes under `__config__`. It is read with `np.load(allow_pickle=False)`:
# no objects, no code, and any NumPy can read it without mst_ref.

# %%
npz = OUT / "10_mst_fashion.npz"
save_npz(npz, state, meta["config"])
with zipfile.ZipFile(npz) as z:
    names = z.namelist()
print(f"{npz}: {len(names)} records, e.g. {names[:3]} ... {names[-1]}")
with np.load(npz, allow_pickle=False) as f:
    config_by_hand = json.loads(f["__config__"].tobytes().decode("utf-8"))
    same = all(np.array_equal(f[k], v) and f[k].dtype == v.dtype for k, v in state.items())
print("__config__ decoded by hand:", config_by_hand)
assert len(names) == len(state) + 1 and names[-1] == "__config__.npy"
assert config_by_hand == meta["config"] and same

# %% [markdown]
# `describe_checkpoint` summarises a file without building a model, and `mst-ref inspect` prints
# it (here called in-process through `mst_ref.cli.main`; from a shell it is
# `mst-ref inspect tutorial_out/10_mst_fashion.npz`).

# %%
info_pth, info_npz = describe_checkpoint(PTH), describe_checkpoint(npz)
for k in ["format", "num_keys", "num_parameters", "num_thresholds", "dtypes", "mlp_variant", "mask_ratio"]:
    print(f"  {k:<15} pth: {info_pth[k]!s:<32} npz: {info_npz[k]}")
assert info_pth["num_keys"] == info_npz["num_keys"] == 140
assert info_pth["num_thresholds"] == info_npz["num_thresholds"] == 42
assert info_pth["num_parameters"] == info_npz["num_parameters"] == 303622
assert info_pth["thresholds"] == info_npz["thresholds"]

# %% [markdown]
# The thresholds (the QCFS `up` of each site, lambda) are the numbers the conversion hinges on:
# each IF neuron fires at its site's lambda. Here they are in forward order, next to those of the
# model trained with random spike masking (tutorial 05), read the same way.

# %%
lam_plain = info_pth["thresholds"]
lam_rsm = describe_checkpoint(data.shipped_file("mst_fashion_rsm75.pth"))["thresholds"]
sites = model.site_names  # forward order
# the file stores them in the order the modules were defined (v_if before attn_if); describe_checkpoint
# lists them in forward order, the order the model runs them
assert list(lam_plain) == sites
print("lambda of the first 6 sites:", {k: round(lam_plain[k], 4) for k in sites[:6]})
print(f"lambda over all 42 sites: min {min(lam_plain.values()):.4f}, max {max(lam_plain.values()):.4f}")
assert set(lam_plain) == set(sites) == set(lam_rsm) and min(lam_plain.values()) > 0
plots.line_chart_png(OUT / "10_thresholds.png", np.arange(len(sites)),
                     {"mst_fashion.pth": [lam_plain[k] for k in sites],
                      "mst_fashion_rsm75.pth": [lam_rsm[k] for k in sites]},
                     "QCFS thresholds lambda per activation site, both shipped models",
                     f"activation site index (forward order, 0..{len(sites) - 1})",
                     "lambda (units of the site's input)")

stdout = io.StringIO()
with contextlib.redirect_stdout(stdout):
    status = cli.main(["inspect", str(npz)])
print(stdout.getvalue())
assert status == 0 and "keys 140" in stdout.getvalue() and "42 sites" in stdout.getvalue()

# %% [markdown]
# Finally, the check that matters: the model built from the `.npz` computes exactly what the one
# built from the `.pth` computes. The arrays are bit-identical, so the ANN logits must be too.

# %%
model_npz = load_checkpoint(npz)
cfg = meta["config"]
dataset = data.load_dataset(data.sample_path())
images, labels = next(data.iterate_batches(dataset, 16, cfg["img_size"], cfg["in_chans"], cfg["mean"], cfg["std"]))
logits_pth = model.ann_forward(images)  # (16, 10)
logits_npz = model_npz.ann_forward(images)  # (16, 10)
print("logits of image 0 (pth):", logits_pth[0])
print("logits of image 0 (npz):", logits_npz[0])
diff = np.abs(logits_pth - logits_npz).max()
print(f"max |pth - npz| over 16 images: {diff}; predictions {logits_pth.argmax(1)}")
assert model_npz.config == model.config
assert np.array_equal(logits_pth, logits_npz)
assert not marker.exists()
print("tutorial 10 done; outputs in", OUT.resolve())
