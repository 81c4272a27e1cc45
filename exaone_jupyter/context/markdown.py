"""A fenced code block that holds any text: the fence outruns every run of backticks in it
(CommonMark), so a cell that itself holds ``` cannot close its block early."""

from __future__ import annotations

import re


def fenced(text: str, info: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"
