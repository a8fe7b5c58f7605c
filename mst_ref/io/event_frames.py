"""Events to tensors: frames per time slice, the MST authors' voxel grid, centring / cropping / pooling.

Two codings of a recording reach the network:

* **Frames** (the directly-trained SNN literature: SpikingJelly's
  ``integrate_events_by_fixed_frames_number``, tonic's ``ToFrame``): the recording is cut into T
  slices and each slice becomes a ``(2, H, W)`` count of events per polarity and pixel, one frame
  per time step of the SNN: ``(T, 2, H, W)``.
* **Voxel grid** (the MST authors' loader, ``QuantizationLayerVoxGrid((9, H, W))`` of their
  burst-ann2snn code): 9 time bins x 2 polarities become 18 channels of one static tensor, which is
  zero-padded to a square, resized to the network's input and fed at every step like an image.

Conventions, which differ between the libraries and are stated here once:

* Slices by number (``n_bins``): the span from the first to the last event is cut into ``n_bins``
  windows of ``dt = (t_last - t_first) // n_bins`` us, half-open ``[start, start + dt)``; the last
  window takes the remainder up to and including ``t_last`` (as SpikingJelly's split by time; tonic's
  ``n_time_bins`` instead drops the remainder). With ``overlap`` = o in [0, 1) each window is
  ``dt * (1 + o)`` long and windows still start every ``dt`` (tonic's convention), so consecutive
  frames share events; the last window always ends at ``t_last``.
* Slices by duration (``time_window`` us, windows every ``time_window * (1 - overlap)``) and by count
  (``event_count`` events, every ``event_count * (1 - overlap)`` events): the last, partial slice is
  kept only with ``include_incomplete=True`` (tonic's option of the same name).
* Voxel grid, as the authors' code computes it: times are scaled by the recording's largest timestamp
  (``tau = t / t_max``, not ``t - t_first``), bin i collects the events with ``i / 9 < tau <= (i+1) / 9``
  (so an event at t = 0 is in no bin), each event counts 1, and channels are the 9 bins of polarity 0
  then the 9 bins of polarity 1. Padding adds ``(long - short) // 2`` zero rows or columns on each
  side; resizing is nearest-neighbour (``F.interpolate``'s default: source index ``floor(i * in / out)``).

Arrays are ``(C, H, W)`` per recording, y the row and x the column; ``sensor_size`` is ``(W, H)``.
"""

import numpy as np


def _count(ev, W, H):
    """Events per polarity and pixel: (2, H, W) int32."""
    frame = np.zeros(2 * H * W, np.int32)
    np.add.at(frame, (ev["p"].astype(np.int64) * H + ev["y"]) * W + ev["x"], 1)
    return frame.reshape(2, H, W)  # (2, H, W)


def _check(events, overlap):
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    if len(events) > 1 and np.any(np.diff(events["t"]) < 0):
        raise ValueError("events must be sorted by time (read_events returns them so)")


def event_frames(events, sensor_size, n_bins=None, time_window=None, event_count=None, overlap=0.0,
                 include_incomplete=False):
    """Frames of event counts per polarity and pixel, one per time slice.

    Parameters
    ----------
    events : (n,) structured ndarray of ``EVENT_DTYPE``, time-sorted
    sensor_size : (W, H)
    n_bins, time_window, event_count : int
        Exactly one: the number of slices, a slice's duration in us, or a slice's number of events.
    overlap : float in [0, 1)
        Fraction of a slice shared with the next (see the module docstring for each mode).
    include_incomplete : bool
        Keep the last partial slice (``time_window`` / ``event_count`` only).

    Returns
    -------
    frames : (T, 2, H, W) int32 ndarray
        ``frames[k, p, y, x]`` = number of events of polarity p at pixel (x, y) in slice k.
    """
    if sum(v is not None for v in (n_bins, time_window, event_count)) != 1:
        raise ValueError("give exactly one of n_bins, time_window, event_count")
    _check(events, overlap)
    W, H = sensor_size
    t = events["t"]
    n = len(events)
    if n_bins is not None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1; got {n_bins}")
        if n == 0:
            return np.zeros((n_bins, 2, H, W), np.int32)
        t0, t1 = int(t[0]), int(t[-1])
        dt = (t1 - t0) // n_bins
        starts = t0 + dt * np.arange(n_bins)
        ends = starts + int(dt * (1 + overlap))
        lo = np.searchsorted(t, starts, "left")
        hi = np.searchsorted(t, ends, "left")
        hi[-1] = n  # the last slice ends at t_last, included
        return np.stack([_count(events[a:b], W, H) for a, b in zip(lo, hi)])  # (T, 2, H, W)
    if time_window is not None:
        if time_window < 1:
            raise ValueError(f"time_window must be >= 1 us; got {time_window}")
        stride = max(1, int(time_window * (1 - overlap)))
        t0 = int(t[0]) if n else 0
        t1 = int(t[-1]) + 1 if n else 0
        starts = np.arange(t0, t1, stride)
        ends = starts + time_window
        if not include_incomplete:
            starts, ends = starts[ends <= t1], ends[ends <= t1]
        lo, hi = np.searchsorted(t, starts, "left"), np.searchsorted(t, ends, "left")
    else:
        if event_count < 1:
            raise ValueError(f"event_count must be >= 1; got {event_count}")
        stride = max(1, int(event_count * (1 - overlap)))
        lo = np.arange(0, n, stride)
        hi = np.minimum(lo + event_count, n)
        if not include_incomplete:
            lo, hi = lo[lo + event_count <= n], hi[lo + event_count <= n]
    frames = [_count(events[a:b], W, H) for a, b in zip(lo, hi)]
    return np.stack(frames) if frames else np.zeros((0, 2, H, W), np.int32)


