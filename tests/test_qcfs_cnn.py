"""The QCFS CNNs (mst_ref.models.qcfs_cnn) held to the PyTorch twin of the official code, and their
properties: convolution by hand, exact fan-out maps, step-by-step == multi-step, RSM, energy, and the
SNN converging to its ANN with no plateau (unlike MST's faithful SNN).

Golden fixtures (tests/fixtures/golden_cnn/*.npz, written by tests/fixtures/make_cnn_golden.py from
reference/qcfs_cnn_torch.py) need no torch. Tolerances, relative to the largest |logit| of the
reference: float64 1e-10 with identical spike counts at every site and step; float32 ANN 1e-4 and SNN
1e-3 for T <= 16 (random quantised CNNs are chaotic: a float32 rounding that flips one spike early
can cascade, so float32 SNN runs are compared over the first steps only and float64 carries the
exactness claim).
"""
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mst_ref
from mst_ref.engine import energy
from mst_ref.models import cnn_energy
from mst_ref.nn.conv import avg_pool2, conv2d, conv_fan_out_map, flatten_chw
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.models.qcfs_cnn import (CNNConfig, QCFSCNN, cnn_site_names, expected_cnn_shapes,
                                     infer_cnn_config, random_cnn_state_dict)
from mst_ref.core.qcfs import qcfs, qcfs_clamp_first

HERE = Path(__file__).resolve().parent
GOLDEN = sorted((HERE / "fixtures" / "golden_cnn").glob("*.npz"))
CKPT = HERE / "fixtures" / "ckpt"
HAS_TORCH = importlib.util.find_spec("torch") is not None

TINY_RES = CNNConfig.official("resnet18", in_chans=1, img_size=16, num_classes=4, width=1 / 16)
TINY_VGG = CNNConfig.official("vgg16", in_chans=2, img_size=32, num_classes=3, width=1 / 32)


def _load_golden(path):
    d = np.load(path)
    state = {k[len("state/"):]: d[k] for k in d.files if k.startswith("state/")}
    cfg = json.loads(bytes(d["config"]).decode())
    counts = {tag: {k.split("/", 1)[1]: d[k] for k in d.files if k.startswith(f"counts_{tag}/")}
              for tag in ("f32", "f64")}
    return d, state, cfg, counts


def _rel(ours, ref):
    axes = tuple(range(ours.ndim - 2, ours.ndim))
    return np.abs(ours.astype(np.float64) - ref).max(axis=axes) / np.abs(ref).max(axis=axes)


# ---------------------------------------------------------------- layers by hand


def test_conv2d_matches_a_loop_over_output_positions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))  # (B, H, W, Cin)
    w = rng.standard_normal((4, 3, 3, 3))  # (Cout, Cin, k, k)
    b = rng.standard_normal(4)
    for stride, pad in ((1, 1), (2, 1), (2, 0), (1, 0)):
        y = conv2d(x, w, b, stride, pad)
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        ho, wo = (7 + 2 * pad - 3) // stride + 1, (6 + 2 * pad - 3) // stride + 1
        want = np.zeros((2, ho, wo, 4))
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]  # (B, 3, 3, Cin)
                want[:, i, j, :] = np.einsum("buvc,ocuv->bo", patch, w) + b
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
        # with a time axis: the same numbers, step by step
        y_t = conv2d(np.stack([x, 2 * x]), w, None, stride, pad)
        np.testing.assert_allclose(y_t[1], 2 * (want - b), rtol=1e-12, atol=1e-12)


def test_avg_pool_and_flatten_by_hand():
    x = np.arange(2 * 5 * 5 * 2, dtype=np.float64).reshape(2, 5, 5, 2)
    y = avg_pool2(x)
    assert y.shape == (2, 2, 2, 2)
    assert y[1, 1, 0, 1] == np.mean(x[1, 2:4, 0:2, 1])  # odd last row and column dropped
    f = flatten_chw(np.arange(12.0).reshape(1, 2, 3, 2))  # (B, H, W, C) -> C-major
    assert f.tolist() == [[0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]]


def test_qcfs_clamp_first_is_qcfs_on_the_grid():
    x = np.linspace(-1, 3, 4001)
    lam = np.array([1.7])
    a, b = qcfs_clamp_first(x, lam, 8), qcfs(x, lam, 8)
    assert np.abs(a - b).max() <= 1e-12 or (np.abs(a - b) > 1e-12).mean() < 1e-3  # at most boundary ties
    np.testing.assert_array_equal(qcfs_clamp_first(np.array([-5.0, 0.0, 10.0]), lam, 8), [0.0, 0.0, 1.7])


