"""One value of the notebook, rendered for the model by its type, within a token budget.

The order: a ``_repr_llm_()`` the value's class defines (the opt-in for one's own objects), plain
strings and numbers exactly as ``str()`` gives them, an exception, a pandas DataFrame or Series,
a NumPy array, dicts, lists and tuples as JSON, a ``_repr_markdown_()``, and last ``str()``.
Everything but strings and numbers is cut to the budget, saying so in the text.
"""

from __future__ import annotations

import json
import numbers
import sys
from collections.abc import Callable

from ..errors import ExaoneError
from .arrays import render_array
from .budget import Budget, BudgetTooSmall, Rendered
from .exceptions import render_exception
from .frames import render_frame, render_series


def render_value(value: object, budget: Budget) -> Rendered:
    """``value`` as text for the model; BudgetTooSmall when not even its summary fits."""
    hook = _method(value, "_repr_llm_")
    if hook is not None:
        return budget.cut_text(_text_of(hook(), "_repr_llm_"))
    if isinstance(value, (str, numbers.Number)) or value is None:
        return Rendered(str(value))  # as {name} always gave them: a document stays whole
    if isinstance(value, BaseException):
        return render_exception(value, budget)
    if _is(value, "pandas", "DataFrame"):
        return render_frame(value, budget)
    if _is(value, "pandas", "Series"):
        return render_series(value, budget)
    if _is(value, "numpy", "ndarray"):
        return render_array(value, budget)
    if isinstance(value, (dict, list, tuple)):
        return budget.cut_text(_json(value))
    markdown = _method(value, "_repr_markdown_")
    text = markdown() if markdown is not None else None
    if isinstance(text, tuple):  # IPython's (data, metadata) form
        text = text[0]
    return budget.cut_text(text if isinstance(text, str) else str(value))


def render_named(name: str, value: object, budget: Budget) -> Rendered:
    """``render_value``, with each failure said in one sentence that names ``{name}``."""
    try:
        return render_value(value, budget)
    except BudgetTooSmall as err:
        raise ExaoneError(
            f"{{{name}}} needs {err.need} tokens even as a one-line summary, over its budget of "
            f"{err.budget}; raise %config ExaoneMagics.context_budget (a fraction of the context)."
        ) from None
    except ExaoneError:
        raise
    except Exception as err:  # the value's own code (its __str__, _repr_llm_...) failed
        raise ExaoneError(
            f"{{{name}}} could not be rendered for the model ({type(err).__name__}: {err}); fix "
            f"its {type(value).__name__} (or put the text you mean in a string variable)."
        ) from None


def _is(value: object, module: str, name: str) -> bool:
    """Whether ``value`` is ``module.name`` (pandas, numpy), without importing the module: a
    value of that type means its module is imported already."""
    loaded = sys.modules.get(module)
    kind = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(kind, type) and isinstance(value, kind)


def _method(value: object, name: str) -> Callable[[], object] | None:
    """``value.name`` when the value's class defines it (an instance's ``__getattr__`` that
    answers every name is not an opt-in, as IPython's display formatters also hold)."""
    if getattr(type(value), name, None) is None:
        return None
    method = getattr(value, name)
    return method if callable(method) else None


def _text_of(result: object, hook: str) -> str:
    if not isinstance(result, str):
        raise TypeError(f"{hook}() returned {type(result).__name__}, not str")
    return result


def _json(value: object) -> str:
    """Compact JSON (Korean stays Korean); what JSON has no form for is its ``repr``."""
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # keys that are not strings, a list that holds itself
        return repr(value)
