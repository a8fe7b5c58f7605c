"""Tests of mst_ref.analysis.site_errors and the ``analyze`` command: the compensated SNN converges like 1/T while
the faithful one plateaus; the per-site table agrees with a direct computation on recorded spikes; affine
ops commute with the mean over time and softmax, LayerNorm and products do not."""

import argparse
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mst_ref.analysis.site_errors import commutation_check, commutation_error, op_kind, site_errors
from mst_ref.nn.attention import softmax
from mst_ref.io.checkpoint import save_npz
from mst_ref.cli.analysis import add_analyze_parser, parse_timesteps
from mst_ref.nn.layers import batch_norm, bn_params, linear, patch_embed
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.core.qcfs import clip_activation, qcfs
from mst_ref.nn.windows import relative_position_bias, window_partition

# tiny models: 4x4 tokens in 2x2 windows (stage 0 has a shifted block), then 2x2 tokens in one window
TINY = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=4, embed_dim=8, depths=(2, 1),
                 num_heads=(2, 2), window_size=2)
TINIER = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=4, depths=(1, 1),
                   num_heads=(1, 2), window_size=2)


def _images(seed, batch):
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8))


def _relative_errors(mean_logits, ann):
    """(T,) ||mean logits after t steps - ANN logits|| / ||ANN logits||."""
    return np.linalg.norm((mean_logits - ann).reshape(len(mean_logits), -1), axis=1) / np.linalg.norm(ann)


# ---------------------------------------------------------------- convergence (docs/mst.md sections 4, 8)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(config=st.sampled_from([TINY, TINIER]), seed=st.integers(0, 2**16), batch=st.integers(1, 2))
def test_compensated_snn_converges_like_1_over_T_and_the_faithful_one_plateaus(config, seed, batch):
    model = MST.random(config, np.random.default_rng(seed))
    x = _images(seed + 1, batch).astype(np.float32)
    ann = model.ann_forward(x, quantize=False)  # the clip ANN: what the compensated SNN tends to
    comp = _relative_errors(model.snn_forward(x, 1024, compensation="expectation").mean_logits, ann)
    # the readable path (tests/test_model.py covers the fused kernels at T = 1024)
    faithful = _relative_errors(model.snn_forward(x, 1024, fast=False).mean_logits, ann)
    T = np.arange(1, 1025)
    late = T >= 16
    slope = np.polyfit(np.log(T[late]), np.log(comp[late]), 1)[0]  # err ~ T^slope
    assert comp[-1] < 0.005
    assert -1.3 < slope < -0.7  # ~1/T (measured -0.95 .. -1.07 on 40 random models)
    # the faithful SNN plateaus: no gain from T = 32..64 to T = 512..1024, and far above the compensated
    assert faithful[511:].mean() > 0.5 * faithful[31:64].mean()
    assert faithful[-1] > 0.02 and faithful[-1] > 5 * comp[-1]


def test_site_errors_show_every_site_converging_with_compensation_and_stalling_without():
    model = MST.random(TINY, np.random.default_rng(0))
    x = _images(10, 1).astype(np.float32)
    comp = site_errors(model, x, (64, 1024), compensation="expectation", quantize=False)
    faithful = site_errors(model, x, (64, 1024), compensation="none", quantize=False)
    assert np.nanmax(comp.relative_error[:, 1]) < 0.02  # every site within 2% of the clip ANN
    assert np.median(comp.mean_abs_error[:, 0] / comp.mean_abs_error[:, 1]) > 8  # ~16 for 1/T
    worst = faithful.sites[int(np.nanargmax(faithful.relative_error[:, 1]))]
    assert np.nanmax(faithful.relative_error[:, 1]) > 0.04 and ".attn." in worst  # stuck after q k^T
    assert faithful.input_error[:, 1].max() > 2 * comp.input_error[:, 1].max()
    assert comp.logit_error[1] < 0.005 < faithful.logit_error[1]
    assert np.all(comp.ann_quantization == 0)  # the clip ANN
    assert np.all(comp.time_quantization[:, 1] <= comp.thresholds / 2048 * (1 + 1e-6))  # <= lambda / (2T)


# ---------------------------------------------------------------- the table vs recorded spikes


def _mean_abs(a):
    return np.abs(a).mean()