@given(size=st.integers(1, 12), kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       seed=st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_fan_out_map_counts_every_synapse(size, kernel, stride, seed):
    """sum over outputs of conv(x, ones) = sum over inputs of x * fan-out map, for any binary x."""
    pad = kernel // 2
    if size + 2 * pad < kernel:
        return
    rng = np.random.default_rng(seed)
    x = (rng.random((1, size, size, 2)) < 0.4).astype(np.float64)
    y = conv2d(x, np.ones((3, 2, kernel, kernel)), None, stride, pad)
    a = conv_fan_out_map(size, kernel, stride, pad)
    assert y.sum() == pytest.approx((x.sum(axis=(0, 3)) * 3 * np.outer(a, a)).sum())


# ---------------------------------------------------------------- golden fixtures (no torch)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_float64_identical_spikes(path):
    d, state, cfg, counts = _load_golden(path)
    model = QCFSCNN.from_state_dict(state, img_size=cfg["img_size"], dtype=np.float64)
    assert model.config.arch == cfg["arch"] and model.config.in_chans == cfg["in_chans"]
    ann = model.ann_forward(d["images"])
    assert _rel(ann, d["ann_f64"]) <= 1e-10
    T = d["snn_f64"].shape[0]
    res = model.snn_forward(d["images"], T)
    assert _rel(res.step_logits, d["snn_f64"]).max() <= 1e-10
    for site in model.site_names:
        np.testing.assert_array_equal(res.spike_counts_per_step[site], counts["f64"][site], err_msg=site)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_float32(path):
    d, state, cfg, counts = _load_golden(path)
    model = QCFSCNN.from_state_dict(state, img_size=cfg["img_size"], dtype=np.float32)
    assert _rel(model.ann_forward(d["images"]), d["ann_f32"]) <= 1e-4
    cum = model.snn_forward(d["images"], 16).cumulative_logits
    assert _rel(cum, np.cumsum(d["snn_f32"].astype(np.float64), axis=0)).max() <= 1e-3


def test_official_checkpoints_load_without_torch_and_match_the_reference():
    """torch.save files of the official layout: bare with `thresh`, wrapped with the older `up` names."""
    for ckpt, golden in (("cnn_resnet18_official.pth", "resnet18_rgb"), ("cnn_vgg16_legacy_up.pth", "vgg16_grey")):
        model = mst_ref.load_checkpoint(CKPT / ckpt, dtype=np.float64)
        d, _, cfg, counts = _load_golden(HERE / "fixtures" / "golden_cnn" / f"{golden}.npz")
        assert isinstance(model, QCFSCNN) and model.config.arch == cfg["arch"]
        assert model.config.qcfs_levels == 8 and model.config.width == pytest.approx(1 / 16)
        assert _rel(model.ann_forward(d["images"]), d["ann_f64"]) <= 1e-10
        res = model.snn_forward(d["images"], 16)
        assert _rel(res.step_logits, d["snn_f64"]).max() <= 1e-10
        assert mst_ref.load_checkpoint(CKPT / ckpt, qcfs_levels=4).config.qcfs_levels == 4


@pytest.mark.skipif(not HAS_TORCH, reason="live comparisons need torch")
@pytest.mark.parametrize("arch,in_chans", [("resnet18", 1), ("resnet18", 3), ("vgg16", 1), ("vgg16", 3)])
def test_live_against_the_reference(arch, in_chans):
    import torch

    from reference.qcfs_cnn_torch import CNNConfig as RefConfig
    from reference.qcfs_cnn_torch import build, randomize_

    gen = torch.Generator().manual_seed(7)
    ref = randomize_(build(RefConfig(arch=arch, in_chans=in_chans, num_classes=6, width=1 / 32)).double().eval(), gen)
    x = torch.randn(3, in_chans, 32, 32, generator=gen, dtype=torch.float64)
    model = QCFSCNN.from_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, dtype=np.float64)
    with torch.no_grad():
        assert _rel(model.ann_forward(x.numpy()), ref(x).numpy()) <= 1e-10
        z = ref.snn_forward(x, 12).numpy()
    assert _rel(model.snn_forward(x.numpy(), 12).step_logits, z).max() <= 1e-10


# ---------------------------------------------------------------- one machinery


