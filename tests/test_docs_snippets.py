"""The Python code blocks of README.md and the docs pages run as written.

The quickstarts print a KL against held-out data and state the value a reader should
see: the printed value must match the stated one to 0.2 bits, and the README's moving
average must sample as well as the trained network itself (within 0.2 bits).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

from scalemix import sample
from scalemix.metrics import knn_kl

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
PRINTED_KL = re.compile(r"KL\(held-out \|\| samples\) = (-?\d+\.\d+) bits")


def _run_page(page: str) -> tuple[dict[str, object], str]:
    blocks = BLOCK.findall((ROOT / page).read_text())
    assert blocks, f"{page} has no python code block"
    namespace: dict[str, object] = {"__name__": f"snippets_{Path(page).stem}"}
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            for code in blocks:  # blocks of one page build on each other, as a reader runs them
                exec(compile(code, page, "exec"), namespace)
    finally:
        torch.set_num_threads(threads)  # a page may pin torch to one thread
    return namespace, out.getvalue()


def _stated_kl(page: str) -> float:
    """The value the page's prose says the code prints (in a `...` literal)."""
    text = BLOCK.sub("", (ROOT / page).read_text())
    stated = PRINTED_KL.findall(text)
    assert stated, f"{page} does not state the KL its code prints"
    return float(stated[0])


@pytest.mark.parametrize("page", ["docs/scale_space.md"])
def test_python_blocks_run(page: str) -> None:
    _run_page(page)


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/getting_started.md"])
def test_quickstart_prints_the_stated_kl(page: str) -> None:
    namespace, printed = _run_page(page)
    values = [float(v) for v in PRINTED_KL.findall(printed)]
    assert values, f"{page} printed no KL: {printed!r}"
    assert abs(values[-1] - _stated_kl(page)) < 0.2, (values, _stated_kl(page))
    if page == "README.md":  # the EMA is as good as the network it averages
        scheduler, result = namespace["scheduler"], namespace["result"]
        raw = sample(result.model, scheduler, (5_000, 2),  # type: ignore[attr-defined]
                     generator=torch.Generator().manual_seed(1))  # type: ignore[arg-type]  # fmt: skip
        raw_kl = knn_kl(namespace["held_out"], raw)  # type: ignore[arg-type]
        assert abs(values[-1] - raw_kl) < 0.2, (values[-1], raw_kl)