@pytest.mark.parametrize("compensation, mask_ratio", [("none", 0.0), ("expectation", 0.0), ("none", 0.5)])
def test_site_errors_match_a_direct_computation_on_recorded_spikes(compensation, mask_ratio):
    model = MST.random(TINY, np.random.default_rng(3), dtype=np.float64)
    x, labels, stops = _images(4, 3), np.array([0, 1, 2]), (1, 3, 8)
    se = site_errors(model, x, stops, compensation, mask_ratio, np.random.default_rng(5), labels=labels)
    ann_logits, acts = model.ann_forward(x, record="all")  # QCFS
    run = model.snn_forward(x, 8, mask_ratio, np.random.default_rng(5), "all", compensation=compensation,
                            fast=False)  # the readable path, which the analysis taps
    spikes, L = run.records, TINY.qcfs_levels
    assert se.sites == model.site_names and se.timesteps == stops
    for i, name in enumerate(se.sites):
        a = acts[name]
        for c, T in enumerate(stops):
            e = spikes[name][:T].mean(axis=0) - a
            assert se.mean_abs_error[i, c] == pytest.approx(_mean_abs(e), rel=1e-9, abs=1e-14)
            assert se.relative_error[i, c] == pytest.approx(np.linalg.norm(e) / np.linalg.norm(a), rel=1e-9)
            if np.ptp(e + a) > 0 and np.ptp(a) > 0:
                r = np.corrcoef(spikes[name][:T].mean(axis=0).ravel(), a.ravel())[0, 1]
                assert se.correlation[i, c] == pytest.approx(r, rel=1e-6, abs=1e-9)
            # |r - a| <= sum of the parts' magnitudes (the signed parts add up to r - a)
            assert se.mean_abs_error[i, c] <= sum(p[i] for p in se.parts(c).values()) + 1e-12
        assert se.ann_mean[i] == pytest.approx(a.mean(), rel=1e-12)
    np.testing.assert_allclose(se.logit_error, _relative_errors(run.mean_logits[[T - 1 for T in stops]],
                                                                ann_logits), rtol=1e-9)
    np.testing.assert_array_equal(se.accuracy, (run.predictions[[T - 1 for T in stops]] == labels).mean(1))
    assert se.ann_accuracy == np.mean(ann_logits.argmax(-1) == labels)

    lam = {n: model.state[f"{n}.up"] for n in model.site_names}
    s = model.state

    def check_input(name, z, xbar):
        """The input-side columns of site `name`: ANN input z (B, ...), mean SNN inputs xbar[c]."""
        i = se.sites.index(name)
        r = {T: spikes[name][:T].mean(axis=0) for T in stops}
        assert se.clip_above[i] == pytest.approx(np.mean(z > lam[name]))
        assert se.clip_below[i] == pytest.approx(np.mean(z < 0))
        assert se.clip_amount[i] == pytest.approx(_mean_abs(z - clip_activation(z, lam[name])), rel=1e-9)
        assert se.ann_quantization[i] == pytest.approx(
            _mean_abs(clip_activation(z, lam[name]) - qcfs(z, lam[name], L)), rel=1e-9, abs=1e-15)
        for c, T in enumerate(stops):
            xb = xbar[c]
            parts = {"unevenness": r[T] - qcfs(xb, lam[name], T),
                     "time_quantization": qcfs(xb, lam[name], T) - clip_activation(xb, lam[name]),
                     "propagated": clip_activation(xb, lam[name]) - clip_activation(z, lam[name])}
            for part, value in parts.items():
                assert se.parts(c)[part][i] == pytest.approx(_mean_abs(value), rel=1e-7, abs=1e-12), (name, T)
            assert se.input_error[i, c] == pytest.approx(_mean_abs(xb - z), rel=1e-9, abs=1e-12)

    # first site: the image, the same at every step, so the SNN input is the ANN input
    z0 = batch_norm(patch_embed(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"]),
                    *bn_params(s, "patch_embed.norm"))  # (B, N, C)
    check_input("patch_embed.proj_if", z0, [z0] * len(stops))
    i0 = se.sites.index("patch_embed.proj_if")
    assert se.unevenness[i0].max() < 1e-12 and se.input_error[i0].max() < 1e-12  # IF at constant x = QCFS

    # q of block 0 (not shifted): Linear[qkv] of the windows of shortcut1_if
    def q_of(h):  # h (..., 16, C) -> q (..., nW, nH, N, hd)
        windows = window_partition(h.reshape(*h.shape[:-2], 4, 4, 8), 2)  # (..., nW, N, C)
        qkv = linear(windows, s["layers.0.blocks.0.attn.qkv.weight"], s["layers.0.blocks.0.attn.qkv.bias"])
        return qkv.reshape(*qkv.shape[:-1], 3, 2, 4)[..., 0, :, :].swapaxes(-2, -3)  # (..., nW, nH, N, hd)

    h = spikes["layers.0.blocks.0.shortcut1_if"]
    check_input("layers.0.blocks.0.attn.q_if", q_of(acts["layers.0.blocks.0.shortcut1_if"]),
                [q_of(h[:T]).mean(axis=0) for T in stops])

    # scores of block 0: q k^T / sqrt(hd), per step (faithful) or of the means (compensated)
    q, k = spikes["layers.0.blocks.0.attn.q_if"], spikes["layers.0.blocks.0.attn.k_if"]
    if compensation == "none":
        xbar = [(q[:T] @ k[:T].swapaxes(-1, -2)).mean(axis=0) / 2 for T in stops]
    else:
        xbar = [q[:T].mean(axis=0) @ k[:T].mean(axis=0).swapaxes(-1, -2) / 2 for T in stops]
    qa, ka = acts["layers.0.blocks.0.attn.q_if"], acts["layers.0.blocks.0.attn.k_if"]
    check_input("layers.0.blocks.0.attn.attn_if", qa @ ka.swapaxes(-1, -2) / 2, xbar)


def test_site_errors_in_batches_add_up_and_select_sites():
    model = MST.random(TINY, np.random.default_rng(1), dtype=np.float64)
    x = _images(2, 3)
    whole = site_errors(model, x, (2, 5), sites="*attn_if")
    parts = site_errors(model, x, (5, 2), sites="*attn_if", batch_size=2)
    assert whole.sites == ["layers.0.blocks.0.attn.attn_if", "layers.0.blocks.1.attn.attn_if",
                           "layers.1.blocks.0.attn.attn_if"]
    assert parts.timesteps == (2, 5)
    for f in dataclasses.fields(whole):
        if isinstance(getattr(whole, f.name), np.ndarray):
            np.testing.assert_allclose(getattr(parts, f.name), getattr(whole, f.name), rtol=1e-9,
                                       err_msg=f.name)
    with pytest.raises(ValueError, match="timesteps"):
        site_errors(model, x, (0, 4))


# ---------------------------------------------------------------- commutation with the mean over time


def test_commutation_error_by_hand():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    assert commutation_error(lambda x: x @ w + b, rng.standard_normal((5, 2, 3))) < 1e-14
    # softmax of x_1 = (0, 0) and x_2 = (2, 0) vs softmax of their mean (1, 0)
    x = np.array([[0.0, 0.0], [2.0, 0.0]])
    e = np.e
    mean_f = (np.array([0.5, 0.5]) + np.array([e**2, 1]) / (1 + e**2)) / 2
    f_mean = np.array([e, 1]) / (1 + e)
    expected = np.linalg.norm(mean_f - f_mean) / np.linalg.norm(f_mean)
    assert commutation_error(softmax, x) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.05
    # spikes that never coincide: the mean of the products is 0, the product of the means 1/4
    a, b = np.array([1.0, 0.0]).reshape(2, 1, 1), np.array([0.0, 1.0]).reshape(2, 1, 1)
    assert commutation_error(np.matmul, a, b) == 1.0


def test_commutation_check_affine_ops_commute_and_the_others_do_not():
    model = MST.random(TINY, np.random.default_rng(2), dtype=np.float64)
    x = _images(3, 2)
    cc = commutation_check(model, x, 8)
    blocks = ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0"]
    expected = {f"{p}.{op}" for p in blocks for op in ("attn.qkv", "attn.qk", "attn.softmax", "attn.pv",
                                                          "attn.proj", "mlp.fc1", "mlp.fc2")}
    expected |= {"layers.0.blocks.0.norm1", "layers.1.blocks.0.norm1", "norm", "head"}
    assert set(cc) == expected and list(cc)[:3] == ["layers.0.blocks.0.norm1", "layers.0.blocks.0.attn.qkv",
                                                     "layers.0.blocks.0.attn.qk"]
    for op, err in cc.items():
        if op_kind(op) in ("linear", "batch_norm"):
            assert err < 1e-12, op
        else:
            assert err > 1e-3, op
    # the same numbers from recorded spike trains: q k^T from q_if and k_if, softmax of attn_if + bias
    run = model.snn_forward(x, 8, record=["layers.0.blocks.0.attn.*", "layers.0.blocks.0.mlp.fc1_if"],
                            fast=False)
    rec, s = run.records, model.state
    q, k = rec["layers.0.blocks.0.attn.q_if"], rec["layers.0.blocks.0.attn.k_if"]
    qk = commutation_error(np.matmul, q, k.swapaxes(-1, -2))
    assert cc["layers.0.blocks.0.attn.qk"] == pytest.approx(qk)
    bias = relative_position_bias(s["layers.0.blocks.0.attn.relative_position_bias_table"],
                                  s["layers.0.blocks.0.attn.relative_position_index"])
    scores = rec["layers.0.blocks.0.attn.attn_if"] + bias
    assert cc["layers.0.blocks.0.attn.softmax"] == pytest.approx(commutation_error(softmax, scores))
    w, b = s["layers.0.blocks.0.mlp.fc2.weight"], s["layers.0.blocks.0.mlp.fc2.bias"]
    assert commutation_error(lambda y: linear(y, w, b), rec["layers.0.blocks.0.mlp.fc1_if"]) < 1e-12


# ---------------------------------------------------------------- the command line


def test_parse_timesteps():
    # the grammar every command shares (mst_ref.cli.common.parse_timesteps; tested in test_cli_common.py)
    assert parse_timesteps("1,2,4,...,64") == (1, 2, 4, 8, 16, 32, 64)
    assert parse_timesteps("4, 16") == (4, 16)
    for bad in ("...,4", "1,...", "1,...,8", "16,4", "4,4", "1,x", "0,2", ""):
        with pytest.raises(ValueError, match="timesteps"):
            parse_timesteps(bad)


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    config = dataclasses.replace(TINY, qcfs_levels=4)
    model = MST.random(config, np.random.default_rng(0))
    save_npz(tmp_path / "tiny.npz", model.state, dataclasses.asdict(config) | {"mean": [0.5], "std": [0.25]})
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "data.npz", images=rng.integers(0, 256, (7, 8, 8), dtype=np.uint8),
             labels=rng.integers(0, 4, 7))
    return tmp_path


