"""The CNNs' named masking configurations, f (the share of SOPs behind the masked sites) and the reconstruction.

- every configuration names sites of its architecture, in forward order, and the per-stage ones
  partition the network;
- f is a count: checked against the SOPs of the masked sites added by hand, 1 for "all", additive over
  disjoint configurations;
- masking the first masked site removes p of its SOPs (nothing upstream changes), within binomial noise;
- the shipped models' reconstructed configuration is the network-wide one whose predicted energy ratio
  1 - f p e comes closest to the poster's P;
- rsm-table / mask-sweep take --cnn-sites, print f and write ``sites`` / ``masked_share``;
- the PyTorch training twin masks exactly the configuration's sites.
"""

import importlib.util
import json
import math

import numpy as np
import pytest

from mst_ref.analysis.rsm_table import closest_to_poster, masked_share, masked_sites
from mst_ref.models.cnn_sites import RECONSTRUCTED, cnn_mask_presets, structural_presets
from mst_ref.models.qcfs_cnn import QCFSCNN, CNNConfig, cnn_site_names
from mst_ref.engine.energy import E_AC_PJ

HAS_TORCH = importlib.util.find_spec("torch") is not None
POSTER_P = {"resnet18": {0.5: 0.70, 0.75: 0.58}, "vgg16": {0.5: 0.77, 0.75: 0.68}}


def tiny(arch, seed=0):
    cfg = CNNConfig.official(arch, in_chans=1, img_size=32, num_classes=10, width=1 / 16)
    return QCFSCNN.random(cfg, np.random.default_rng(seed))


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_every_configuration_names_sites_in_forward_order(arch):
    cfg = tiny(arch).config
    names = cnn_site_names(cfg)
    presets = cnn_mask_presets(cfg)
    for name, sites in presets.items():
        assert sites and set(sites) <= set(names), name
        assert list(sites) == [n for n in names if n in sites], name  # forward order
    assert presets["all"] == presets["published"] == presets["paper"] == tuple(names)
    stages = (["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x"] if arch == "resnet18"
              else ["layer1", "layer2", "layer3", "layer4", "layer5", "classifier"])
    parts = [s for st in stages for s in presets[st]]
    assert sorted(parts) == sorted(names) and len(parts) == len(names)  # the stages partition the sites
    assert RECONSTRUCTED[arch] in structural_presets(cfg)


def test_the_readings_of_each_block():
    res = cnn_mask_presets(tiny("resnet18").config)
    assert res["block-input"] == ("conv1.2", "conv2_x.0.act", "conv2_x.1.act", "conv3_x.0.act", "conv3_x.1.act",
                                  "conv4_x.0.act", "conv4_x.1.act", "conv5_x.0.act")
    assert res["stream"] == res["block-input"] + ("conv5_x.1.act",)
    assert len(res["residual-branch"]) == 8 and all(s.endswith("residual_function.2") for s in res["residual-branch"])
    vgg = cnn_mask_presets(tiny("vgg16").config)
    assert vgg["stage-input"] == ("layer1.6", "layer2.6", "layer3.10", "layer4.10")
    assert vgg["stage-output"] == vgg["stage-input"] + ("layer5.10",)
    assert vgg["stage-first"] == ("layer1.2", "layer2.2", "layer3.2", "layer4.2", "layer5.2")


@pytest.fixture(scope="module")
def unmasked_run():
    model = tiny("resnet18", seed=3)
    x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
    return model, x, model.snn_forward(x, 8)


