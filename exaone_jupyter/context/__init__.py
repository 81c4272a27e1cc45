"""The notebook as context: values, the last exception and executed cells, written for the model.

Each renderer turns a plain Python value into text a model reads reliably and fits it to a token
budget (``budget.py``), saying so in the text when it had to cut. Nothing here imports IPython,
and pandas or numpy only where a value already is one (a DataFrame is recognised through
``sys.modules``): the UI looks names up, gathers what is IPython's own (``sys.last_value``,
``In``/``Out``) and hands plain values down.
"""

from __future__ import annotations

from .budget import Budget, BudgetTooSmall, Rendered, estimate_tokens
from .cells import CellRecord, render_cells
from .exceptions import explain_question, render_exception
from .values import render_named, render_value

__all__ = [
    "Budget",
    "BudgetTooSmall",
    "CellRecord",
    "Rendered",
    "estimate_tokens",
    "explain_question",
    "render_cells",
    "render_exception",
    "render_named",
    "render_value",
]