def test_step_by_step_equals_multi_step_equals_chunked_with_masks():
    rng = np.random.default_rng(3)
    for cfg in (TINY_RES, TINY_VGG):
        model = QCFSCNN.random(cfg, rng)
        x = rng.standard_normal((2, cfg.in_chans, cfg.img_size, cfg.img_size)).astype(np.float32)
        kw = dict(mask_ratio=0.5, record="all")
        full = model.snn_forward(x, 9, rng=np.random.default_rng(1), chunk=9, **kw)
        chunked = model.snn_forward(x, 9, rng=np.random.default_rng(1), chunk=4, **kw)
        sim = model.step_simulator(x, rng=np.random.default_rng(1), **kw)
        for _ in range(9):
            sim.step()
        stepped = sim.result()
        for other in (chunked, stepped):
            np.testing.assert_array_equal(full.step_logits, other.step_logits)
            assert full.spike_counts_by_site == other.spike_counts_by_site
            assert full.sops == other.sops
            for name in model.site_names:
                np.testing.assert_array_equal(full.records[name], other.records[name])


def test_sites_thresholds_records_and_masking():
    model = QCFSCNN.random(TINY_RES, np.random.default_rng(0))
    assert len(model.site_names) == 17 and model.site_names[0] == "conv1.2"
    assert model.site_names[-1] == "conv5_x.1.act"
    assert len(cnn_site_names(TINY_VGG)) == 15
    x = np.random.default_rng(1).standard_normal((3, 1, 16, 16))
    logits, rec = model.ann_forward(x, record="conv2_x.*")
    assert set(rec) == {"conv2_x.0.residual_function.2", "conv2_x.0.act", "conv2_x.1.residual_function.2",
                        "conv2_x.1.act"}
    lam = float(model.threshold("conv2_x.0.act")[0])
    levels = np.unique(np.round(rec["conv2_x.0.act"] / lam * 8, 6))
    assert set(levels) <= set(range(9))  # QCFS outputs lie on the L = 8 grid
    # RSM: every site is maskable by default; about 1 - p of the spikes survive
    res0 = model.snn_forward(x, 16)
    res = model.snn_forward(x, 16, mask_ratio=0.75, rng=np.random.default_rng(2), record="conv1.2")
    assert set(res.mask_ratios) == set(model.site_names)
    unmasked = model.snn_forward(x, 16, record="conv1.2").records["conv1.2"]
    kept = np.count_nonzero(res.records["conv1.2"]) / np.count_nonzero(unmasked)
    assert 0.2 < kept < 0.3  # the first site sees the same input either way
    assert res.sops < res0.sops
    # per-block ratio maps and site suffixes work as for MST
    res = model.snn_forward(x, 4, mask_ratio={"conv3_x.*": 0.5}, rng=np.random.default_rng(2))
    assert set(res.mask_ratios) == {n for n in model.site_names if n.startswith("conv3_x")}
    with pytest.raises(ValueError, match="matches no maskable site"):
        model.snn_forward(x, 4, mask_ratio={"layers.0.*": 0.5}, rng=np.random.default_rng(2))
    with pytest.raises(ValueError, match="rng"):
        model.ann_forward(x, mask_ratio=0.5)


def test_sops_are_spikes_times_the_exact_fan_out_map():
    model = QCFSCNN.random(TINY_RES, np.random.default_rng(4))
    x = np.random.default_rng(5).standard_normal((2, 1, 16, 16))
    res = model.snn_forward(x, 6, record="all")
    maps = energy.site_neurons(model.config), cnn_energy.fan_out_maps(model.config)
    for name in model.site_names:
        spikes = res.records[name] != 0  # (T, B, H, W, C)
        want = int((spikes.sum(axis=(0, 1, 4)) * maps[1][name]).sum())
        assert res.sops_by_site[name] == want, name
    # interior fan-out of a 3x3 conv is C_out * 9; the mean is lower (borders)
    fan = energy.fan_outs(model.config)
    c_out = model.config.widths[1]
    assert fan["conv2_x.0.residual_function.2"] < 9 * c_out
    assert maps[1]["conv2_x.0.residual_function.2"][5, 5] == 9 * c_out
    # the ANN's dense MACs equal the true multiply count of each layer (padding taps excluded)
    by_layer = energy.ann_macs_by_layer(model.config)
    ones = conv2d(np.ones((1, 16, 16, c_out)), np.ones((c_out, c_out, 3, 3)), None, 1, 1)
    assert by_layer["conv2_x.0.residual_function.2"] == pytest.approx(ones.sum())
    assert res.energy_pj == pytest.approx(0.9 * res.sops + 4.6 * res.macs)
    assert res.macs == 2 * energy.input_macs(model.config)  # the image's conv once per image, nothing per step


# ---------------------------------------------------------------- convergence: no plateau, unlike MST


