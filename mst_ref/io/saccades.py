"""An N-MNIST-style recording simulated from static images: three saccades seen by an event sensor.

N-MNIST (Orchard et al., "Converting static image datasets to spiking neuromorphic datasets using
saccades", Frontiers in Neuroscience 2015) was recorded by an ATIS camera on a pan-tilt unit looking
at a screen showing each MNIST digit, while the unit made three short saccades along the sides of a
triangle (about 100 ms each). Each pixel of such a sensor reports an event when its log intensity has
changed by more than a contrast threshold since its last event: ON (p = 1) for an increase, OFF (p = 0)
for a decrease. This module simulates that recording for any (B, H, W) uint8 images and writes it in
N-MNIST's ``.bin`` format, so that the reader of :mod:`mst_ref.io.events` is exercised end to end.

The model, in order (``SaccadeConfig`` holds every number):

1. The image, scaled to [0, 1], lies on a screen of brightness ``background + (1 - background) * I``
   (a screen is never black), seen by a ``sensor`` x ``sensor`` pixel array; the image's top-left
   corner is at ``origin + d(t)``, where the displacement ``d(t)`` moves linearly between the
   ``vertices`` of a triangle, one saccade of ``saccade_ms`` per side (back to the start).
2. A pixel sees the screen by bilinear interpolation at its position, sampled every ``step_us``.
3. Log intensity ``L = log(brightness)``. Each pixel keeps a reference ``L_ref`` (its value at its
   last event) and a per-pixel threshold ``C ~ N(threshold, threshold_sigma)`` (fixed per recording).
   In a step from ``L0`` to ``L1``, every level ``L_ref + k C sign(L1 - L_ref)`` (k = 1, 2, ...) crossed
   emits one event at the time the linear path from L0 to L1 crosses it:
   ``# n = floor(|L1 - L_ref| / C) ; t_k = t0 + dt (L_ref + k C s - L0) / (L1 - L0)``
   and ``L_ref`` moves by ``n C s``. A pixel within ``refractory_us`` of its last event emits nothing in
   that step and keeps its reference (it fires later, if the change persists).
4. Optional shot noise: each pixel emits spurious events of random polarity, a Poisson process of
   ``noise_hz`` per pixel.

Everything random comes from one ``np.random.Generator`` per recording (:func:`recording_rng`
derives it from a seed, the split and the image index), so a recording does not depend on which
others are simulated with it.
"""

from dataclasses import dataclass

import numpy as np

from .events import EVENT_DTYPE


@dataclass(frozen=True)
class SaccadeConfig:
    sensor: int = 34                        # sensor side in pixels (N-MNIST: 34 x 34)
    origin: tuple = (0.0, 1.5)              # (x, y) of the image's top-left corner at d = 0
    vertices: tuple = ((0.0, 0.0), (3.0, 3.0), (6.0, 0.0))  # triangle of displacements d, pixels (x, y)
    saccade_ms: float = 100.0               # duration of one saccade (one side of the triangle)
    step_us: int = 500                      # sampling period of the intensity
    background: float = 0.1                 # screen brightness where the image is 0
    threshold: float = 0.25                 # contrast threshold C in log intensity
    threshold_sigma: float = 0.02           # per-pixel spread of C (0: every pixel the same)
    refractory_us: int = 1000               # a pixel is silent this long after an event
    noise_hz: float = 0.0                   # shot-noise events per pixel per second


def recording_rng(seed, split, index):
    """The generator of one recording: ``np.random.default_rng([seed, split_code, index])``."""
    return np.random.default_rng([int(seed), {"train": 0, "test": 1}.get(split, 2), int(index)])


def displacement(t_us, cfg):
    """Displacement ``d(t)`` of the image, (len(t), 2) float64 pixels (x, y), along the triangle."""
    v = np.asarray(cfg.vertices + (cfg.vertices[0],), dtype=np.float64)  # (4, 2): closed path
    side = np.clip(np.asarray(t_us, dtype=np.float64) / (cfg.saccade_ms * 1e3), 0, 3 - 1e-12)
    k = side.astype(np.int64)  # which saccade
    f = (side - k)[:, None]  # fraction of it
    # d(t) = v_k + f (v_{k+1} - v_k)
    return v[k] + f * (v[k + 1] - v[k])  # (len(t), 2)


