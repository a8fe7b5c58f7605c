"""Fuzzers for the checkpoint reader (issue 14): random pickle programs and random zip structures.

The invariant is the reader's contract: every file is answered, quickly, with a state dict of ndarrays
or a CheckpointError; no other exception, no code run. The opcode fuzzer draws from every opcode pickle
defines, each with a well-formed argument, plus whole tensors and the allow-listed globals, so that
programs get past the first opcode. The zip fuzzer writes every field of the directory by hand
(:func:`test_reader_files.raw_zip`), lies about sizes and CRCs included.
"""
import pickletools
import struct
import time
import zlib

import numpy as np
from hypothesis import given, settings, strategies as st

from mst_ref.io.checkpoint import CheckpointError, load_state_dict
from test_checkpoint import Op, write_torch_zip
from test_reader_files import deflate, raw_zip

GLOBALS = [("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"), ("torch", "FloatStorage"),
           ("torch", "Size"), ("builtins", "set"), ("yacs.config", "CfgNode"), ("torch._utils", "_rebuild_parameter"),
           ("os", "getcwd"), ("builtins", "len")]          # the last two are refused (and harmless if not)
WORDS = ["storage", "cpu", "0", "model", "w", "a"]

small = st.integers(0, 6)
ARGUMENTS = {    # pickletools argument name -> strategy for its bytes
    "uint1": small.map(lambda n: bytes([n])), "uint2": small.map(lambda n: struct.pack("<H", n)),
    "int4": st.integers(-3, 6).map(lambda n: struct.pack("<i", n)), "uint4": small.map(lambda n: struct.pack("<I", n)),
    "uint8": small.map(lambda n: struct.pack("<Q", n)),
    "long1": st.binary(max_size=9).map(lambda b: bytes([len(b)]) + b),
    "long4": st.binary(max_size=70).map(lambda b: struct.pack("<i", len(b)) + b),
    "float8": st.floats().map(lambda x: struct.pack(">d", x)),
    "unicodestring1": st.sampled_from(WORDS).map(lambda w: bytes([len(w)]) + w.encode()),
    "unicodestring4": st.sampled_from(WORDS).map(lambda w: struct.pack("<I", len(w)) + w.encode()),
    "unicodestring8": st.sampled_from(WORDS).map(lambda w: struct.pack("<Q", len(w)) + w.encode()),
    "bytes1": st.binary(max_size=8).map(lambda b: bytes([len(b)]) + b),
    "bytes4": st.binary(max_size=8).map(lambda b: struct.pack("<I", len(b)) + b),
    "bytes8": st.binary(max_size=8).map(lambda b: struct.pack("<Q", len(b)) + b),
    "bytearray8": st.binary(max_size=8).map(lambda b: struct.pack("<Q", len(b)) + b),
    "string1": st.binary(max_size=8).map(lambda b: bytes([len(b)]) + b),
    "string4": st.binary(max_size=8).map(lambda b: struct.pack("<i", len(b)) + b),
    "stringnl_noescape_pair": st.sampled_from(GLOBALS).map(lambda g: f"{g[0]}\n{g[1]}\n".encode()),
    "stringnl_noescape": st.just(b"x\n"), "decimalnl_short": small.map(lambda n: b"%d\n" % n),
    "decimalnl_long": st.just(b"7L\n"), "stringnl": st.just(b"'a'\n"), "unicodestringnl": st.just(b"a\n"),
    "floatnl": st.just(b"1.5\n"),
}


def opcode(op):
    head = st.just(op.code.encode("latin-1"))
    return st.tuples(head, ARGUMENTS[op.arg.name]).map(b"".join) if op.arg else head


OPS = st.one_of([opcode(op) for op in pickletools.opcodes] + [
    st.just(Op.tensor("0", 10, (2, 5), (5, 1))), st.just(Op.str("w")), st.just(b"}"), st.just(b"("),
    st.just(b"u"), st.just(b"s"), st.just(b"]"), st.just(b"e"),
    st.builds(Op.tensor, st.just("0"), st.integers(0, 12), st.lists(small, max_size=3).map(tuple),
              st.lists(small, max_size=3).map(tuple), small)])