def voxel_grid(events, sensor_size, bins=9):
    """The MST authors' voxel grid: ``bins`` time bins x 2 polarities as channels, (2 bins, H, W).

    Notes
    -----
    ``# tau = t / t_max ; bin i holds the events with i / bins < tau <= (i + 1) / bins``;
    channel ``p * bins + i`` counts the events of polarity p in bin i (float32 counts).
    """
    W, H = sensor_size
    grid = np.zeros((2, bins, H, W), np.float32)
    if len(events):
        t = events["t"].astype(np.float64)
        tau = t / t.max() if t.max() > 0 else np.zeros_like(t)
        # bin = ceil(tau * bins) - 1: the i with i / bins < tau <= (i + 1) / bins; tau = 0 is in none
        b = np.ceil(tau * bins).astype(np.int64) - 1
        ok = b >= 0
        ev = events[ok]
        np.add.at(grid, (ev["p"].astype(np.int64), b[ok], ev["y"].astype(np.int64), ev["x"].astype(np.int64)), 1)
    return grid.reshape(2 * bins, H, W)  # (2 bins, H, W)


def pad_to_square(x):
    """Zero-pad the shorter of the last two axes by ``(long - short) // 2`` on each side (the authors')."""
    H, W = x.shape[-2:]
    k = abs(H - W) // 2
    pad = [(0, 0)] * (x.ndim - 2) + ([(0, 0), (k, k)] if H > W else [(k, k), (0, 0)])
    return np.pad(x, pad)


def resize_nearest(x, size):
    """Nearest-neighbour resize of the last two axes to (size, size): source ``floor(i * in / out)``."""
    H, W = x.shape[-2:]
    rows = np.floor(np.arange(size) * (H / size)).astype(np.int64)
    cols = np.floor(np.arange(size) * (W / size)).astype(np.int64)
    return x[..., rows[:, None], cols[None, :]]  # (..., size, size)


def center_crop(events, sensor_size, size):
    """Events inside a centred ``size`` = (w, h) window, coordinates shifted into it: (events, size)."""
    W, H = sensor_size
    w, h = size
    if w > W or h > H:
        raise ValueError(f"crop {size} is larger than the sensor {sensor_size}")
    x0, y0 = (W - w) // 2, (H - h) // 2
    keep = (events["x"] >= x0) & (events["x"] < x0 + w) & (events["y"] >= y0) & (events["y"] < y0 + h)
    out = events[keep].copy()
    out["x"] -= x0
    out["y"] -= y0
    return out, (w, h)


def downsample(events, sensor_size, factor):
    """Pool coordinates by an integer ``factor`` (x // f, y // f), as a smaller sensor would see them."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1; got {factor}")
    out = events.copy()
    out["x"] //= factor
    out["y"] //= factor
    W, H = sensor_size
    return out, (-(-W // factor), -(-H // factor))


def voxel_input(events, sensor_size, img_size, bins=9):
    """The authors' whole path: voxel grid, pad to square, nearest resize: (2 bins, img, img) float32."""
    return resize_nearest(pad_to_square(voxel_grid(events, sensor_size, bins)), img_size)


def frame_input(events, sensor_size, img_size, n_bins):
    """Frames by number of bins, padded and resized the same way: (T, 2, img, img) float32."""
    return resize_nearest(pad_to_square(event_frames(events, sensor_size, n_bins=n_bins)), img_size).astype(np.float32)