def _interp_matrix(n_out, n_in, shift):
    """(n_out, n_in) bilinear weights: output pixel u samples input coordinate u - shift (0 outside)."""
    pos = np.arange(n_out) - shift  # (n_out,)
    i0 = np.floor(pos).astype(np.int64)
    w = pos - i0
    M = np.zeros((n_out, n_in + 2))  # one spare column either side for the edge neighbours
    rows = np.arange(n_out)
    ok0 = (i0 >= -1) & (i0 <= n_in - 1)
    M[rows[ok0], i0[ok0] + 1] += 1 - w[ok0]
    ok1 = (i0 + 1 >= -1) & (i0 + 1 <= n_in - 1)
    M[rows[ok1], i0[ok1] + 2] += w[ok1]
    return M[:, 1:n_in + 1]  # (n_out, n_in)


def _screen(image01, dx, dy, cfg):
    """Brightness seen by each sensor pixel with the images' top-left corner at (dx, dy): (B, S, S)."""
    H, W = image01.shape[-2:]
    Wy = _interp_matrix(cfg.sensor, H, dy)  # (S, H)
    Wx = _interp_matrix(cfg.sensor, W, dx)  # (S, W)
    # I_sensor(v, u) = sum_ij Wy[v, i] I[i, j] Wx[u, j]  (separable bilinear interpolation)
    img = Wy @ image01 @ Wx.T  # (B, S, S)
    return cfg.background + (1.0 - cfg.background) * img


def simulate_saccades(image, cfg=SaccadeConfig(), rng=None):
    """Events of one simulated N-MNIST-style recording of a static image.

    Parameters
    ----------
    image : (H, W) uint8 ndarray
        The static image (H, W <= cfg.sensor).
    cfg : SaccadeConfig
    rng : np.random.Generator
        Per-pixel thresholds and noise; required when ``threshold_sigma`` or ``noise_hz`` is non-zero.

    Returns
    -------
    events : (n,) structured ndarray of ``EVENT_DTYPE``
        Sorted by time (ties by y, x), t in microseconds from 0.

    Notes
    -----
    The recording lasts ``3 * saccade_ms``. See the module docstring for the sensor model;
    :func:`simulate_saccades_batch` runs the same model on many images at once.
    """
    return simulate_saccades_batch(np.asarray(image)[None], cfg, [rng])[0]


