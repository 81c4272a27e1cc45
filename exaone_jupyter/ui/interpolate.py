"""``{name}`` in a cell's text becomes the value of ``name`` from the notebook's namespace.

Deliberately small: names only (any Python identifier, Korean ones too), nothing is evaluated, an
unknown name stays as written, and ``{{name}}`` gives a literal ``{name}``. Every other brace is
text: JSON (``{"a": {"b": 1}}``), code, Jinja's ``{{ x }}``. The text is read once, so a value
that itself holds ``{...}`` is inserted as it is. (IPython's own ``var_expand`` turns ``$5`` into
``5``, evaluates expressions, and silently gives up on the whole text at the first stray brace;
``str.format_map`` raises on JSON, and its ``}}`` escape would eat the end of nested JSON.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# A name: a letter or underscore, then letters, digits or underscores (Unicode, like Python's).
_NAME = r"[^\W\d]\w*"
_TOKEN = re.compile(rf"\{{\{{({_NAME})\}}\}}|\{{({_NAME})\}}")


def interpolate(
    text: str,
    namespace: Mapping[str, object],
    render: Callable[[str, object], str] = lambda name, value: str(value),
) -> str:
    """``text`` with each ``{name}`` that ``namespace`` defines replaced by its value, as
    ``render(name, value)`` writes it (``str(value)`` unless given: the magic renders values
    for the model, ``exaone_jupyter.context``)."""

    def replace(match: re.Match) -> str:
        escaped, name = match.group(1), match.group(2)
        if escaped is not None:
            return "{" + escaped + "}"
        return render(name, namespace[name]) if name in namespace else match.group(0)

    return _TOKEN.sub(replace, text)


def unknown_names(text: str, namespace: Mapping[str, object]) -> list[str]:
    """The ``{name}``s of ``text`` that ``namespace`` does not define (left as written)."""
    names = (m.group(2) for m in _TOKEN.finditer(text) if m.group(2) is not None)
    return list(dict.fromkeys(n for n in names if n not in namespace))