def _rel_norm(mean_logits, ann):
    return np.linalg.norm((mean_logits - ann).reshape(len(mean_logits), -1), axis=1) / np.linalg.norm(ann)


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=3, deadline=None)
def test_cnn_snn_converges_to_its_ann_with_no_plateau_while_mst_plateaus(seed):
    """A CNN has no per-step analog op: its SNN's mean logits tend to the ANN's (with clip, the L -> inf
    limit of QCFS an IF neuron's rate tends to) as T grows; MST's faithful SNN levels off."""
    rng = np.random.default_rng(seed)
    cnn = QCFSCNN.random(TINY_RES, rng, dtype=np.float64)
    x = rng.standard_normal((2, 1, 16, 16))
    err = _rel_norm(cnn.snn_forward(x, 512).mean_logits, cnn.ann_forward(x, quantize=False))
    assert err[511] < 0.05 and err[511] < err[63] / 2 < err[7]

    mst = MST.random(MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=4, embed_dim=8, depths=(2, 1),
                               num_heads=(2, 2), window_size=2), rng, dtype=np.float64)
    xm = rng.standard_normal((2, 1, 8, 8))
    err_m = _rel_norm(mst.snn_forward(xm, 512).mean_logits, mst.ann_forward(xm, quantize=False))
    assert err_m[511] > 0.5 * err_m[63]  # no halving from 64 to 512 steps: a plateau


# ---------------------------------------------------------------- layout, checkpoints, bad input


def test_infer_config_reads_widths_and_sizes_off_the_shapes():
    rng = np.random.default_rng(0)
    for cfg in (TINY_RES, TINY_VGG, CNNConfig.official("vgg16", 3, 64, 5, width=1 / 32)):
        state = random_cnn_state_dict(cfg, rng)
        got = infer_cnn_config(state, img_size=cfg.img_size if cfg.arch == "resnet18" else None)
        assert dataclasses.replace(got, width=cfg.width) == cfg
    assert infer_cnn_config(random_cnn_state_dict(TINY_RES, rng)).img_size == 32  # ResNet: any size; 32 default


