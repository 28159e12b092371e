"""Sphinx configuration of the ska-tango-scheduler documentation (``make docs``)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parent

project = "ska-tango-scheduler"
author = "The ska-tango-scheduler authors"
copyright = "2025, the ska-tango-scheduler authors"  # noqa: A001 - Sphinx's name
# The one version, from the installed package's metadata (pyproject.toml).
release = importlib.metadata.version("ska-tango-scheduler")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples/README.md"]

# `make bench` writes benchmarks.md next to this file; until then a placeholder
# page of the same name stands in for it.
if (DOCS / "benchmarks.md").is_file():
    exclude_patterns.append("benchmarks.rst")

# -- autodoc and napoleon ----------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- MyST --------------------------------------------------------------------------------------
myst_heading_anchors = 3

# -- HTML --------------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_title = f"ska-tango-scheduler {release}"
html_show_sourcelink = False
