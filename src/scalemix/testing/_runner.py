"""Run one property under hypothesis and report violations uniformly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

__all__ = ["check_budget", "require", "run_property"]

_T = TypeVar("_T")


def check_budget(max_examples: int, seed: int) -> None:
    """Validate the ``max_examples`` and ``seed`` arguments every check takes."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


def require(check: str, prop: str, violation: float, tolerance: float, detail: str) -> None:
    """Raise ``AssertionError`` unless ``violation <= tolerance`` (NaN fails).

    The message reads ``"<check>: <prop> violated by <violation> (tolerance ...); <detail>"``.
    """
    if not violation <= tolerance:
        raise AssertionError(
            f"{check}: {prop} violated by {violation:.3e} (tolerance {tolerance:.1e}); {detail}"
        )


def run_property(
    prop: Callable[[_T], None], strategy: st.SearchStrategy[_T], *, max_examples: int, seed: int
) -> None:
    """Call ``prop`` on up to ``max_examples`` draws of ``strategy``, seeded by ``seed``.

    Failures are shrunk by hypothesis; the ``AssertionError`` of the smallest failing
    input is raised. Nothing is written to disk (no example database).
    """

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        report_multiple_bugs=False,
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.seed(seed)
    @hypothesis.given(strategy)
    def _property(value: _T) -> None:
        prop(value)

    _property()
