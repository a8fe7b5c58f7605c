"""Turn the tutorials (jupytext percent scripts) into sphinx-gallery sources, and show their PNGs.

The tutorials in ``tutorials/`` are the scripts CI runs; their prose is Markdown (``# %% [markdown]``
cells), while sphinx-gallery reads reStructuredText comment blocks. Rather than keep a second copy,
:func:`write_gallery_sources` writes, at build time, one sphinx-gallery script per tutorial whose text
blocks *include* each Markdown cell through myst-parser (so tables, math and links render as in the
notebook), and whose code blocks are the tutorial's own, unchanged.

The tutorials write their pictures with :mod:`mst_ref.plots` into ``$MST_TUTORIAL_OUT``, not through
matplotlib, so sphinx-gallery's own scrapers see nothing. :class:`PNGScraper` looks into that folder
after every code block and shows each PNG that appeared or changed under the block that wrote it.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

_CELL = re.compile(r"^# %%(.*)$")


def _cells(text):
    """[(kind, lines)] of a percent-format script; kind is "markdown" or "code"; the jupytext header dropped."""
    lines = text.splitlines()
    if lines and lines[0].startswith("# ---"):  # jupytext metadata block
        end = next(i for i in range(1, len(lines)) if lines[i].startswith("# ---"))
        lines = lines[end + 1:]
    cells, kind, body = [], "code", []
    for line in lines:
        m = _CELL.match(line)
        if m:
            cells.append((kind, body))
            kind, body = ("markdown" if "[markdown]" in m.group(1) else "code"), []
        else:
            body.append(line)
    cells.append((kind, body))
    return [(k, b) for k, b in cells if any(x.strip() for x in b)]


def _uncomment(lines):
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines).strip() + "\n"


def _include(path):
    return [f".. include:: /{path.as_posix()}", "   :parser: myst_parser.sphinx_", ""]


def write_gallery_sources(tutorials, src_dir, md_dir, docs_dir):
    """Write sphinx-gallery scripts for ``tutorials/[0-9]*.py`` into ``src_dir``, Markdown cells into ``md_dir``."""
    for d in (src_dir, md_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    (src_dir / "README.txt").write_text(
        "Tutorials\n=========\n\nThe course, from one neuron to the whole spiking transformer. Each page is the "
        "tutorial script run top to bottom, with what it printed and the pictures it wrote under the cell "
        "that made them. Run any of them yourself with ``python tutorials/NN_name.py``.\n")
    for script in sorted(tutorials.glob("[0-9]*.py")):
        cells = _cells(script.read_text())
        kind, first = cells[0]
        if kind != "markdown" or not first[0].startswith("# # "):
            raise ValueError(f"{script.name}: a tutorial must open with a Markdown cell whose first line is its title")
        title = first[0][4:].strip()
        out = ['"""', title, "=" * len(title), ""]
        k = 0
        rest = _uncomment(first[1:])
        if rest.strip():
            md = md_dir / f"{script.stem}_{k}.md"
            md.write_text(rest)
            out += _include(md.relative_to(docs_dir))
        out += ['"""', ""]
        for kind, body in cells[1:]:
            k += 1
            if kind == "markdown":
                md = md_dir / f"{script.stem}_{k}.md"
                md.write_text(_uncomment(body))
                out += ["# %%"] + ["# " + x if x else "#" for x in _include(md.relative_to(docs_dir))]
            else:
                out += ["# %%"] + body
            out.append("")
        (src_dir / script.name).write_text("\n".join(out) + "\n")


class PNGScraper:
    """A sphinx-gallery image scraper for the PNGs a tutorial writes into ``$MST_TUTORIAL_OUT``."""

    def __init__(self):
        self.folder, self.seen = None, {}

    def reset(self, gallery_conf, fname):
        """Before each tutorial: a fresh output folder (sphinx-gallery's ``reset_modules`` hook)."""
        self.folder = Path(tempfile.mkdtemp(prefix="mst_tutorial_out_"))
        os.environ["MST_TUTORIAL_OUT"] = str(self.folder)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.seen = {}

    def __call__(self, block, block_vars, gallery_conf):
        if self.folder is None:
            return ""
        new = []
        for png in sorted(self.folder.rglob("*.png")):
            stamp = png.stat().st_mtime_ns
            if self.seen.get(png) != stamp:
                self.seen[png] = stamp
                new.append(png)
        rst = []
        for png, dest in zip(new, block_vars["image_path_iterator"]):
            shutil.copyfile(png, dest)
            rel = Path(dest).relative_to(gallery_conf["src_dir"]).as_posix()
            rst += [f".. figure:: /{rel}", f"   :alt: {png.name}", "", f"   ``{png.name}``", ""]
        return "\n".join(rst)

    def __repr__(self):  # sphinx caches the config by its repr
        return "PNGScraper()"