def test_bad_state_dicts_list_every_problem():
    state = random_cnn_state_dict(TINY_RES, np.random.default_rng(0))
    bad = dict(state)
    del bad["conv2_x.0.act.thresh"]
    bad["conv3_x.0.residual_function.3.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    bad["conv1.2.thresh"] = np.array([-1.0], np.float32)
    bad["extra.key"] = np.zeros(1)
    with pytest.raises(ValueError) as e:
        QCFSCNN.from_state_dict(bad, img_size=16)
    msg = str(e.value)
    for part in ("missing conv2_x.0.act.thresh", "conv3_x.0.residual_function.3.weight: shape",
                 "conv1.2.thresh: threshold", "unexpected extra.key"):
        assert part in msg
    nan = dict(state, **{"fc.weight": np.full_like(state["fc.weight"], np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        QCFSCNN.from_state_dict(nan, img_size=16)
    with pytest.raises(ValueError, match="multiple of 32"):
        CNNConfig.official("vgg16", 1, 28)
    model = QCFSCNN(TINY_RES, state)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        model.ann_forward(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="timesteps"):
        model.snn_forward(np.zeros((1, 1, 16, 16), np.float32), 0)
    assert set(expected_cnn_shapes(TINY_RES)) == set(state)


@pytest.mark.kernels
@given(seed=st.integers(0, 10**6), stride=st.sampled_from([1, 2]), kernel=st.sampled_from([1, 3]),
       rate=st.sampled_from([0.0, 0.2, 1.0]))
@settings(max_examples=25, deadline=None)
def test_event_driven_conv_kernel_equals_its_numpy_twin_bit_for_bit(seed, stride, kernel, rate):
    from mst_ref.nn.conv import conv2d_events, conv2d_events_reference

    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = ((rng.random((2, 3, 7, 6, 3)) < rate) * rng.choice([0.5, 1.25], size=(2, 3, 7, 6, 3))).astype(dtype)
        w = rng.standard_normal((4, 3, kernel, kernel)).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        pad = kernel // 2
        fast = conv2d_events(x, w, b, stride, pad)
        np.testing.assert_array_equal(fast, conv2d_events_reference(x, w, b, stride, pad))
        np.testing.assert_allclose(fast, conv2d(x, w, b, stride, pad), rtol=1e-5, atol=1e-5)


def test_fast_and_readable_snn_paths_agree():
    rng = np.random.default_rng(11)
    for cfg in (TINY_RES, TINY_VGG):
        model = QCFSCNN.random(cfg, rng, dtype=np.float64)
        x = rng.standard_normal((2, cfg.in_chans, cfg.img_size, cfg.img_size))
        fast, slow = model.snn_forward(x, 8), model.snn_forward(x, 8, fast=False)
        np.testing.assert_allclose(fast.step_logits, slow.step_logits, rtol=1e-10, atol=1e-10)
        assert fast.spike_counts_by_site == slow.spike_counts_by_site


# ---------------------------------------------------------------- the command line on CNN checkpoints


@pytest.fixture(scope="module")
def tiny_cnn_checkpoint(tmp_path_factory):
    """A random 1-channel ResNet-18 (width 1/16) for 32-px inputs, recorded as trained on 28-px images padded by 2."""
    from mst_ref.io.checkpoint import save_npz

    cfg = CNNConfig.official("resnet18", in_chans=1, img_size=32, num_classes=10, width=1 / 16)
    path = tmp_path_factory.mktemp("cnn") / "tiny_resnet.npz"
    save_npz(path, random_cnn_state_dict(cfg, np.random.default_rng(0)),
             {"img_size": 32, "pad": 2, "mean": [0.286], "std": [0.353], "width": 1 / 16, "mask_ratio": 0.0})
    return path


def test_cli_inspect_eval_and_energy_on_a_cnn_checkpoint(tiny_cnn_checkpoint, capsys, tmp_path):
    from mst_ref.cli import main
    from mst_ref.io.data import sample_path

    assert main(["inspect", str(tiny_cnn_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "QCFS resnet18" in out and "17 sites" in out
    assert main(["eval", str(tiny_cnn_checkpoint), "--data", str(sample_path()), "--limit", "4",
                 "--timesteps", "1,2,4", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr()
    assert "zero-padded by 2 pixels" in out.out + out.err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == 4 and set(result["snn_accuracy"]) == {"1", "2", "4"}
    assert main(["energy", str(tiny_cnn_checkpoint), "--timesteps", "4", "--limit", "2"]) == 0
    assert "conv2_x.0.residual_function.2" in capsys.readouterr().out


def test_cli_rsm_table_and_regions(tiny_cnn_checkpoint, capsys, tmp_path):
    from mst_ref.cli import main
    from mst_ref.io.data import sample_path, shipped_file

    ckpts = f"{shipped_file('mst_fashion.pth')},{tiny_cnn_checkpoint}"
    assert main(["rsm-table", "--data", str(sample_path()), "--checkpoints", ckpts, "--limit", "4", "--timesteps", "2",
                 "--seeds", "2", "--json", str(tmp_path / "t.json"), "--out", str(tmp_path / "png")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["model"], r["ratio"]) for r in rows] == [(m, p) for m in ("MST", "ResNet-18") for p in (0, 0.5, 0.75)]
    for r in rows:
        assert r["delivered"] <= r["fired"] + 1e-9 and r["images"] == 4 and r["seeds"] == (1 if r["ratio"] == 0 else 2)
        if r["ratio"] == 0:
            assert r["fired"] == r["delivered"] and r["sops_ratio"] == 1 and r["accuracy_change"] == 0
    res = [r for r in rows if r["model"] == "ResNet-18"]
    assert res[2]["sops"] < res[0]["sops"]  # every CNN site masked: fewer SOPs
    assert (tmp_path / "png" / "rsm_accuracy.png").exists() and (tmp_path / "png" / "rsm_energy.png").exists()
    assert main(["rsm-regions", "--data", str(sample_path()), "--checkpoints", ckpts, "--images", "2", "--step", "2",
                 "--out", str(tmp_path / "reg")]) == 0
    assert (tmp_path / "reg" / "rsm_regions.png").exists() and "correlation" in capsys.readouterr().out
    # bad input: one line, exit status 2
    assert main(["rsm-table", "--data", str(sample_path()), "--checkpoints", ckpts, "--ratios", "0.5,0.75"]) == 2
    assert "including 0" in capsys.readouterr().err


@pytest.mark.kernels
def test_event_kernel_with_batch_norm_rounds_as_conv_then_batch_norm():
    from mst_ref.nn.conv import conv2d_events, conv2d_events_reference
    from mst_ref.nn.layers import batch_norm, bn_affine

    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = ((rng.random((3, 6, 5, 4)) < 0.3) * 1.25).astype(dtype)
        w, b = rng.standard_normal((3, 4, 3, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)
        bn = [rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype),
              rng.standard_normal(3).astype(dtype), (rng.random(3) + 0.5).astype(dtype)]
        want = batch_norm(conv2d_events_reference(x, w, b, 2, 1), *bn)
        np.testing.assert_array_equal(conv2d_events(x, w, b, 2, 1, bn=bn_affine(*bn)), want)
