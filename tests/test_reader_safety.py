"""Issue 14, in process: no code from extension opcodes, no opcode torch.save never writes, one exception
type (CheckpointError) for every bad file, no bad value loaded silently, and a ``convert`` that never
writes an unsafe name or a partial file. The files that hang or exhaust memory are in
test_reader_files.py, read in a bounded child process.
"""
import copyreg
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from mst_ref.io.checkpoint import (CheckpointError, describe_checkpoint, load_checkpoint, load_state_dict, save_npz,
                                save_safetensors, validate_state)
from mst_ref.cli.checkpoint import cmd_convert, cmd_inspect
from mst_ref.io.torchzip import read_torch_checkpoint
from test_checkpoint import Op, weights_file, write_torch_zip
from test_reader_files import mst_state

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- code ran: extension opcodes

@pytest.mark.parametrize("opcode", [b"\x82\xf0", b"\x83\xf0\x00", b"\x84\xf0\x00\x00\x00"], ids=["EXT1", "EXT2", "EXT4"])
def test_extension_opcodes_never_reach_copyregs_cache(opcode, tmp_path):
    """EXT1/2/4 fetch a registered extension from copyreg's cache without calling find_class: in a
    process that has registered and used one, the allow-list was bypassed and the function ran."""
    ran = []

    def payload(*args):
        ran.append(args)

    copyreg.add_extension("os", "system", 0xF0)
    copyreg._extension_cache[0xF0] = payload            # as after plain pickle used the extension once
    try:
        path = weights_file(tmp_path / "ext.pth", opcode + Op.tuple(Op.str("touch pwned")) + b"R")
        with pytest.raises(CheckpointError, match="opcode EXT. at byte .* torch.save never writes"):
            load_state_dict(path)
    finally:
        copyreg.remove_extension("os", "system", 0xF0)
    assert ran == []


# every opcode pickle defines but torch.save never writes, each with a well-formed argument
NEVER_WRITTEN = {
    "INST": b"(icollections\nOrderedDict\n", "OBJ": b"(" + Op.glob("collections", "OrderedDict") + b"o",
    "PERSID": b"Pstorage\n", "GET": b"]q\x00g0\n", "PUT": b"]p0\n", "INT": b"I7\n", "LONG": b"L7L\n",
    "STRING": b"S'a'\n", "UNICODE": b"Va\n", "FLOAT": b"F1.5\n", "DICT": b"(d", "LIST": b"(l", "DUP": b"K\x012",
    "BINSTRING": b"T\x01\x00\x00\x00a", "BYTEARRAY8": b"\x96" + bytes(8),
    "NEXT_BUFFER": b"\x97", "READONLY_BUFFER": b"]\x98",
    "NEWOBJ_EX": Op.glob("collections", "OrderedDict") + b")}\x92",
    # protocols 3-5: torch.save writes protocol 2, and torch.load(weights_only=True) refuses these too
    "LONG4": b"\x8b\x01\x00\x00\x00\x07", "STACK_GLOBAL": Op.str("os") + Op.str("getcwd") + b"\x93",
    "FRAME": b"\x95" + struct.pack("<Q", 1) + b"N", "MEMOIZE": b"N\x94", "POP": b"NN0", "POP_MARK": b"(N1N",
    "EMPTY_SET_ADDITEMS": b"\x8f(K\x01\x90", "FROZENSET": b"(K\x01\x91", "SHORT_BINUNICODE": b"\x8c\x01a",
    "BINUNICODE8": b"\x8d" + struct.pack("<Q", 1) + b"a", "SHORT_BINBYTES": b"C\x01a",
    "BINBYTES": b"B\x01\x00\x00\x00a", "BINBYTES8": b"\x8e" + struct.pack("<Q", 1) + b"a",
}


@pytest.mark.parametrize("name", sorted(NEVER_WRITTEN))
def test_opcodes_torch_save_never_writes_are_refused(name, tmp_path):
    with pytest.raises(CheckpointError, match=f"opcode {name.replace('EMPTY_SET_', '')} at byte"):
        load_state_dict(weights_file(tmp_path / "op.pth", NEVER_WRITTEN[name]))


