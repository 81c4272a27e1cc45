"""``{name}`` in a cell's text becomes the value of ``name`` from the notebook's namespace.

Deliberately small: identifiers only, nothing is evaluated, an unknown name stays as written, and
``{{`` / ``}}`` give literal braces. (IPython's own ``var_expand`` turns ``$5`` into ``5``,
evaluates expressions, and silently gives up on the whole text at the first stray brace.)
"""

from __future__ import annotations

import re
from typing import Mapping

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, namespace: Mapping[str, object]) -> str:
    def replace(match: re.Match) -> str:
        whole, name = match.group(0), match.group(1)
        if whole == "{{":
            return "{"
        if whole == "}}":
            return "}"
        return str(namespace[name]) if name in namespace else whole

    return _TOKEN.sub(replace, text)
