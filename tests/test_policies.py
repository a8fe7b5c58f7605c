"""Tests of the masking policies (mst_ref.engine.mask_policies): their theory as properties, and the same
masks on every SNN path (readable, fused, step by step, chunked)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.engine.mask_policies import MaskPolicy, parse_schedule, regular_keep
from mst_ref.engine.masking import SpikeMasker
from mst_ref.models.mst import MST, MSTConfig

CFG = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=8, depths=(2, 1),
                num_heads=(2, 2), window_size=2)
T = 5


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- theory


@settings(max_examples=60, deadline=None)
@given(p=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12),
       rate=st.floats(0.05, 1.0), a=st.integers(0, 60), length=st.integers(1, 60))
def test_regular_passes_one_minus_p_of_the_fired_spikes_within_one_over_any_window(p, seed, n, rate, a, length):
    rng = np.random.default_rng(seed)
    fired = rng.random((120, n)) < rate  # (T, neurons)
    phase, count = rng.random(n), np.zeros(n, np.int64)
    # in two calls (a chunk boundary inside the window) to check that the counters carry
    keep = np.concatenate([regular_keep(fired[:37], p, phase, count), regular_keep(fired[37:], p, phase, count)])
    assert not (keep & ~fired).any()  # only fired spikes pass
    w = slice(a, a + length)
    delivered, fired_w = keep[w].sum(axis=0), fired[w].sum(axis=0)  # (n,) per neuron
    assert np.all(np.abs(delivered - (1 - p) * fired_w) < 1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(p=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_random_delivered_count_has_binomial_variance(p, seed):
    n, reps = 64, 4000  # a neuron firing n times; the delivered count over `reps` independent masks
    masker = SpikeMasker({"s": p}, {"s": np.random.default_rng(seed)})
    out = masker("s", np.ones((n, reps), np.float32))  # (T = n, reps)
    delivered = out.sum(axis=0)  # (reps,)
    var, expected = delivered.var(), p * (1 - p) * n
    # the sample variance of `reps` binomial draws has standard error about expected * sqrt(2 / reps)
    assert abs(var - expected) < 6 * expected * np.sqrt(2 / reps) + 1e-9
    assert abs(delivered.mean() - (1 - p) * n) < 6 * np.sqrt(expected / reps)


def test_regular_has_no_variance_across_phases():
    n, reps, p = 64, 500, 0.3
    masker = SpikeMasker({"s": p}, {"s": np.random.default_rng(3)}).with_policy(MaskPolicy("regular"))
    delivered = masker("s", np.ones((n, reps), np.float32)).sum(axis=0)  # (reps,)
    assert set(np.unique(delivered)) <= {np.floor(0.7 * n), np.ceil(0.7 * n)}


def test_schedule_formulas_and_lists():
    t = np.arange(6)
    np.testing.assert_array_equal(parse_schedule("delay:2")(t), [0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(parse_schedule("ramp:4")(t), [0.25, 0.5, 0.75, 1, 1, 1])
    np.testing.assert_array_equal(parse_schedule([0, 0.5])(t), [0, 0.5, 0.5, 0.5, 0.5, 0.5])
    for bad in ("delay:x", "ramp:0", "cosine:3", [], [1.5], [True]):
        with pytest.raises(ValueError):
            parse_schedule(bad)


@settings(max_examples=10, deadline=None)
@given(p=st.floats(0.05, 1.0), seed=st.integers(0, 1000), fast=st.booleans())
def test_an_all_zero_schedule_is_the_unmasked_run(model, images, p, seed, fast):
    plain = model.snn_forward(images, T, fast=fast)
    zero = model.snn_forward(images, T, mask_ratio=p, rng=np.random.default_rng(seed), fast=fast,
                             mask_policy=MaskPolicy("schedule", [0.0]))
    np.testing.assert_array_equal(zero.step_logits, plain.step_logits)
    assert zero.spike_counts_by_site == plain.spike_counts_by_site


def test_delay_schedule_masks_nothing_before_its_delay(model, images):
    plain = model.snn_forward(images, T, fast=False)
    late = model.snn_forward(images, T, mask_ratio=0.9, rng=np.random.default_rng(0), fast=False,
                             mask_policy=MaskPolicy("schedule", "delay:2"))
    np.testing.assert_array_equal(late.step_logits[:2], plain.step_logits[:2])
    assert not np.array_equal(late.step_logits[2:], plain.step_logits[2:])


def test_token_and_channel_drop_whole_rows_and_columns():
    s = np.ones((3, 2, 4, 5, 6), np.float32)  # (T, B, nH, N, C) channels-last
    for kind, axis in (("token", -1), ("channel", -2)):
        masker = SpikeMasker({"s": 0.5}, {"s": np.random.default_rng(0)}).with_policy(MaskPolicy(kind))
        out = masker("s", s)
        assert 0 < out.mean() < 1
        # constant along the shared axis, not along the others
        assert np.all(out.min(axis=axis) == out.max(axis=axis))
    cnn = np.ones((3, 2, 4, 5, 5), np.float32)  # (T, B, C, H, W) channels-first
    masker = SpikeMasker({"s": 0.5}, {"s": np.random.default_rng(0)}).with_policy(MaskPolicy("token"), True)
    out = masker("s", cnn)
    assert np.all(out.min(axis=2) == out.max(axis=2)) and 0 < out.mean() < 1  # one decision per position
    masker = SpikeMasker({"s": 0.5}, {"s": np.random.default_rng(0)}).with_policy(MaskPolicy("channel"), True)
    out = masker("s", cnn)
    assert np.all(out.min(axis=(3, 4)) == out.max(axis=(3, 4))) and 0 < out.mean() < 1  # one per channel map


def test_published_policy_is_bit_identical_to_the_default(model, images):
    a = model.snn_forward(images, T, mask_ratio=0.6, rng=np.random.default_rng(4))
    b = model.snn_forward(images, T, mask_ratio=0.6, rng=np.random.default_rng(4), mask_policy=MaskPolicy())
    np.testing.assert_array_equal(a.step_logits, b.step_logits)
    la = model.ann_forward(images, mask_ratio=0.6, rng=np.random.default_rng(4))
    lb = model.ann_forward(images, mask_ratio=0.6, rng=np.random.default_rng(4), mask_policy=MaskPolicy())
    np.testing.assert_array_equal(la, lb)


# ---------------------------------------------------------------- the same masks on every path


POLICIES = [MaskPolicy("token"), MaskPolicy("channel"), MaskPolicy("schedule", "ramp:3"),
            MaskPolicy("regular"), MaskPolicy("random")]


@pytest.mark.parametrize("policy", POLICIES, ids=str)
@pytest.mark.parametrize("ratio", [0.5, 1.0, {"layers.0.*": 0.8, "layers.1.*": 0.3}], ids=["global", "all", "per-block"])
def test_same_masks_readable_fused_step_by_step_chunked(model, images, policy, ratio):
    sites = "paper"
    def run(fast, chunk):
        return model.snn_forward(images, T, mask_ratio=ratio, rng=np.random.default_rng(5), chunk=chunk,
                                 fast=fast, mask_sites=sites, mask_policy=policy,
                                 record="layers.0.blocks.1.attn.q_if")
    readable = run(False, T)
    ref = readable.records["layers.0.blocks.1.attn.q_if"]
    for fast, chunk in ((False, 1), (False, 2), (True, T), (True, 1), (True, 3)):
        other = run(fast, chunk)
        np.testing.assert_array_equal(other.records["layers.0.blocks.1.attn.q_if"], ref)
        assert other.spike_counts_by_site == readable.spike_counts_by_site
        # the spikes fired before masking: counted by the masker on the readable path, inside the kernels
        # on the fused one
        assert other.fired_by_site == readable.fired_by_site
        np.testing.assert_allclose(other.step_logits, readable.step_logits, rtol=1e-4, atol=1e-4)
    # masking happened: fewer spikes delivered than fired at the masked sites
    fired, delivered = readable.fired_by_site, readable.spike_counts_by_site
    assert sum(delivered[n] for n in readable.mask_ratios) < sum(fired[n] for n in readable.mask_ratios)


def test_ann_meanings(model, images):
    rng = np.random.default_rng
    plain = model.ann_forward(images, quantize=False)
    # regular in the ANN passes exactly 1 - p of every activation; rescaled, the ANN is unchanged
    _, rec = model.ann_forward(images, quantize=False, mask_ratio=0.4, rng=rng(0), mask_policy=MaskPolicy("regular"),
                               record="layers.0.blocks.0.attn.q_if")
    _, ref = model.ann_forward(images, quantize=False, record="layers.0.blocks.0.attn.q_if")
    q = "layers.0.blocks.0.attn.q_if"
    np.testing.assert_allclose(rec[q], 0.6 * ref[q], rtol=1e-6)
    same = model.ann_forward(images, quantize=False, mask_ratio=0.4, rng=rng(0), mask_rescale=True,
                             mask_policy=MaskPolicy("regular"))
    np.testing.assert_allclose(same, plain, rtol=1e-5, atol=1e-5)
    for kind in ("token", "channel"):
        out = model.ann_forward(images, mask_ratio=0.5, rng=rng(0), mask_policy=MaskPolicy(kind))
        assert out.shape == plain.shape and not np.allclose(out, plain)
    with pytest.raises(ValueError, match="no steps"):
        model.ann_forward(images, mask_ratio=0.5, rng=rng(0), mask_policy=MaskPolicy("schedule", "delay:1"))


def test_bad_policies_are_refused(model, images):
    with pytest.raises(ValueError, match="mask policy must be one of"):
        MaskPolicy("dropout")
    with pytest.raises(ValueError, match="kind='schedule'"):
        MaskPolicy("random", [0.5])
    with pytest.raises(ValueError, match="rescaling"):
        model.snn_forward(images, 2, mask_ratio=0.5, rng=np.random.default_rng(0), mask_rescale=True,
                          mask_policy=MaskPolicy("schedule", "delay:1"))
    with pytest.raises(ValueError, match="MaskPolicy"):
        model.snn_forward(images, 2, mask_ratio=0.5, rng=np.random.default_rng(0), mask_policy="regular")


# ---------------------------------------------------------------- the comparison and the command


def _row(p, accs, energy):
    return {"policy": "x", "ratio": p, "accuracy": float(np.mean(accs)), "accuracies": accs, "energy_pj": energy}


def test_acceptable_range_is_the_largest_p_within_half_a_point():
    from mst_ref.analysis.policies import acceptable_range
    rows = [_row(0.0, [80.0], 100.0), _row(0.1, [80.0, 79.0, 79.6], 90.0), _row(0.2, [79.2, 80.0, 79.0], 80.0),
            _row(0.3, [70.0, 79.8, 60.0], 70.0), _row(0.5, [79.6, 70.0, 70.0], 50.0)]
    res = acceptable_range(rows)
    # mean accuracies 79.53, 79.4, 69.9, 73.2: 0.1 passes, 0.2 does not (79.4 < 79.5)
    assert res.ratio == 0.1 and res.energy_saved == pytest.approx(0.1)
    # per seed: seed 0 passes 0.1 and 0.5 (the largest that passes counts), seed 1 0.3, seed 2 0.1
    assert res.ratio_by_seed == [0.5, 0.3, 0.1]
    assert res.energy_saved_by_seed == pytest.approx([0.5, 0.3, 0.1])
    with pytest.raises(ValueError, match="p = 0"):
        acceptable_range(rows[1:])


def test_mask_sweep_policy_json(tmp_path):
    import json
    from mst_ref.cli.app import main
    out = tmp_path / "rows.json"
    assert main(["mask-sweep", "data/mst_fashion.pth", "--policy", "regular", "--ratios", "0.5", "--seeds", "2",
                 "--limit", "2", "--timesteps", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["policy"], r["ratio"]) for r in rows] == [("regular", 0.0), ("regular", 0.5)]
    for key in ("accuracy", "accuracy_std", "sops", "energy_pj", "delivered"):
        assert all(isinstance(r[key], float) for r in rows)
    assert rows[1]["delivered"] < rows[0]["delivered"] and rows[1]["sops"] < rows[0]["sops"]
    assert main(["mask-sweep", "data/mst_fashion.pth", "--policy", "token", "--schedule", "0,1", "--limit", "2",
                 "--timesteps", "1"]) == 2


@pytest.mark.parametrize("kind", ["token", "channel", "regular"])
def test_cnn_policies_same_masks_fast_readable_and_chunked(kind):
    from mst_ref.models.qcfs_cnn import CNNConfig, QCFSCNN
    cnn = QCFSCNN.random(CNNConfig.official("resnet18", in_chans=1, img_size=16, num_classes=4, width=1 / 16),
                         np.random.default_rng(0))
    x = np.random.default_rng(2).standard_normal((2, 1, 16, 16)).astype(np.float32)
    site = cnn.site_names[3]
    def run(fast, chunk):
        return cnn.snn_forward(x, 4, mask_ratio=0.5, rng=np.random.default_rng(1), fast=fast, chunk=chunk,
                               mask_policy=MaskPolicy(kind), record=site)
    ref = run(False, 4)
    for fast, chunk in ((True, 4), (True, 1), (False, 2)):
        other = run(fast, chunk)
        np.testing.assert_array_equal(other.records[site], ref.records[site])
        np.testing.assert_allclose(other.step_logits, ref.step_logits, rtol=1e-4, atol=1e-4)
    assert sum(ref.spike_counts_by_site[n] for n in ref.mask_ratios) < sum(ref.fired_by_site[n] for n in ref.mask_ratios)


@pytest.mark.parametrize("kind", ["token", "regular", "schedule"])
def test_policies_with_per_image_mask_streams(model, images, kind):
    from mst_ref.engine.mask_streams import ImageSeeds
    policy = MaskPolicy.named(kind, "ramp:2" if kind == "schedule" else None)
    def run(fast, chunk, idx):
        return model.snn_forward(images[idx], T, mask_ratio=0.5, rng=ImageSeeds(3, tuple(idx)), fast=fast,
                                 chunk=chunk, mask_policy=policy, record="layers.0.blocks.0.attn.k_if")
    both = run(False, T, [0, 1])
    for fast, chunk in ((True, T), (True, 1), (False, 2)):
        np.testing.assert_array_equal(run(fast, chunk, [0, 1]).records["layers.0.blocks.0.attn.k_if"],
                                      both.records["layers.0.blocks.0.attn.k_if"])
    # an image's masks do not depend on the batch it is in
    alone = run(False, T, [1])
    np.testing.assert_array_equal(alone.records["layers.0.blocks.0.attn.k_if"][:, 0],
                                  both.records["layers.0.blocks.0.attn.k_if"][:, 1])
