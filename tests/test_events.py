"""Event readers: files written by a separate encoder (this file's, from the format descriptions) decode
exactly; hostile files end in one DataError naming the file."""

import os
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mst_ref
from mst_ref.io.data import DataError
from mst_ref.io.events import EVENT_DTYPE, detect_format, read_events


# ----------------------------------------------------------------------------- independent encoders
def enc_nmnist(evs, overflow_at=()):
    """One 5-byte record per event, written field by field; a y = 240 record before index i in overflow_at."""
    out = bytearray()
    for i, (t, x, y, p) in enumerate(evs):
        if i in overflow_at:
            out += bytes([0, 240, 0, 0, 0])
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def enc_aedat2(evs, special=()):
    out = bytearray(b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# created by a test\r\n")
    for t, x, y, p in evs:
        out += struct.pack(">II", (y << 8) | (x << 1) | p, t)
    for t in special:
        out += struct.pack(">II", 1 << 15, t)
    return bytes(out)


def enc_aedat3(packets, source="DVS128"):
    """packets: list of (overflow, [(ts31, x, y, p, valid), ...]); each one polarity packet."""
    out = bytearray(f"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: {source}\r\n#!END-HEADER\r\n".encode())
    for overflow, evs in packets:
        nvalid = sum(v for *_, v in evs)
        out += struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, len(evs), len(evs), nvalid)
        for ts, x, y, p, v in evs:
            out += struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | v, ts)
    return bytes(out)


def enc_dat(evs, width=304, height=240):
    out = bytearray(f"% Date 2024-01-01\n% Width {width}\n% Height {height}\n% Version 2\n".encode())
    out += bytes([0, 8])
    for t, x, y, p in evs:
        out += struct.pack("<II", t, x | (y << 14) | (p << 28))
    return bytes(out)


def as_array(evs):
    return np.array([tuple(e) for e in evs], dtype=EVENT_DTYPE).reshape(-1)


def events_strategy(max_x, max_y, max_t, n=40):
    ev = st.tuples(st.integers(0, max_t), st.integers(0, max_x), st.integers(0, max_y), st.integers(0, 1))
    return st.lists(ev, max_size=n).map(lambda L: [(t, x, y, p) for t, x, y, p in sorted(L, key=lambda e: e[0])])


def same(a, b):
    assert a.dtype == EVENT_DTYPE
    assert np.array_equal(a["t"], b["t"]) and np.array_equal(a["x"], b["x"])
    assert np.array_equal(a["y"], b["y"]) and np.array_equal(a["p"], b["p"])


def write(tmp_path, name, raw):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


# ----------------------------------------------------------------------------- exact decoding
def test_nmnist_hand_record(tmp_path):
    # x = 3, y = 7, p = 1, t = 0x12345: byte 2 = 0x80 | 0x01, bytes 3-4 = 0x23 0x45
    path = write(tmp_path, "a.bin", bytes([3, 7, 0x81, 0x23, 0x45]))
    ev, sensor = mst_ref.read_events(path)
    assert sensor == (34, 34)
    assert ev.tolist() == [(0x12345, 3, 7, 1)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events_strategy(33, 33, 20000), st.integers(0, 3))
def test_nmnist_decodes_encoder(tmp_path, evs, n_over):
    over = tuple(range(0, len(evs), max(1, len(evs) // (n_over + 1))))[:n_over] if evs else ()
    ev, sensor = read_events(write(tmp_path, "r.bin", enc_nmnist(evs, over)))
    # each overflow record adds 2**13 us to every later event (the reference readers' rule)
    expect = [(t + (1 << 13) * sum(o <= i for o in over), x, y, p) for i, (t, x, y, p) in enumerate(evs)]
    same(ev, as_array(expect))
    assert sensor == (34, 34)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events_strategy(127, 127, 2**32 - 1), st.lists(st.integers(0, 2**32 - 1), max_size=3))
def test_aedat2_decodes_encoder(tmp_path, evs, special):
    special = sorted(s for s in special if not evs or s >= evs[-1][0])
    path = write(tmp_path, "r.aedat", enc_aedat2(evs, special))
    assert detect_format(path) == "aedat2"
    ev, sensor = read_events(path)
    same(ev, as_array(evs))  # the special (bit 15) events are not pixels
    assert sensor == (128, 128)
    flipped, _ = read_events(path, orientation="cifar10-dvs")
    same(flipped, as_array([(t, 127 - y, 127 - x, 1 - p) for t, x, y, p in evs]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1), st.booleans()),
                max_size=30), st.integers(1, 4))