RECORDS = {"0": np.arange(10, dtype="<f4").tobytes()}


def answer(path):
    """The reader's answer to one file, with the contract checked: a dict of ndarrays or CheckpointError."""
    start = time.perf_counter()
    try:
        state, meta = load_state_dict(path)
        assert all(type(k) is str and isinstance(v, np.ndarray) for k, v in state.items())
        assert meta["format"] in ("torch", "npz")
    except CheckpointError:
        pass
    assert time.perf_counter() - start < 2.0


@settings(max_examples=200, deadline=None)
@given(body=st.lists(OPS, max_size=40), wrap=st.booleans())
def test_random_pickle_programs_are_answered(body, wrap, tmp_path_factory):
    program = b"".join(body)
    if wrap:                                    # as the value of {'w': ...}, where tensors usually sit
        program = b"}(" + Op.str("w") + program + b"u"
    path = tmp_path_factory.getbasetemp() / "fuzz.pth"
    answer(write_torch_zip(path, b"\x80\x02" + program + b".", RECORDS))


GOOD_PICKLE = Op.program(Op.dict([(Op.str("w"), Op.tensor("0", 10, (10,), (1,)))]))
NPY = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }".ljust(127) + b"\n" + RECORDS["0"]
PAIRS = [("archive/data.pkl", GOOD_PICKLE), ("archive/data/0", RECORDS["0"]), ("archive/byteorder", b"little"),
         ("archive/byteorder", b"big"), ("w.npy", NPY), ("v.npy", NPY), ("__config__", b"{}"),
         ("../x", b""), ("archive/code/x", b""), ("a/b/data.pkl", GOOD_PICKLE), ("archive/version", b"3\n")]



@st.composite
def entries(draw):
    """One record: mostly the right content under its name, honestly described; sometimes any field lies."""
    name, content = draw(st.sampled_from(PAIRS))
    if draw(st.integers(0, 4)) == 0:
        content = draw(st.sampled_from([content for _, content in PAIRS] + [b""]))
    method = draw(st.sampled_from([0, 8, 0, 8, 12, 14, 99]))
    data = deflate(content) if method == 8 else content if method == 0 else draw(st.binary(max_size=64))
    lie = draw(st.integers(0, 3)) == 0
    crc = draw(st.sampled_from([zlib.crc32(content), 0, 0xFFFFFFFF])) if lie else zlib.crc32(content)
    csize = draw(st.sampled_from([len(data), 0, len(data) + 1, 2**32 - 1])) if lie else len(data)
    size = draw(st.sampled_from([len(content), 0, max(len(content) - 1, 0), len(content) + 7, 2**31, 2**32 - 1])) \
        if lie else len(content)
    return name, data, method, crc, csize, size


def honest(name, content):
    return name, content, 0, zlib.crc32(content), len(content), len(content)


CORES = {".pth": [honest("archive/data.pkl", GOOD_PICKLE), honest("archive/data/0", RECORDS["0"])],
         ".npz": [honest("w.npy", NPY)]}


@settings(max_examples=200, deadline=None)
@given(items=st.lists(entries(), max_size=4), suffix=st.sampled_from([".pth", ".npz"]), core=st.booleans(),
       at=st.integers(0, 4))
def test_random_zip_structures_are_answered(items, suffix, core, at, tmp_path_factory):
    """Random records, half the time around the honest records of a valid file (then a lie is one field)."""
    if core:
        items[at:at] = CORES[suffix]
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(raw_zip(items))
    answer(path)


def test_the_zip_fuzzer_can_build_a_valid_file(tmp_path):
    """Control: with honest fields the hand-made zip loads, so the fuzzer explores near valid files."""
    items = [("archive/data.pkl", GOOD_PICKLE, 0, zlib.crc32(GOOD_PICKLE), len(GOOD_PICKLE), len(GOOD_PICKLE)),
             ("archive/data/0", deflate(RECORDS["0"]), 8, zlib.crc32(RECORDS["0"]), len(deflate(RECORDS["0"])), 40)]
    (tmp_path / "ok.pth").write_bytes(raw_zip(items))
    state, _ = load_state_dict(tmp_path / "ok.pth")
    assert state["w"].tolist() == list(range(10))
