"""What ``%%exaone`` gathers from the notebook for the model: ``{name}`` values, the last
exception (``explain``) and the last executed cells (``--cells N``).

This module only looks up what is IPython's own (the namespace, ``sys.last_value``, ``In`` and
``Out``, the cells' names) and hands plain values to ``exaone_jupyter.context``, which renders
them within a token budget: a fraction of the model's context (``%config
ExaoneMagics.context_budget``), counted with the loaded model's tokenizer, or estimated where a
server tokenizes (``context.estimate_tokens``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..context import (
    Budget,
    BudgetTooSmall,
    CellRecord,
    estimate_tokens,
    explain_question,
    render_cells,
    render_named,
)
from ..errors import ExaoneError
from ..session import Session
from .interpolate import interpolate, unknown_names

DEFAULT_FRACTION = 0.25  # of the context, for each value (and for the cells, and the exception)
UNKNOWN_CONTEXT = 4096  # tokens, for a server that does not say (llama-cpp-python's)


@dataclass
class Question:
    """The question as the model gets it, and the notes to show under the cell."""

    text: str
    notes: list[str] = field(default_factory=list)


def budget_of(session: Session, fraction: float) -> Budget:
    """``fraction`` of the loaded model's context, counted by its tokenizer where it has one
    (a server that does not say its context is taken to have ``UNKNOWN_CONTEXT`` tokens)."""
    backend = session.require_backend()
    tokens = max(1, int((backend.n_ctx or UNKNOWN_CONTEXT) * fraction))
    tokenizer = backend.tokenizer
    if tokenizer is None:
        return Budget(tokens, estimate_tokens)
    return Budget(tokens, lambda text: len(tokenizer.tokenize(text, special=False)))


def gather(
    shell: Any,
    text: str,
    budget: Budget,
    *,
    explain: bool = False,
    cells: int | None = None,
    run: int | None = None,
    printed: Mapping[int, str] | None = None,
) -> Question:
    """The cell's ``text`` with its values rendered, after the cells and the exception asked
    for; ``run``: this cell's ``In [n]`` (None when it is not counted), never its own context;
    ``printed``: what each cell printed, by ``In [n]`` (``ui/printed.py``)."""
    question = Question("")
    ask = _values(text, shell.user_ns, budget, question.notes)
    if not (explain or ask.strip()):
        return question  # no question: the session refuses an empty message in one sentence
    parts = []
    if cells is not None:
        parts.append(_cells(shell, cells, run, budget, question.notes, printed or {}))
    if explain:
        parts.append(_explain(shell, ask, budget, question.notes))
    else:
        parts.append(ask)
    question.text = "\n\n".join(parts)
    return question


def _values(text: str, namespace: dict, budget: Budget, notes: list[str]) -> str:
    def render(name: str, value: object) -> str:
        rendered = render_named(name, value, budget)
        if rendered.cut:
            notes.append(
                f"{{{name}}} was cut to fit its {budget.tokens}-token budget ({rendered.cut}); "
                "%config ExaoneMagics.context_budget sets the fraction of the context a value gets."
            )
        return rendered.text

    for name in unknown_names(text, namespace):
        notes.append(
            f"{{{name}}} is not a variable of this notebook, so it was sent as written (define "
            f"it first, or write {{{{{name}}}}} to mean the braces)."
        )
    return interpolate(text, namespace, render)


def _explain(shell: Any, extra: str, budget: Budget, notes: list[str]) -> str:
    exc = getattr(sys, "last_value", None)
    if not isinstance(exc, BaseException):
        raise ExaoneError(
            "There is no exception to explain: no cell of this kernel has raised one yet."
        )
    try:
        text, cut = explain_question(exc, budget, extra=extra, cell_name=_cell_name(shell))
    except BudgetTooSmall as err:
        raise _too_small("the exception's message", err) from None
    if cut:
        notes.append(f"The exception was cut to fit its {budget.tokens}-token budget ({cut}).")
    return text


def _cell_name(shell: Any) -> Any:
    """A frame's file name as IPython's tracebacks name a cell: ``In[3]``."""

    def name(filename: str) -> str | None:
        label = shell.compile.format_code_name(filename)
        return f"{label[0]} {label[1]}" if label else None

    return name


def _cells(
    shell: Any,
    wanted: int,
    run: int | None,
    budget: Budget,
    notes: list[str],
    printed: Mapping[int, str],
) -> str:
    """The last ``wanted`` executed code cells before this one (``%exaone`` cells are the
    conversation already, so they are not counted)."""
    if wanted < 1:
        raise ExaoneError(f"--cells takes a number of cells of 1 or more, not {wanted}.")
    history = shell.history_manager
    sources = history.input_hist_raw
    end = run if run is not None else len(sources)
    numbers = [n for n in range(1, min(end, len(sources))) if _is_code(sources[n])]
    if not numbers:
        raise ExaoneError(
            "--cells adds the code cells run before this one, and this kernel has run none yet; "
            "run the cells you mean first."
        )
    if wanted > len(numbers):
        raise ExaoneError(
            f"--cells {wanted} asks for more cells than this kernel has run ({len(numbers)} code "
            f"cell{'' if len(numbers) == 1 else 's'} so far); ask for {len(numbers)} or fewer."
        )
    outputs = history.output_hist
    records = [
        CellRecord(n, sources[n], outputs[n], printed.get(n, ""))
        if n in outputs
        else CellRecord(n, sources[n], printed=printed.get(n, ""))
        for n in numbers[-wanted:]
    ]
    try:
        rendered = render_cells(records, budget)
    except BudgetTooSmall as err:
        raise _too_small("the last cell's code", err) from None
    if rendered.cut:
        notes.append(
            f"The cells were cut to fit their {budget.tokens}-token budget ({rendered.cut})."
        )
    return rendered.text


def _too_small(what: str, err: BudgetTooSmall) -> ExaoneError:
    return ExaoneError(
        f"Even {what} needs {err.need} tokens, over its budget of {err.budget}; raise "
        "%config ExaoneMagics.context_budget (a fraction of the context)."
    )


def _is_code(source: str) -> bool:
    text = source.strip()
    return bool(text) and not text.startswith(("%exaone", "%%exaone"))
