"""Event representations against event-by-event loops written from their definitions (and PyTorch's
padding / nearest resize), and the saccade simulator's invariants."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from mst_ref.io.event_frames import (center_crop, downsample, event_frames, pad_to_square, resize_nearest,
                                     voxel_grid)
from mst_ref.io.events import EVENT_DTYPE, make_events, read_events
from mst_ref.io.saccades import (SaccadeConfig, encode_nmnist_bin, recording_rng, simulate_saccades,
                                 simulate_saccades_batch)

W, H = 5, 4


@st.composite
def recordings(draw, n_max=60):
    n = draw(st.integers(1, n_max))
    t = np.sort(np.array(draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n)), np.int64))
    x = draw(st.lists(st.integers(0, W - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, H - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return make_events(t, x, y, p)


def naive_frames(ev, windows):
    """windows: list of (start, end) membership tests, end None = up to and including the last event."""
    out = np.zeros((len(windows), 2, H, W), np.int64)
    for k, (a, b) in enumerate(windows):
        for e in ev:
            if a <= e["t"] and (b is None or e["t"] < b):
                out[k, e["p"], e["y"], e["x"]] += 1
    return out


@settings(max_examples=25, deadline=None)
@given(recordings(), st.integers(1, 6), st.sampled_from([0.0, 0.25, 0.5]))
def test_frames_by_bins_match_the_definition(ev, n, overlap):
    t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
    dt = (t1 - t0) // n
    windows = [(t0 + k * dt, t0 + k * dt + int(dt * (1 + overlap))) for k in range(n)]
    windows[-1] = (windows[-1][0], None)  # the last window ends at t_last, included
    got = event_frames(ev, (W, H), n_bins=n, overlap=overlap)
    np.testing.assert_array_equal(got, naive_frames(ev, windows))
    if overlap == 0:
        assert got.sum() == len(ev)  # no overlap: every event in exactly one frame


@settings(max_examples=25, deadline=None)
@given(recordings(), st.integers(1, 2000), st.sampled_from([0.0, 0.5]), st.booleans())
def test_frames_by_time_window(ev, window, overlap, incomplete):
    t0, t_end = int(ev["t"][0]), int(ev["t"][-1]) + 1
    stride = max(1, int(window * (1 - overlap)))
    windows = [(a, a + window) for a in range(t0, t_end, stride) if incomplete or a + window <= t_end]
    got = event_frames(ev, (W, H), time_window=window, overlap=overlap, include_incomplete=incomplete)
    np.testing.assert_array_equal(got.reshape(-1, 2, H, W), naive_frames(ev, windows).reshape(-1, 2, H, W))


@settings(max_examples=25, deadline=None)
@given(recordings(), st.integers(1, 20), st.booleans())
def test_frames_by_event_count(ev, count, incomplete):
    got = event_frames(ev, (W, H), event_count=count, include_incomplete=incomplete)
    starts = [a for a in range(0, len(ev), count) if incomplete or a + count <= len(ev)]
    for k, a in enumerate(starts):
        want = np.zeros((2, H, W), np.int64)
        for e in ev[a:a + count]:
            want[e["p"], e["y"], e["x"]] += 1
        np.testing.assert_array_equal(got[k], want)
    assert len(got) == len(starts)


@settings(max_examples=25, deadline=None)
@given(recordings(), st.integers(1, 9))
def test_voxel_grid_matches_the_authors_definition(ev, bins):
    got = voxel_grid(ev, (W, H), bins)
    want = np.zeros((2 * bins, H, W))
    tmax = ev["t"].max()
    for e in ev:
        tau = e["t"] / tmax if tmax > 0 else 0.0
        for i in range(bins):  # bin i: i / bins < tau <= (i + 1) / bins
            if i / bins < tau <= (i + 1) / bins:
                want[e["p"] * bins + i, e["y"], e["x"]] += 1
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,size", [((3, 4, 6), 8), ((2, 7, 3), 5), ((1, 34, 34), 28), ((2, 128, 128), 224)])
def test_pad_and_resize_match_torch(shape, size):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    h, w = shape[1:]
    pad = (0, 0, (w - h) // 2, (w - h) // 2) if w > h else ((h - w) // 2, (h - w) // 2, 0, 0)
    want = F.interpolate(F.pad(torch.from_numpy(x)[None], pad), size=(size, size))[0].numpy()
    np.testing.assert_array_equal(resize_nearest(pad_to_square(x), size), want)


def test_crop_and_downsample():
    ev = make_events([1, 2, 3], [0, 5, 9], [0, 4, 9], [1, 0, 1])
    out, size = center_crop(ev, (10, 10), (6, 6))
    assert size == (6, 6) and out[["x", "y"]].tolist() == [(3, 2)]
    out, size = downsample(ev, (10, 10), 4)
    assert size == (3, 3) and out[["x", "y"]].tolist() == [(0, 0), (1, 1), (2, 2)]


# ---------------------------------------------------------------- the saccade simulator
def test_saccades_deterministic_and_batch_independent():
    img = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    cfg = SaccadeConfig(noise_hz=2.0)
    one = simulate_saccades(img[1], cfg, recording_rng(7, "train", 1))
    again = simulate_saccades(img[1], cfg, recording_rng(7, "train", 1))
    batch = simulate_saccades_batch(img, cfg, [recording_rng(7, "train", i) for i in range(3)])
    assert np.array_equal(one, again) and np.array_equal(batch[1], one)
    assert not np.array_equal(simulate_saccades(img[1], cfg, recording_rng(8, "train", 1)), one)


def test_saccades_physics():
    cfg = SaccadeConfig(threshold_sigma=0.0)
    assert len(simulate_saccades(np.zeros((28, 28), np.uint8), cfg)) == 0  # nothing moves: no event
    img = np.zeros((28, 28), np.uint8)
    img[10:18, 10:18] = 255
    ev = simulate_saccades(img, cfg)
    assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].max() <= 3 * cfg.saccade_ms * 1e3
    # first saccade moves the square right and down: its right edge brightens pixels there (ON),
    # its left edge darkens (OFF)
    first = ev[ev["t"] < cfg.saccade_ms * 1e3]
    on, off = first[first["p"] == 1], first[first["p"] == 0]
    assert on["x"].mean() > off["x"].mean() and on["y"].mean() > off["y"].mean()
    # a closed path: each pixel ends where it started, so ON and OFF levels nearly balance
    assert abs(int(ev["p"].sum()) * 2 - len(ev)) < 0.2 * len(ev)


def test_refractory_period_bounds_the_steps_a_pixel_fires():
    img = np.zeros((28, 28), np.uint8)
    img[::3] = 255  # stripes: many crossings
    cfg = SaccadeConfig(threshold_sigma=0.0, refractory_us=10**9)
    ev = simulate_saccades(img, cfg)
    for key in set(zip(ev["x"].tolist(), ev["y"].tolist())):  # every pixel fires in one step only
        mine = ev[(ev["x"] == key[0]) & (ev["y"] == key[1])]
        assert mine["t"].max() - mine["t"].min() <= cfg.step_us


def test_saccade_bin_round_trip(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (28, 28)).astype(np.uint8)
    ev = simulate_saccades(img, SaccadeConfig(), recording_rng(0, "test", 0))
    (tmp_path / "r.bin").write_bytes(encode_nmnist_bin(ev))
    back, sensor = read_events(tmp_path / "r.bin")
    assert sensor == (34, 34) and back.dtype == EVENT_DTYPE
    assert np.array_equal(back, ev)
