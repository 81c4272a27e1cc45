"""The one check every user-facing error goes through: ``one_sentence``.

An error a user can cause ends in one clear sentence that says what went wrong and what to do.
Tests pass the message (a string, an exception, ``pytest.raises``'s ``ExceptionInfo``) or a cell
(anything with ``stderr`` and ``error``: a kernel cell, an in-process shell cell), plus the
*fragments* that matter (what went wrong, what to do), never a copy of the whole sentence: a
rewording then needs no test edits, and the sentence's shape is still checked here, once.
"""

from __future__ import annotations

import re
from typing import Any

ERROR_PREFIX = "✗ "


def _message_of(source: Any) -> str:
    if isinstance(source, str):
        return source
    value = getattr(source, "value", None)  # pytest.ExceptionInfo
    if isinstance(value, BaseException):
        return str(value)
    if isinstance(source, BaseException):
        return str(source)
    raise TypeError(f"one_sentence() takes a message, an exception or a cell, not {source!r}")


def _error_line(cell: Any, prefix: str) -> str:
    """The single ``✗`` line a failed cell printed on stderr (nothing else, no traceback)."""
    assert cell.error is None, f"uncaught exception: {cell.error}"
    assert "Traceback" not in cell.stderr, cell.stderr
    lines = [line for line in cell.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


def one_sentence(source: Any, *fragments: str, prefix: str = ERROR_PREFIX) -> str:
    """Check that ``source`` is one finished sentence holding every fragment; return its text.

    For a cell, the sentence is its one ``✗ `` line on stderr (``prefix``); for a message, the
    message itself.
    """
    if hasattr(source, "stderr") and hasattr(source, "error"):
        body = _error_line(source, prefix)
    else:
        body = _message_of(source)
    assert body, "an empty message"
    assert "\n" not in body and "Traceback" not in body, f"not one line: {body!r}"
    assert body.endswith("."), f"not a finished sentence: {body!r}"
    # One sentence: no sentence end followed by a new capitalised sentence inside it. A detail
    # quoted in parentheses (a library's own message, e.g. Jinja's) is not the sentence's shape.
    own = re.sub(r"\([^()]*\)", "()", body.replace("e.g. ", ""))
    assert not re.search(r"[.!?] [A-Z][a-z]", own), f"more than one sentence: {body!r}"
    for fragment in fragments:
        assert fragment in body, f"{fragment!r} not in {body!r}"
    return body
