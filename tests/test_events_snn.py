"""Time-varying input in the SNN (event frames, one per step): the same numbers on every path and split,
the static image as its special case, the ANN on the mean frame, and the input layer's energy per step."""

import numpy as np
import pytest

from mst_ref.engine import energy
from mst_ref.models.mst import MST, MSTConfig

CFG = MSTConfig(img_size=12, patch_size=2, in_chans=2, num_classes=3, embed_dim=6, depths=(2, 1), num_heads=(3, 3),
                window_size=3, mlp_norm=False, qkv_bias=False, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0), dtype=np.float64)


def frames(T, B=2, seed=1):
    return np.random.default_rng(seed).standard_normal((T, B, 2, 12, 12))


@pytest.mark.parametrize("fast", [True, False])
def test_repeated_image_equals_static_image(model, fast):
    x = frames(1)[0]
    static = model.snn_forward(x, 5, fast=fast, record="all")
    timed = model.snn_forward(np.broadcast_to(x, (5, *x.shape)).copy(), 5, fast=fast, record="all")
    np.testing.assert_array_equal(timed.cumulative_logits, static.cumulative_logits)
    assert timed.spike_counts_by_site == static.spike_counts_by_site
    assert static.input_passes == 1 and timed.input_passes == 5


def test_fused_equals_readable_and_any_split(model):
    x = frames(6)
    kw = dict(mask_ratio=0.4, record="all")
    slow = model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=6, fast=False, **kw)
    fast = model.snn_forward(x, 6, rng=np.random.default_rng(2), chunk=4, **kw)
    np.testing.assert_allclose(fast.cumulative_logits, slow.cumulative_logits, rtol=1e-12, atol=1e-12)
    assert fast.spike_counts_by_site == slow.spike_counts_by_site
    for fast_path in (True, False):
        sim = model.step_simulator(x, rng=np.random.default_rng(2), fast=fast_path, **kw)
        steps = np.stack([sim.step() for _ in range(6)])  # (T, B, K)
        np.testing.assert_allclose(steps, slow.step_logits, rtol=1e-12, atol=1e-12)


def test_frames_actually_change_the_run(model):
    x = frames(4)
    other = x.copy()
    other[2] = -other[2]  # only step 2's input differs
    a = model.snn_forward(x, 4, fast=False).step_logits
    b = model.snn_forward(other, 4, fast=False).step_logits
    np.testing.assert_array_equal(a[:2], b[:2])  # causal: steps before 2 unchanged
    assert not np.array_equal(a[2], b[2])


def test_short_input_repeats_cyclically(model):
    x = frames(3)
    tiled = x[np.arange(7) % 3]
    np.testing.assert_array_equal(model.snn_forward(x, 7, chunk=2).cumulative_logits,
                                  model.snn_forward(tiled, 7, chunk=7).cumulative_logits)


def test_ann_sees_the_mean_frame(model):
    x = frames(5)
    np.testing.assert_array_equal(model.ann_forward(x), model.ann_forward(x.mean(axis=0)))


def test_input_layer_energy_counted_every_step(model):
    x = frames(4)
    timed = model.snn_forward(x, 4)
    static = model.snn_forward(x[0], 4)
    per_image = energy.input_macs(CFG)
    # MACs = B (passes * input + T * analog): 4 passes of the patch embedding instead of one
    assert timed.macs - static.macs == 2 * 3 * per_image
    assert timed.macs == energy.snn_macs(CFG, 4, 2, input_passes=4)


def test_bad_time_varying_input_is_refused(model):
    with pytest.raises(ValueError, match=r"\(B, 2, 12, 12\)"):
        model.snn_forward(np.zeros((3, 2, 1, 12, 12)), 2)
    with pytest.raises(ValueError, match="T >= 1"):
        model.snn_forward(np.zeros((0, 2, 2, 12, 12)), 2)


def test_qcfs_cnn_takes_a_time_varying_input_too():
    from mst_ref.models.qcfs_cnn import CNNConfig, QCFSCNN

    cnn = QCFSCNN.random(CNNConfig(arch="resnet18", in_chans=2, img_size=8, num_classes=3, width=0.0625),
                         np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 8, 8)).astype(cnn.dtype)
    static = cnn.snn_forward(x[0], 4).cumulative_logits
    np.testing.assert_array_equal(cnn.snn_forward(np.repeat(x[:1], 4, 0), 4).cumulative_logits, static)
    fast, slow = cnn.snn_forward(x, 4), cnn.snn_forward(x, 4, fast=False)
    np.testing.assert_allclose(fast.cumulative_logits, slow.cumulative_logits, rtol=1e-5, atol=1e-5)
    assert fast.input_passes == 4 and not np.array_equal(fast.cumulative_logits, static)
