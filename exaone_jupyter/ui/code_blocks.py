"""Which lines of a model's Markdown are code: one reader for the cell and the panel.

The cell keeps code verbatim and closes a fence the reply leaves open (``render.py``); the panel
shows code as ``<pre>`` (``markup.py``). Both read the blocks here, so they agree on what is code.
CommonMark's rules, as far as model text needs them: a fence (three or more ````` or ``~``)
opens a block at any indentation (inside a list item it sits at the item's indentation), and a
fence of the same kind, at least as long, with nothing after it, closes it; a line further left
ends the list item, and the block with it. A line indented four spaces after a blank line (or a
closing fence) is indented code, but only before the first list: inside a list it may be the
item's own text. Blank lines between indented lines belong to their block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import groupby
from typing import NamedTuple

PROSE, OPENING, FENCED, CLOSING, INDENTED = "prose", "opening", "fenced", "closing", "indented"

_FENCE = re.compile(r" *(?:`{3,}|~{3,})")
_INDENTED_CODE = re.compile(r" {0,3}\t| {4}")
_LIST_ITEM = re.compile(r" {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")


class Line(NamedTuple):
    """One line of the text: what it is (``PROSE``, an ``OPENING`` or ``CLOSING`` fence, a line
    ``FENCED`` in or ``INDENTED`` code), and the fence still open after it, with its indentation
    ("" when none)."""

    text: str
    kind: str
    open_fence: str

    @property
    def is_code(self) -> bool:
        return self.kind != PROSE

    @property
    def is_fence(self) -> bool:
        return self.kind in (OPENING, CLOSING)

    @property
    def code_text(self) -> str:
        """The line as its block shows it: less its fence's indentation, or less the four spaces
        (or tab) that made it code."""
        if self.kind == INDENTED:
            return _INDENTED_CODE.sub("", self.text, count=1)
        return self.text[min(indentation(self.open_fence), indentation(self.text)) :]


def runs(text: str) -> Iterator[tuple[bool, list[Line]]]:
    """The text in order as runs of prose and code blocks, each one run: (is_code, its lines)."""
    block, previous = 0, PROSE
    numbered: list[tuple[int, Line]] = []  # 0 for prose, else the block's number
    for line in lines(text):
        if line.kind == OPENING or (line.kind == INDENTED and previous != INDENTED):
            block += 1
        previous = line.kind
        numbered.append((block if line.is_code else 0, line))
    for number, run in groupby(numbered, key=lambda each: each[0]):
        yield number > 0, [line for _, line in run]


def lines(text: str) -> Iterator[Line]:
    """Each line of ``text`` (split at ``\\n``), read as Markdown reads it."""
    fence, lists, may_indent, previous = "", False, True, PROSE
    blanks: list[str] = []  # blank lines after indented code: its own if more of it follows
    for line in text.split("\n"):
        if fence and _left_of(fence, line):
            fence = ""  # the list item ended, and the block with it: this line is read afresh
        if fence:
            kind = CLOSING if _closes(fence, line) else FENCED
            fence = "" if kind == CLOSING else fence
        elif may_indent and line.strip() and _INDENTED_CODE.match(line):
            kind = INDENTED
        elif match := _FENCE.match(line):
            kind, fence = OPENING, match.group()
        else:
            kind = PROSE
            lists = lists or bool(_LIST_ITEM.match(line))
        may_indent = not lists and (kind in (INDENTED, CLOSING) or not line.strip())
        if kind == PROSE and not line.strip() and (blanks or previous == INDENTED):
            blanks.append(line)
            continue
        yield from (Line(blank, INDENTED if kind == INDENTED else PROSE, "") for blank in blanks)
        blanks = []
        previous = kind
        yield Line(line, kind, fence)
    yield from (Line(blank, PROSE, "") for blank in blanks)


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _closes(fence: str, line: str) -> bool:
    """Whether ``line`` closes the code block that ``fence`` opened: a fence of the same kind, at
    least as long, with nothing after it."""
    opening, run = fence.lstrip(" "), line.strip()
    return bool(_FENCE.fullmatch(run)) and run[0] == opening[0] and len(run) >= len(opening)


def _left_of(fence: str, line: str) -> bool:
    """Whether ``line`` sits left of the list item that holds the block ``fence`` opened (a fence
    is indented at most three spaces more than its item's text), which ends item and block."""
    return bool(line.strip()) and indentation(line) + 3 < indentation(fence)