def test_a_real_torch_save_uses_only_allowed_opcodes(tmp_path):
    """Control for the allow-list: a protocol-2 pickle of a state dict with an OrderedDict, a CfgNode-like
    nested config, ints, floats, bools, None, strings, lists and tuples loads (the fixtures cover tensors)."""
    body = Op.dict([(Op.str("model"), Op.dict([(Op.str("w"), Op.tensor("0", 10, (2, 5), (5, 1)))])),
                    (Op.str("epoch"), Op.int(3)), (Op.str("lr"), b"G" + struct.pack(">d", 0.5)),
                    (Op.str("flags"), Op.list(b"\x88", b"\x89", b"N", Op.tuple(Op.int(-(2**100))))),
                    (Op.str("seed"), b"\x8a" + bytes([64]) + bytes(63) + b"\x01")])
    state, meta = load_state_dict(write_torch_zip(tmp_path / "ok.pth", Op.program(body),
                                                  {"0": np.arange(10, dtype="<f4").tobytes()}))
    assert state["w"].tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert meta["flags"] == [True, False, None, (-(2**100),)] and meta["seed"] == 2**504 and meta["lr"] == 0.5


# ---------------------------------------------------------------- one exception type: CheckpointError

def test_integers_past_pythons_digit_limit_are_a_checkpoint_error(tmp_path):
    """A 5000-digit int as a state-dict key made brief() raise ValueError (int-to-str digit limit).
    LONG4 is refused and LONG1 capped at 64 bytes (154 digits)."""
    key = b"\x8b" + struct.pack("<i", 2100) + b"\x01" * 2100
    pkl = Op.program(Op.dict([(key, Op.tensor("0", 10, (10,), (1,)))]))     # a bare state dict
    path = write_torch_zip(tmp_path / "digits.pth", pkl, {"0": np.arange(10, dtype="<f4").tobytes()})
    with pytest.raises(CheckpointError, match="opcode LONG4"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="integer of 65 bytes"):
        load_state_dict(weights_file(tmp_path / "long1.pth", b"\x8a\x41" + b"\x01" * 65))
    np.savez(tmp_path / "digits.npz", w=np.ones(2), __config__=np.frombuffer(b'{"a": ' + b"9" * 5000 + b"}", np.uint8))
    with pytest.raises(CheckpointError, match="__config__ is not valid UTF-8 JSON"):
        load_state_dict(tmp_path / "digits.npz")


def npz_with(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def npy(array):
    import io
    f = io.BytesIO()
    np.lib.format.write_array(f, array, allow_pickle=False)
    return f.getvalue()


@pytest.mark.parametrize("member", ["__config__", "w", "w.npy.txt"])
def test_npz_members_without_npy_framing_are_refused(member, tmp_path):
    """np.load returns such members as raw bytes: they loaded silently, or raised AttributeError (config)."""
    path = npz_with(tmp_path / "raw.npz", {"v.npy": npy(np.ones(2)), member: b'{"img_size": 32}'})
    with pytest.raises(CheckpointError, match="is not a .npy array"):
        load_state_dict(path)


@pytest.mark.parametrize("label, data, match", [
    ("complex", npy(np.ones(2, np.complex64)), "dtype complex64"),
    ("structured", npy(np.zeros(2, [("a", "<f4")])), "bool, integer and float"),
    ("longer than its header", npy(np.ones(2)) + b"\0" * 8, "declares 2 float64 elements but holds 24"),
    ("shorter than its header", npy(np.ones(2))[:-8], "declares 2 float64 elements but holds 8"),
    ("no header", b"\x93NUMPY\x01\x00", "no valid .npy header"),
])
def test_npz_members_must_be_exactly_what_their_header_says(label, data, match, tmp_path):
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(npz_with(tmp_path / "m.npz", {"w.npy": data}))


def test_npz_fortran_and_big_endian_members_load_as_native_c_arrays(tmp_path):
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    np.savez(tmp_path / "ok.npz", f=np.asfortranarray(a.astype("<f8")), b=a)
    state, _ = load_state_dict(tmp_path / "ok.npz")
    for key in ("f", "b"):
        assert state[key].flags.c_contiguous and state[key].dtype.isnative and state[key].tolist() == a.tolist()


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2], ids=["lzma", "bzip2"])
def test_lzma_and_bzip2_records_are_refused(method, tmp_path):
    """zipfile inflates LZMA and bzip2 with no output cap; torch.save and np.savez write neither."""
    records = {"0": np.arange(10, dtype="<f4").tobytes()}
    path = tmp_path / "lzma.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", Op.program(Op.dict([(Op.str("w"), Op.tensor("0", 10, (10,), (1,)))])))
        z.writestr("archive/data/0", records["0"], compress_type=method)
    with pytest.raises(CheckpointError, match=f"compressed with method {method}"):
        load_state_dict(path)
    with zipfile.ZipFile(tmp_path / "lzma.npz", "w", compression=method) as z:
        z.writestr("w.npy", npy(np.ones(3)))
    with pytest.raises(CheckpointError, match=f"compressed with method {method}"):
        load_state_dict(tmp_path / "lzma.npz")


