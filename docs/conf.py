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

# --- API reference: one autosummary page per subpackage, generated from ``__all__`` so
# that every public name gets its own page and none can be forgotten.
import importlib  # noqa: E402
import inspect  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

API_MODULES = {
    "scalemix": "Top-level API",
    "scalemix.schedules": "Beta schedules",
    "scalemix.nn": "Neural-network blocks",
    "scalemix.degradation": "Linear degradations",
    "scalemix.scale_space": "Scale Space Diffusion training and sampling",
    "scalemix.metrics": "Divergences and metrics",
    "scalemix.metrics.fid": "Frechet Inception Distance",
    "scalemix.datasets": "Datasets",
    "scalemix.training": "Training",
    "scalemix.testing": "Conformance checks and hypothesis strategies",
    "scalemix.debug": "Value checks for debugging",
}


def _write_api_pages() -> None:
    out = Path(__file__).parent / "api"
    out.mkdir(exist_ok=True)
    for name, title in API_MODULES.items():
        module = importlib.import_module(name)
        names = sorted(getattr(module, "__all__", []))
        if name == "scalemix":  # names re-exported from a subpackage are documented there
            others = tuple(m + "." for m in API_MODULES if m != "scalemix")
            names = [
                n
                for n in names
                if not inspect.ismodule(getattr(module, n))
                and not getattr(getattr(module, n), "__module__", "").startswith(others)
            ]
        lines = [
            f"{name}",
            "=" * len(name),
            "",
            f"{title}.",
            "",
            f".. automodule:: {name}",
            "   :no-members:",
            "",
            f".. currentmodule:: {name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "",
            *[f"   {n}" for n in names],
            "",
        ]
        (out / f"{name}.rst").write_text("\n".join(lines))


_write_api_pages()

# sphinx-autodoc-typehints calls an API that Sphinx 9 deprecates; not ours to fix.
warnings.filterwarnings("ignore", message=".*set_application.*")
