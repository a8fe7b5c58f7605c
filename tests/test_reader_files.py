"""Hostile checkpoint files that hang a reader or exhaust its memory, answered in a bounded child process.

Issue 14 found small files (all under 10 MB) that made the reader run for hours or take gigabytes. This
module builds one of each kind in a temporary folder, reads them all in one child process under an
address-space limit and a wall-clock timeout (a hang or a bomb fails the test instead of stalling CI),
and checks what the issue asks of every file: an answer (a model, a state dict or CheckpointError) in
under 5 s, with under 1 GiB of memory beyond the child's baseline.

The child prints one JSON line per file as soon as it is answered, so a file that hangs is named.
Other modules import :func:`raw_zip` and :func:`deflate_zeros` to assemble zips field by field.
"""
import atexit
import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mst_ref.io.checkpoint import save_npz
from mst_ref.models.mst_layout import MSTConfig, random_state_dict
from test_checkpoint import Op, weights_file, write_torch_zip

REPO = Path(__file__).resolve().parent.parent
SECONDS, MEMORY_MB = 5.0, 1024          # the bound for any file of at most 10 MB
BOMB_BYTES = 18 * 2**26                 # 1.125 GiB of zeros, deflated to about 1.1 MB


def raw_zip(entries):
    """A zip archive from ``(name, stored bytes, method, crc, declared compressed size, declared size)``
    tuples, every field as given (the directory may lie), local headers and directory agreeing."""
    body, directory = bytearray(), bytearray()
    for name, data, method, crc, csize, size in entries:
        name = name.encode() if isinstance(name, str) else name
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, size, len(name), 0)
        body += name + data
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize,
                                 size, len(name), 0, 0, 0, 0, 0, offset) + name
    n, end = len(entries), len(body) + len(directory)
    if n < 0xFFFF:
        return bytes(body + directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(directory), len(body), 0))
    # over 65534 records: a ZIP64 end record and its locator, then the classic end record saying "see ZIP64"
    zip64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(directory), len(body))
    locator = struct.pack("<IIQI", 0x07064B50, 0, end, 1)
    classic = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, len(directory), len(body), 0)
    return bytes(body + directory + zip64 + locator + classic)


