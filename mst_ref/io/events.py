"""Event-camera recordings from disk: N-MNIST ``.bin``, AEDAT 2.0 / 3.1, Prophesee ``.dat``, ``.npy``/``.npz``.

An event sensor (DVS, ATIS, Prophesee) has no frames: each pixel reports, asynchronously, that its log
intensity rose (ON, p = 1) or fell (OFF, p = 0) by a contrast threshold. A recording is therefore a list
of events ``(t, x, y, p)``; here it is one NumPy structured array of ``EVENT_DTYPE`` (t int64
microseconds, x and y uint16 pixel coordinates from the top-left, p int8 0/1), sorted by time, plus the
sensor size ``(W, H)``.

Every reader below decodes the fields as the file holds them (each docstring gives the layout). A
dataset's own flips of axes or polarity are an explicit option (``orientation="cifar10-dvs"`` of
:func:`read_aedat2`), never applied silently. Event files are untrusted input: a file larger than
``max_bytes`` is refused before it is read, every count or size the file declares is checked against
the bytes present before anything is allocated from it, a header must end within ``MAX_HEADER`` bytes,
coordinates must lie inside the sensor, and timestamps that run backwards are refused (``order="sort"``
sorts them instead, stably, when asked). Each problem is one :class:`~mst_ref.io.data.DataError`
naming the file, what was expected and the byte offset where it was not found.
"""

import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..core import kernels
from .data import DataError

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.uint16), ("y", np.uint16), ("p", np.int8)])
MAX_BYTES = 1 << 30  # default limit on a file's size (1 GiB)
MAX_HEADER = 1 << 20  # a text header must end within this many bytes
NMNIST_OVERFLOW_US = 1 << 13  # what the reference N-MNIST readers add to later times per overflow record
FORMATS = ("nmnist", "aedat2", "aedat3", "prophesee", "npy", "npz")
_SOURCES = {"DVS128": (128, 128), "DAVIS240": (240, 180), "DAVIS346": (346, 260), "DVXPLORER": (640, 480)}


def _fail(path, what, where=None):
    at = f" at byte {where}" if where is not None else ""
    raise DataError(f"{path}: expected {what}{at}")


def make_events(t, x, y, p):
    """A structured array of ``EVENT_DTYPE`` from four equal-length arrays."""
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def _finish(path, ev, sensor_size, order):
    """Check coordinates against the sensor and the time order; returns (events, (W, H))."""
    if sensor_size is None:
        sensor_size = (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) if len(ev) else (1, 1)
    W, H = int(sensor_size[0]), int(sensor_size[1])
    if len(ev):
        bad = np.flatnonzero((ev["x"] >= W) | (ev["y"] >= H))
        if len(bad):
            i = bad[0]
            _fail(path, f"coordinates inside the {W} x {H} sensor; event {i} is at x = {ev['x'][i]}, "
                        f"y = {ev['y'][i]}")
        back = np.flatnonzero(np.diff(ev["t"]) < 0)
        if len(back) and order != "sort":
            i = back[0] + 1
            _fail(path, f"timestamps that never decrease (or order='sort'); event {i} has t = {ev['t'][i]} "
                        f"us after {ev['t'][i - 1]} us")
        if len(back):
            ev = ev[np.argsort(ev["t"], kind="stable")]
    return ev, (W, H)


def _read_bytes(path, max_bytes):
    size = os.stat(path).st_size  # checked before anything is read (a sparse file has a size too)
    if size > max_bytes:
        _fail(path, f"an event file of at most {max_bytes} bytes (max_bytes); it has {size}")
    return Path(path).read_bytes()


def _text_header(path, raw, marker, end=None):
    """Split ``marker``-prefixed header lines off ``raw``: (list of lines, offset of the binary part).

    With ``end`` the header is everything up to and including the line ``end``; without it, up to the
    first line that does not start with ``marker``.
    """
    lines, pos = [], 0
    while pos < len(raw) and raw[pos:pos + 1] == marker:
        nl = raw.find(b"\n", pos, pos + MAX_HEADER + 1)
        if nl < 0 or nl >= MAX_HEADER:
            _fail(path, f"a header line ending in a newline within {MAX_HEADER} bytes", pos)
        line = raw[pos:nl + 1]
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))
        pos = nl + 1
        if end is not None and line.rstrip(b"\r\n") == end:
            return lines, pos
    if end is not None:
        _fail(path, f"the header's last line {end.decode()}", pos)
    return lines, pos


