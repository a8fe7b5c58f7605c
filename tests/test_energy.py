"""Tests of mst_ref.engine.energy (SOPs, MACs, energy), the product counter, ratio_search and cli_energy."""

import argparse

import numpy as np
import pytest

from mst_ref.engine import energy
from mst_ref.io.checkpoint import save_npz
from mst_ref.cli.energy import add_energy_parser, add_mask_sweep_parser
from mst_ref.io.data import prepare_images
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.engine.monitors import nonzero_pairs
from mst_ref.analysis.ratio_search import evaluate_ratios, search_block_ratios
from mst_ref.engine.mask_streams import ImageSeeds
from mst_ref.engine.simulate import SNNResult

# one block, one 2 x 2 window of 4 tokens, 4 channels in 2 heads
TINY = MSTConfig(img_size=4, patch_size=2, in_chans=1, num_classes=3, embed_dim=4, depths=(1,),
                 num_heads=(2,), window_size=2)
# two stages, a shifted block and a patch merging
SMALL = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=8, depths=(2, 1),
                  num_heads=(2, 2), window_size=2)


def _images(n, size, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 1, size, size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return MST.random(TINY, np.random.default_rng(0))


@pytest.fixture(scope="module")
def small():
    return MST.random(SMALL, np.random.default_rng(0))


# ---------------------------------------------------------------- the product counter


def test_nonzero_pairs_by_hand():
    a = np.array([[[1, 0, 1], [1, 1, 0]]], float)  # (T=1, n=2, k=3)
    b = np.array([[[1, 1], [0, 1], [1, 0]]], float)  # (T=1, k=3, m=2)
    # k=0: 2 rows of a x 2 columns of b; k=1: 1 x 1; k=2: 1 x 1
    assert nonzero_pairs(a, b).tolist() == [6]
    # the same as brute force over (i, j, k)
    brute = sum(a[0, i, k] != 0 and b[0, k, j] != 0 for i in range(2) for j in range(2) for k in range(3))
    assert brute == 6
    # a subnormal weight (softmax across the shift mask: exp(-100)) is a zero: flush-to-zero
    a32 = a.astype(np.float32)
    a32[0, 0, 0] = np.exp(np.float32(-100))
    assert 0 < a32[0, 0, 0] < np.finfo(np.float32).tiny
    assert nonzero_pairs(a32, b.astype(np.float32)).tolist() == [6 - 2]


def test_nonzero_pairs_of_binary_q_k_counts_triples_where_both_spike():
    rng = np.random.default_rng(3)
    q = (rng.random((5, 2, 3, 4, 6)) < 0.3) * 0.7  # (T, B, nH, N, hd), spikes 0 / lambda
    k = (rng.random((5, 2, 3, 4, 6)) < 0.5) * 1.1
    # (query, key, d) triples where both spike
    want = np.einsum("tbhid,tbhjd->t", (q != 0).astype(int), (k != 0).astype(int))  # (T,)
    np.testing.assert_array_equal(nonzero_pairs(q, k.swapaxes(-1, -2)), want)


# ---------------------------------------------------------------- SOPs from a run vs spike trains


def test_sops_by_hand_from_recorded_spike_trains(tiny):
    T, B = 5, 3
    r = tiny.snn_forward(_images(B, 4), T, record="all")
    rec = r.records
    C, hidden, N = 4, 16, 4  # channels, MLP width, tokens per window
    b = "layers.0.blocks.0"

    def spikes(site):
        return int(np.count_nonzero(rec[site]))

    want = {"patch_embed.proj_if": 2 * spikes("patch_embed.proj_if"),  # norm1 (spike-driven BN) + residual
            f"{b}.shortcut1_if": 3 * C * spikes(f"{b}.shortcut1_if"),  # qkv
            f"{b}.attn.q_if": 0, f"{b}.attn.k_if": 0,
            f"{b}.attn.qk": int(np.einsum("tbwhid,tbwhjd->", (rec[f"{b}.attn.q_if"] != 0).astype(int),
                                           (rec[f"{b}.attn.k_if"] != 0).astype(int))),
            f"{b}.attn.attn_if": spikes(f"{b}.attn.attn_if"),  # + bias
            f"{b}.attn.v_if": 0,
            f"{b}.attn.pv": N * spikes(f"{b}.attn.v_if"),  # softmax has no zeros here: N queries per v spike
            f"{b}.attn.attn_v_if": C * spikes(f"{b}.attn.attn_v_if"),  # proj
            f"{b}.attn.proj_if": spikes(f"{b}.attn.proj_if"),  # residual add
            f"{b}.shortcut2_if": hidden * spikes(f"{b}.shortcut2_if"),  # fc1
            f"{b}.mlp.fc1_if": C * spikes(f"{b}.mlp.fc1_if"),  # fc2
            f"{b}.mlp.fc2_if": spikes(f"{b}.mlp.fc2_if")}  # residual add
    assert r.sops_by_site == want  # same keys, same order, same counts
    assert r.sops == sum(want.values()) > 0
    # analog MACs: the conv once (4 tokens x 4 ch x 1 x 2 x 2 = 64), then per step softmax 3 x 2 x 4 x 4,
    # norm2 4 x 4, LayerNorm 5 x 4 x 4, head 4 x 4 + 4 x 3
    assert r.macs == B * (64 + T * (96 + 16 + 80 + 28))
    assert r.energy_pj == pytest.approx(0.9 * r.sops + 4.6 * r.macs)


def test_dense_counts_of_the_tiny_ann_by_hand():
    neurons = energy.site_neurons(TINY)
    assert neurons["layers.0.blocks.0.attn.attn_if"] == 2 * 4 * 4  # nH x N x N
    assert neurons["layers.0.blocks.0.mlp.fc1_if"] == 4 * 16  # tokens x hidden
    # conv 64 + analog 220 + neurons x fan-out 864 + dense products 2 x (4 tokens x 4 keys x 4 ch)
    assert energy.ann_macs(TINY) == 64 + 220 + 864 + 128


def test_site_neurons_match_the_model_and_counts_do_not_depend_on_chunking(small):
    x = _images(2, 8)
    r1 = small.snn_forward(x, 3, mask_ratio=0.5, rng=np.random.default_rng(5), chunk=3)
    r2 = small.snn_forward(x, 3, mask_ratio=0.5, rng=np.random.default_rng(5), chunk=1)
    assert energy.site_neurons(SMALL) == r1.neurons_by_site
    assert r1.sops_by_site == r2.sops_by_site and r1.macs == r2.macs
    # every site and product is listed, products right after the site completing their operands
    names = list(r1.sops_by_site)
    assert len(names) == len(small.site_names) + len(energy.product_names(SMALL))
    assert names.index("layers.0.blocks.1.attn.qk") == names.index("layers.0.blocks.1.attn.k_if") + 1


def test_fused_kernels_count_the_same_sops_as_the_readable_path():
    model = MST.random(SMALL, np.random.default_rng(0), dtype=np.float64)
    x = _images(2, 8).astype(np.float64)
    fast, readable = (model.snn_forward(x, 3, mask_ratio=0.5, rng=np.random.default_rng(3), fast=f)
                      for f in (True, False))
    assert fast.sops_by_site == readable.sops_by_site
    assert fast.product_pairs_per_step.keys() == set(energy.product_names(SMALL))


def test_masked_sites_cause_fewer_sops_as_p_rises(small):
    x = _images(2, 8)

    def mean_sops(p, sites):
        seeds = 1 if p in (0, 1) else 2  # p = 0 and p = 1 draw nothing random
        runs = [small.snn_forward(x, 4, mask_ratio=p, rng=np.random.default_rng(s), mask_sites=sites)
                for s in range(seeds)]
        fed = [sum(v for k, v in r.sops_by_site.items() if k.endswith(("attn.qk", "attn_if"))) for r in runs]
        return np.mean([r.sops for r in runs]), np.mean(fed)

    ps = (0.0, 0.5, 0.75, 1.0)
    paper = [mean_sops(p, "paper")[0] for p in ps]
    published = [mean_sops(p, "published") for p in ps]
    assert all(a > b for a, b in zip(paper, paper[1:]))
    assert all(a[1] > b[1] for a, b in zip(published, published[1:]))  # what the masked spikes feed
    assert published[-1][1] == 0  # p = 1: no q, k or attention spikes reach anything
    assert all(a[0] >= b[0] for a, b in zip(published, published[1:]))


def test_energy_formula_and_bad_constants():
    assert energy.energy_pj(10, 2) == pytest.approx(0.9 * 10 + 4.6 * 2)
    assert energy.energy_pj(10, 2, e_ac=1.0, e_mac=2.0) == 14.0
    with pytest.raises(ValueError, match="pJ"):
        energy.energy_pj(1, 1, e_ac=-1)


def test_result_without_config_says_what_is_missing():
    r = SNNResult(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)))
    with pytest.raises(ValueError, match="config"):
        r.sops