def test_aedat3_decodes_encoder(tmp_path, raw_evs, n_packets):
    # increasing times across packets; the second half of the packets in the next overflow epoch
    packets, expect = [], []
    for k in range(n_packets):
        chunk = raw_evs[k::n_packets]
        overflow = 0 if k < n_packets // 2 else 1
        evs = [(1000 * k + 10 * i, x, y, p, int(v)) for i, (x, y, p, v) in enumerate(chunk)]
        packets.append((overflow, evs))
        expect += [((overflow << 31) | ts, x, y, p) for ts, x, y, p, v in evs if v]
    ev, sensor = read_events(write(tmp_path, "g.aedat", enc_aedat3(packets)))
    same(ev, as_array(expect))
    assert sensor == (128, 128)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events_strategy(303, 239, 2**32 - 1))
def test_prophesee_decodes_encoder(tmp_path, evs):
    ev, sensor = read_events(write(tmp_path, "c.dat", enc_dat(evs)))
    same(ev, as_array(evs))
    assert sensor == (304, 240)


def test_npy_and_npz(tmp_path):
    evs = [(5, 1, 2, 0), (9, 3, 4, 1), (9, 0, 0, 1)]
    tonic = np.array([(x, y, t, bool(p)) for t, x, y, p in evs],
                     dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
    np.save(tmp_path / "a.npy", tonic)
    ev, sensor = read_events(tmp_path / "a.npy")
    same(ev, as_array(evs))
    assert sensor == (4, 5)
    np.savez(tmp_path / "b.npz", t=tonic["t"], x=tonic["x"], y=tonic["y"], p=tonic["p"].astype(np.int8))
    same(read_events(tmp_path / "b.npz")[0], as_array(evs))


# ----------------------------------------------------------------------------- hostile files
def assert_error(path, *words, **kw):
    with pytest.raises(DataError) as e:
        read_events(path, **kw)
    msg = str(e.value)
    assert str(path) in msg and "expected" in msg
    for w in words:
        assert w in msg, msg


def test_truncated_records(tmp_path):
    assert_error(write(tmp_path, "a.bin", enc_nmnist([(1, 1, 1, 1)])[:-2]), "5-byte", "byte 0")
    assert_error(write(tmp_path, "a.aedat", enc_aedat2([(1, 1, 1, 1)])[:-3]), "8-byte")
    assert_error(write(tmp_path, "a.dat", enc_dat([(1, 1, 1, 1)])[:-1]), "8-byte")


def test_declared_count_larger_than_file(tmp_path):
    raw = bytearray(enc_aedat3([(0, [(1, 2, 3, 1, 1)])]))
    head = raw.index(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
    struct.pack_into("<i", raw, head + 20, 2**31 - 1)  # eventNumber
    struct.pack_into("<i", raw, head + 24, 1)
    t = time.perf_counter()
    assert_error(write(tmp_path, "g.aedat", bytes(raw)), "2147483647 events", f"byte {head}")
    assert time.perf_counter() - t < 2


def test_header_that_never_ends(tmp_path):
    raw = b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + b"\x00" * 64
    assert_error(write(tmp_path, "g.aedat", raw), "#!END-HEADER")
    long_line = b"#!AER-DAT2.0" + b"x" * (2 << 20)
    assert_error(write(tmp_path, "h.aedat", long_line), "newline", "byte 0")


def test_coordinates_outside_sensor(tmp_path):
    assert_error(write(tmp_path, "c.dat", enc_dat([(1, 20, 3, 0)], width=16, height=16)), "16 x 16", "x = 20")
    assert_error(write(tmp_path, "c.bin", enc_nmnist([(1, 40, 3, 0)])), "34 x 34", sensor_size=(34, 34))


def test_backwards_timestamps_refused_or_sorted(tmp_path):
    evs = [(50, 1, 1, 1), (40, 2, 2, 0), (60, 3, 3, 1)]
    path = write(tmp_path, "b.bin", enc_nmnist(evs))
    assert_error(path, "never decrease", "event 1")
    ev, _ = read_events(path, order="sort")
    same(ev, as_array(sorted(evs)))


def test_sparse_multigigabyte_file(tmp_path):
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # 3 GiB, no blocks written
    t = time.perf_counter()
    assert_error(path, "at most")
    assert time.perf_counter() - t < 1


def test_unknown_and_unsupported(tmp_path):
    assert_error(write(tmp_path, "x.txt", b"hello"), ".bin (N-MNIST)")
    assert_error(write(tmp_path, "x.aedat4", b"#!AER-DAT4.0\r\n"), "AEDAT 4")
    assert_error(write(tmp_path, "p.dat", enc_dat([(1, 1, 1, 3)])), "polarity 0 or 1")
    np.save(tmp_path / "o.npy", np.array([1, 2, 3]))
    assert_error(tmp_path / "o.npy", "structured")
    with pytest.raises(DataError, match="does not exist"):
        read_events(tmp_path / "missing.bin")


def _valid_files():
    evs = [(10, 1, 2, 1), (20, 3, 4, 0), (35, 5, 6, 1)]
    return {"f.bin": enc_nmnist(evs, (1,)), "f.aedat": enc_aedat2(evs),
            "g.aedat": enc_aedat3([(0, [(t, x, y, p, 1) for t, x, y, p in evs])]), "f.dat": enc_dat(evs)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(_valid_files())), st.data())
def test_fuzz_mutated_files(tmp_path, name, data):
    """Truncations, byte overwrites and insertions of valid files: events or one DataError, quickly."""
    raw = bytearray(_valid_files()[name])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["cut", "set", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "cut":
            del raw[pos:]
        elif kind == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        else:
            raw[pos:pos] = data.draw(st.binary(max_size=12))
    path = write(tmp_path, name, bytes(raw))
    t = time.perf_counter()
    try:
        ev, (W, H) = read_events(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert ev.dtype == EVENT_DTYPE
        assert np.all(ev["x"] < W) and np.all(ev["y"] < H) and np.all(np.diff(ev["t"]) >= 0)
        assert set(np.unique(ev["p"])) <= {0, 1}
    assert time.perf_counter() - t < 2


@pytest.mark.kernels
@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, -3]), st.integers(-2, 12), st.integers(-1, 4), st.integers(-1, 4),
                          st.integers(-1, 2)), max_size=6), st.integers(0, 40))
