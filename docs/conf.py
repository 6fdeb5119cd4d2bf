"""Sphinx configuration for the scalemix documentation (builds offline)."""

from __future__ import annotations

import scalemix

project = "scalemix"
author = "scalemix developers"
copyright = "2026, scalemix developers"
release = scalemix.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"scalemix {release}"

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
typehints_fully_qualified = False
always_document_param_types = False
myst_enable_extensions = ["dollarmath", "amsmath"]
# No intersphinx: the build must work without network access.