@functools.cache
def deflate_zeros(nbytes, chunk=2**20):
    """A raw deflate stream of ``nbytes`` zeros (a multiple of ``chunk``), built without deflating them
    all: one sync-flushed block of ``chunk`` zeros repeated (each refers back only to itself), then an
    empty final block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_SYNC_FLUSH)
    return block * (nbytes // chunk) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def tower(levels):
    """A tuple t_k = (t_{k-1}, t_{k-1}) built through the memo: 2**levels steps to hash, 40 bytes a level."""
    return Op.str("a") + b"".join(b"r" + struct.pack("<I", i) + b"j" + struct.pack("<I", i) + b"\x86"
                                  for i in range(levels))


def mst_state():
    config = MSTConfig(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=4, depths=(2,),
                       num_heads=(1,), window_size=2, mlp_ratio=1.0, mlp_norm=False, qcfs_levels=4)
    return random_state_dict(config, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ the files
# each builder writes one file into ``folder`` and returns its path; the comment says what it did before

def ordered_dict_tower(folder):     # hash tower through the arguments of OrderedDict(pairs): hours
    pairs = b"](" + tower(60) + b"K\x01\x86e"
    return weights_file(folder / "od_tower.pth", Op.glob("collections", "OrderedDict") + b"(" + pairs + b"tR")


def cfgnode_tower(folder):          # the same through yacs CfgNode(pairs)
    pairs = b"](" + tower(60) + b"K\x01\x86e"
    return weights_file(folder / "cfg_tower.pth", Op.glob("yacs.config", "CfgNode") + b"(" + pairs + b"tR")


def inst_tower(folder):             # INST of an allowed class, whose arguments the pre-scan never counted
    pairs = b"](" + tower(60) + b"K\x01\x86e"
    return weights_file(folder / "inst_tower.pth", b"(" + pairs + b"icollections\nOrderedDict\n")


def huge_int_key(folder):           # a 2**23-bit LONG4 used as a dict key 200k times: each hash reads it all
    big = b"\x8b" + struct.pack("<i", 2**20) + b"\x01" * 2**20
    body = b"}" + big + b"r\x00\x00\x00\x000(" + b"j\x00\x00\x00\x00K\x01" * 200_000 + b"u"
    return weights_file(folder / "int_key.pth", body)


def opcode_flood_64mib(folder):     # 64 MiB of NONE deflated to 64 KB: a pure-Python pre-scan took 95 s
    pkl = b"\x80\x02(" + b"N" * (2**26 - 8) + b"l."
    data = deflate(pkl)
    path = folder / "flood64.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", data, 8, zlib.crc32(pkl), len(data), len(pkl))]))
    return path


def opcode_flood_4mib(folder):      # just under the pickle size limit: the opcode count refuses it
    return write_torch_zip(folder / "flood4.pth", b"\x80\x02(" + b"N" * (2**22 - 16) + b"l.")


def memo_flood(folder):             # 24M memo reads, 48 MiB deflated to 48 KB: a minute of pre-scan
    pkl = b"\x80\x02]q\x00(" + b"h\x00" * (24 * 2**20) + b"e."
    data = deflate(pkl)
    path = folder / "memo_flood.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", data, 8, zlib.crc32(pkl), len(data), len(pkl))]))
    return path


def scattered_memo(folder):         # memo indices scattered up to the pickle's size: a memo of that size
    body = b"]" + b"".join(b"r" + struct.pack("<I", 2**16 - 4 * i) for i in range(2**14))
    return weights_file(folder / "memo_scattered.pth", body + b"0" + Op.str("x"))


def many_blocks(folder):            # one key layers.0.blocks.999999999.*: inference walked 10**9 blocks
    state = mst_state()
    state["layers.0.blocks.999999999.norm1.weight"] = np.ones(4, np.float32)
    save_npz(folder / "blocks.npz", state, {"img_size": 16})
    return folder / "blocks.npz"


def memo_index(folder):             # LONG_BINPUT 60M in a 60 MiB pickle deflated to 60 KB: +0.95 GiB
    pkl = b"\x80\x02X" + struct.pack("<I", 60 * 2**20) + b"a" * (60 * 2**20) + b"0]r" + struct.pack("<I", 60 * 2**20) + b"."
    data = deflate(pkl)
    path = folder / "memo_index.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", data, 8, zlib.crc32(pkl), len(data), len(pkl))]))
    return path


def size_lie(folder):               # a storage declared 40 bytes whose stream inflates to 1.125 GiB
    pkl = Op.program(Op.dict([(Op.str("w"), Op.tensor("0", 10, (10,), (1,)))]))
    zeros = deflate_zeros(BOMB_BYTES)
    path = folder / "size_lie.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", pkl, 0, zlib.crc32(pkl), len(pkl), len(pkl)),
                              ("archive/data/0", zeros, 8, zlib.crc32(bytes(40)), len(zeros), 40)]))
    return path


def byteorder_bomb(folder):         # a byteorder record of 1.125 GiB: read whole before it was checked
    pkl = Op.program(Op.dict([(Op.str("w"), Op.tensor("0", 10, (10,), (1,)))]))
    zeros, record = deflate_zeros(BOMB_BYTES), np.arange(10, dtype="<f4").tobytes()
    path = folder / "byteorder.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", pkl, 0, zlib.crc32(pkl), len(pkl), len(pkl)),
                              ("archive/byteorder", zeros, 8, 0, len(zeros), BOMB_BYTES),
                              ("archive/data/0", record, 0, zlib.crc32(record), 40, 40)]))
    return path


def shared_views(folder, entry="model"):    # 16 GiB of float64 views of one 1 MiB storage, 1.2 MB file
    numel = 2**17
    views = [(Op.str(f"v{k}"), Op.tensor("0", numel, (numel - k,), (1,), offset=k, storage="DoubleStorage"))
             for k in range(2**14)]
    body = Op.dict([(Op.str(entry), Op.dict(views))] + ([(Op.str("model"), Op.dict([]))] if entry != "model" else []))
    return write_torch_zip(folder / f"views_{entry}.pth", Op.program(body), {"0": bytes(8 * numel)})


def many_storages(folder):          # 1000 storages of 1 MiB zeros, 1 KB each deflated: no budget across them
    one = deflate_zeros(2**20)
    crc, n = zlib.crc32(bytes(2**20)), 1000
    tensors = [(Op.str(f"w{k}"), Op.tensor(str(k), 2**18, (2**18,), (1,))) for k in range(n)]
    pkl = Op.program(Op.dict(tensors))
    path = folder / "storages.pth"
    path.write_bytes(raw_zip([("archive/data.pkl", pkl, 0, zlib.crc32(pkl), len(pkl), len(pkl))] +
                             [(f"archive/data/{k}", one, 8, crc, len(one), 2**20) for k in range(n)]))
    return path


def npz_bomb(folder):               # an .npy member of 1.125 GiB of zeros deflated to 1.1 MB
    header = b"\x93NUMPY\x01\x00" + b"v\x00" + f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({BOMB_BYTES // 8},), }}".ljust(117).encode() + b"\n"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(header) + c.flush(zlib.Z_SYNC_FLUSH) + deflate_zeros(BOMB_BYTES)
    path = folder / "bomb.npz"
    path.write_bytes(raw_zip([("w.npy", data, 8, 0, len(data), len(header) + BOMB_BYTES)]))
    return path


def shared_names(folder):           # one tensor under 150k names: convert wrote 150k copies
    body = Op.dict([(Op.str("model"), b"}r\x00\x00\x00\x00(" + Op.str("k0") + Op.tensor("0", 10, (10,), (1,)) +
                     b"r\x01\x00\x00\x00" + b"".join(Op.str(f"k{i}") + b"j\x01\x00\x00\x00" for i in range(1, 150_000)) + b"u")])
    return write_torch_zip(folder / "names.pth", Op.program(body), {"0": np.arange(10, dtype="<f4").tobytes()})


def many_records(folder, suffix):   # 105k empty records in 10 MB: the zip directory alone is large
    pkl = Op.program(Op.dict([(Op.str("w"), Op.tensor("0", 10, (10,), (1,)))]))
    record = np.arange(10, dtype="<f4").tobytes()
    core = [("archive/data.pkl", pkl), ("archive/data/0", record)] if suffix == ".pth" else []
    items = core + [(f"{k}.npy", b"") for k in range(105_000)]
    path = folder / f"records{suffix}"
    path.write_bytes(raw_zip([(n, d, 0, zlib.crc32(d), len(d), len(d)) for n, d in items]))
    return path


def honest_10mb(folder):            # control: a valid 10 MB file loads within the same bounds
    numel = 10 * 2**20 // 4 - 2**12
    pkl = Op.program(Op.dict([(Op.str("model"), Op.dict([(Op.str("w"), Op.tensor("0", numel, (numel,), (1,))),
                                                         (Op.str("w.t"), Op.tensor("0", numel, (2**10, numel // 2**10), (1, 2**10)))]))]))
    return write_torch_zip(folder / "honest.pth", pkl, {"0": np.ones(numel, "<f4").tobytes()})


# (label, builder, action, expected outcome, regex the message must match)
HANGS = [
    ("OrderedDict argument tower", ordered_dict_tower, "state", "CheckpointError", "to hash"),
    ("CfgNode argument tower", cfgnode_tower, "state", "CheckpointError", "to hash"),
    ("INST of an allowed class", inst_tower, "state", "CheckpointError", "opcode INST"),
    ("LONG4 key hashed 200k times", huge_int_key, "state", "CheckpointError", "opcode LONG4 at byte"),
    ("64 MiB opcode flood", opcode_flood_64mib, "state", "CheckpointError", "refuses pickles over 4 MiB"),
    ("4 MiB opcode flood", opcode_flood_4mib, "state", "CheckpointError", "over 500000 opcodes"),
    ("memo flood", memo_flood, "state", "CheckpointError", "refuses pickles over 4 MiB"),
    ("scattered memo indices", scattered_memo, "state", "CheckpointError", "skips ahead"),
    ("block 999999999 (load)", many_blocks, "model", "CheckpointError", "blocks of stage 0 must be"),
    ("block 999999999 (inspect)", many_blocks, "inspect", "exit 0", "blocks of stage 0 must be"),
]
BOMBS = [
    ("LONG_BINPUT 60M", memo_index, "state", "CheckpointError", "refuses pickles over 4 MiB"),
    ("directory lies about a storage's size", size_lie, "state", "ok", ""),
    ("byteorder record of 1.125 GiB", byteorder_bomb, "state", "CheckpointError", "at most 16"),
    ("16 GiB of views in the state dict", shared_views, "state", "CheckpointError", "same storage many times"),
    ("16 GiB of views beside the model", functools.partial(shared_views, entry="optimizer"), "state", "ok", ""),
    ("1000 deflated storages", many_storages, "state", "CheckpointError", "zip bomb"),
    (".npz deflate bomb", npz_bomb, "state", "CheckpointError", "declares 1207959680 bytes"),
    ("one tensor under 150k names", shared_names, "convert", "exit 2", "mst_ref refuses more than 100000"),
    ("105k records (.npz)", functools.partial(many_records, suffix=".npz"), "state", "CheckpointError",
     "holds 105000 members"),
    ("105k records (.pth)", functools.partial(many_records, suffix=".pth"), "state", "ok", ""),
    ("a valid 10 MB file", honest_10mb, "state", "ok", ""),
]

CHILD = r"""
import contextlib, gc, io, json, os, resource, sys, time
from argparse import Namespace
resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))     # a bomb fails here, not the machine
from mst_ref.io.checkpoint import CheckpointError, describe_checkpoint, load_checkpoint, load_state_dict
from mst_ref.cli.checkpoint import cmd_convert, cmd_inspect

