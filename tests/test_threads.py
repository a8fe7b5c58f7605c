"""Thread control (mst_ref.threads): BLAS and Numba thread counts set and restored at run time, the default
policy, and the fused path's choice of kernel threads. Speed is measured in benchmarks/bench_threads.py."""

import numba
import numpy as np
import pytest

from mst_ref import threads
from mst_ref.models.mst import MST, MSTConfig


def test_limit_threads_sets_and_restores_blas_and_numba():
    blas0, numba0 = threads.blas_threads(), numba.get_num_threads()
    with threads.limit_threads(1) as n:
        assert n == 1
        assert threads.blas_threads() == 1
        assert numba.get_num_threads() == 1
        assert threads.kernel_threads() == 1
    assert (threads.blas_threads(), numba.get_num_threads()) == (blas0, numba0)


def test_limit_threads_above_numba_pool_caps_numba_and_keeps_blas_at_one():
    big = numba.config.NUMBA_NUM_THREADS + 1
    with threads.limit_threads(big):
        assert threads.blas_threads() == 1
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        assert threads.kernel_threads() == numba.config.NUMBA_NUM_THREADS


def test_limit_threads_with_blas_threads_keeps_kernels_on_one():
    with threads.limit_threads(2, blas=None):
        assert threads.blas_threads() == 2
        # BLAS may spin on the other cores: the fused kernels keep to one thread
        assert threads.kernel_threads() == 1
    with threads.limit_threads(1, blas=3):
        assert threads.blas_threads() == 3


def test_limit_threads_restores_after_an_error():
    blas0, numba0 = threads.blas_threads(), numba.get_num_threads()
    with pytest.raises(RuntimeError):
        with threads.limit_threads(1):
            raise RuntimeError("inside")
    assert (threads.blas_threads(), numba.get_num_threads()) == (blas0, numba0)


def test_default_is_one_thread_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("MST_REF_THREADS", raising=False)
    assert threads.default_threads() == 1
    with threads.limit_threads():
        assert threads.blas_threads() == 1  # BLAS stays on one thread: its workers spin
    monkeypatch.setenv("MST_REF_THREADS", "3")
    assert threads.default_threads() == 3
    with threads.limit_threads():
        assert numba.get_num_threads() == min(3, numba.config.NUMBA_NUM_THREADS)
        assert threads.blas_threads() == 1
    monkeypatch.setenv("MST_REF_THREADS", "two")
    with pytest.raises(ValueError, match="MST_REF_THREADS"):
        threads.default_threads()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_limit_threads_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        with threads.limit_threads(bad):
            pass


@pytest.mark.parametrize("split", [False, True])
def test_fast_path_gives_the_same_logits_on_any_thread_count(split, monkeypatch):
    from mst_ref.models import mst_fast

    if split:  # row-split every product over the threads, however small
        monkeypatch.setattr(mst_fast, "_SPLIT_ROWS", 1)
        monkeypatch.setattr(mst_fast, "_SPLIT_WORK", 0)
    config = MSTConfig(img_size=16, patch_size=2, in_chans=1, num_classes=4, embed_dim=12, depths=(2,),
                       num_heads=(2,), window_size=4)
    model = MST.random(config, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 1, 16, 16)).astype(np.float32)
    results = []
    for n, blas in ((1, 1), (2, 1), (2, 2)):
        with threads.limit_threads(n, blas=blas):
            results.append(model.snn_forward(x, 4, mask_ratio=0.5, rng=np.random.default_rng(2)).cumulative_logits)
            sim = model.step_simulator(x, mask_ratio=0.5, rng=np.random.default_rng(2))
            for _ in range(4):
                sim.step()
            # step by step == multi-step, on every thread count
            np.testing.assert_array_equal(sim.result().cumulative_logits, results[-1])
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_every_long_command_has_the_threads_option():
    from mst_ref.cli import app as cli

    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict))
    present = [name for name in cli.LONG_COMMANDS if name in sub.choices]
    assert {"demo", "eval", "energy", "mask-sweep", "analyze"} <= set(present)
    for name in present:
        assert any("--threads" in a.option_strings for a in sub.choices[name]._actions), name


@pytest.mark.parametrize("argv, want", [(["run", "--threads", "1"], 1), (["run"], None), (["run", "--threads", "2"], 2)])
def test_threads_option_runs_the_command_inside_the_limit(argv, want, monkeypatch):
    import argparse

    from mst_ref.cli import app as cli

    monkeypatch.delenv("MST_REF_THREADS", raising=False)
    monkeypatch.setattr(cli, "LONG_COMMANDS", ("run",))
    seen = []
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    sub.add_parser("run").set_defaults(func=lambda args: seen.append(numba.get_num_threads()) or 0)
    cli._add_threads_option(sub)
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    want = threads.default_threads() if want is None else want
    assert seen == [min(want, numba.config.NUMBA_NUM_THREADS)]
    with pytest.raises(SystemExit):  # argparse rejects 0
        parser.parse_args(["run", "--threads", "0"])