def test_complex_safetensors_are_refused(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file({"w": np.ones(2, np.complex64), "v": np.ones(2, np.float32)},
                                str(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match=r"w \(complex64\) are not bool, integer or float"):
        load_state_dict(tmp_path / "c.safetensors")


# ---------------------------------------------------------------- views share storage, copied once

def test_views_share_their_storage_and_the_state_is_copied_once(tmp_path):
    body = Op.dict([(Op.str("model"), Op.dict([
        (Op.str("a"), Op.tensor("0", 10, (2, 5), (5, 1))), (Op.str("tied"), Op.tensor("0", 10, (2, 5), (5, 1))),
        (Op.str("t"), Op.tensor("0", 10, (5, 2), (1, 5)))])),
        (Op.str("optimizer"), Op.dict([(Op.str("m"), Op.tensor("0", 10, (10,), (1,)))]))])
    path = write_torch_zip(tmp_path / "v.pth", Op.program(body), {"0": np.arange(10, dtype="<f4").tobytes()})
    obj = read_torch_checkpoint(path)
    a, t, m = obj["model"]["a"], obj["model"]["t"], obj["optimizer"]["m"]
    assert np.shares_memory(a, t) and np.shares_memory(a, m) and not a.flags.writeable   # one storage, no copy
    assert obj["model"]["tied"] is a                      # the same view twice is one array
    state, meta = load_state_dict(path)
    assert "optimizer" not in meta and sorted(state) == ["a", "t", "tied"]
    assert state["tied"] is state["a"] and not np.shares_memory(state["a"], state["t"])   # copied once each
    assert state["t"].tolist() == np.arange(10).reshape(2, 5).T.tolist() and state["t"].flags.c_contiguous


# ---------------------------------------------------------------- validation at load, every problem at once

def save_mst(path, state):
    save_npz(path, state, {"img_size": 16})
    return path


def test_bad_thresholds_and_index_buffers_are_all_listed_in_one_error(tmp_path):
    """NaN, inf, zero and negative thresholds loaded and the SNN ran on them; an out-of-range
    relative_position_index failed only at forward time and a negative one wrapped silently."""
    state = mst_state()
    sites = [k for k in state if k.endswith(".up")]
    for key, value in zip(sites, [np.nan, np.inf, 0.0, -1.0]):
        state[key] = np.array([value], np.float32)
    index = [k for k in state if k.endswith("relative_position_index")]
    state[index[0]] = state[index[0]] - 1                 # -1 somewhere: wraps to the last row
    state[index[1]] = state[index[1]] + 100               # past the table
    state["patch_embed.proj.weight"][0, 0, 0, 0] = np.inf
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(save_mst(tmp_path / "bad.npz", state))
    message = str(err.value)
    assert "6 problems" in message
    for key in sites[:4] + ["patch_embed.proj.weight"]:
        assert key in message
    assert "index buffers out of range (2)" in message and "values in [-1, 7], expected [0, 8]" in message
    state = mst_state()
    model = load_checkpoint(save_mst(tmp_path / "good.npz", state))    # control: the valid one loads
    assert model.state["patch_embed.proj.weight"].tolist() == state["patch_embed.proj.weight"].tolist()


def test_validate_state_serves_both_families():
    state = {"conv1.2.thresh": np.array([0.0], np.float32), "classifier.5.up": np.array([2.0], np.float32),
             "conv2_x.0.residual_function.0.weight": np.full((2, 2), np.nan, np.float32),
             "layer1.0.running_var": np.array([-1.0, 1.0]), "bn.num_batches_tracked": np.array(1.0),
             "layer1.0.weight": np.ones((2, 2), np.float16), "idx.relative_position_index": np.zeros(2, np.int64)}
    problems = validate_state(state)
    assert [p.split(":")[0] for p in problems] == ["conv1.2.thresh", "conv2_x.0.residual_function.0.weight",
                                                   "layer1.0.running_var", "bn.num_batches_tracked"]
    assert validate_state({"a.thresh": np.array([], np.float32)})[0].startswith("a.thresh: a threshold must be")


def degenerate(kind):
    state = mst_state()
    if kind == "0 embed dim":
        state["patch_embed.proj.weight"] = np.zeros((0, 1, 4, 4), np.float32)
    elif kind == "0-d tables":
        state["layers.0.blocks.0.attn.relative_position_bias_table"] = np.array(1.0, np.float32)
    elif kind == "1100 stages":
        for i in range(1, 1100):
            state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] = np.zeros((9, 1), np.float32)
    elif kind == "0-d attn_mask":
        state["layers.0.blocks.1.attn_mask"] = np.array(0.0, np.float32)
    elif kind == "1-d head":
        state["head.weight"] = np.zeros(3, np.float32)
    return state


@pytest.mark.parametrize("kind, match", [
    ("0 embed dim", "patch_embed.proj.weight must have 4 positive dimensions"),
    ("0-d tables", "relative_position_bias_table must have 2 positive dimensions"),
    ("1100 stages", "has no 'layers.1.blocks.0.attn.qkv.weight'"),
    ("0-d attn_mask", "attn_mask must have 3 positive dimensions"),
    ("1-d head", "head.weight must have 2 positive dimensions"),
])
def test_degenerate_shapes_are_a_checkpoint_error_everywhere(kind, match, tmp_path, capsys):
    """ZeroDivisionError, IndexError and OverflowError came out of architecture inference, and inspect
    and convert printed tracebacks for them."""
    path = save_mst(tmp_path / "d.npz", degenerate(kind))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)
    info = describe_checkpoint(path)
    assert info["architecture"] is None and match.split("'")[0] in info["architecture_error"]
    assert cmd_inspect(Namespace(checkpoint=str(path), json=False, thresholds=False)) == 0
    assert "not an MST state dict" in capsys.readouterr().out