@pytest.mark.parametrize("ratio", [-0.1, 1.5, {"layers.0.blocks.0": 2.0}, {"layers.9.*": 0.5}])
def test_bad_ratio_or_unknown_site_pattern_is_a_value_error(tiny, ratio):
    with pytest.raises(ValueError):
        evaluate_ratios(tiny, _images(2, 4), np.zeros(2, int), 2, ratio, seed=0)


# ---------------------------------------------------------------- ratio search


def test_layerwise_search_is_deterministic_and_beats_or_ties_the_global_ratio(small):
    x, y = _images(6, 8, seed=2), np.arange(6) % 3
    kw = dict(candidates=(0.5, 1.0), tolerance=0.2)
    a = search_block_ratios(small, x, y, 3, np.random.default_rng(0), **kw)
    b = search_block_ratios(small, x, y, 3, np.random.default_rng(0), **kw)
    assert a == b
    assert set(a.ratios) == {"layers.0.blocks.0.*", "layers.0.blocks.1.*", "layers.1.blocks.0.*"}
    assert a.accuracy >= a.baseline_accuracy - 0.2 and a.global_accuracy >= a.baseline_accuracy - 0.2
    assert all(p >= a.global_ratio for p in a.ratios.values())
    assert a.sops_per_image <= a.global_sops_per_image <= a.baseline_sops_per_image
    assert a.trials[0][0] == 0.0 and len(a.trials) <= 1 + 2 + 3 * 2
    with pytest.raises(ValueError, match="candidate"):
        search_block_ratios(small, x, y, 3, np.random.default_rng(0), candidates=(1.5,))


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def files(tmp_path_factory, small):
    d = tmp_path_factory.mktemp("energy")
    config = {"img_size": 8, "mean": [0.5], "std": [0.25], "mask_ratio": 0.5, "qcfs_levels": 16}
    save_npz(d / "tiny.npz", small.state, config)
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    np.savez(d / "data.npz", images=images, labels=np.arange(12) % 3)
    return d / "tiny.npz", d / "data.npz"


