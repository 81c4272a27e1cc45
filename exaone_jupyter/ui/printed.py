"""What each cell printed, kept for ``--cells``.

The kernel sends a cell's printed text straight to the frontend and keeps none of it (``Out``
holds only the value a cell ends with), yet ``df.info()`` or a ``print`` is often the output
that matters. While a cell runs, ``sys.stdout`` is wrapped in a tee that passes every write on
unchanged and keeps a copy; after the cell the original stream is back. Only cells counted in
the history (``In [n]``) are kept, each one's last ``LIMIT`` characters, the last ``KEEP`` cells.
"""

from __future__ import annotations

import sys
from typing import Any

LIMIT = 4000  # characters of a cell's printed text kept (its end)
KEEP = 100  # cells kept


class _Tee:
    """A text stream that writes to ``stream`` and hands a copy to ``sink``; every other
    attribute (flush, fileno, isatty, ipykernel's own) is the stream's."""

    def __init__(self, stream: Any, log: PrintedLog) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> Any:
        written = self._stream.write(text)
        self._log.record(text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class PrintedLog:
    """The printed text of the last cells, by their ``In [n]``; ``before`` and ``after`` are
    IPython's pre_run_cell and post_run_cell events."""

    def __init__(self) -> None:
        self.printed: dict[int, str] = {}
        self._parts: list[str] | None = None  # the running cell's writes (None: not kept)
        self._size = 0  # characters in _parts
        self._total = 0  # characters the running cell printed
        self._tee: _Tee | None = None

    def before(self, info: Any) -> None:
        if not getattr(info, "store_history", False):
            return
        self._parts, self._size, self._total = [], 0, 0
        if not isinstance(sys.stdout, _Tee):
            self._tee = _Tee(sys.stdout, self)
            sys.stdout = self._tee

    def record(self, text: object) -> None:
        if self._parts is None or not isinstance(text, str):
            return
        self._parts.append(text)
        self._size += len(text)
        self._total += len(text)
        if self._size > 2 * LIMIT:  # a cell that prints a lot keeps only its end
            self._parts = ["".join(self._parts)[-LIMIT:]]
            self._size = LIMIT

    def after(self, result: Any) -> None:
        self.release()
        parts, self._parts = self._parts, None
        number = getattr(result, "execution_count", None)
        if parts and isinstance(number, int):
            text = "".join(parts)[-LIMIT:]
            if self._total > LIMIT:
                text = f"[the last {LIMIT:,} of {self._total:,} characters printed] …{text}"
            self.printed[number] = text
            for old in sorted(self.printed)[:-KEEP]:
                del self.printed[old]

    def release(self) -> None:
        """The original stream back (unless the cell put another in its place)."""
        if self._tee is not None and sys.stdout is self._tee:
            sys.stdout = self._tee._stream
        self._tee = None