# ---------------------------------------------------------------- convert: safe names, atomic, read back

@pytest.mark.parametrize("name", ["../evil", "a/../../b", "a\x00b", "/abs", "C:\\x", "", "a/b", "a..b", " a"])
def test_convert_refuses_unsafe_member_names_and_writes_nothing(name, tmp_path, capsys):
    body = Op.dict([(Op.str("ok"), Op.tensor("0", 10, (10,), (1,))), (Op.str(name), Op.tensor("0", 10, (10,), (1,)))])
    src = write_torch_zip(tmp_path / "names.pth", Op.program(body), {"0": np.arange(10, dtype="<f4").tobytes()})
    out = tmp_path / "out" / "w.npz"
    out.parent.mkdir()
    assert cmd_convert(Namespace(input=str(src), output=str(out), force=False)) == 2
    assert "is not a dotted name" in capsys.readouterr().err
    assert os.listdir(out.parent) == []


def test_a_failed_write_leaves_no_partial_output(tmp_path, monkeypatch):
    state = {"a": np.ones(3), "b": np.zeros(2)}
    calls = []

    def failing(f, array, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(f, array, **kw)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing)
    (tmp_path / "w.npz").write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        save_npz(tmp_path / "w.npz", state)
    assert os.listdir(tmp_path) == ["w.npz"] and (tmp_path / "w.npz").read_bytes() == b"previous"


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_convert_output_reads_back_with_normal_permissions(suffix, tmp_path):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    state = mst_state()
    src = save_mst(tmp_path / "in.npz", state)
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"out{umask}{suffix}"
            assert cmd_convert(Namespace(input=str(src), output=str(out), force=False)) == 0
        finally:
            os.umask(old)
        assert out.stat().st_mode & 0o777 == mode
        back, meta = load_state_dict(out)
        assert meta["config"] == {"img_size": 16} and sorted(back) == sorted(state)
        assert all(back[k].tobytes() == state[k].tobytes() and back[k].dtype == state[k].dtype for k in state)
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


# ---------------------------------------------------------------- the CLI never prints a traceback

def test_the_cli_answers_every_bad_file_in_one_line(tmp_path, capsys):
    from mst_ref.cli import main
    files = [save_mst(tmp_path / f"{k.replace(' ', '_')}.npz", degenerate(k)) for k in ("0 embed dim", "1100 stages")]
    files.append(weights_file(tmp_path / "ext.pth", b"\x82\x01" + Op.tuple() + b"R"))
    files.append(npz_with(tmp_path / "raw.npz", {"__config__": b"{}"}))
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04" + bytes(range(256)))
    files.append(tmp_path / "junk.pth")
    for path in files:
        for argv in (["inspect", str(path)], ["convert", str(path), str(tmp_path / "o.npz"), "--force"]):
            status = main(argv)
            printed = capsys.readouterr()
            assert "Traceback" not in printed.err + printed.out, argv
            assert status == 0 or (status == 2 and printed.err.count("\n") == 1), (argv, printed.err)
    # and once through the installed entry point, as a user runs it
    run = subprocess.run([sys.executable, "-m", "mst_ref.cli", "inspect", str(files[2])], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 2 and "Traceback" not in run.stderr and "opcode EXT1" in run.stderr
