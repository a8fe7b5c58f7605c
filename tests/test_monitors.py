"""Monitors observe the forward pass without changing it; a new measure is a new monitor.

Checks: a user-written monitor sees every site once per call, in forward order, on both the readable
and the fused path, and the spike counts it derives agree with the built-in counter's; attaching
monitors changes no output.
"""

import numpy as np
import pytest

from mst_ref.engine.modes import Mode
from mst_ref.engine.monitors import Monitor, Recorder, SiteEvent, SpikeCounter
from mst_ref.models.mst import MST, MSTConfig

TINY = MSTConfig(img_size=16, patch_size=2, in_chans=3, num_classes=5, embed_dim=8, depths=(2, 2),
                 num_heads=(1, 2), window_size=4, qcfs_levels=4)


class SiteLog(Monitor):
    """Per site: the calls seen and the spikes counted from the events."""

    def __init__(self):
        self.calls, self.spikes = [], {}

    def on_site(self, event):
        self.calls.append(event.name)
        self.spikes[event.name] = self.spikes.get(event.name, 0) + int(event.counts.sum())


@pytest.fixture(scope="module")
def model_and_images():
    rng = np.random.default_rng(0)
    model = MST.random(TINY, np.random.default_rng(1), dtype=np.float64)
    return model, rng.standard_normal((2, 3, 16, 16))


@pytest.mark.parametrize("fast", [False, True])
def test_a_new_monitor_sees_every_site_once_in_forward_order(model_and_images, fast):
    model, images = model_and_images
    log, counter = SiteLog(), SpikeCounter()
    mode = Mode(spiking=True, steps=5, levels=4, fast=fast, monitors=[log, counter])
    logits = model.forward(images, mode)
    assert log.calls == model.site_names
    assert log.spikes == {n: int(c[0].sum()) for n, c in counter.counts.items()}
    assert sum(log.spikes.values()) > 0
    bare = model.forward(images, Mode(spiking=True, steps=5, levels=4, fast=fast))
    np.testing.assert_array_equal(logits, bare)  # observing changes nothing


def test_readable_and_fused_paths_report_the_same_counts(model_and_images):
    model, images = model_and_images
    logs = {}
    for fast in (False, True):
        logs[fast] = SiteLog()
        model.forward(images, Mode(spiking=True, steps=6, levels=4, fast=fast, monitors=[logs[fast]]))
    assert logs[False].spikes == logs[True].spikes


def test_site_event_counts_bursts_as_their_spikes():
    y = np.array([[[0.0, 0.5, 1.0]], [[0.25, 0.0, 0.75]]])  # (T=2, B=1, C=3), unit 0.25
    event = SiteEvent("s", True, (1, 3), output=y, unit=0.25)
    assert event.counts.tolist() == [2 + 4, 1 + 3]
    assert SiteEvent("s", True, (1, 3), output=y).counts.tolist() == [2, 2]  # IF: one per nonzero


def test_recorder_keeps_only_what_it_names(model_and_images):
    model, images = model_and_images
    site = model.site_names[3]
    recorder = Recorder({site})
    model.forward(images, Mode(spiking=True, steps=2, levels=4, monitors=[recorder]))
    assert list(recorder.records) == [site]
    assert recorder.records[site][0].shape[0] == 2
