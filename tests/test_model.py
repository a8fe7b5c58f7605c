"""Tests of mst_ref.model, layout, modes and simulate: building from state dicts, the SNN's time
loop (step by step = multi-step = chunked), numerics, and expectation compensation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mst_ref.nn.attention import softmax
from mst_ref.nn.layers import layer_norm
from mst_ref.models.mst_layout import expected_shapes, random_state_dict
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.engine.modes import Carry, Mode, expectation_op, expectation_product
from mst_ref.engine.monitors import SpikeCounter

# a small two-stage model with shifted windows in stage 0 (img 16 / patch 2 = 8x8 tokens, window 4)
CFG = MSTConfig(img_size=16, patch_size=2, in_chans=3, num_classes=5, embed_dim=8, depths=(2, 2),
                num_heads=(2, 4), window_size=4)


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)


# ---------------------------------------------------------------- the published Swin-T


def test_published_swin_t_builds_from_a_random_state_dict_and_runs():
    rng = np.random.default_rng(0)
    cfg = MSTConfig()  # 224, patch 4, depths 2/2/6/2, heads 3/6/12/24, window 7, embed 96
    assert len(expected_shapes(MSTConfig(mlp_norm=False))) == 398
    state = random_state_dict(cfg, rng)
    assert len(state) == 518
    model = MST.from_state_dict(state)
    assert model.config == cfg
    assert len(model.site_names) == len(set(model.site_names)) == 124
    assert sorted(f"{n}.up" for n in model.site_names) == sorted(k for k in state if k.endswith(".up"))
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    z = model.ann_forward(x)
    assert z.shape == (1, 1000) and z.dtype == np.float32 and np.isfinite(z).all()
    r = model.snn_forward(x, 2)
    assert r.cumulative_logits.shape == r.step_logits.shape == (2, 1, 1000)
    assert r.cumulative_logits.dtype == np.float32 and np.isfinite(r.cumulative_logits).all()
    np.testing.assert_array_equal(r.cumulative_logits[1], r.step_logits[0] + r.step_logits[1])
    assert list(r.spike_counts_by_site) == model.site_names
    assert r.neurons_by_site["patch_embed.proj_if"] == 56 * 56 * 96
    assert r.neurons_by_site["layers.0.blocks.0.attn.attn_if"] == 64 * 3 * 49 * 49
    assert sum(r.spike_counts_by_site.values()) > 0


# ---------------------------------------------------------------- from_state_dict


def test_from_state_dict_infers_the_config_and_round_trips(model):
    again = MST.from_state_dict(model.state)
    assert again.config == CFG
    for variant in (dict(mlp_norm=False), dict(qkv_bias=False), dict(in_chans=1, num_classes=2, mlp_ratio=2.0)):
        cfg = MSTConfig(**{**CFG.__dict__, **variant})
        assert MST.from_state_dict(random_state_dict(cfg, np.random.default_rng(0))).config == cfg


def test_from_state_dict_lists_every_bad_key_in_one_error(model):
    state = dict(model.state)
    del state["layers.0.blocks.1.attn.k_if.up"]
    del state["head.bias"]
    state["layers.0.blocks.0.attn.extra"] = np.zeros(3, np.float32)
    state["layers.1.blocks.0.mlp.fc2.bias"] = np.zeros(3, np.float32)
    state["norm.weight"] = np.zeros((1, 16), np.float32)
    with pytest.raises(ValueError) as err:
        MST.from_state_dict(state)
    msg = str(err.value)
    for text in ("missing keys (2)", "layers.0.blocks.1.attn.k_if.up", "head.bias",
                 "unexpected keys (1)", "layers.0.blocks.0.attn.extra",
                 "mis-shaped keys (2)", "layers.1.blocks.0.mlp.fc2.bias: expected (16,), got (3,)",
                 "norm.weight: expected (16,), got (1, 16)"):
        assert text in msg


def test_img_size_is_inferred_from_a_shifted_block(model):
    state = dict(model.state)
    assert MST.from_state_dict(state).config.img_size == 16
    with pytest.raises(ValueError, match="img_size=32 disagrees"):
        MST.from_state_dict(state, img_size=32)


def test_img_size_must_be_passed_when_no_block_is_shifted():
    cfg = MSTConfig(img_size=32, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depths=(1, 1),
                    num_heads=(1, 2), window_size=4)  # 8x8 then 4x4 tokens, window 4: no shift anywhere
    state = random_state_dict(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match="pass img_size"):
        MST.from_state_dict(state)
    assert MST.from_state_dict(state, img_size=32).config == cfg
    # a later stage whose window is smaller than stage 0's is one window: it tells the size
    cfg2 = MSTConfig(**{**cfg.__dict__, "img_size": 16, "window_size": 4, "depths": (1, 1)})
    assert MST.from_state_dict(random_state_dict(cfg2, np.random.default_rng(0))).config == cfg2


def test_config_that_does_not_tile_is_a_value_error():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MSTConfig(img_size=15, patch_size=2)
    with pytest.raises(ValueError, match="stage 0 does not fit"):
        MSTConfig(img_size=24, patch_size=2, window_size=5, embed_dim=8, depths=(1,), num_heads=(2,))
    with pytest.raises(ValueError, match="depths"):
        MSTConfig(depths=(2, 2), num_heads=(3,))


# ---------------------------------------------------------------- inputs


def test_bad_inputs_are_value_errors_that_say_what_is_expected(model, images):
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\).*got \(2, 1, 16, 16\)"):
        model.ann_forward(images[:, :1])
    with pytest.raises(ValueError, match="float"):
        model.ann_forward(np.zeros((1, 3, 16, 16), np.uint8))
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        model.snn_forward(bad, 2)
    for t in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="timesteps"):
            model.snn_forward(images, t)
    with pytest.raises(ValueError, match="chunk"):
        model.snn_forward(images, 4, chunk=0)
    with pytest.raises(ValueError, match="compensation"):
        model.snn_forward(images, 2, compensation="ecmt")
    with pytest.raises(ValueError, match="record pattern"):
        model.snn_forward(images, 2, record="layers.9.*")


# ---------------------------------------------------------------- the time loop


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compensation", ["none", "expectation"])
def test_step_by_step_equals_multi_step_equals_chunked(dtype, compensation, images):
    model = MST.random(CFG, np.random.default_rng(0), dtype=dtype)
    T = 9
    kw = dict(mask_ratio={"layers.0.*": 0.5, "layers.1.*": 0.25}, mask_sites="paper", compensation=compensation,
              record="all")
    whole = model.snn_forward(images, T, chunk=T, rng=np.random.default_rng(4), **kw)
    sim = model.step_simulator(images, rng=np.random.default_rng(4), **kw)
    steps = np.stack([sim.step() for _ in range(T)])  # (T, B, K)
    results = [sim.result()] + [model.snn_forward(images, T, chunk=c, rng=np.random.default_rng(4), **kw)
                                for c in (1, 2, 4)]
    assert whole.cumulative_logits.dtype == dtype
    np.testing.assert_array_equal(steps, whole.step_logits)
    for r in results:
        np.testing.assert_array_equal(r.cumulative_logits, whole.cumulative_logits)
        assert r.spike_counts_by_site == whole.spike_counts_by_site
        for name in model.site_names:
            np.testing.assert_array_equal(r.records[name], whole.records[name])


def test_run_continues_where_it_stopped(model, images):
    sim = model.step_simulator(images)
    sim.run(3)
    r = sim.run(4, chunk=3)
    assert sim.t == 7
    np.testing.assert_array_equal(r.cumulative_logits, model.snn_forward(images, 7).cumulative_logits)


def test_sites_run_in_site_names_order_and_records_are_site_outputs(model, images):
    counter = SpikeCounter()
    model.forward(images, Mode(spiking=True, steps=3, monitors=[counter]))
    assert list(counter.site_shapes) == model.site_names
    r = model.snn_forward(images, 5, record=["layers.0.blocks.1.attn.*", "patch_embed.proj_if"])
    assert sorted(r.records) == sorted(["patch_embed.proj_if"] + [f"layers.0.blocks.1.attn.{s}" for s in
                                        ("q_if", "k_if", "attn_if", "v_if", "attn_v_if", "proj_if")])
    assert r.records["layers.0.blocks.1.attn.q_if"].shape == (5, 2, 4, 2, 16, 4)  # (T, B, nW, nH, N, hd)
    assert r.records["layers.0.blocks.1.attn.attn_if"].shape == (5, 2, 4, 2, 16, 16)  # (T, B, nW, nH, N, N)
    assert r.records["layers.0.blocks.1.attn.attn_v_if"].shape == (5, 2, 4, 16, 8)  # (T, B, nW, N, C)
    assert r.records["patch_embed.proj_if"].shape == (5, 2, 64, 8)  # (T, B, N, C)
    for name, spikes in r.records.items():
        lam = model.state[f"{name}.up"][0]
        assert set(np.unique(spikes)) <= {0.0, lam}
        np.testing.assert_array_equal(np.count_nonzero(spikes.reshape(5, -1), axis=1),
                                      r.spike_counts_per_step[name])
        assert 0 <= r.firing_rates[name] <= 1
    z, acts = model.ann_forward(images, record="layers.1.blocks.0.mlp.fc1_if")
    np.testing.assert_array_equal(z, model.ann_forward(images))
    lam = model.state["layers.1.blocks.0.mlp.fc1_if.up"][0]
    assert acts["layers.1.blocks.0.mlp.fc1_if"].shape == (2, 16, 64)
    np.testing.assert_allclose(np.unique(acts["layers.1.blocks.0.mlp.fc1_if"]) * 16 / lam,
                               np.round(np.unique(acts["layers.1.blocks.0.mlp.fc1_if"]) * 16 / lam), atol=1e-4)


def test_first_site_fires_like_an_if_neuron_on_the_static_image(model, images):
    # direct coding: patch_embed.proj_if receives the same current every step, so over T steps its
    # mean output is exactly QCFS with L = T of that current (docs/mst.md section 2)
    T = 8
    r = model.snn_forward(images, T, record="patch_embed.proj_if")
    _, acts = model.ann_forward(images, record="patch_embed.proj_if", quantize=False)  # clip(current)
    _, quantized = model.ann_forward(images, record="patch_embed.proj_if")  # QCFS L = 16
    lam = model.state["patch_embed.proj_if.up"][0]
    rate = r.records["patch_embed.proj_if"].astype(np.float64).mean(axis=0)
    assert np.abs(rate - acts["patch_embed.proj_if"]).max() <= lam / (2 * T) + 1e-6
    # and it is QCFS with L = T: mean output * T / lambda is an integer
    np.testing.assert_allclose(rate * T / lam, np.round(rate * T / lam), atol=1e-5)
    assert not np.array_equal(acts["patch_embed.proj_if"], quantized["patch_embed.proj_if"])


# ---------------------------------------------------------------- numerics


def test_float32_and_float64_agree_within_spec_tolerances(images):
    state = random_state_dict(CFG, np.random.default_rng(3), np.float64)
    m32, m64 = MST.from_state_dict(state, dtype=np.float32), MST.from_state_dict(state, dtype=np.float64)
    a = m32.snn_forward(images, 64).cumulative_logits
    b = m64.snn_forward(images, 64).cumulative_logits
    rel = np.linalg.norm(a - b, axis=(1, 2)) / np.linalg.norm(b, axis=(1, 2))  # (T,)
    assert rel[:16].max() < 1e-5 and rel.max() < 5e-3
    za, zb = m32.ann_forward(images), m64.ann_forward(images)
    assert np.abs(za - zb).max() < 1e-5 * np.abs(zb).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_hidden_dtype_changes(dtype, images):
    model = MST.random(CFG, np.random.default_rng(0), dtype=dtype)
    for compensation in ("none", "expectation"):
        r = model.snn_forward(images, 3, record="all", compensation=compensation, mask_ratio=0.5,
                              rng=np.random.default_rng(0), mask_rescale=True)
        assert r.step_logits.dtype == r.cumulative_logits.dtype == dtype
        assert {v.dtype for v in r.records.values()} == {np.dtype(dtype)}
    z, acts = model.ann_forward(images.astype(np.float64), record="all")
    assert z.dtype == dtype and {v.dtype for v in acts.values()} == {np.dtype(dtype)}


# ---------------------------------------------------------------- expectation compensation


def _split(T, cuts):
    edges = sorted({0, T, *(c % T for c in cuts)})
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), cuts=st.lists(st.integers(0, 11), max_size=3), seed=st.integers(0, 2**16),
       op=st.sampled_from(["softmax", "layer_norm"]))
def test_compensated_op_outputs_sum_to_t_f_of_mean_input(T, cuts, seed, op):
    rng = np.random.default_rng(seed)
    f = softmax if op == "softmax" else (lambda a: layer_norm(a, np.full(5, 1.5), np.full(5, 0.2)))
    x = rng.standard_normal((T, 3, 5))
    carry, ys = Carry(), []
    for part in _split(T, cuts):
        y, carry = expectation_op(f, x[part], carry)
        ys.append(y)
    y = np.concatenate(ys)
    t = np.arange(1, T + 1)[:, None, None]
    # sum_{s<=t} y_s = t f(X_t / t) at every t
    np.testing.assert_allclose(np.cumsum(y, axis=0), t * f(np.cumsum(x, axis=0) / t), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(y[0], f(x[0]))  # step 1 is the faithful op


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), cuts=st.lists(st.integers(0, 11), max_size=3), seed=st.integers(0, 2**16))
def test_compensated_product_outputs_sum_to_product_of_sums_over_t(T, cuts, seed):
    rng = np.random.default_rng(seed)
    a = (rng.random((T, 2, 3, 4)) < 0.4) * 1.5  # spike trains (T, ..., n, k)
    b = (rng.random((T, 2, 4, 3)) < 0.6) * 0.5  # (T, ..., k, m)
    carry, ys = Carry(), []
    for part in _split(T, cuts):
        y, carry = expectation_product(a[part], b[part], carry)
        ys.append(y)
    y = np.concatenate(ys)
    t = np.arange(1, T + 1)[:, None, None, None]
    A, B = np.cumsum(a, axis=0), np.cumsum(b, axis=0)
    np.testing.assert_allclose(np.cumsum(y, axis=0), (A @ B) / t, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(y[0], a[0] @ b[0])


def test_compensated_snn_converges_to_the_clip_ann_and_the_faithful_one_plateaus():
    cfg = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=4, embed_dim=8, depths=(2, 1),
                    num_heads=(2, 2), window_size=2)
    model = MST.random(cfg, np.random.default_rng(0))
    x = np.random.default_rng(10).standard_normal((2, 1, 8, 8)).astype(np.float32)
    ann = model.ann_forward(x, quantize=False)

    def rel_errors(compensation):
        mean = model.snn_forward(x, 1024, compensation=compensation).mean_logits
        return {T: np.linalg.norm(mean[T - 1] - ann) / np.linalg.norm(ann) for T in (64, 256, 1024)}

    comp, faithful = rel_errors("expectation"), rel_errors("none")
    assert comp[1024] < 0.005
    assert comp[1024] < comp[256] < comp[64] and comp[1024] < comp[64] / 5  # ~1/T: 16x over 64 -> 1024
    assert faithful[1024] > 0.02 and faithful[1024] > 0.5 * faithful[64]  # no convergence