def read_nmnist_bin(path, sensor_size=None, order="refuse", max_bytes=MAX_BYTES):
    """N-MNIST / N-Caltech101 ``.bin`` (Orchard et al. 2015): no header, 5 bytes per event.

    Byte 0 is x, byte 1 is y, bit 7 of byte 2 the polarity, bits 6-0 of byte 2 the timestamp's bits
    22-16 and bytes 3-4 its bits 15-0 (big-endian; microseconds). A record with y = 240 is not an event
    but a timestamp overflow: as in the reference readers of the dataset, 2**13 us is added to every
    later timestamp. The sensor is not in the file: ``sensor_size`` when given, else N-MNIST's 34 x 34
    when every event fits, else the ATIS's 304 x 240 (N-Caltech101).
    """
    raw = _read_bytes(path, max_bytes)
    if len(raw) % 5:
        _fail(path, f"whole 5-byte records; the last one is truncated ({len(raw) % 5} bytes)",
              len(raw) - len(raw) % 5)
    b = np.frombuffer(raw, np.uint8).reshape(-1, 5).astype(np.int64)  # (n, 5)
    over = b[:, 1] == 240
    # t = (b2 & 0x7f) << 16 | b3 << 8 | b4, plus 2**13 per overflow record before it
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    t = t + NMNIST_OVERFLOW_US * np.cumsum(over)
    keep = ~over
    ev = make_events(t[keep], b[keep, 0], b[keep, 1], b[keep, 2] >> 7)
    if sensor_size is None and len(ev):
        sensor_size = (34, 34) if ev["x"].max() < 34 and ev["y"].max() < 34 else (304, 240)
    return _finish(path, ev, sensor_size or (34, 34), order)


def read_aedat2(path, sensor_size=(128, 128), orientation="file", order="refuse", max_bytes=MAX_BYTES):
    """AEDAT 2.0 (jAER; CIFAR10-DVS's original files), DVS128 addresses.

    ``#`` header lines (the first ``#!AER-DAT2.0``), then big-endian pairs of uint32 address and uint32
    timestamp (microseconds). DVS128 address: polarity bit 0, x bits 1-7, y bits 8-14; bit 15 marks an
    external (special) event, which is not a pixel and is dropped; higher bits must be 0.
    ``orientation="cifar10-dvs"`` applies the flips the CIFAR10-DVS loaders apply
    (x' = W-1 - y, y' = H-1 - x, p' = 1 - p); the default ``"file"`` applies none.
    """
    if orientation not in ("file", "cifar10-dvs"):
        raise ValueError(f"orientation must be 'file' or 'cifar10-dvs'; got {orientation!r}")
    raw = _read_bytes(path, max_bytes)
    lines, off = _text_header(path, raw, b"#")
    if (len(raw) - off) % 8:
        _fail(path, "whole 8-byte (address, timestamp) records after the header; the last one is truncated",
              len(raw) - (len(raw) - off) % 8)
    rec = np.frombuffer(raw, ">u4", offset=off).reshape(-1, 2).astype(np.int64)  # (n, 2)
    addr, t = rec[:, 0], rec[:, 1]
    high = np.flatnonzero(addr >> 16)
    if len(high):
        _fail(path, f"DVS128 addresses of 16 bits; address {addr[high[0]]:#x}", off + 8 * int(high[0]))
    pixel = (addr >> 15) == 0
    addr, t = addr[pixel], t[pixel]
    p, x, y = addr & 1, (addr >> 1) & 0x7F, (addr >> 8) & 0x7F
    if orientation == "cifar10-dvs":
        x, y, p = sensor_size[0] - 1 - y, sensor_size[1] - 1 - x, 1 - p
    return _finish(path, make_events(t, x, y, p), sensor_size, order)