def _parse(argv):
    parser = argparse.ArgumentParser(prog="mst-ref")
    sub = parser.add_subparsers(dest="command", required=True)
    add_mask_sweep_parser(sub)
    add_energy_parser(sub)
    return parser.parse_args([str(a) for a in argv])


def test_mask_sweep_prints_the_table(files, capsys):
    ckpt, data = files
    args = _parse(["mask-sweep", ckpt, "--data", data, "--ratios", "0.5,1", "--timesteps", 2, "--seeds", 2,
                   "--limit", 4, "--layerwise", "--val-limit", 4, "--search-timesteps", 2,
                   "--candidates", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in out.out.splitlines() if line.split()
            and line.split()[0] in ("0", "0.5", "1", "layer-wise")}
    assert set(rows) == {"0", "0.5", "1", "layer-wise"}  # p = 0 added as the reference
    assert rows["0"][2] == "x1.000" and rows["0"][5] == "x1.000"
    assert float(rows["1"][2][1:]) < float(rows["0.5"][2][1:]) < 1  # SOPs vs p = 0
    assert "layers.1.blocks.0.*" in out.out and "[" in out.err  # the map; a progress bar on stderr


def test_energy_command_breaks_down_the_run(files, capsys, small):
    ckpt, data = files
    args = _parse(["energy", ckpt, "--data", data, "--timesteps", 3, "--limit", 5, "--seed", 7])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    # the same run by hand: trained ratio 0.5 (from the checkpoint), first 5 images, one batch
    images = np.load(data)["images"][:5]
    r = small.snn_forward(prepare_images(images, 8, 1, [0.5], [0.25]), 3, mask_ratio=0.5,
                          rng=ImageSeeds(7, tuple(range(5))))  # each image's masks from (seed, index)
    assert f"SOPs {r.sops / 5:.4g}" in out and f"ANN  MACs {energy.ann_macs(SMALL):.4g}" in out
    for name in r.sops_by_site:
        assert name in out
    assert "p=0.5" in out and "layers.0.downsample.reduction" in out


@pytest.mark.parametrize("argv, match", [
    (["mask-sweep", "--ratios", "0,1.5"], r"\[0, 1\]"),
    (["mask-sweep", "--ratios", "0,a"], "comma-separated"),
    (["energy", "--mask-ratio", "-0.5"], r"\[0, 1\]"),
    (["energy", "--timesteps", "0"], "timesteps"),
])
def test_cli_bad_input_is_a_value_error(files, argv, match):
    ckpt, data = files
    args = _parse([argv[0], ckpt, "--data", data, *argv[1:]])
    with pytest.raises(ValueError, match=match):
        args.func(args)