def test_masked_share_is_the_masked_sites_sops_by_hand(unmasked_run):
    model, _, r = unmasked_run
    by_site = r.sops_by_site
    total = sum(by_site.values())
    assert total > 0
    # f = sum of the masked sites' SOPs / all SOPs, added by hand
    want = sum(by_site[s] for s in cnn_mask_presets(model.config)["block-input"]) / total
    assert masked_share(model, by_site, "block-input") == pytest.approx(want, rel=1e-12)
    assert masked_share(model, by_site, "all") == pytest.approx(1.0)
    parts = ["block-input", "residual-branch", ("conv5_x.1.act",)]
    assert sum(masked_share(model, by_site, p) for p in parts) == pytest.approx(1.0)
    assert masked_sites(model, "conv3_x") == ["conv3_x.0.residual_function.2", "conv3_x.0.act",
                                              "conv3_x.1.residual_function.2", "conv3_x.1.act"]


def test_masking_the_first_site_removes_p_of_its_sops(unmasked_run):
    model, x, r0 = unmasked_run
    p = 0.5
    r = model.snn_forward(x, 8, mask_ratio=p, rng=np.random.default_rng(0), mask_sites="block-input")
    fired = r.fired_by_site["conv1.2"]
    assert fired == r0.spike_counts_by_site["conv1.2"]  # nothing upstream of the first site changes
    kept = r.spike_counts_by_site["conv1.2"]
    # kept ~ Binomial(fired, 1 - p): within 5 standard deviations
    assert abs(kept - (1 - p) * fired) < 5 * math.sqrt(fired * p * (1 - p))
    assert r.sops_by_site["conv1.2"] < r0.sops_by_site["conv1.2"]


def test_closest_to_poster_takes_the_smallest_largest_gap():
    rows = [{"sites": s, "ratio": p, "energy_ratio": e} for s, pe in
            {"a": {0: 1, 0.5: 0.72, 0.75: 0.50}, "b": {0: 1, 0.5: 0.66, 0.75: 0.60}}.items() for p, e in pe.items()]
    # a: gaps 0.02 / 0.08 -> 0.08; b: 0.04 / 0.02 -> 0.04
    best, d = closest_to_poster(rows, {0.5: 0.70, 0.75: 0.58})
    assert best == "b" and d == pytest.approx(0.04)
    assert closest_to_poster(rows, {0.9: 0.5}) == (None, math.inf)


@pytest.mark.parametrize("arch,name", [("resnet18", "resnet18_fashion.pth"), ("vgg16", "vgg16_fashion.pth")])
def test_the_shipped_models_reconstructed_configuration_is_closest_by_f(arch, name):
    """f measured on 20 test images at T = 32 (a count: its ordering of the configurations is stable)."""
    from mst_ref.cli.common import load_model
    from mst_ref.cli.table import _batches
    from mst_ref.io import data

    loaded = load_model(data.shipped_file(name))
    model = loaded.model
    batches, _ = _batches(loaded, data.load_dataset(data.sample_path()), 20, 20)
    x, _ = next(batches())
    r = model.snn_forward(x, 32)
    e = E_AC_PJ * r.sops / r.energy_pj  # the SOPs' share of the energy
    gaps = {}
    for sites in structural_presets(model.config):
        f = masked_share(model, r.sops_by_site, sites)
        # predicted P = 1 - f p e; gap = max over p of |P - poster|
        gaps[sites] = max(abs(1 - f * p * e - want) for p, want in POSTER_P[arch].items())
    assert min(gaps, key=gaps.get) == RECONSTRUCTED[arch]
    assert gaps[RECONSTRUCTED[arch]] < 0.05


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    from mst_ref.io.checkpoint import save_npz

    out = []
    for arch in ("resnet18", "vgg16"):
        model = tiny(arch, seed=2)
        path = tmp_path_factory.mktemp("cnn") / f"tiny_{arch}.npz"
        save_npz(path, model.state, {"img_size": 32, "pad": 2, "mean": [0.286], "std": [0.353], "width": 1 / 16,
                                     "mask_ratio": 0.0})
        out.append(str(path))
    return out


