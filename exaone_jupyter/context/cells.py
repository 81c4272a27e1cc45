"""The notebook's last executed code cells as context: each one's source and its outputs.

A cell's outputs are what it printed (kept by the UI, ``ui/printed.py``: the kernel keeps none)
and the value it ended with (``Out``), rendered as ``{name}`` renders one; both are shortened.
Under the budget the outputs shrink first, then they go, then the oldest cells do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .budget import Budget, BudgetTooSmall, Rendered
from .markdown import fenced

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
        for share in (2, 8):  # each output's share of the budget
            text, shortened = _cells(cells, budget.share(share * len(cells)))
            yield text, "the cells' outputs shortened" if shortened else ""
        yield _cells(cells, None)[0], "the cells' outputs left out"
        for first in range(1, len(cells)):
            kept = cells[first:]
            yield (
                _cells(kept, None)[0],
                f"only the last {len(kept)} of {len(cells)} cells, no outputs",
            )

    return budget.first_fitting(candidates())


def _cells(cells: Sequence[CellRecord], output_budget: Budget | None) -> tuple[str, bool]:
    """The cells as text, and whether an output had to be shortened."""
    parts = ["The notebook's last executed cells, in order:"]
    shortened = False
    for cell in cells:
        parts.append(f"In [{cell.number}]:\n{fenced(cell.source.rstrip(), 'python')}")
        if output_budget is None:
            continue
        outputs = []
        if cell.printed.strip():
            outputs.append(
                (f"Printed by In [{cell.number}]", _printed(cell.printed, output_budget))
            )
        if cell.has_result:
            outputs.append((f"Out [{cell.number}]", _result(cell, output_budget)))
        for label, rendered in outputs:
            parts.append(f"{label}:\n{fenced(rendered.text, 'text')}")
            shortened = shortened or bool(rendered.cut)
    return "\n\n".join(parts), shortened


def _printed(text: str, budget: Budget) -> Rendered:
    try:
        return budget.cut_text(text.strip("\n"), end=True)  # a printout's end says most
    except BudgetTooSmall:
        return Rendered("(left out to fit)", "all of it")


def _result(cell: CellRecord, budget: Budget) -> Rendered:
    from .values import render_value

    try:
        return render_value(cell.result, budget)
    except BudgetTooSmall:
        return Rendered("(left out to fit)", "all of it")
    except Exception as err:  # a result whose rendering fails is said, not fatal
        return Rendered(f"(could not be rendered: {type(err).__name__})")