def read_aedat3(path, sensor_size=None, order="refuse", max_bytes=MAX_BYTES):
    """AEDAT 3.1 (cAER; DVS128 Gesture): polarity packets after a text header.

    The header is ``#`` lines ending with ``#!END-HEADER``. Then packets, each a 28-byte little-endian
    header -- int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset, int32
    eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid -- followed by eventNumber
    events of eventSize bytes. Polarity events (type 1, at least 8 bytes): uint32 data (valid bit 0,
    polarity bit 1, y bits 2-16, x bits 17-31) and int32 timestamp; time = eventTSOverflow << 31 |
    timestamp. Packets of other types are skipped whole; events whose valid bit is 0 were invalidated
    by the recording software and are dropped. The sensor comes from ``sensor_size``, else from a camera
    name in the header (DVS128, DAVIS240, DAVIS346, DVXPLORER), else from the largest coordinates.
    """
    raw = _read_bytes(path, max_bytes)
    lines, off = _text_header(path, raw, b"#", end=b"#!END-HEADER")
    if sensor_size is None:
        for line in lines:
            for name, size in _SOURCES.items():
                if name in line.upper():
                    sensor_size = size
    buf = np.frombuffer(raw, np.uint8)
    walk = kernels.aedat3_walk(buf, off, np.empty((0, 4), np.int64))  # count the polarity packets
    count, status, where, size, number, valid, overflow = walk
    if status == 1:
        _fail(path, f"a 28-byte packet header ({len(raw) - where} bytes left)", where)
    if status == 2:
        _fail(path, f"eventSize >= 1, 0 <= eventValid <= eventNumber, eventTSOverflow >= 0; got "
                    f"{size}, {valid}, {number}, {overflow}", where)
    if status == 3:
        _fail(path, f"{number} events of {size} bytes in the packet, {len(raw) - where - 28} bytes left", where)
    if status == 4:
        _fail(path, f"polarity events of at least 8 bytes; eventSize is {size}", where)
    table = np.empty((count, 4), np.int64)  # (first event offset, eventSize, eventNumber, eventTSOverflow)
    kernels.aedat3_walk(buf, off, table)
    first, size, number, overflow = table.T
    total = int(number.sum())
    # byte offset of every event: first + k * eventSize, k = 0 .. eventNumber - 1 within its packet
    k = np.arange(total) - np.repeat(np.cumsum(number) - number, number)
    at = np.repeat(first, number) + k * np.repeat(size, number)  # (n_events,)

    def u32(o):
        return (buf[o].astype(np.int64) | buf[o + 1].astype(np.int64) << 8 | buf[o + 2].astype(np.int64) << 16
                | buf[o + 3].astype(np.int64) << 24)
    data, ts = u32(at), u32(at + 4) & 0x7FFFFFFF  # int32 timestamp, non-negative
    ok = (data & 1) == 1
    # t = eventTSOverflow << 31 | timestamp
    t = (np.repeat(overflow, number)[ok] << 31) | ts[ok]
    ev = make_events(t, data[ok] >> 17, (data[ok] >> 2) & 0x7FFF, (data[ok] >> 1) & 1)
    return _finish(path, ev, sensor_size, order)


def aedat3_walk_reference(raw, start, out):
    """The packet walk of :func:`read_aedat3`, one header at a time in Python (the readable twin of
    :func:`mst_ref.core.kernels.aedat3_walk`: same arguments, same results)."""
    data, pos, count = raw.tobytes(), start, 0
    while pos < len(raw):
        if len(raw) - pos < 28:
            return count, 1, pos, 0, 0, 0, 0
        kind, _source, size, _tsoffset, overflow, _capacity, number, valid = struct.unpack_from("<hhiiiiii",
                                                                                              data, pos)
        if size < 1 or number < 0 or not 0 <= valid <= number or overflow < 0:
            return count, 2, pos, size, number, valid, overflow
        if size * number > len(raw) - pos - 28:
            return count, 3, pos, size, number, valid, overflow
        if kind == 1:
            if size < 8:
                return count, 4, pos, size, number, valid, overflow
            if len(out):
                out[count] = (pos + 28, size, number, overflow)
            count += 1
        pos += 28 + size * number
    return count, 0, pos, 0, 0, 0, 0


def read_prophesee_dat(path, sensor_size=None, order="refuse", max_bytes=MAX_BYTES):
    """Prophesee ``.dat`` (N-CARS, Gen1 automotive): ``%`` header, event type and size, 8-byte events.

    ``%`` text lines (``% Width 304``, ``% Height 240``, ``% Version 2``, ...), then one byte event
    type and one byte event size (8), then little-endian events: uint32 t (microseconds) and uint32
    data with x in bits 0-13, y in bits 14-27 and the polarity in bits 28-31 (0 or 1). The sensor comes
    from ``sensor_size``, else from the header's Width and Height, else from the largest coordinates.
    """
    raw = _read_bytes(path, max_bytes)
    lines, off = _text_header(path, raw, b"%")
    if len(raw) - off < 2:
        _fail(path, "the event type and event size bytes after the header", off)
    ev_size = raw[off + 1]
    if ev_size != 8:
        _fail(path, f"an event size of 8 bytes; the file declares {ev_size}", off + 1)
    off += 2
    if (len(raw) - off) % 8:
        _fail(path, "whole 8-byte events; the last one is truncated", len(raw) - (len(raw) - off) % 8)
    if sensor_size is None:
        dims = {}
        for line in lines:
            m = re.match(r"%\s*(Width|Height)\s+(\d+)", line)
            if m:
                dims[m.group(1)] = int(m.group(2))
        if "Width" in dims and "Height" in dims:
            sensor_size = (dims["Width"], dims["Height"])
    rec = np.frombuffer(raw, "<u4", offset=off).reshape(-1, 2).astype(np.int64)  # (n, 2)
    t, data = rec[:, 0], rec[:, 1]
    p = data >> 28
    bad = np.flatnonzero(p > 1)
    if len(bad):
        _fail(path, f"polarity 0 or 1 in bits 28-31; event {bad[0]} has {p[bad[0]]}", off + 8 * int(bad[0]) + 4)
    ev = make_events(t, data & 0x3FFF, (data >> 14) & 0x3FFF, p)
    return _finish(path, ev, sensor_size, order)


