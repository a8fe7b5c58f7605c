"""Tests for mst_ref.io.checkpoint / torchzip / safepickle: exact tensors from real torch.save files, no code
ever executed from a file, every damaged file refused with CheckpointError, npz and safetensors round trips.

Committed fixtures (tests/fixtures/ckpt, written by tests/fixtures/make_checkpoint_fixtures.py with real
torch.save) are the trusted reference; the live tests repeat the comparison against torch when it is
installed. Hostile and damaged files are assembled here from raw pickle opcodes (see ``Op``), so the tests
control every byte; a live test checks that torch reads these hand-made archives the same way.
"""
import io
import json
import pickle
import struct
import sys
import time
import zipfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mst_ref.io.checkpoint import (CheckpointError, config_img_size, config_mask_ratio, describe_checkpoint,
                                load_state_dict, save_npz, save_safetensors)
from mst_ref.cli.checkpoint import cmd_convert, cmd_inspect
from mst_ref.io.torchzip import read_torch_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ckpt"
MARKER = "MST_REF_PWNED"        # what the committed malicious fixtures create in the current directory
MALICIOUS = sorted(p.name for p in FIXTURES.glob("malicious_*.pth"))


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def assert_bit_exact(got, want, name=""):
    assert isinstance(got, np.ndarray), name
    assert (got.dtype, got.shape) == (want.dtype, want.shape), name
    assert got.tobytes() == want.tobytes(), name          # bit for bit: -0.0, inf, subnormals, NaN payloads


# ---------------------------------------------------------------- a tiny pickle assembler (protocol 2 opcodes)

