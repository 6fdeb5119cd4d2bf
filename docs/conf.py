"""Sphinx configuration for the scalemix documentation (builds and reads offline)."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

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
    "sphinx-mathjax-offline",  # ships MathJax 3 into _static: math renders with no network
    "sphinx.ext.viewcode",
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
# One parameter list per object: types go into the docstring's own list (napoleon),
# only for the parameters the docstring documents.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False  # no torch.nn.Module text on scalemix classes
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# No intersphinx: the build must work without network access.

# --- API reference: one page per documented package, generated from its ``__all__``.
# Classes and functions get an autosummary row and a page of their own; type aliases
# and constants are documented on the package page with the ``#:`` comment that
# precedes their definition; the docstrings of the modules that define the exported
# names are shown on the package page, since docstrings refer to them. Everything is
# derived from ``__all__``, so new modules and names need no edit here.
API_MODULES = {
    "scalemix": "Top-level API",
    "scalemix.types": "Shared types: step results, sampler states, denoiser protocols",
    "scalemix.schedules": "Beta schedules and timestep spacings",
    "scalemix.samplers": "Samplers: one function per sampler, one signature",
    "scalemix.solvers": "Reverse-step rules (DDIM, Euler, Heun, DPM-Solver++)",
    "scalemix.guidance": "Guidance: classifier-free guidance and autoguidance",
    "scalemix.nn": "Neural-network blocks",
    "scalemix.degradation": "Linear degradations",
    "scalemix.scale_space": "Scale Space Diffusion training and sampling",
    "scalemix.metrics": "Divergences and metrics",
    "scalemix.metrics.fid": "Frechet Inception Distance",
    "scalemix.datasets": "Datasets",
    "scalemix.training": "Training",
    "scalemix.hub": "Pretrained models: save, load, export",
    "scalemix.testing": "Conformance checks and hypothesis strategies",
    "scalemix.debug": "Value checks for debugging",
    "scalemix.interop": "Interoperability with diffusers",
}


def _available() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for name in API_MODULES:
        try:
            found[name] = importlib.import_module(name)
        except ImportError:  # an optional module, or one that needs an extra
            continue
    return found


def _is_documented_object(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def _attr_doc(obj: object, name: str, modules: list[ModuleType]) -> str:
    """The ``#:`` comment (or docstring) of a module-level alias or constant."""
    from sphinx.pycode import ModuleAnalyzer

    for module in modules:
        try:
            docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
        except Exception:  # no source to read: fall through
            continue
        lines = docs.get(("", name))
        if lines:
            return " ".join(line.strip() for line in lines if line.strip())
    args = getattr(obj, "__args__", None)
    if getattr(obj, "__origin__", None) is Literal and args:
        return "Accepted values: " + ", ".join(f"``{a!r}``" for a in args) + "."
    if isinstance(obj, (str, int, float, tuple)):
        return f"Constant: ``{obj!r}``."
    text = repr(obj).replace("typing.", "")
    return f"Type alias of ``{text}``."


def _summary(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""


def _owner(name: str, obj: object, modules: dict[str, ModuleType], page: str) -> str | None:
    """The other documented package whose ``__all__`` exports ``obj`` (deepest first)."""
    for other in sorted(modules, key=len, reverse=True):
        mod = modules[other]
        if other != page and name in getattr(mod, "__all__", ()) and getattr(mod, name) is obj:
            return other
    return None


def _defining_modules(package: ModuleType, names: list[str]) -> list[ModuleType]:
    seen: dict[str, ModuleType] = {}
    for n in names:
        mod_name = getattr(getattr(package, n), "__module__", None)
        if (
            isinstance(mod_name, str)
            and mod_name.startswith(package.__name__ + ".")
            and mod_name not in API_MODULES
        ):
            seen.setdefault(mod_name, importlib.import_module(mod_name))
    return list(seen.values())


def _module_page(name: str, title: str, modules: dict[str, ModuleType]) -> str:
    package = modules[name]
    exported = [n for n in getattr(package, "__all__", []) if not n.startswith("__")]
    exported = [n for n in exported if not inspect.ismodule(getattr(package, n))]
    own, elsewhere = [], []
    for n in sorted(exported, key=str.lower):
        owner = _owner(n, getattr(package, n), modules, name) if name == "scalemix" else None
        (elsewhere if owner else own).append((n, owner))
    objects = [n for n, _ in own if _is_documented_object(getattr(package, n))]
    data = [n for n, _ in own if not _is_documented_object(getattr(package, n))]
    defining = _defining_modules(package, [n for n, _ in own])
    lines = [name, "=" * len(name), "", f"{title}.", ""]
    lines += [f".. automodule:: {name}", "   :no-members:", "", f".. currentmodule:: {name}", ""]
    if objects:
        lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in objects] + [""]
    if data:
        lines += ["Type aliases and constants", "-" * 26, ""]
        for n in data:
            obj = getattr(package, n)
            value = repr(obj).replace("typing.", "").replace("\n", " ")
            lines += [f".. py:data:: {n}", f"   :value: {value}", ""]
            lines += [f"   {_attr_doc(obj, n, [package, *defining])}", ""]
    if elsewhere:
        lines += ["Re-exported names", "-" * 17, ""]
        lines += ["Also importable from ``scalemix`` directly; documented in their packages.", ""]
        lines += [".. list-table::", "   :widths: 35 65", ""]
        for n, owner in elsewhere:
            obj = getattr(package, n)
            role = "py:obj"
            if _is_documented_object(obj):
                text = _summary(obj)
            else:
                prefix = f"{owner}."
                scope = [m for k, m in sys.modules.items() if k == owner or k.startswith(prefix)]
                text = _attr_doc(obj, n, scope)
            lines += [f"   * - :{role}:`~{owner}.{n}`", f"     - {text or n}"]
        lines.append("")
    if name == "scalemix":
        version_line = f"Package version: ``scalemix.__version__`` = ``{scalemix.__version__}``."
        lines += [version_line, ""]
    for mod in defining:
        heading = f"Module ``{mod.__name__}``"
        lines += [heading, "-" * len(heading), ""]
        lines += [f".. automodule:: {mod.__name__}", "   :no-members:", "   :no-index:", ""]
    return "\n".join(lines)


def _write_api_pages() -> list[str]:
    out = Path(__file__).parent / "api"
    out.mkdir(exist_ok=True)
    modules = _available()
    for name in modules:
        (out / f"{name}.rst").write_text(_module_page(name, API_MODULES[name], modules))
    return list(modules)


DOCUMENTED_MODULES = _write_api_pages()


def _skip_torch_members(
    app: Any, what: str, name: str, obj: object, skip: bool, options: Any
) -> bool | None:
    """Hide members that classes inherit from torch (``nn.Module`` and friends)."""
    module = getattr(obj, "__module__", None) or ""
    if isinstance(module, str) and module.startswith("torch"):
        return True
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-skip-member", _skip_torch_members)


warnings.filterwarnings("ignore", message=".*set_application.*")