def _analyze(*argv):
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    args = parser.parse_args(["analyze", *map(str, argv)])
    return args.func(args)


def test_cli_analyze_prints_the_site_table_and_writes_the_heat_map(tiny_checkpoint, capsys):
    d = tiny_checkpoint
    assert _analyze(d / "tiny.npz", "--data", d / "data.npz", "--timesteps", "1,2,4,...,8", "--limit", 3,
                    "--batch-size", 3, "--commutation", "--out", d / "out") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("site ") and "T=8" in line)
    assert header.split()[-4:] == ["T=1", "T=2", "T=4", "T=8"]
    row = next(line for line in lines if line.startswith("layers.1.blocks.0.mlp.fc2_if")).split()
    assert len(row) == 6 and all(float(v) >= 0 for v in row[1:])  # lambda, then 4 errors
    assert "error parts at T=8" in out and "QCFS ANN (L=4)" in out and "3 images" in out
    assert any(line.startswith("layers.0.blocks.0.attn.softmax") and "softmax" in line for line in lines)
    assert "3/3 images" in err
    with Image.open(d / "out" / "site_errors_none.png") as im:
        assert im.width > 100 and im.height > 100


def test_cli_analyze_curve_compares_faithful_and_compensated(tiny_checkpoint, capsys):
    d = tiny_checkpoint
    assert _analyze(d / "tiny.npz", "--data", d / "data.npz", "--timesteps", "1,4,16", "--limit", 4,
                    "--curve", "--out", d / "out") == 0
    out = capsys.readouterr().out
    assert "faithful acc" in out and "compensated acc" in out and "ANN with QCFS (L=4)" in out
    rows = {int(line.split()[0]): line.split()[1:] for line in out.splitlines() if line.split()[:1] in
            (["1"], ["4"], ["16"])}
    assert set(rows) == {1, 4, 16}
    assert rows[1][2] == rows[1][3]  # at T = 1 the compensated SNN is the faithful one
    assert float(rows[16][3]) < float(rows[16][2])  # and later closer to the clip ANN
    assert (d / "out" / "accuracy_vs_T.png").is_file()