class Op:
    """Raw pickle opcodes, so that a test can write exactly the program it means (hostile ones included)."""

    @staticmethod
    def str(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b                    # BINUNICODE

    @staticmethod
    def int(i):
        n = max(1, (i.bit_length() + 8) // 8)
        return b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True)   # LONG1

    @staticmethod
    def glob(module, name):
        return b"c" + f"{module}\n{name}\n".encode()                 # GLOBAL

    @staticmethod
    def tuple(*items):
        return b"(" + b"".join(items) + b"t"                          # MARK ... TUPLE

    @staticmethod
    def list(*items):
        return b"](" + b"".join(items) + b"e"                         # EMPTY_LIST MARK ... APPENDS

    @staticmethod
    def call(fn, *args):
        return fn + Op.tuple(*args) + b"R"                            # REDUCE

    @staticmethod
    def dict(pairs):
        return b"}(" + b"".join(k + v for k, v in pairs) + b"u"       # EMPTY_DICT MARK ... SETITEMS

    @staticmethod
    def tensor(key, numel, size, stride, offset=0, storage="FloatStorage"):
        """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
        pid = Op.tuple(Op.str("storage"), Op.glob("torch", storage), Op.str(key), Op.str("cpu"), Op.int(numel))
        return Op.call(Op.glob("torch._utils", "_rebuild_tensor_v2"), pid + b"Q", Op.int(offset),
                       Op.tuple(*map(Op.int, size)), Op.tuple(*map(Op.int, stride)), b"\x89",
                       Op.call(Op.glob("collections", "OrderedDict")))

    @staticmethod
    def program(body):
        return b"\x80\x02" + body + b"."                               # PROTO 2 ... STOP


def write_torch_zip(path, pkl, records=(), byteorder=b"little", prefix="archive"):
    """A zip in torch.save's layout: <prefix>/data.pkl, <prefix>/byteorder, <prefix>/data/<key>."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in dict(records).items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", b"3\n")
    return path


def weights_file(path, body, records=None, **kw):
    """A torch zip holding {'w': body} with one float32 storage '0' of 10 elements unless told otherwise."""
    records = {"0": np.arange(10, dtype="<f4").tobytes()} if records is None else records
    return write_torch_zip(path, Op.program(Op.dict([(Op.str("w"), body)])), records, **kw)


def zip_records(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


# ---------------------------------------------------------------- real torch.save files, bit for bit

@pytest.mark.parametrize("fixture", ["dtypes", "views"])
def test_fixture_tensors_are_bit_exact(fixture, expected):
    obj = read_torch_checkpoint(FIXTURES / f"{fixture}.pth")
    want = {k.split("/", 1)[1]: v for k, v in expected.items() if k.startswith(fixture + "/")}
    assert sorted(obj) == sorted(want)
    for key, array in obj.items():
        assert_bit_exact(array, want[key], key)
        assert not array.flags.writeable                  # a view of the file's storage, never written
    state, _ = load_state_dict(FIXTURES / f"{fixture}.pth")
    for key, array in state.items():
        assert_bit_exact(array, want[key], key)
        assert array.flags.c_contiguous and array.flags.writeable and array.base is None   # an owned copy


def test_every_dtype_is_read_with_its_numpy_dtype(expected):
    state, _ = load_state_dict(FIXTURES / "dtypes.pth")
    dtypes = {k: str(v.dtype) for k, v in state.items()}
    assert dtypes == {"float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "float32",
                      "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
                      "bool": "bool", "scalar": "float32", "empty": "float32", "parameter": "float32"}
    assert state["scalar"].shape == () and state["scalar"] == 2.5
    assert state["empty"].shape == (0, 4)
    # bfloat16 keeps 8 significant bits: 1/3 -> 0.333984375, and widening to float32 is exact
    assert state["bfloat16"][0] == np.float32(0.333984375)
    assert state["int64"][0] == -(2**63) and state["uint8"][1] == 255


def test_views_offsets_and_shared_storages(expected):
    state, _ = load_state_dict(FIXTURES / "views.pth")
    np.testing.assert_array_equal(state["transposed"], state["base"].T)
    np.testing.assert_array_equal(state["slice"], state["base"][1:3, 2:5])
    np.testing.assert_array_equal(state["strided"], state["base"][::2, ::3])
    np.testing.assert_array_equal(state["column"], state["base"][:, 3])
    np.testing.assert_array_equal(state["permuted"], np.arange(24, dtype=np.int32).reshape(2, 3, 4).transpose(2, 0, 1))
    # shared_a = other[:6] and shared_b = other[4:] view one storage (other = arange(10)), saved once
    np.testing.assert_array_equal(state["shared_a"], np.arange(6.0))
    np.testing.assert_array_equal(state["shared_b"], np.arange(4.0, 10.0))
    state["shared_a"][4] = -1.0                           # separate arrays, however the file shared them
    assert state["shared_b"][0] == 4.0
    with zipfile.ZipFile(FIXTURES / "views.pth") as z:    # the file really holds one storage per base tensor
        assert len([n for n in z.namelist() if "/data/" in n and not n.endswith("serialization_id")]) == 4


def test_official_wrapper_gives_state_config_and_plain_meta(expected):
    state, meta = load_state_dict(FIXTURES / "wrapper.pth")
    want = {k.split("/", 2)[2]: v for k, v in expected.items() if k.startswith("wrapper/model/")}
    assert list(state) == list(want)                      # the state dict's order is kept
    for key in want:
        assert_bit_exact(state[key], want[key], key)
    config = json.loads(expected["wrapper/__config__"].tobytes())
    assert isinstance(meta["config"], dict) and json.loads(json.dumps(meta["config"])) == config
    assert type(meta["config"]["MODEL"]["MST"]) is dict   # nested CfgNodes are plain dicts too
    assert meta["epoch"] == 3 and meta["max_accuracy"] == 91.5 and meta["format"] == "torch"
    assert meta["lr_scheduler"] == {"last_epoch": 3, "base_lrs": [1e-3]}
    assert "optimizer" not in meta                        # holds tensors (Adam moments): dropped
    assert config_img_size(meta["config"]) == 32 and config_mask_ratio(meta["config"]) == 0.75


def test_module_prefix_is_stripped():
    plain, _ = load_state_dict(FIXTURES / "wrapper.pth")
    stripped, meta = load_state_dict(FIXTURES / "module_prefix.pth")
    assert list(stripped) == list(plain) and meta == {"format": "torch"}
    for key in plain:
        assert_bit_exact(stripped[key], plain[key], key)


def test_legacy_and_torchscript_files_get_clear_errors():
    with pytest.raises(CheckpointError, match=r"legacy \(pre-1.6\).*weights_only=True"):
        load_state_dict(FIXTURES / "legacy.pth")
    with pytest.raises(CheckpointError, match=r"TorchScript.*torch.jit.load\(f\).state_dict\(\)"):
        load_state_dict(FIXTURES / "torchscript.pt")


@pytest.mark.parametrize("name", ["nope.pth", "nope.npz", "nope.safetensors", "nope"])
def test_missing_file_is_file_not_found(name, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / name)


# ---------------------------------------------------------------- safety: nothing in a file ever runs

@pytest.mark.parametrize("name", MALICIOUS)
def test_committed_malicious_checkpoints_are_refused(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                            # the payloads write MST_REF_PWNED into the cwd
    with pytest.raises(CheckpointError, match=r"refusing to load (os|posix|builtins|subprocess)\.\w+ from the"):
        load_state_dict(FIXTURES / name)
    assert not (tmp_path / MARKER).exists()


def test_malicious_fixture_is_live_under_plain_pickle(tmp_path, monkeypatch):
    """Control: the same file, read with plain pickle, does run its payload (so the test above means something)."""
    monkeypatch.chdir(tmp_path)
    data = next(v for k, v in zip_records(FIXTURES / "malicious_builtins_eval.pth").items() if k.endswith("data.pkl"))

    class Plain(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    with pytest.raises(Exception):                         # the tensors cannot be rebuilt, after the payload ran
        Plain(io.BytesIO(data)).load()
    assert (tmp_path / MARKER).exists()


def payloads(marker):
    """(label, pickle body) pairs: each would create ``marker`` if run by plain pickle."""
    touch, code = Op.str(f"touch {marker}"), Op.str(f"open({str(marker)!r}, 'w').close()")
    argv = Op.list(Op.str("touch"), Op.str(str(marker)))
    calls = [("os", "system", touch), ("posix", "system", touch), ("builtins", "eval", code),
             ("__builtin__", "eval", code), ("builtins", "exec", code), ("subprocess", "Popen", argv),
             ("subprocess", "call", argv), ("commands", "getoutput", touch), ("builtins", "getattr", touch),
             ("importlib", "import_module", Op.str("os")), ("torch", "load", Op.str(str(marker))),
             ("torch.storage", "_load_from_bytes", Op.str("x")), ("numpy", "load", Op.str(str(marker))),
             ("numpy.core.multiarray", "_reconstruct", touch), ("collections", "Counter", Op.str("abc")),
             ("collections", "defaultdict", touch), ("yacs.config", "load_cfg", touch),
             ("torch._utils", "_rebuild_tensor_v3", touch), ("torch.nn.modules.linear", "Linear", touch),
             ("__main__", "Evil", touch), ("builtins", "open", Op.str(str(marker)))]
    out = [(f"{m}.{n}", Op.call(Op.glob(m, n), arg)) for m, n, arg in calls]
    os_system = Op.str("os") + Op.str("system") + b"\x93"                       # STACK_GLOBAL (protocol 4)
    out += [("stack_global", os_system + Op.tuple(touch) + b"R"),
            ("inst_opcode", b"(" + touch + b"ios\nsystem\n"),                    # INST: find_class + call
            ("obj_opcode", b"(" + Op.glob("os", "system") + touch + b"o"),        # OBJ
            ("as_storage_type", Op.tensor("0", 10, (2,), (1,)).replace(b"ctorch\nFloatStorage\n", b"cos\nsystem\n")),
            ("deep_in_model", Op.dict([(Op.str("model"), Op.dict([(Op.str("x"), Op.call(Op.glob("os", "system"), touch))]))])),
            ("after_a_tensor", Op.list(Op.tensor("0", 10, (2,), (1,)), Op.call(Op.glob("posix", "system"), touch)))]
    return out


@pytest.mark.parametrize("label", [label for label, _ in payloads("m")])
def test_payload_variants_are_refused_and_never_run(label, tmp_path):
    marker = tmp_path / MARKER
    body = dict(payloads(marker))[label]
    path = weights_file(tmp_path / "evil.pth", body)
    refused = ("refusing to load .* not an allow-listed global; mst_ref never executes|"
               "opcode (INST|STACK_GLOBAL) at byte .* never writes")
    with pytest.raises(CheckpointError, match=refused):
        load_state_dict(path)
    assert not marker.exists()


def test_extension_registry_opcodes_are_refused(tmp_path):
    path = weights_file(tmp_path / "ext.pth", b"\x82\x01" + Op.tuple() + b"R")   # EXT1 code 1: unregistered
    with pytest.raises(CheckpointError):
        load_state_dict(path)


@pytest.mark.parametrize("label, body, match", ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "", argvalues=[
    ("self-referencing list", b"]q\x00h\x00a", "cycle"),
    ("nested 100000 deep as a key", b"}" + Op.str("a") + b"\x85" * 100_000 + b"K\x01s", "nests tuples"),
    ("shared tuples hashed 2**40 times", b"}" + Op.str("a") + b"".join(
        b"q" + bytes([i]) + b"h" + bytes([i]) + b"\x86" for i in range(40)) + b"K\x01s", "to hash"),
    ("shared lists expanding to 2**40",                  # l_k = [l_{k-1}, l_{k-1}], outermost first
     b"".join(b"]q" + bytes([j]) + b"(" for j in range(40)) + b"]q\x28" +
     b"".join(b"h" + bytes([41 - k]) + b"e" for k in range(1, 41)), "expands to"),
    ("set of tuples", Op.call(Op.glob("__builtin__", "set"), Op.list(Op.tuple(Op.int(1)))), "non-scalar"),
    ("memo index 2**32 - 1", b"]r" + struct.pack("<I", 2**32 - 1), "LONG_BINPUT index 4294967295 skips ahead"),
])
def test_pickle_bombs_are_refused_quickly(label, body, match, tmp_path):
    """Plain pickle crashes (C stack overflow) or runs for years on some of these."""
    path = weights_file(tmp_path / "bomb.pth", body)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(path)
    assert time.perf_counter() - start < 5.0, label


@pytest.mark.parametrize("label, body, match", ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "", argvalues=[
    ("BUILD on an allowed function", Op.glob("torch._utils", "_rebuild_tensor_v2") + Op.dict([]) + b"b",
     "tries to modify"),
    ("CfgNode with a list state", Op.glob("yacs.config", "CfgNode") + b")\x81" + Op.list() + b"b", "must be a dict"),
    ("a class as a value", Op.glob("collections", "OrderedDict"), "object of type type"),
    ("a bare storage", Op.tensor("0", 10, (2,), (1,)).split(b"Q")[0].split(b"(", 1)[1] + b"Q", "type Storage"),
    ("a storage type as a value", Op.glob("torch", "FloatStorage"), "object of type StorageType"),
])
def test_allowed_names_cannot_be_misused(label, body, match, tmp_path):
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(weights_file(tmp_path / "misuse.pth", body))


def test_compressed_storage_bombs_are_refused(tmp_path):
    numel = 2**21                                          # 8 MiB of zeros deflate to ~8 KiB
    pkl = Op.program(Op.dict([(Op.str("w"), Op.tensor("0", numel, (numel,), (1,)))]))
    with zipfile.ZipFile(tmp_path / "bomb.pth", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", bytes(4 * numel), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_state_dict(tmp_path / "bomb.pth")


# ---------------------------------------------------------------- damaged files

def test_every_truncation_is_refused(tmp_path):
    data = (FIXTURES / "wrapper.pth").read_bytes()
    path = tmp_path / "cut.pth"
    for n in sorted(set(range(0, len(data), max(1, len(data) // 150))) | {len(data) - 1}):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            load_state_dict(path)


def test_missing_storage_record(tmp_path):
    records = zip_records(FIXTURES / "dtypes.pth")
    del records["dtypes/data/3"]
    with zipfile.ZipFile(tmp_path / "holed.pth", "w") as z:
        for name, data in records.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match="record dtypes/data/3 is missing"):
        load_state_dict(tmp_path / "holed.pth")


@pytest.mark.parametrize("body, records, match", ids=lambda v: v if isinstance(v, str) else "", argvalues=[
    (Op.tensor("0", 10, (10,), (1,)), {"0": b"\0" * 32}, "holds 32 bytes but data.pkl declares 10"),
    (Op.tensor("0", 10, (4, 4), (4, 1)), None, "claims more elements than its storage"),
    (Op.tensor("0", 10, (3,), (1,), offset=8), None, "reaches element 11 of storage 0, which holds 10"),
    (Op.tensor("0", 10, (2, 3), (5, 3)), None, "reaches element 12 of storage 0"),
    (Op.tensor("0", 2**40, (2,), (1,)), None, "refuses more than 2\\*\\*31"),
    (Op.tensor("0", 10, (2**40,), (1,)), None, "claims more elements"),
    (Op.tensor("0", 10, (1,) * 40, (1,) * 40), None, "at most 32 ints"),
    (Op.tensor("0", 10, (2,), (1,), offset=-1), None, "offset must be a non-negative int"),
    (Op.tensor("0", 10, (2,), (-1,)), None, "non-negative int"),
    (Op.tensor("0", 10, (2, 2), (1,)), None, "different lengths"),
    (Op.tensor("0", 10, (2,), (1,)).replace(b"FloatStorage", b"ComplexFloatStorage"), None, "refusing"),
    (Op.tensor("0", 10, (2,), (1,)) + Op.tensor("0", 5, (2,), (1,), storage="IntStorage"), None, "declared twice"),
    (Op.call(Op.glob("torch._utils", "_rebuild_tensor_v2"), Op.str("x"), Op.int(0), Op.tuple(), Op.tuple()),
     None, "must view a storage"),
    (Op.tuple(Op.str("storage"), Op.str("x")) + b"Q", None, "persistent id"),
])
def test_inconsistent_tensors_are_refused(body, records, match, tmp_path):
    if body.count(b"_rebuild_tensor_v2") == 2:             # two tensors: put them in a list
        body = b"](" + body + b"e"
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(weights_file(tmp_path / "bad.pth", body, records))


@pytest.mark.parametrize("content, match", [
    (b"hello, world", "not a zip archive"),
    (b"\x80\x02}q\x00.", "not a zip archive"),
    (b"", "not a zip archive"),
])
def test_files_that_are_not_zips(content, match, tmp_path):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(tmp_path / "x.pth")


def test_archives_without_one_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "none.pth", "w") as z:
        z.writestr("archive/other.txt", b"hi")
    with pytest.raises(CheckpointError, match="exactly one <prefix>/data.pkl"):
        load_state_dict(tmp_path / "none.pth")
    with zipfile.ZipFile(tmp_path / "two.pth", "w") as z:
        z.writestr("a/data.pkl", Op.program(b"}"))
        z.writestr("b/data.pkl", Op.program(b"}"))
    with pytest.raises(CheckpointError, match="found 2"):
        load_state_dict(tmp_path / "two.pth")


def test_top_level_must_be_a_dict_with_a_state_dict(tmp_path):
    write_torch_zip(tmp_path / "list.pth", Op.program(Op.list(Op.int(1))))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_state_dict(tmp_path / "list.pth")
    write_torch_zip(tmp_path / "meta.pth", Op.program(Op.dict([(Op.str("epoch"), Op.int(3))])))
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_state_dict(tmp_path / "meta.pth")


@pytest.mark.parametrize("order", ["big", "little"])
def test_byte_order_record_is_honoured(order, tmp_path):
    values = np.array([1.5, -2.0, 3.25, 1e-3], dtype=np.float32)
    halves = np.array([0.5, -7.0], dtype=np.float16)
    bf16 = (np.array([1.0, -3.5], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    end = ">" if order == "big" else "<"
    records = {"0": values.astype(end + "f4").tobytes(), "1": halves.astype(end + "f2").tobytes(),
               "2": bf16.astype(end + "u2").tobytes(), "3": np.array([-5, 6], end + "i8").tobytes()}
    pkl = Op.program(Op.dict([
        (Op.str("f32"), Op.tensor("0", 4, (2, 2), (1, 2))), (Op.str("f16"), Op.tensor("1", 2, (2,), (1,), storage="HalfStorage")),
        (Op.str("bf16"), Op.tensor("2", 2, (2,), (1,), storage="BFloat16Storage")),
        (Op.str("i64"), Op.tensor("3", 2, (2,), (1,), storage="LongStorage"))]))
    obj = read_torch_checkpoint(write_torch_zip(tmp_path / "o.pth", pkl, records, byteorder=order.encode()))
    assert_bit_exact(obj["f32"], values.reshape(2, 2).T.copy())
    assert_bit_exact(obj["f16"], halves)
    assert_bit_exact(obj["bf16"], np.array([1.0, -3.5], dtype=np.float32))
    assert_bit_exact(obj["i64"], np.array([-5, 6], dtype=np.int64))
    assert all(a.dtype.isnative for a in obj.values())


def test_unknown_byte_order_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="unknown byte order"):
        read_torch_checkpoint(weights_file(tmp_path / "o.pth", Op.tensor("0", 10, (2,), (1,)), byteorder=b"middle"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("mutations")


VIEWS = (FIXTURES / "views.pth").read_bytes()


@settings(max_examples=100, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(VIEWS) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, len(VIEWS))))
def test_random_byte_mutations_load_or_raise_checkpoint_error(edits, cut, scratch):
    data = bytearray(VIEWS)
    for position, value in edits:
        data[position] = value
    path = scratch / "mutated.pth"
    path.write_bytes(bytes(data[:cut]))
    try:
        state, _ = load_state_dict(path)
    except CheckpointError:
        return
    assert all(isinstance(v, np.ndarray) for v in state.values())


DTYPES_RECORDS = zip_records(FIXTURES / "dtypes.pth")


@settings(max_examples=100, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(DTYPES_RECORDS["dtypes/data.pkl"]) - 1), st.integers(0, 255),
                                st.sampled_from(["replace", "insert", "delete"])), min_size=1, max_size=6))
def test_random_pickle_mutations_load_or_raise_checkpoint_error(edits, scratch):
    """The same, with the zip rebuilt around the mutated data.pkl so that its CRC holds: the unpickler sees it all."""
    pkl = bytearray(DTYPES_RECORDS["dtypes/data.pkl"])
    for position, value, how in edits:
        position = min(position, len(pkl) - 1)
        if how == "replace":
            pkl[position] = value
        elif how == "insert":
            pkl.insert(position, value)
        elif len(pkl) > 1:
            del pkl[position]
    path = scratch / "mutated_pickle.pth"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in DTYPES_RECORDS.items():
            z.writestr(name, bytes(pkl) if name.endswith("data.pkl") else data)
    try:
        state, _ = load_state_dict(path)
    except CheckpointError:
        return
    assert all(isinstance(v, np.ndarray) for v in state.values())


# ---------------------------------------------------------------- mst_ref's own formats

def test_npz_round_trip_with_config(tmp_path, expected):
    state = {k.split("/", 1)[1]: v for k, v in expected.items() if k.startswith("dtypes/")}
    config = {"img_size": 28, "mask_ratio": 0.5, "depths": (2, 2), "name": "fashion \u00e9", "qk_scale": None}
    save_npz(tmp_path / "w.npz", state, config)
    with np.load(tmp_path / "w.npz", allow_pickle=False) as npz:   # plain arrays only, no pickled objects
        assert sorted(npz.files) == sorted([*state, "__config__"]) and npz["__config__"].dtype == np.uint8
    loaded, meta = load_state_dict(tmp_path / "w.npz")
    assert sorted(loaded) == sorted(state)
    for key in state:
        assert_bit_exact(loaded[key], state[key], key)
    assert meta == {"format": "npz", "config": {**config, "depths": [2, 2]}}


def test_npz_config_as_a_unicode_scalar_and_bad_npz_files(tmp_path):
    np.savez(tmp_path / "u.npz", w=np.ones(2), __config__=np.array(json.dumps({"img_size": 32})))
    assert load_state_dict(tmp_path / "u.npz")[1]["config"] == {"img_size": 32}
    np.savez(tmp_path / "bad.npz", w=np.ones(2), __config__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(CheckpointError, match="not valid UTF-8 JSON"):
        load_state_dict(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object))     # a pickled object inside
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "junk.npz")


def test_save_refuses_what_is_not_a_state_dict(tmp_path):
    with pytest.raises(ValueError, match="object"):
        save_npz(tmp_path / "x.npz", {"w": np.array([None])})
    with pytest.raises(ValueError, match="ndarrays"):
        save_npz(tmp_path / "x.npz", {"w": [1.0]})


def test_safetensors_round_trip_with_config(tmp_path, expected):
    pytest.importorskip("safetensors")
    state = {k.split("/", 2)[2]: v for k, v in expected.items() if k.startswith("wrapper/model/")}
    config = json.loads(expected["wrapper/__config__"].tobytes())
    save_safetensors(tmp_path / "w.safetensors", state, config)
    loaded, meta = load_state_dict(tmp_path / "w.safetensors")
    for key in state:
        assert_bit_exact(loaded[key], state[key], key)
    assert meta == {"format": "safetensors", "config": config}
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "bad.safetensors")


def test_safetensors_without_the_package_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    (tmp_path / "w.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    with pytest.raises(CheckpointError, match="pip install safetensors"):
        load_state_dict(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="pip install safetensors"):
        save_safetensors(tmp_path / "out.safetensors", {"w": np.ones(2)})


def test_convert_and_inspect_commands(tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert cmd_convert(Namespace(input=str(FIXTURES / "wrapper.pth"), output=str(out), force=False)) == 0
    state, meta = load_state_dict(out)
    assert meta["config"]["DATA"]["IMG_SIZE"] == 32 and len(state) == 7
    assert cmd_convert(Namespace(input=str(FIXTURES / "wrapper.pth"), output=str(out), force=False)) == 2
    assert cmd_convert(Namespace(input=str(FIXTURES / "legacy.pth"), output=str(tmp_path / "l.npz"), force=True)) == 2
    assert cmd_inspect(Namespace(checkpoint=str(FIXTURES / "wrapper.pth"), json=False, thresholds=False)) == 0
    printed = capsys.readouterr()
    assert "parameters 24" in printed.out and "legacy" in printed.err and "exists" in printed.err
    info = describe_checkpoint(FIXTURES / "wrapper.pth")
    assert (info["num_keys"], info["num_parameters"], info["mask_ratio"]) == (7, 24, 0.75)
    assert info["architecture"] is None and "patch_embed" in info["architecture_error"]


# ---------------------------------------------------------------- live: against torch itself

def test_live_every_dtype_and_view_against_torch(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                  torch.int16, torch.int8, torch.uint8, torch.bool):
        base = (torch.randn(5, 7, generator=g) * 50).to(dtype)
        name = str(dtype).split(".")[1]
        tensors.update({f"{name}": base, f"{name}.t": base.t(), f"{name}.slice": base[1:4, ::3],
                        f"{name}.row": base[3], f"{name}.3d": base[:4].reshape(2, 2, 7).permute(2, 0, 1)})
    tensors["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    torch.save({"model": tensors, "epoch": 1}, tmp_path / "live.pth")
    state, meta = load_state_dict(tmp_path / "live.pth")
    assert meta == {"format": "torch", "epoch": 1}
    for key, t in tensors.items():
        want = (t.detach().float() if t.dtype == torch.bfloat16 else t.detach()).numpy()
        assert_bit_exact(state[key], np.ascontiguousarray(want), key)


def test_live_torch_reads_the_hand_made_archives_the_same(tmp_path):
    torch = pytest.importorskip("torch")
    records = {"0": np.arange(10, dtype="<f4").tobytes()}
    body = Op.dict([(Op.str("a"), Op.tensor("0", 10, (2, 3), (1, 3), offset=1)),
                    (Op.str("b"), Op.tensor("0", 10, (4,), (2,)))])
    path = write_torch_zip(tmp_path / "hand.pth", Op.program(body), records)
    ours, theirs = read_torch_checkpoint(path), torch.load(path, weights_only=True)
    for key in ("a", "b"):
        assert_bit_exact(ours[key], np.ascontiguousarray(theirs[key].numpy()), key)


def test_live_expanded_views_are_refused_not_crashed(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(1).expand(4)}, tmp_path / "expand.pth")   # stride 0: more elements than storage
    with pytest.raises(CheckpointError, match="claims more elements than its storage"):
        load_state_dict(tmp_path / "expand.pth")


def test_live_model_logits_from_pth_equal_those_from_npz(tmp_path):
    """The same weights through torch.save (.pth) and save_npz give the same ANN logits, bit for bit."""
    torch = pytest.importorskip("torch")
    model_module = pytest.importorskip("mst_ref.models.mst")
    from mst_ref.io.checkpoint import load_checkpoint
    if not all(hasattr(model_module, n) for n in ("MSTConfig", "random_state_dict", "MST")):
        pytest.skip("mst_ref.models.mst does not provide MSTConfig / random_state_dict yet")
    try:
        config = model_module.MSTConfig(img_size=32, patch_size=4, in_chans=1, num_classes=5, embed_dim=8,
                                        depths=(2, 2), num_heads=(1, 2), window_size=4, mlp_ratio=2.0,
                                        mlp_norm=False, qcfs_levels=8)
    except TypeError as err:
        pytest.skip(f"MSTConfig has other fields: {err}")
    state = model_module.random_state_dict(config, np.random.default_rng(0))
    ours = {"img_size": 32, "mask_ratio": 0.5, "qcfs_levels": 8}
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state.items()}, "config": ours},
               tmp_path / "m.pth")
    save_npz(tmp_path / "m.npz", state, ours)
    images = np.random.default_rng(1).normal(size=(2, 1, 32, 32)).astype(np.float32)
    logits = []
    for name in ("m.pth", "m.npz"):
        model = load_checkpoint(tmp_path / name)
        assert model.trained_mask_ratio == 0.5 and model.config.qcfs_levels == 8
        logits.append(model.ann_forward(images))
    assert logits[0].shape == (2, 5) and np.isfinite(logits[0]).all()
    assert logits[0].tobytes() == logits[1].tobytes()
    info = describe_checkpoint(tmp_path / "m.npz")
    assert info["architecture"]["depths"] == (2, 2) and info["num_thresholds"] == len(model.site_names)
    official = {"DATA": {"IMG_SIZE": 32}, "MODEL": {"MST": {"MASKING_RATIO": 0.25}}}     # yacs layout
    save_npz(tmp_path / "o.npz", state, official)
    model = load_checkpoint(tmp_path / "o.npz")
    assert model.trained_mask_ratio == 0.25 and model.config.mask_ratio == 0.25 and model.config.img_size == 32
    assert model.config.qcfs_levels == 16                  # L is not in an official config: the default