def status(field):              # kB; VmHWM is the peak resident size, reset by writing 5 to clear_refs
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])

for label, path, action in json.loads(sys.argv[1]):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    start, err = time.perf_counter(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            if action == "state":
                load_state_dict(path)
            elif action == "model":
                load_checkpoint(path)
            elif action == "inspect":
                rc = cmd_inspect(Namespace(checkpoint=path, json=False, thresholds=False))
            else:
                out = path + ".out.npz"
                rc = cmd_convert(Namespace(input=path, output=out, force=False))
                leftovers = [n for n in os.listdir(os.path.dirname(path)) if ".out.npz" in n]
        outcome, message = ("exit %d" % rc, err.getvalue()) if action in ("inspect", "convert") else ("ok", "")
        if action == "convert":
            message += " leftovers=%s" % leftovers
    except BaseException as e:
        outcome, message = type(e).__name__, str(e)
    grown = (status("VmHWM:") - base) / 1024
    print(json.dumps([label, outcome, message[:400], time.perf_counter() - start, grown]), flush=True)
"""


@functools.cache
def answers():
    """{label: (outcome, message, seconds, MB grown, file size)} for every file of HANGS and BOMBS."""
    folder = Path(tempfile.mkdtemp(prefix="mst_ref_hostile_"))
    atexit.register(shutil.rmtree, folder, True)
    jobs, sizes = [], {}
    for label, build, action, _, _ in HANGS + BOMBS:
        path = build(folder)
        jobs.append((label, str(path), action))
        sizes[label] = path.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True,
                             timeout=120, env=env)
        out, err = run.stdout, run.stderr
    except subprocess.TimeoutExpired as e:
        out, err = (e.stdout or b"").decode(), "timed out"
    done = {label: tuple(rest) + (sizes[label],) for label, *rest in map(json.loads, out.splitlines())}
    missing = [label for label, *_ in jobs if label not in done]
    if missing:
        pytest.fail(f"the reader did not answer {missing[0]!r} within the child's 120 s ({err[-2000:]})")
    return done


def check(cases):
    got = answers()
    for label, _, _, outcome, match in cases:
        answer, message, seconds, grown, size = got[label]
        assert size <= 10 * 2**20, label
        assert answer == outcome, f"{label}: {answer}: {message}"
        assert match in message, f"{label}: {message}"
        assert seconds < SECONDS, f"{label}: answered in {seconds:.1f} s"
        assert grown < MEMORY_MB, f"{label}: took {grown:.0f} MB"
        assert "Traceback" not in message, label


@pytest.mark.parametrize("case", HANGS, ids=[c[0] for c in HANGS])
def test_small_files_that_hung_the_reader_are_answered_within_5s(case):
    check([case])


@pytest.mark.parametrize("case", BOMBS, ids=[c[0] for c in BOMBS])
def test_small_files_that_exhausted_memory_stay_under_1gib(case):
    check([case])


def test_convert_of_a_refused_file_leaves_nothing_behind():
    assert answers()["one tensor under 150k names"][1].endswith("leftovers=[]")
