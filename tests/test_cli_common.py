"""The grammar and failure path every mst-ref command shares (mst_ref.cli.common, mst_ref.cli.main).

A user never sees a traceback: expected failures are one line ``mst-ref CMD: error: ...`` and exit
status 2, checked before any work starts where they can be; anything unexpected is one line saying it
is a bug and where to report it.
"""

import io

import numpy as np
import pytest

from mst_ref import cli
from mst_ref.cli import common as cli_common
from mst_ref.io.checkpoint import save_npz
from mst_ref.cli.common import UsageError, parse_floats, parse_timesteps
from mst_ref.io.data import sample_path, shipped_file
from mst_ref.models.mst_layout import MSTConfig, random_state_dict

TINY = MSTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=8, depths=(2,), num_heads=(2,),
                 window_size=2, mlp_norm=False, qcfs_levels=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    save_npz(d / "tiny.npz", random_state_dict(TINY, np.random.default_rng(0)), {"img_size": 8})
    np.savez(d / "data.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 0]))
    return d


def main(argv, capsys):
    """Run ``mst-ref ARGV``; return (status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------- --timesteps, one grammar
def test_timesteps_grammar():
    assert parse_timesteps("1,2,4,...,128") == [1, 2, 4, 8, 16, 32, 64, 128]
    assert parse_timesteps("8,16,24,...,40") == [8, 16, 24, 32, 40]
    assert parse_timesteps("1,3,9,...,100") == [1, 3, 9, 27, 81, 100]  # any integer ratio; the last is kept
    assert parse_timesteps("1,2,3,...,5") == [1, 2, 3, 4, 5]
    assert parse_timesteps(" 4, 16 ") == [4, 16]
    assert parse_timesteps("32", single=True) == [32]


@pytest.mark.parametrize("text, message", [
    ("8,4", "must increase"), ("4,4", "must increase"), ("0,2", ">= 1"), ("a,b", "integers separated"),
    ("", "integers separated"), ("1,...,8", "three values before it"), ("1,2,...,8", "three values before it"),
    ("1,2,5,...,20", "neither a constant step"), ("1,2,4,...", "integers separated"),
    ("1,2,4,...,2", "must be at least 4"), ("1,2,4,...,8,...,16", "one last value"),
])
def test_timesteps_grammar_refuses_with_the_reason(text, message):
    with pytest.raises(UsageError, match=message):
        parse_timesteps(text)


def test_single_t_commands_use_the_same_grammar_with_one_value():
    with pytest.raises(UsageError, match=r"runs at one T; give one value, e.g. 32; got '1,2' \(2 values\)"):
        parse_timesteps("1,2", single=True)


def test_floats_say_how_many_values_are_wanted():
    assert parse_floats("0.1,0.2,0.3", "--mean", (1, 3)) == [0.1, 0.2, 0.3]
    with pytest.raises(UsageError, match=r"--mean needs 1 value; got 2"):
        parse_floats("0.1,0.2", "--mean", (1,))
    with pytest.raises(UsageError, match="comma-separated numbers"):
        parse_floats("0.1,x", "--std")


@pytest.mark.parametrize("argv, message", [
    (["energy", "CKPT", "--data", "DATA", "--timesteps", "1,2"], "runs at one T"),
    (["mask-sweep", "CKPT", "--data", "DATA", "--timesteps", "1,2"], "runs at one T"),
    (["eval", "CKPT", "--data", "DATA", "--timesteps", "8,4"], "--timesteps values must increase"),
    (["analyze", "CKPT", "--data", "DATA", "--timesteps", "1,...,8"], "three values before it"),
    (["eval", "CKPT", "--data", "DATA", "--mean", "0.1,0.2"], "--mean needs 1 value; got 2"),
])
def test_every_command_reads_timesteps_and_numbers_alike(tiny, argv, message, capsys):
    argv = [str(tiny / "tiny.npz") if a == "CKPT" else str(tiny / "data.npz") if a == "DATA" else a for a in argv]
    status, _, err = main(argv, capsys)
    assert status == 2 and f"mst-ref {argv[0]}: error:" in err and message in err and "Traceback" not in err


# ---------------------------------------------------------------- output paths, checked before work
def test_unwritable_or_wrong_output_paths_fail_before_any_work(tiny, tmp_path, capsys):
    ckpt, data = tiny / "tiny.npz", tiny / "data.npz"
    status, out, err = main(["eval", ckpt, "--data", data, "--json", tmp_path], capsys)  # a folder
    assert status == 2 and "is a folder; give a file name" in err and out == ""  # nothing ran
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, out, err = main(["eval", ckpt, "--data", data, "--json", blocker / "r.json"], capsys)
    assert status == 2 and "cannot be written" in err and out == ""
    status, out, err = main(["analyze", ckpt, "--data", data, "--out", blocker], capsys)  # an existing file
    assert status == 2 and "is a file, not a folder" in err and out == ""
    status, out, err = main(["demo", "--out", blocker, "--limit", "1"], capsys)
    assert status == 2 and "is a file, not a folder" in err and out == ""


def test_a_directory_given_as_checkpoint_is_named_as_such(tmp_path, capsys):
    for command in (["inspect", tmp_path], ["eval", tmp_path, "--data", sample_path()],
                    ["convert", tmp_path, tmp_path / "x.npz"]):
        status, _, err = main(command, capsys)
        assert status == 2 and f"{tmp_path} is a directory; give a checkpoint file" in err


# ---------------------------------------------------------------- never a traceback
def test_an_unexpected_error_is_one_line_saying_where_to_report(monkeypatch, capsys):
    def broken(args):
        raise KeyError("oops")
    monkeypatch.delenv("MST_REF_DEBUG", raising=False)
    assert cli_common.run_command("demo", broken, None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "report it" in err
    assert "Traceback" not in err
    monkeypatch.setenv("MST_REF_DEBUG", "1")  # for developers: the traceback
    with pytest.raises(KeyError):
        cli_common.run_command("demo", broken, None)


def test_an_error_during_a_progress_bar_starts_on_its_own_line(capsys):
    bar = cli_common.Progress("eval", 10)
    bar.update(3)
    assert cli_common.fail("eval", ValueError("bad\nsecond line")) == 2
    err = capsys.readouterr().err
    assert err.endswith("\nmst-ref eval: error: bad\n")  # one line, after the bar


def test_progress_shows_no_eta_until_it_has_a_rate():
    stream = io.StringIO()
    bar = cli_common.Progress("x", 100, stream=stream)
    bar.update(10)  # the first piece of work includes one-off costs (compiling): no estimate from it
    bar.update(20)
    assert "ETA" not in stream.getvalue()
    bar.update(30)
    assert "ETA" in stream.getvalue().split("\r")[-1]
    bar.close()


def test_compile_note_only_when_the_cache_is_empty(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(cli_common, "kernels_compiled", lambda: False)
    cli_common.note_compiling(stream)
    assert stream.getvalue().startswith("compiling kernels, once")
    monkeypatch.setattr(cli_common, "kernels_compiled", lambda: True)
    stream = io.StringIO()
    cli_common.note_compiling(stream)
    assert stream.getvalue() == ""


def test_shipped_model_without_and_with_class_names(tmp_path):
    loaded = cli_common.load_model(shipped_file("mst_fashion.pth"))
    assert loaded.class_names[9] == "Ankle boot" and loaded.norm_source == "the checkpoint's config"
    save_npz(tmp_path / "tiny.npz", random_state_dict(TINY, np.random.default_rng(0)),
             {"img_size": 8, "class_names": ["a", "b"]})
    with pytest.raises(UsageError, match="lists 2 class_names but the model has 3 classes"):
        cli_common.load_model(tmp_path / "tiny.npz")
