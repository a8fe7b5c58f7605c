"""The tutorials run end to end: every tutorials/*.py exits 0 and writes the pictures it promises.

Each tutorial is run as a script, ``python tutorials/NN_....py``, in a subprocess whose working
directory is a fresh temporary folder (so they must not depend on the cwd) with
``MST_TUTORIAL_OUT`` pointing at another one. A tutorial asserts its own numeric claims, so a nonzero
exit is a failed claim (or a broken API) and fails the build.

The pictures a tutorial must write are the ``"NN_name.png"`` string literals in its source, plus the
ones listed in ``EXPECTED_PNGS``; each must exist and be non-blank, and so must every other PNG it
wrote. New tutorials are picked up automatically.

Run these alone with ``pytest -m tutorials``, or skip them with ``-m "not tutorials"``. The time limit
per tutorial is ``MST_TUTORIAL_TIMEOUT`` seconds (default 300).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.tutorials

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9]*.py"))
TIMEOUT = float(os.environ.get("MST_TUTORIAL_TIMEOUT", "300"))

# pictures a tutorial must write, beyond the "*.png" literals found in its source
EXPECTED_PNGS = {
    "01_if_neuron_and_qcfs.py": {"01_membrane_traces.png", "01_spike_raster.png", "01_rate_vs_input.png"},
    "02_converting_layers.py": {"02_error_vs_T.png"},
    "03_spiking_attention.py": {"03_convergence_random_mst.png", "03_accuracy_vs_T_shipped.png"},
}
_PNG_LITERAL = re.compile(r"""["']([\w.\-]+\.png)["']""")


def expected_pngs(path):
    """File names of the PNGs tutorial ``path`` must write."""
    return EXPECTED_PNGS.get(path.name, set()) | set(_PNG_LITERAL.findall(path.read_text()))


def run_tutorial(path, cwd, out=None):
    """Run one tutorial as a script; fail with the tail of its output if it exits nonzero or hangs."""
    env = dict(os.environ)
    env.pop("MST_TUTORIAL_OUT", None)
    if out is not None:
        env["MST_TUTORIAL_OUT"] = str(out)
    # one BLAS thread: on a few shared cores OpenBLAS's spinning worker threads slow the runs down
    # several times; the numbers do not depend on it
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-3000:]
        pytest.fail(f"{path.name} did not finish within {TIMEOUT:.0f} s (MST_TUTORIAL_TIMEOUT); "
                    f"last output:\n{tail.decode() if isinstance(tail, bytes) else tail}")
    if proc.returncode != 0:
        pytest.fail(f"{path.name} exited with status {proc.returncode}\n--- stdout (tail) ---\n"
                    f"{proc.stdout[-4000:]}\n--- stderr (tail) ---\n{proc.stderr[-4000:]}")
    return proc


def assert_not_blank(png):
    """The PNG opens, is a reasonable size, and shows data: not one flat colour, nor empty axes.

    Charts draw their data in colour (mst_ref.plots' palette) and their frame, ticks and text in black,
    so a chart whose series are missing has almost no coloured pixels; a picture (an image, a heat
    map) covers a large part of the canvas.
    """
    with Image.open(png) as im:
        im.load()
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)  # (H, W, 3)
    assert pixels.shape[0] >= 50 and pixels.shape[1] >= 50, f"{png.name} is only {pixels.shape[:2]}"
    background = np.median(pixels.reshape(-1, 3), axis=0)  # (3,)
    drawn = np.abs(pixels - background).sum(axis=-1) > 30  # (H, W) pixels that differ from the background
    coloured = pixels.max(axis=-1) - pixels.min(axis=-1) > 40  # (H, W) neither white, black nor grey
    assert drawn.mean() > 0.005, f"{png.name} looks blank ({drawn.mean():.2%} of its pixels drawn)"
    assert coloured.mean() > 0.003 or drawn.mean() > 0.1, \
        f"{png.name} looks like empty axes ({coloured.mean():.2%} coloured, {drawn.mean():.2%} drawn pixels)"


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 3, f"expected tutorials/01_...py etc.; found {[p.name for p in TUTORIALS]}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorials_use_the_installed_package(path):
    # they run where mst_ref is installed (pip install -e .), as a reader's own scripts would
    assert "sys.path" not in path.read_text().replace("never patch the path", ""), \
        f"{path.name} patches sys.path; import the installed mst_ref instead"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_writes_its_pictures(path, tmp_path):
    source = path.read_text()
    assert "# %% [markdown]" in source and re.search(r"^# %%$", source, re.M), \
        f"{path.name} must be jupytext percent format: '# %% [markdown]' prose and '# %%' code cells"
    out = tmp_path / "out"
    cwd = tmp_path / "elsewhere"  # not the repository root: tutorials must run from any folder
    cwd.mkdir()
    run_tutorial(path, cwd, out)
    written = {p.name for p in out.glob("*.png")}
    missing = expected_pngs(path) - written
    assert not missing, \
        f"{path.name} did not write {sorted(missing)} into MST_TUTORIAL_OUT (it wrote {sorted(written)})"
    for name in sorted(written):
        assert_not_blank(out / name)


def test_default_output_folder_is_tutorial_out_under_the_cwd(tmp_path):
    # checked on the first (fastest) tutorial only
    path = TUTORIALS[0]
    run_tutorial(path, tmp_path)
    written = {p.name for p in (tmp_path / "tutorial_out").glob("*.png")}
    assert expected_pngs(path) <= written and written
