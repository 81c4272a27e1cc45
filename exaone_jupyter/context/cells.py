"""The notebook's last executed code cells as context: each one's source and its outputs.

A cell's outputs are what it printed (kept by the UI, ``ui/printed.py``: the kernel keeps none)
and the value it ended with (``Out``), rendered as ``{name}`` renders one; both are shortened.
Under the budget the outputs shrink first, then they go, then the oldest cells do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .budget import Budget, BudgetTooSmall, Rendered

_MISSING = object()


@dataclass(frozen=True)
class CellRecord:
    """One executed cell: its ``In [number]``, source, result (``_MISSING``: it had none) and
    printed text."""

    number: int
    source: str
    result: object = _MISSING
    printed: str = ""

    @property
    def has_result(self) -> bool:
        return self.result is not _MISSING


def render_cells(cells: Sequence[CellRecord], budget: Budget) -> Rendered:
    """The cells in the notebook's order, as Markdown code blocks, within ``budget``."""

    def candidates() -> Iterator[tuple[str, str]]:
        yield _cells(cells, budget.share(2 * len(cells))), ""
        yield _cells(cells, budget.share(8 * len(cells))), "the cells' outputs shortened"
        yield _cells(cells, None), "the cells' outputs left out"
        for first in range(1, len(cells)):
            kept = cells[first:]
            yield _cells(kept, None), f"only the last {len(kept)} of {len(cells)} cells, no results"

    return budget.first_fitting(candidates())


def _cells(cells: Sequence[CellRecord], result_budget: Budget | None) -> str:
    parts = ["The notebook's last executed cells, in order:"]
    for cell in cells:
        parts.append(f"In [{cell.number}]:\n```python\n{cell.source.rstrip()}\n```")
        if result_budget is None:
            continue
        if cell.printed.strip():
            printed = _printed(cell.printed, result_budget)
            parts.append(f"Printed by In [{cell.number}]:\n```text\n{printed}\n```")
        if cell.has_result:
            parts.append(f"Out [{cell.number}]:\n```text\n{_result(cell, result_budget)}\n```")
    return "\n\n".join(parts)


def _printed(text: str, budget: Budget) -> str:
    try:
        return budget.cut_text(text.strip("\n"), end=True).text  # a printout's end says most
    except BudgetTooSmall:
        return "(left out to fit)"


def _result(cell: CellRecord, budget: Budget) -> str:
    from .values import render_value

    try:
        return render_value(cell.result, budget).text
    except BudgetTooSmall:
        return "(left out to fit)"
    except Exception as err:  # a result whose rendering fails is said, not fatal
        return f"(could not be rendered: {type(err).__name__})"
