"""Sphinx configuration of the lsekit documentation.

``nox -s docs`` builds the HTML with warnings as errors, then runs the
doctest builder over the same doctrees: the Examples sections of the
docstrings and every ``testcode`` and ``doctest`` block of the pages.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# The checkout's lsekit is the one documented, and backends/ (the manifests
# the support table is generated from) is not installed.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

import lsekit  # noqa: E402

project = "lsekit"
author = "lsekit developers"
copyright = "lsekit developers"
release = version = lsekit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "lsekit_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
default_role = "code"

# Markdown -----------------------------------------------------------------

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# API reference --------------------------------------------------------------

autosummary_generate = True
# The docstrings give the types; the annotations are ``Any`` throughout.
autodoc_typehints = "none"
numpydoc_show_class_members = False
# A public function whose parameters and docstring disagree fails the build.
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01"}

# Examples -----------------------------------------------------------------

# Each group of examples runs with Python warnings as errors, as the test
# suite does: an overflow that an example does not expect fails the build.
doctest_global_setup = """
import warnings as _warnings
_warnings_context = _warnings.catch_warnings()
_warnings_context.__enter__()
_warnings.simplefilter("error")
"""
doctest_global_cleanup = """
_warnings_context.__exit__(None, None, None)
"""

# Figures ------------------------------------------------------------------

# The figures are computed from lsekit and mpmath while the pages are read.
plot_include_source = False
plot_html_show_source_link = True
plot_html_show_formats = False
plot_formats = [("png", 144)]
plot_rcparams = {"font.size": 9, "savefig.bbox": "tight"}

# HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"lsekit {release}"
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "show_toc_level": 2,
    # The support table needs the width of the page's table of contents.
    "secondary_sidebar_items": {"**": ["page-toc"], "backends": []},
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
# Pages without subpages need no section navigation.
html_sidebars = {
    page: []
    for page in ("index", "quickstart", "why-logsumexp", "benchmarks", "changelog")
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["lsekit.css"]
