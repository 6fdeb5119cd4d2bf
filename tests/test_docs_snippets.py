"""The Python code blocks of README.md and the docs pages run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    "docs/getting_started.md",
    "docs/scale_space.md",
    "docs/tutorial_degradation.md",
    "docs/numerics.md",
]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page: str) -> None:
    blocks = BLOCK.findall((ROOT / page).read_text())
    assert blocks, f"{page} has no python code block"
    namespace: dict[str, object] = {"__name__": f"snippets_{Path(page).stem}"}
    torch.manual_seed(0)  # snippets that build models initialise parameters from torch's RNG
    for code in blocks:  # blocks of one page build on each other, as a reader runs them
        exec(compile(code, page, "exec"), namespace)