def simulate_saccades_batch(images, cfg=SaccadeConfig(), rngs=None):
    """:func:`simulate_saccades` of each of ``images`` (B, H, W), one generator each: list of B arrays.

    The images share the time loop (one saccade path), so a batch costs little more than one image;
    each recording draws its thresholds and noise from its own generator, so the result of an image
    does not depend on the batch it is in.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] > cfg.sensor or images.shape[2] > cfg.sensor:
        raise ValueError(f"images must be (B, H, W) with H, W <= {cfg.sensor}; got {images.shape}")
    B, S = len(images), cfg.sensor
    rngs = list(rngs) if rngs is not None else [None] * B
    if len(rngs) != B:
        raise ValueError(f"one generator per image: got {len(rngs)} for {B} images")
    if any(r is None for r in rngs) and (cfg.threshold_sigma > 0 or cfg.noise_hz > 0):
        raise ValueError("a generator per image is required when threshold_sigma or noise_hz is non-zero")
    x01 = images.astype(np.float64) / 255.0  # (B, H, W)
    n_steps = int(round(3 * cfg.saccade_ms * 1e3 / cfg.step_us))
    times = np.arange(n_steps + 1, dtype=np.float64) * cfg.step_us  # (n_steps + 1,)
    d = displacement(times, cfg) + np.asarray(cfg.origin)  # (n_steps + 1, 2)
    C = np.full((B, S, S), cfg.threshold)
    if cfg.threshold_sigma > 0:
        for b, r in enumerate(rngs):
            C[b] = np.maximum(C[b] + cfg.threshold_sigma * r.standard_normal((S, S)), 0.2 * cfg.threshold)
    L_prev = np.log(_screen(x01, d[0, 0], d[0, 1], cfg))  # (B, S, S)
    L_ref = L_prev.copy()
    last = np.full((B, S, S), -np.inf)  # time of each pixel's last event, us
    out = []  # (b, t, x, y, p) per step
    for k in range(1, n_steps + 1):
        t0, t1 = times[k - 1], times[k]
        L = np.log(_screen(x01, d[k, 0], d[k, 1], cfg))  # (B, S, S)
        diff = L - L_ref
        n = np.floor(np.abs(diff) / C).astype(np.int64)  # levels crossed
        n[last + cfg.refractory_us > t1] = 0  # refractory: silent, reference kept
        bs, ys, xs = np.nonzero(n)
        if len(ys):
            cnt = n[bs, ys, xs]
            s = np.sign(diff[bs, ys, xs])
            c = C[bs, ys, xs]
            rep = np.repeat(np.arange(len(ys)), cnt)
            kk = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1  # 1..n per pixel
            l0 = L_prev[bs, ys, xs]
            slope = L[bs, ys, xs] - l0
            level = L_ref[bs, ys, xs][rep] + kk * c[rep] * s[rep]
            safe = np.where(slope == 0, 1.0, slope)[rep]
            # t_k = t0 + dt (L_ref + k C s - L0) / (L1 - L0)
            frac = np.where(slope[rep] == 0, 1.0, np.clip((level - l0[rep]) / safe, 0.0, 1.0))
            out.append((bs[rep], np.rint(t0 + frac * (t1 - t0)).astype(np.int64), xs[rep], ys[rep],
                        (s[rep] > 0).astype(np.int8)))
            # L_ref <- L_ref + n C s ; last <- t1
            L_ref[bs, ys, xs] += cnt * c * s
            last[bs, ys, xs] = t1
        L_prev = L
    cols = [np.concatenate([o[j] for o in out]) if out else np.zeros(0, np.int64) for j in range(5)]
    if cfg.noise_hz > 0:
        dur = times[-1]
        for b, r in enumerate(rngs):
            m = r.poisson(cfg.noise_hz * dur * 1e-6 * S * S)
            extra = (np.full(m, b), r.integers(0, int(dur), m), r.integers(0, S, m), r.integers(0, S, m),
                     r.integers(0, 2, m))
            cols = [np.concatenate([a, e]) for a, e in zip(cols, extra)]
    order = np.lexsort((cols[2], cols[3], cols[1], cols[0]))  # by image, then t, y, x
    b_sorted = cols[0][order]
    bounds = np.searchsorted(b_sorted, np.arange(B + 1))
    ev = np.zeros(len(order), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = cols[1][order], cols[2][order], cols[3][order], cols[4][order]
    return [ev[bounds[b]:bounds[b + 1]] for b in range(B)]


def encode_nmnist_bin(events):
    """Bytes of an N-MNIST ``.bin`` file holding ``events`` (the format of :func:`read_nmnist_bin`).

    5 bytes per event: x, y, then ``p << 7 | t >> 16 & 0x7f``, ``t >> 8 & 0xff``, ``t & 0xff``.
    Times must be below 2**23 us (8.4 s; no overflow records are written) and x, y below 240.
    """
    t = events["t"].astype(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= 1 << 23):
        raise ValueError("N-MNIST .bin times must lie in [0, 2**23) us")
    if len(t) and (events["x"].max() > 255 or events["y"].max() >= 240):
        raise ValueError("N-MNIST .bin coordinates must be x < 256, y < 240")
    raw = np.empty((len(t), 5), np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (events["p"].astype(np.int64) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def write_saccade_dataset(images, labels, out_dir, split, cfg=SaccadeConfig(), seed=0, start=0, progress=None):
    """Simulate and write recordings as ``out_dir/split/<label>/<index>.bin`` (N-MNIST's layout).

    Parameters
    ----------
    images : (n, H, W) uint8 ndarray
    labels : (n,) int ndarray
    start : int
        Index of ``images[0]`` in its split (file names and per-recording seeds use it), so that a
        subset or a resumed run writes the same files as the whole set.
    progress : callable(int) or None
        Called with the number of recordings done after each one (the CLI's progress bar).

    Returns
    -------
    int
        Events written in total. Existing files are kept (a rerun resumes).
    """
    from pathlib import Path

    total, batch = 0, 256
    for i0 in range(0, len(images), batch):
        idx = range(i0, min(i0 + batch, len(images)))
        targets = [Path(out_dir) / split / str(int(labels[i])) / f"{start + i:05d}.bin" for i in idx]
        todo = [j for j, tg in zip(idx, targets) if not tg.exists()]
        if todo:
            evs = simulate_saccades_batch(images[todo], cfg, [recording_rng(seed, split, start + j) for j in todo])
            for j, ev in zip(todo, evs):
                target = targets[j - i0]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(encode_nmnist_bin(ev))
                tmp.replace(target)  # whole files only: a rerun resumes after the last one
                total += len(ev)
        if progress is not None:
            progress(idx[-1] + 1)
    return total