def test_rsm_table_runs_each_configuration_and_writes_f(tiny_checkpoints, tmp_path, capsys):
    from mst_ref.cli import main
    from mst_ref.io.data import sample_path

    args = ["rsm-table", "--data", str(sample_path()), "--checkpoints", ",".join(tiny_checkpoints), "--limit", "3",
            "--timesteps", "2", "--seeds", "1"]
    assert main(args + ["--cnn-sites", "all,block-input", "--cnn-sites", "stage-input",
                        "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    got = [(r["model"], r["sites"]) for r in rows if r["ratio"] == 0]
    assert got == [("ResNet-18", "all"), ("ResNet-18", "block-input"), ("VGG-16", "all"), ("VGG-16", "stage-input")]
    for r in rows:
        assert 0 <= r["masked_share"] <= 1 and r["accuracy_se"] >= 0
        if r["sites"] == "all":
            assert r["masked_share"] == pytest.approx(1.0)
    assert "closest to the poster's P for ResNet-18" in out and "closest to the poster's P for VGG-16" in out
    # default: each family's reconstructed configuration
    assert main(args + ["--json", str(tmp_path / "d.json")]) == 0
    rows = json.loads((tmp_path / "d.json").read_text())["rows"]
    assert {r["sites"] for r in rows} == {"block-input", "stage-input"}
    capsys.readouterr()
    assert main(args + ["--cnn-sites", "every-other"]) == 2
    err = capsys.readouterr().err
    assert "--cnn-sites must name" in err and "block-input" in err and "Traceback" not in err


def test_mask_sweep_prints_f_per_configuration(tiny_checkpoints, capsys):
    from mst_ref.cli import main
    from mst_ref.io.data import sample_path

    assert main(["mask-sweep", tiny_checkpoints[1], "--data", str(sample_path()), "--limit", "3", "--timesteps",
                 "2", "--seeds", "1", "--cnn-sites", "all,stage-input"]) == 0
    out = capsys.readouterr().out
    assert "sites all: f = 1.000" in out and "sites stage-input: f = " in out
    assert main(["mask-sweep", tiny_checkpoints[1], "--data", str(sample_path()), "--limit", "3",
                 "--cnn-sites", "block-input"]) == 2  # a ResNet-18 configuration, not VGG-16's
    assert "--cnn-sites must name" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch (the training twin)")
@pytest.mark.parametrize("arch,name", [("resnet18", "block-input"), ("vgg16", "stage-input")])
def test_training_twin_masks_the_configurations_sites(arch, name):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from reference.qcfs_cnn_torch import IF, CNNConfig as TorchConfig, build
    from reference.train_cnn import restrict_mask_sites

    cfg = TorchConfig(arch=arch, in_chans=1, num_classes=10, width=1 / 16, mask_ratio=0.75, img_size=32)
    model = build(cfg)
    masked = restrict_mask_sites(model, cfg, name)
    want = cnn_mask_presets(tiny(arch).config)[name]
    assert tuple(masked) == want
    ratios = {n: m.mask_ratio for n, m in model.named_modules() if isinstance(m, IF)}
    assert {n for n, p in ratios.items() if p > 0} == set(want) and all(ratios[n] == 0.75 for n in want)


def test_a_masked_model_is_compared_with_its_familys_unmasked_model():
    from mst_ref.cli.table import add_unmasked_reference

    rows = [{"model": "VGG-16", "trained_ratio": 0.0, "ratio": 0.0, "energy_pj": 10.0, "accuracy": 90.0},
            {"model": "VGG-16", "trained_ratio": 0.75, "ratio": 0.75, "energy_pj": 6.0, "accuracy": 85.5},
            {"model": "MST", "trained_ratio": 0.75, "ratio": 0.75, "energy_pj": 6.0, "accuracy": 85.5}]
    add_unmasked_reference(rows)
    assert rows[1]["energy_vs_unmasked_model"] == pytest.approx(0.6)
    assert rows[1]["accuracy_vs_unmasked_model"] == pytest.approx(-4.5)
    assert "energy_vs_unmasked_model" not in rows[0] and "energy_vs_unmasked_model" not in rows[2]
