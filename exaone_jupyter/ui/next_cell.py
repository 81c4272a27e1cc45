"""``--code``: the reply's Python code goes into a new cell below, not run.

IPython's ``set_next_input`` becomes a payload of the cell's execute_reply, which JupyterLab and
Notebook 7 turn into a new cell under the running one (one per execution; nbclient ignores it).
The code is the reply's fenced blocks marked Python (or unmarked), joined, read by the same
Markdown reader that renders the reply (``code_blocks.py``).
"""

from __future__ import annotations

from typing import Any

from .code_blocks import FENCED, OPENING, lines

PYTHON = ("", "python", "python3", "py", "ipython", "ipython3")


def python_code(text: str) -> str:
    """The fenced Python blocks of ``text``, in order, joined by a blank line."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in lines(text):
        if line.kind == OPENING:
            info = line.text.strip().lstrip("`~").strip().split(" ")[0].lower()
            current = [] if info in PYTHON else None
            if current is not None:
                blocks.append(current)
        elif line.kind == FENCED and current is not None:
            current.append(line.code_text)
        elif line.kind != FENCED:
            current = None
    return "\n\n".join("\n".join(block).strip("\n") for block in blocks if "".join(block).strip())


def put_in_next_cell(shell: Any, answer: str) -> str:
    """Put the code of ``answer`` in a new cell below; the note that says what happened."""
    code = python_code(answer)
    if not code:
        return "The reply has no Python code block, so no cell was added."
    shell.set_next_input(code, replace=False)
    return "The reply's code is in a new cell below (not run yet)."
