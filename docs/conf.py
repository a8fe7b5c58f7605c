"""Sphinx configuration of the mst_ref documentation site.

Build it with ``pip install -e ".[docs]" && sphinx-build -W docs docs/_build/html`` (warnings are errors).
The tutorials are run while the site builds (sphinx-gallery); ``MST_DOCS_RUN_TUTORIALS=0`` skips running
them, for a quick check of the prose (the tutorial pages then show the code without outputs or figures).
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

from tutorial_gallery import PNGScraper, write_gallery_sources  # noqa: E402

import mst_ref  # noqa: E402

project = "mst_ref"
author = "the mst_ref authors"
copyright = "2026, the mst_ref authors"
release = version = mst_ref.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_tutorials_src", "_tutorials_md", "_ext", "**/*.ipynb", "tutorials/*.md5",
                    "tutorials/*.py", "tutorials/*.zip"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# the tutorials' Markdown cells start at H2 inside the page the gallery titles
suppress_warnings = ["myst.header"]

# API reference: numpydoc renders the docstrings; autosummary writes one page per module
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "pydata_sphinx_theme"
html_title = "mst_ref"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2, "header_links_before_dropdown": 3}

# the tutorials, as sphinx-gallery sources generated from tutorials/*.py at each build
write_gallery_sources(ROOT / "tutorials", DOCS / "_tutorials_src", DOCS / "_tutorials_md", DOCS)
_scraper = PNGScraper()
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS / "_tutorials_src"),
    "gallery_dirs": str(DOCS / "tutorials"),
    "filename_pattern": r".*",
    "plot_gallery": os.environ.get("MST_DOCS_RUN_TUTORIALS", "1") != "0",
    "image_scrapers": (_scraper,),
    "reset_modules": (_scraper.reset,),
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}
