"""A NumPy array for the model: shape, dtype, a summary of its numbers, and a few values.

numpy is not imported here: the array's own methods do the work (the value brings numpy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .budget import Budget, Rendered


def render_array(array: Any, budget: Budget) -> Rendered:
    summary = f"ndarray: shape {tuple(array.shape)}, dtype {array.dtype}"
    stats = _stats(array)
    head = f"{summary}\n{stats}" if stats else summary

    def candidates() -> Iterator[tuple[str, str]]:
        for number, edge in enumerate((3, 2, 1)):
            values = _values(array, edge)
            cut = "" if number == 0 else f"{edge} values shown at each edge"
            yield f"{head}\nValues:\n{values}", cut
        yield head, "no values"
        yield summary, "no summary, no values"

    return budget.first_fitting(candidates())


def _stats(array: Any) -> str:
    """min, max, mean and std of a numeric array (NaN ignored, and counted)."""
    if array.size == 0 or array.dtype.kind not in "iufb":
        return ""
    numbers = array.astype("float64", copy=False).ravel()
    finite = numbers[numbers == numbers]  # NaN is the one value not equal to itself
    missing = numbers.size - finite.size
    nans = f", {missing:,} NaN" if missing else ""
    if not finite.size:
        return f"all {numbers.size:,} values are NaN"
    return (
        f"min {finite.min():.6g}, max {finite.max():.6g}, mean {finite.mean():.6g}, "
        f"std {finite.std():.6g}{nans}"
    )


def _values(array: Any, edge: int) -> str:
    """numpy's own printing, with ``edge`` items at each edge of a long axis."""
    import numpy  # the array is one: numpy is imported already

    return numpy.array2string(array, threshold=2 * edge + 1, edgeitems=edge, max_line_width=100)
