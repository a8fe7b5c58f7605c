"""Sharded evaluation (mst_ref.distributed): identical to one process, per-image masks, faults, resume.

Small on purpose: the shipped Fashion-MNIST MST on a handful of the shipped test images at T <= 4.
Dask tests need the extra (pip install -e ".[test,distributed]") and are skipped without it.
"""

import json
import os
import signal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mst_ref import distributed as dist
from mst_ref.cli import main
from mst_ref.cli.common import load_model
from mst_ref.engine.mask_streams import ImageSeeds
from mst_ref.io import data

CKPT, SAMPLE = data.shipped_file("mst_fashion.pth"), data.sample_path()
N, B, TS = 12, 2, (1, 2, 4)

try:
    import distributed as _dask_distributed  # noqa: F401
    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="Dask is an optional extra: pip install 'mst_ref[distributed]'")


@pytest.fixture(scope="module")
def loaded():
    return load_model(CKPT)


def make_spec(loaded, **kw):
    base = dict(checkpoint=str(CKPT), data=str(SAMPLE), mean=tuple(loaded.mean), std=tuple(loaded.std),
                timesteps=TS, mask_ratio=0.5, seed=7, batch_size=B)
    return dist.EvalSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def reference(loaded):
    """The one-process result: the core over one shard of all N images."""
    spec = make_spec(loaded)
    return dist.merge([dist.evaluate_shard(spec, 0, N)], N, TS)


def run(spec, size, backend, **kw):
    results, report = dist.run_shards(spec, dist.shard_ranges(N, size), backend, **kw)
    return dist.merge(results, N, spec.timesteps), report


# ---------------------------------------------------------------- per-image masks
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 5), k=st.integers(1, 3), T=st.integers(1, 3),
       rest=st.lists(st.integers(1, 4), max_size=2), stream=st.sampled_from(["ann", "snn"]))