def _from_fields(path, fields, sensor_size, order):
    """Events from a mapping or structured array with fields t, x, y, p (any integer or bool dtypes)."""
    for name in "txyp":
        if name not in fields:
            _fail(path, f"fields t, x, y, p; {name!r} is missing")
    arrs = [np.asarray(fields[n]) for n in "txyp"]
    if any(a.ndim != 1 or len(a) != len(arrs[0]) or a.dtype.kind not in "iub" for a in arrs):
        _fail(path, "fields t, x, y, p as integer or bool 1-D arrays of one length")
    t, x, y, p = (a.astype(np.int64) for a in arrs)
    if len(t) and (x.min() < 0 or y.min() < 0 or x.max() > 65535 or y.max() > 65535 or p.min() < 0 or p.max() > 1):
        _fail(path, "x, y in [0, 65535] and p in {0, 1}")
    return _finish(path, make_events(t, x, y, p), sensor_size, order)


def read_npy(path, sensor_size=None, order="refuse", max_bytes=MAX_BYTES):
    """A ``.npy`` structured array with fields t, x, y, p (a tonic cache); no pickles."""
    _read_bytes(path, max_bytes)  # only the size check
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # truncated data, bad header, object arrays
        _fail(path, f"a .npy array without pickles ({exc})")
    if arr.dtype.names is None:
        _fail(path, f"a structured array with fields t, x, y, p; got dtype {arr.dtype}")
    return _from_fields(path, {n: arr[n] for n in arr.dtype.names}, sensor_size, order)


def read_npz(path, sensor_size=None, order="refuse", max_bytes=MAX_BYTES):
    """An ``.npz`` with arrays t, x, y, p (a SpikingJelly cache) or one structured array of events.

    The uncompressed size of every member is checked against ``max_bytes`` before it is read.
    """
    _read_bytes(path, max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > max_bytes:
            _fail(path, f"members of at most {max_bytes} bytes uncompressed; they declare {total}")
        with np.load(path, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
    except DataError:
        raise
    except Exception as exc:
        _fail(path, f"an .npz archive of arrays without pickles ({exc})")
    if len(fields) == 1:
        (arr,) = fields.values()
        if arr.dtype.names:
            fields = {n: arr[n] for n in arr.dtype.names}
    if sensor_size is None and "sensor_size" in fields and np.asarray(fields["sensor_size"]).size >= 2:
        sensor_size = tuple(int(v) for v in np.asarray(fields["sensor_size"]).ravel()[:2])
    return _from_fields(path, fields, sensor_size, order)


_READERS = {"nmnist": read_nmnist_bin, "aedat2": read_aedat2, "aedat3": read_aedat3,
            "prophesee": read_prophesee_dat, "npy": read_npy, "npz": read_npz}


def detect_format(path):
    """The format of an event file from its first bytes, else its suffix (one of ``FORMATS``)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: expected an event file; it does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"#!AER-DAT2"):
        return "aedat2"
    if head.startswith(b"#!AER-DAT3"):
        return "aedat3"
    if head.startswith(b"#!AER-DAT"):
        _fail(path, f"AEDAT 2.0 or 3.1 (AEDAT 4 and 1.0 are not supported); the file starts {head[:12]!r}", 0)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "npz"
    suffix = Path(path).suffix.lower()
    if head.startswith(b"%") or suffix == ".dat":
        return "prophesee"
    if suffix == ".bin":
        return "nmnist"
    if suffix == ".aedat" and head.startswith(b"#"):
        return "aedat2"
    _fail(path, "an event file: .bin (N-MNIST), .aedat (2.0 / 3.1), .dat (Prophesee), .npy or .npz")


def read_events(path, format=None, **options):
    """Read an event recording: ``(events, (W, H))``.

    Parameters
    ----------
    path : str or Path
    format : {None, "nmnist", "aedat2", "aedat3", "prophesee", "npy", "npz"}
        None recognises it from the header or the suffix (:func:`detect_format`).
    **options
        Passed to the reader: ``sensor_size``, ``order`` ("refuse" or "sort"), ``max_bytes``, and
        ``orientation`` for AEDAT 2.0.

    Returns
    -------
    events : (n,) structured ndarray of ``EVENT_DTYPE`` (t int64 us, x, y uint16, p int8), time-sorted
    sensor_size : (W, H) tuple of int

    Raises
    ------
    DataError
        The file is missing, not one of the formats, or malformed (the message says where).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: expected an event file; it does not exist or is not a file")
    if options.get("order", "refuse") not in ("refuse", "sort"):
        raise ValueError(f"order must be 'refuse' or 'sort'; got {options['order']!r}")
    fmt = format or detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return _READERS[fmt](path, **options)
