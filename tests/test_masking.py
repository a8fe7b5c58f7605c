"""Tests of mst_ref.engine.masking (RSM): the mask itself, ratio specs, and masking inside a model run."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.engine.masking import SpikeMasker, rsm, site_ratios
from mst_ref.models.mst import MST, MSTConfig

CFG = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=8, depths=(2, 1),
                num_heads=(2, 2), window_size=2)
Q0 = "layers.0.blocks.0.attn.q_if"  # no masked site lies before it: its spikes do not depend on p


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- the mask


def test_p0_returns_the_input_and_draws_nothing():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    s = np.ones((3, 4), np.float32)
    assert rsm(s, 0.0, rng) is s
    assert rng.bit_generator.state == before


def test_p1_removes_everything():
    s = np.full((5, 6), 2.0, np.float32)
    out = rsm(s, 1.0, np.random.default_rng(0))
    assert out.dtype == np.float32 and not out.any()


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0.01, 0.99), shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_kept_fraction_is_binomial_one_minus_p(p, shape, seed):
    s = np.ones((50, *shape), np.float32)  # at least 50 elements
    out = rsm(s, p, np.random.default_rng(seed))
    assert set(np.unique(out)) <= {0.0, 1.0}
    n = s.size
    kept = out.sum() / n
    assert abs(kept - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / n) + 1 / n


def test_masks_are_fresh_at_every_step_and_reproducible():
    s = np.ones((8, 100), np.float32)  # (T, neurons)
    a = rsm(s, 0.5, np.random.default_rng(7))
    assert len({a[t].tobytes() for t in range(8)}) == 8
    np.testing.assert_array_equal(a, rsm(s, 0.5, np.random.default_rng(7)))
    assert not np.array_equal(a, rsm(s, 0.5, np.random.default_rng(8)))
    # drawn in time order: two chunks (3 then 5 steps) from one generator = one pass
    g = np.random.default_rng(7)
    np.testing.assert_array_equal(np.concatenate([rsm(s[:3], 0.5, g), rsm(s[3:], 0.5, g)]), a)


def test_rescaled_mask_is_unbiased():
    p = 0.75
    s = np.full((4000, 50), 1.5)
    out = rsm(s, p, np.random.default_rng(3), rescale=True)
    assert set(np.unique(out)) == {0.0, 1.5 / (1 - p)}
    # mean of n draws of s * [u > p] / (1 - p): E = s, sd = s sqrt(p / (1 - p)) / sqrt(n)
    assert abs(out.mean() - 1.5) < 5 * 1.5 * np.sqrt(p / (1 - p) / s.size)


# ---------------------------------------------------------------- ratio specs

NAMES = MST.random(CFG, np.random.default_rng(0)).site_names


def test_a_float_ratio_masks_the_published_sites():
    r = site_ratios(NAMES, 0.3)
    assert sorted(r) == sorted(n for n in NAMES if n.endswith(("attn.q_if", "attn.k_if", "attn.attn_if")))
    assert len(r) == 3 * 3 and set(r.values()) == {0.3}
    assert site_ratios(NAMES, 0.0) == {}
    paper = site_ratios(NAMES, 0.3, sites="paper")
    assert set(paper) - set(r) == {n for n in NAMES if n.endswith("shortcut2_if")}


def test_dict_ratios_by_block_prefix_later_patterns_override():
    r = site_ratios(NAMES, {"layers.0.*": 0.5, "layers.0.blocks.1": 0.9, "layers.1.blocks.0.attn.k_if": 0.2})
    assert r["layers.0.blocks.0.attn.q_if"] == 0.5
    assert r["layers.0.blocks.1.attn.attn_if"] == 0.9
    assert r == {**{f"layers.0.blocks.0.attn.{s}": 0.5 for s in ("q_if", "k_if", "attn_if")},
                 **{f"layers.0.blocks.1.attn.{s}": 0.9 for s in ("q_if", "k_if", "attn_if")},
                 "layers.1.blocks.0.attn.k_if": 0.2}


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan"), True, "0.5", {"layers.0.*": 2.0}])
def test_bad_ratio_is_a_value_error(ratio):
    with pytest.raises(ValueError, match="mask ratio"):
        site_ratios(NAMES, ratio)


def test_unknown_pattern_or_site_is_a_value_error():
    with pytest.raises(ValueError, match="layers.7"):
        site_ratios(NAMES, {"layers.7.*": 0.5})
    with pytest.raises(ValueError, match="patch_embed"):
        site_ratios(NAMES, {"patch_embed.*": 0.5})  # exists, but is not a maskable site
    with pytest.raises(ValueError, match="mask sites"):
        site_ratios(NAMES, 0.5, sites=("attn.nothing_if",))
    with pytest.raises(ValueError, match="rng"):
        SpikeMasker.create(NAMES, 0.5, rng=None)


# ---------------------------------------------------------------- masking in a model run


def test_p0_is_bit_identical_to_no_masking(model, images):
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    plain = model.snn_forward(images, 4)
    zero = model.snn_forward(images, 4, mask_ratio=0.0, rng=rng)
    np.testing.assert_array_equal(plain.cumulative_logits, zero.cumulative_logits)
    np.testing.assert_array_equal(model.ann_forward(images), model.ann_forward(images, mask_ratio=0.0, rng=rng))
    assert rng.bit_generator.state == before


def test_p1_silences_every_masked_site(model, images):
    r = model.snn_forward(images, 4, mask_ratio=1.0, rng=np.random.default_rng(0), mask_sites="paper")
    masked = [n for n in model.site_names if n.endswith(("q_if", "k_if", "attn_if", "shortcut2_if"))]
    assert sorted(r.mask_ratios) == sorted(masked)
    assert all(r.spike_counts_by_site[n] == 0 for n in masked)
    assert r.spike_counts_by_site["layers.0.blocks.0.attn.v_if"] > 0


def test_model_masks_keep_about_one_minus_p_fresh_every_step(model, images):
    T, p = 32, 0.5
    kw = dict(record=Q0)
    spikes = model.snn_forward(images, T, **kw).records[Q0]  # unmasked spikes of the site
    masked = model.snn_forward(images, T, mask_ratio=p, rng=np.random.default_rng(5), **kw).records[Q0]
    assert ((masked == 0) | (masked == spikes)).all()
    n = np.count_nonzero(spikes)
    kept = np.count_nonzero(masked) / n
    assert n > 100 and abs(kept - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / n)
    # the mask differs from step to step: among neurons that spiked at both t and t+1, the kept ones differ
    differs = []
    for t in range(T - 1):
        both = (spikes[t] != 0) & (spikes[t + 1] != 0)
        differs.append(((masked[t] != 0) != (masked[t + 1] != 0))[both].any())
    assert np.mean(differs) > 0.9


def test_same_seed_reproduces_exactly_other_seed_differs(model, images):
    def run(seed):
        return model.snn_forward(images, 6, mask_ratio={"layers.0.*": 0.5, "layers.1.*": 0.8},
                                 rng=np.random.default_rng(seed)).cumulative_logits
    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))
    a = model.ann_forward(images, mask_ratio=0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, model.ann_forward(images, mask_ratio=0.5, rng=np.random.default_rng(3)))
    assert not np.array_equal(a, model.ann_forward(images))


def test_masks_do_not_depend_on_which_other_sites_are_masked(model, images):
    # each site has its own child generator: masking the MLP input too leaves Q0's masks unchanged
    kw = dict(mask_ratio=0.5, rng=None, record=Q0)
    a = model.snn_forward(images, 5, **{**kw, "rng": np.random.default_rng(9)}).records[Q0]
    b = model.snn_forward(images, 5, mask_sites="paper", **{**kw, "rng": np.random.default_rng(9)}).records[Q0]
    np.testing.assert_array_equal(a, b)


def test_rescaled_masking_emits_lambda_over_one_minus_p(model, images):
    lam = model.state[f"{Q0}.up"][0]
    r = model.snn_forward(images, 4, mask_ratio=0.5, rng=np.random.default_rng(0), mask_rescale=True, record=Q0)
    values = set(np.unique(r.records[Q0]))
    assert values == {0.0, np.float32(lam * np.float32(2.0))}
