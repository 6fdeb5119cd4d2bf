"""The Sphinx site builds with -W and reads well offline: checks on the rendered HTML."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("furo")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # one Sphinx build (about 20 s) shared by the tests below


class _Page(HTMLParser):
    """Collects ids, links, script sources and the text of autosummary table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.summary_cells: list[str] = []
        self._table_depth = 0
        self._in_cell = False
        self._cell: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img" and "src" in a:
            self.links.append(a["src"])
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "table" and "autosummary" in a.get("class", ""):
            self._table_depth += 1
        if tag == "td" and self._table_depth:
            self._in_cell, self._cell = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._in_cell:
            self.summary_cells.append("".join(self._cell).strip())
            self._in_cell = False
        if tag == "table" and self._table_depth:
            self._table_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self._cell.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    proc = subprocess.run([*cmd, "docs", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _pages(site: Path) -> dict[Path, tuple[str, _Page]]:
    pages = {}
    for path in site.rglob("*.html"):
        if "_static" in path.parts or "_modules" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        parser = _Page()
        parser.feed(text)
        pages[path] = (text, parser)
    return pages


def test_rendered_html(site: Path) -> None:
    pages = _pages(site)
    assert len(pages) > 50
    generated = {p: v for p, v in pages.items() if p.parent.name == "generated"}
    for path, (text, page) in pages.items():
        rel = path.relative_to(site)
        # math renders offline: no script from the network, MathJax shipped locally
        remote = [s for s in page.scripts if s.startswith(("http:", "https:", "//"))]
        assert not remote, f"{rel} loads {remote}"
        if 'class="math' in text:
            assert any("_static/mathjax/" in s for s in page.scripts), rel
        # one parameter list per object
        for block in re.findall(r'<dl class="field-list.*?</dl>', text, flags=re.DOTALL):
            assert block.count(">Parameters<") <= 1, f"{rel}: a duplicate Parameters list"
        # no torch internals on scalemix pages
        assert "Initialize internal Module state" not in text, rel
        assert not re.search(r'id="[\w.]*\.(bfloat16|register_buffer|zero_grad)"', text), rel
        assert "str(object=" not in text, f"{rel} shows the docstring of str"
        # every summary row has text
        assert all(page.summary_cells), f"{rel} has a blank summary cell"
        # internal links and images resolve, anchors included
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            assert target.exists(), f"{rel}: broken link {href}"
            if parts.fragment and target.suffix == ".html" and target in pages:
                assert parts.fragment in pages[target][1].ids, f"{rel}: broken anchor {href}"
    assert generated, "no API pages were generated"


def test_api_pages_show_module_docstrings_and_every_export(site: Path) -> None:
    top = (site / "api" / "scalemix.html").read_text(encoding="utf-8")
    scalemix = importlib.import_module("scalemix")
    for name in scalemix.__all__:
        if name.startswith("__") or inspect.ismodule(getattr(scalemix, name)):
            continue
        assert f">{name}<" in top, f"the top-level page does not list {name}"
    for page in (site / "api").glob("scalemix*.html"):
        module = importlib.import_module(page.stem)
        words = re.findall(r"[A-Za-z]{3,}", (inspect.getdoc(module) or "").split("\n")[0])
        assert len(words) >= 3, f"{page.stem} has no module docstring"
        text = " ".join(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")).split())
        pattern = r"\W+(?:\S+\W+)?".join(words[:4])  # tolerate inline markup between words
        assert re.search(pattern, text), f"{page.name} does not show its module docstring"


def test_gallery_shows_the_figures(site: Path) -> None:
    gallery = site / "gallery.html"
    text = gallery.read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert len(images) >= 3
    for src in images:
        assert (gallery.parent / src).exists(), src
    assert "run_study.py" in text
