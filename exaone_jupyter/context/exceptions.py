"""An exception for the model: its type, message and the traceback frames of the user's code.

A traceback through pandas is mostly pandas: those frames are folded into one line that names
the libraries, so the budget goes to the user's frames (a notebook cell, the user's own modules).
The machinery that ran the cell (IPython's frames before the first user frame) is left out.
``explain_question`` asks what ``%exaone explain`` asks: the failing cell and its exception.
"""

from __future__ import annotations

import linecache
import site
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from .budget import Budget, Rendered
from .markdown import fenced

CellName = Callable[[str], "str | None"]  # a frame's file name -> "In [3]" for a notebook cell

EXPLAIN = (
    "My notebook code raised an exception. Explain what went wrong and how to fix it, "
    "with the corrected code."
)


def _library_roots() -> tuple[str, ...]:
    """Where installed code lives: the standard library, site-packages, this package."""
    paths = {sys.prefix, sys.base_prefix, *site.getsitepackages(), site.getusersitepackages()}
    paths |= {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.add(str(Path(__file__).resolve().parents[1]))
    return tuple(sorted(p for p in paths if p))


_LIBRARY = _library_roots()


def is_library(filename: str) -> bool:
    """Whether a frame's file is installed code rather than the user's (a cell, a module)."""
    return filename.startswith(_LIBRARY) or filename.startswith("<frozen ")


def render_exception(
    exc: BaseException, budget: Budget, *, cell_name: CellName | None = None
) -> Rendered:
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and is_library(frames[0].filename):  # the machinery that ran the cell
        frames.pop(0)
    name = cell_name or (lambda filename: None)
    headline = _headline(exc, name)
    causes = list(_causes(exc))

    def candidates() -> Iterator[tuple[str, str]]:
        user = sum(not is_library(f.filename) for f in frames)
        for number, keep in enumerate(dict.fromkeys((user, 3, 1))):
            if keep > user and number:
                continue
            text = _format(headline, causes, _trace(frames, keep, name))
            yield text, "" if number == 0 else f"the traceback cut to its last {keep} frames"
        last = "the traceback left out, the message cut"
        room = budget.tokens - budget.count(f"\n[cut to fit: {last}]")
        yield Budget(max(1, room), budget.count).cut_text(headline).text, last

    return budget.first_fitting(candidates())


def explain_question(
    exc: BaseException,
    budget: Budget,
    *,
    extra: str = "",
    cell_name: CellName | None = None,
) -> tuple[str, str]:
    """The question ``%exaone explain`` asks about ``exc`` (the source of the cell that failed,
    then the exception), and what was cut to fit ("" when nothing)."""
    parts = [extra.strip() or EXPLAIN]
    cut = ""
    origin = _origin(exc)
    if origin:  # the cell that ran (IPython keeps its source in linecache)
        where = (cell_name(origin) if cell_name else None) or "the cell"
        source = budget.share(2).cut_text("".join(linecache.getlines(origin)), "characters")
        if source.text.strip():
            parts.append(f"The code of {where}:\n{fenced(source.text.rstrip(), 'python')}")
            cut = source.cut and f"the cell's code cut to {source.cut}"
    rendered = render_exception(exc, budget.share(2), cell_name=cell_name)
    parts.append(f"The exception:\n{fenced(rendered.text, 'text')}")
    return "\n\n".join(parts), " and ".join(c for c in (cut, rendered.cut) if c)


def _origin(exc: BaseException) -> str | None:
    """The file of the code that failed: the outermost frame of the user's, or where a
    SyntaxError was found (its traceback is the compiler's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not is_library(f.filename)]
    if frames:
        return frames[0].filename
    if isinstance(exc, SyntaxError) and exc.filename and not is_library(exc.filename):
        return exc.filename
    return None


def _headline(exc: BaseException, name: CellName) -> str:
    """The exception's last lines as Python writes them; a SyntaxError's cell by its name."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if isinstance(exc, SyntaxError) and exc.filename and name(exc.filename):
        text = text.replace(f'File "{exc.filename}"', f'File "{name(exc.filename)}"', 1)
    return text


def _trace(frames: list[traceback.FrameSummary], keep: int, name: CellName) -> list[str]:
    """The frames as lines, library runs folded, only the last ``keep`` user frames."""
    user = [i for i, f in enumerate(frames) if not is_library(f.filename)]
    first = user[-keep] if keep and len(user) >= keep else 0
    lines = [f"  … {first} earlier frames left out to fit"] if first else []
    folded: list[str] = []
    for frame in frames[first:]:
        if is_library(frame.filename):
            folded.append(_package(frame.filename))
            continue
        if folded:
            lines.append(_folded(folded))
            folded = []
        where = name(frame.filename) or frame.filename
        lines.append(f'  File "{where}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    if folded:
        lines.append(_folded(folded))
    return lines


def _folded(packages: list[str]) -> str:
    names = ", ".join(dict.fromkeys(packages))
    return f"  … {len(packages)} library frame{'s' if len(packages) > 1 else ''} ({names})"


def _package(filename: str) -> str:
    """The top-level package (or module) a library file belongs to."""
    path = Path(filename)
    for parent in path.parents:
        if parent.name in ("site-packages", "dist-packages"):
            return path.relative_to(parent).parts[0].removesuffix(".py")
    return path.stem if path.parent.name.startswith("python") else path.parent.name


def _format(headline: str, causes: list[str], trace: list[str]) -> str:
    lines = [headline]
    if trace:
        lines += ["Traceback (the user's frames; library frames folded):", *trace]
    lines += [f"Raised while handling: {cause}" for cause in causes]
    return "\n".join(lines)


def _causes(exc: BaseException) -> Iterator[str]:
    """The exceptions ``exc`` was raised from (``__cause__`` or ``__context__``), one line each."""
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield "".join(traceback.format_exception_only(type(cause), cause)).strip()
        cause = cause.__cause__ or cause.__context__
