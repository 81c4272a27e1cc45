"""A pandas DataFrame or Series for the model: shape, columns and dtypes, nulls, a sample.

A model reads a Markdown table reliably; pandas' own ``str()`` wraps a wide frame into blocks and
says nothing of dtypes. Every column is named with its dtype and null count, always; then the
sample of rows shrinks until it fits the budget: head and tail of a long frame, long cells
shortened, at most ``SAMPLE_COLUMNS`` columns. pandas is not imported here (the value brings it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .budget import Budget, Rendered

SAMPLE_COLUMNS = 12  # the sample table's widest; the column list names them all
# (rows at the head, rows at the tail, characters a cell keeps), fullest first
_SAMPLES = ((5, 5, 40), (3, 2, 24), (2, 1, 16), (1, 1, 12), (1, 0, 10))


def render_frame(frame: Any, budget: Budget) -> Rendered:
    rows, columns = frame.shape
    nulls = frame.isna().sum()
    summary = f"DataFrame: {rows:,} rows × {columns:,} columns"
    listing = "\n".join(
        f"- {_cell(name, 60)}: {dtype}{_nulls(int(nulls.iloc[i]))}"
        for i, (name, dtype) in enumerate(frame.dtypes.items())
    )
    full = f"{summary}\nColumns (dtype, nulls):\n{listing}" if columns else summary

    def candidates() -> Iterator[tuple[str, str]]:
        for head, tail, width, cut in _sizes(rows):
            yield f"{full}\n{_sample(frame, head, tail, width)}", cut
        yield full, "no sample rows"
        yield summary, "no column list, no sample rows"

    return budget.first_fitting(candidates())


def render_series(series: Any, budget: Budget) -> Rendered:
    name = "" if series.name is None else f" {_cell(series.name, 60)!r}"
    summary = (
        f"Series{name}: {len(series):,} values, dtype {series.dtype}"
        f"{_nulls(int(series.isna().sum()))}"
    )

    def candidates() -> Iterator[tuple[str, str]]:
        frame = series.to_frame(name="value")
        for head, tail, width, cut in _sizes(len(series)):
            yield f"{summary}\n{_sample(frame, head, tail, width)}", cut
        yield summary, "no sample values"

    return budget.first_fitting(candidates())


def _sizes(rows: int) -> Iterator[tuple[int, int, int, str]]:
    """The samples to try, with what each leaves out to fit ("" for the fullest): the whole of
    a short frame, else head and tail."""
    fullest = [(rows, 0, 40)] if rows <= 10 else []
    sizes = fullest + [(h, t, w) for h, t, w in _SAMPLES if h + t < rows]
    for number, (head, tail, width) in enumerate(sizes):
        cut = (
            ""
            if number == 0
            else f"the sample cut to {head + tail} rows, cells to {width} characters"
        )
        yield head, tail, width, cut


def _sample(frame: Any, head: int, tail: int, width: int) -> str:
    """A Markdown table of the first ``head`` and last ``tail`` rows, index first."""
    rows, columns = frame.shape
    if not rows or not columns:
        return "(no rows)" if not rows else "(no columns)"
    shown = frame.iloc[:, :SAMPLE_COLUMNS]
    lines = [_row(["", *shown.columns], width), "|" + " --- |" * (shown.shape[1] + 1)]
    lines += _rows(shown.iloc[:head], width)
    if head + tail < rows:
        lines.append(_row(["…"] * (shown.shape[1] + 1), 1))
    if tail:
        lines += _rows(shown.iloc[rows - tail :], width)
    which = f", the first {SAMPLE_COLUMNS} columns" if columns > SAMPLE_COLUMNS else ""
    return f"Sample ({head + tail:,} of {rows:,} rows{which}):\n" + "\n".join(lines)


def _rows(part: Any, width: int) -> list[str]:
    return [_row(list(row), width) for row in part.itertuples(index=True, name=None)]


def _row(cells: list[Any], width: int) -> str:
    return "| " + " | ".join(_cell(c, width) for c in cells) + " |"


def _cell(value: object, width: int) -> str:
    """One table cell: on one line, ``|`` escaped, shortened to ``width`` characters."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _nulls(count: int) -> str:
    return f", {count:,} null" if count == 1 else f", {count:,} nulls" if count else ""