def test_aedat3_walk_kernel_equals_reference(packets, cut):
    from mst_ref.core import kernels
    from mst_ref.io.events import aedat3_walk_reference

    raw = bytearray()
    for kind, size, number, valid, overflow in packets:
        raw += struct.pack("<hhiiiiii", kind, 1, size, 0, overflow, number, number, valid)
        raw += bytes((37 * i) % 256 for i in range(max(0, size * number)))  # the events' bytes
    raw = np.frombuffer(bytes(raw[:len(raw) - cut] if cut < len(raw) else raw), np.uint8)
    got = kernels.aedat3_walk(raw, 0, np.empty((0, 4), np.int64))
    assert tuple(got) == aedat3_walk_reference(raw, 0, np.empty((0, 4), np.int64))
    a, b = np.zeros((got[0] + 1, 4), np.int64), np.zeros((got[0] + 1, 4), np.int64)
    kernels.aedat3_walk(raw, 0, a)
    aedat3_walk_reference(raw, 0, b)
    np.testing.assert_array_equal(a, b)


def test_aedat3_many_empty_packets_in_bounded_time(tmp_path):
    raw = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + struct.pack("<hhiiiiii", 2, 1, 8, 4, 0, 0, 0, 0) * 400_000
    t = time.perf_counter()
    ev, _ = read_events(write(tmp_path, "many.aedat", raw))
    elapsed = time.perf_counter() - t
    assert len(ev) == 0
    if os.environ.get("NUMBA_DISABLE_JIT") != "1":  # the bound is the compiled packet walk's; as Python it is ~20x slower
        assert elapsed < 2