def test_mask_uniforms_are_each_images_own_draws(seed, n, k, T, rest, stream):
    """Image i's rows are np.random.default_rng(SeedSequence([seed, stream, i, site])).random of its own
    block, in C order (time first in the SNN): the definition the module states, which the masking
    table's figures were drawn with."""
    site, indices = 2, tuple(range(7, 7 + n))
    lead = () if stream == "ann" else (T,)
    u = ImageSeeds(seed, indices, stream).streams(site).random(lead + (n * k, *rest))  # (..., n k, ...)
    ax = len(lead)
    for b, i in enumerate(indices):
        g = np.random.default_rng(np.random.SeedSequence([seed, 0 if stream == "ann" else 1, i, site]))
        own = np.take(u, range(b * k, (b + 1) * k), axis=ax)  # (..., k, ...) image b's rows
        np.testing.assert_array_equal(own, g.random(lead + (k, *rest)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       k=st.integers(1, 3), T=st.integers(1, 3))
def test_mask_uniforms_do_not_depend_on_the_batch(seed, cuts, k, T):
    """Whatever the batches cut from images 0..n-1, each image gets the same uniforms, time chunks too."""
    n = sum(cuts)
    whole = ImageSeeds(seed, tuple(range(n))).streams(3)
    u = np.concatenate([whole.random((1, n * k, 5)) for _ in range(T)])  # (T, n k, 5) step by step
    parts, a = [], 0
    for c in cuts:
        parts.append(ImageSeeds(seed, tuple(range(a, a + c))).streams(3).random((T, c * k, 5)))  # one chunk
        a += c
    np.testing.assert_array_equal(u, np.concatenate(parts, axis=1))
    other = ImageSeeds(seed, tuple(range(n))).streams(4).random((1, n * k, 5))  # another site: other masks
    assert not np.array_equal(u[:1], other)


def test_masked_ann_of_an_image_does_not_depend_on_its_batch(loaded):
    """The model's site outputs keep images outermost, so per-image masks land on the right image."""
    m, c = loaded.model, loaded.model.config
    x = data.prepare_images(data.load_dataset(SAMPLE).images[:4], c.img_size, c.in_chans, loaded.mean, loaded.std)
    together = m.ann_forward(x, mask_ratio=0.5, rng=ImageSeeds(1, (0, 1, 2, 3), "ann"))  # (4, K)
    alone = np.concatenate([m.ann_forward(x[i:i + 1], mask_ratio=0.5, rng=ImageSeeds(1, (i,), "ann"))
                            for i in range(4)])  # (4, K)
    np.testing.assert_allclose(alone, together, atol=1e-5)  # float rounding only (batch shape)
    shuffled = m.ann_forward(x[:1], mask_ratio=0.5, rng=ImageSeeds(1, (3,), "ann"))  # image 0 with 3's masks
    assert np.abs(shuffled - together[:1]).max() > 1e-3


# ---------------------------------------------------------------- identical to one process
@settings(max_examples=4, deadline=None)
@given(size=st.sampled_from([2, 4, 6, 10]))
def test_inline_shards_equal_one_shard(loaded, reference, size):
    merged, report = run(make_spec(loaded), size, dist.InlineBackend())
    assert merged == reference
    assert len(report.computed) == -(-N // size)


def test_shard_size_must_keep_the_batch_grid():
    with pytest.raises(ValueError, match="multiple of the batch size 2"):
        dist.check_shards(N, 3, 2)


def test_eval_json_same_with_workers_and_shard_sizes(tmp_path, capsys):
    """`mst-ref eval` in one process and in 2 processes (6 shards): equal JSON (other sizes: inline, Dask)."""
    common = [str(CKPT), "--data", str(SAMPLE), "--limit", str(N), "--timesteps", "1,2,4", "--batch-size", "2",
              "--mask-ratio", "0.5", "--seed", "3"]
    outs = []
    for k, extra in enumerate([[], ["--workers", "2", "--shard-size", "2"]]):
        out = tmp_path / f"r{k}.json"
        assert main(["eval", *common, "--json", str(out), *extra]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1]
    assert outs[0]["n"] == N and 0 < outs[0]["spikes_per_image"]
    err = capsys.readouterr().err
    assert "6 shard(s) of up to 2 images on 2 local processes" in err


# ---------------------------------------------------------------- faults
def test_killed_worker_reruns_its_shard(loaded, reference):
    """SIGKILL the busy worker when the first shard is done: the other one reruns elsewhere, same result."""
    backend, killed, first, events = dist.ProcessBackend(2), [], [], []

    def kill_one(result):  # usually (0, 2) finishes first, but a slow worker start can reverse the order
        if not killed:
            first.append((result["start"], result["stop"]))
            killed.extend(backend.busy_pids())
            os.kill(killed[0], signal.SIGKILL)

    ranges = [(0, 2), (2, N)]
    results, report = dist.run_shards(make_spec(loaded), ranges, backend, on_shard=kill_one,
                                      on_event=events.append)
    (other,) = [r for r in ranges if r != first[0]]
    assert len(killed) == 1 and dist.merge(results, N, TS) == reference
    assert [r[:2] for r in report.lost] == [other] and report.computed == [first[0], other]
    assert events == [f"a worker died while evaluating images {other[0]}-{other[1] - 1} (BrokenProcessPool); "
                      "that shard is rerun on a fresh worker"]


def test_corrupt_data_stops_the_run_with_one_line(loaded, tmp_path):
    """A dataset file that workers cannot read: ShardError naming the images, raised, not hung."""
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    spec = make_spec(loaded, data=str(bad))
    with pytest.raises(dist.ShardError) as info:
        dist.run_shards(spec, dist.shard_ranges(N, 4), dist.ProcessBackend(2))
    text = str(info.value)
    assert text.startswith("images 0-3: ") or text.startswith("images 4-7: ")
    assert "\n" not in text and "broken.npz" in text


def test_changed_checkpoint_is_refused(loaded, tmp_path):
    spec = make_spec(loaded, checkpoint_sha256="0" * 64)
    with pytest.raises(dist.ShardError, match="differs from the one the run started with"):
        dist.run_shards(spec, [(0, 2)], dist.InlineBackend())


# ---------------------------------------------------------------- resume
def test_resumed_run_reads_finished_shards(tmp_path, capsys):
    """--cache: a rerun computes nothing; a lost or corrupt shard file is recomputed; JSON unchanged."""
    cache = tmp_path / "cache"
    argv = ["eval", str(CKPT), "--data", str(SAMPLE), "--limit", "8", "--timesteps", "1,2", "--batch-size", "2",
            "--mask-ratio", "0.5", "--shard-size", "2", "--cache", str(cache)]
    jsons = []
    for k in range(3):
        out = tmp_path / f"r{k}.json"
        assert main(argv + ["--json", str(out)]) == 0
        jsons.append(json.loads(out.read_text()))
        err = capsys.readouterr().err
        files = sorted(cache.glob("*/images_*.json"))
        if k == 0:
            assert "4 shard(s) computed; 0 read from the cache" in err and len(files) == 4
            files[0].unlink()  # a run stopped before this shard
            files[1].write_text('{"start": 2, "sto')  # a torn write (cannot happen with os.replace; a disk fault)
        elif k == 1:
            assert "2 shard(s) computed; 2 read from the cache; 1 unreadable cache file(s) recomputed" in err
        else:
            assert "0 shard(s) computed; 4 read from the cache" in err
    assert jsons[0] == jsons[1] == jsons[2]
    # another option (the seed) is another run: a new cache folder, nothing reused
    assert main(argv + ["--seed", "1"]) == 0
    assert "4 shard(s) computed; 0 read from the cache" in capsys.readouterr().err
    assert len(list(cache.iterdir())) == 2 and all((d / "run.json").exists() for d in cache.iterdir())


def test_bad_options_are_one_line(capsys):
    base = ["eval", str(CKPT), "--data", str(SAMPLE), "--limit", "4", "--timesteps", "1", "--batch-size", "2"]
    assert main(base + ["--shard-size", "3"]) == 2
    assert "must be a positive multiple of the batch size 2" in capsys.readouterr().err
    assert main(base + ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "exclude each other" in capsys.readouterr().err


# ---------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@needs_dask
def test_dask_cluster_equals_one_process(loaded, reference, dask_client):
    for size in (6,):
        merged, report = run(make_spec(loaded), size, dist.DaskBackend(client=dask_client))
        assert merged == reference and len(report.computed) == -(-N // size)


@needs_dask
def test_dask_error_is_one_line(loaded, tmp_path, dask_client):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(dist.ShardError, match=r"^images \d+-\d+: .*broken.npz"):
        run(make_spec(loaded, data=str(bad)), 4, dist.DaskBackend(client=dask_client))


@needs_dask
def test_eval_scheduler_option(tmp_path, dask_client, capsys):
    out = [tmp_path / "a.json", tmp_path / "b.json"]
    argv = ["eval", str(CKPT), "--data", str(SAMPLE), "--limit", "6", "--timesteps", "1,2", "--batch-size", "2"]
    assert main(argv + ["--json", str(out[0])]) == 0
    assert main(argv + ["--json", str(out[1]), "--scheduler", dask_client.scheduler.address]) == 0
    assert json.loads(out[0].read_text()) == json.loads(out[1].read_text())
    assert "on Dask at tcp://" in capsys.readouterr().err


@needs_dask
def test_unreachable_scheduler_is_one_error():
    with pytest.raises(ValueError, match="could not reach a Dask scheduler at tcp://127.0.0.1:9"):
        dist.DaskBackend("tcp://127.0.0.1:9", timeout="1s")


def test_energy_table_same_in_shards(capsys):
    """`mst-ref energy` (the RSM model, p = 0.75) in one piece and in three shards: the same table."""
    argv = ["energy", str(data.shipped_file("mst_fashion_rsm75.pth")), "--limit", "6", "--timesteps", "2",
            "--batch-size", "2"]
    tables = []
    for extra in ([], ["--shard-size", "2"]):
        assert main(argv + extra) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and "SOPs (per image" in tables[0]


def test_mask_sweep_table_same_in_shards(capsys):
    """`mst-ref mask-sweep` (p = 0 and 0.75, two seeds) in one process and in shards: the same table."""
    argv = ["mask-sweep", str(data.shipped_file("mst_fashion_rsm75.pth")), "--limit", "4", "--timesteps", "2",
            "--batch-size", "2", "--ratios", "0,0.75", "--seeds", "2"]
    tables = []
    for extra in ([], ["--shard-size", "2"]):
        assert main(argv + extra) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and "0.75" in tables[0]


def test_rsm_table_same_in_shards_and_as_the_library(tmp_path, capsys):
    """`mst-ref rsm-table` (MST and a CNN, p = 0 / 0.75, two seeds) in one process, in 2 processes with
    shards of 2 images, and with another batch size: equal JSON rows; equal to the library's
    measure_ratios over the same images; a rerun with --cache computes nothing."""
    from mst_ref.analysis.rsm_table import RowSpec, measure_ratios, table_rows
    from mst_ref.cli.table import _batches

    ckpts = [str(data.shipped_file("mst_fashion_rsm75_paper.pth")), str(data.shipped_file("vgg16_fashion.pth"))]
    argv = ["rsm-table", "--data", str(SAMPLE), "--checkpoints", ",".join(ckpts), "--limit", "4",
            "--timesteps", "2", "--ratios", "0,0.75", "--seeds", "2"]
    runs = {"one process": ["--batch-size", "2"], "workers": ["--batch-size", "2", "--workers", "2", "--shard-size", "2"],
            "batch 4": ["--batch-size", "4"], "cached": ["--batch-size", "2", "--shard-size", "2", "--cache", str(tmp_path / "c")],
            "resumed": ["--batch-size", "2", "--shard-size", "2", "--cache", str(tmp_path / "c")]}
    rows = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.json"
        assert main(argv + extra + ["--json", str(out)]) == 0
        rows[name] = json.loads(out.read_text())["rows"]
        err = capsys.readouterr().err
    assert "0 shard(s) computed; 2 read from the cache" in err  # the resumed run: every shard from the cache
    for name in runs:
        assert rows[name] == rows["one process"], name
    assert [(r["model"], r["ratio"]) for r in rows["one process"]] == [("MST", 0), ("MST", 0.75), ("VGG-16", 0),
                                                                      ("VGG-16", 0.75)]
    masked = rows["one process"][1]
    assert masked["delivered"] < masked["fired"] and masked["seeds"] == 2
    # the library, in this process, batch by batch
    dataset = data.load_dataset(SAMPLE)
    loaded = load_model(ckpts[0])
    spec = RowSpec("MST", loaded.model, 0.75, loaded.model.trained_mask_sites, loaded.model.trained_mask_rescale)
    batches, _ = _batches(loaded, dataset, 4, 2)
    lib = table_rows(spec, measure_ratios(spec, batches, 2, [0.0, 0.75], 2))
    for got, want in zip(lib, rows["one process"][:2]):
        assert got["accuracy"] == want["accuracy"] and got["fired"] == pytest.approx(want["fired"])
        assert got["sops"] == pytest.approx(want["sops"]) and got["energy_pj"] == pytest.approx(want["energy_pj"])
