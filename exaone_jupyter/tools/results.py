"""What a tool returned, as the text the model reads in its ``tool`` turn.

A string goes as it is; anything else as JSON (pydantic's encoder: models, dataclasses, enums,
dates); what has no JSON form goes as its ``repr``, with a note for the user. A result longer
than ``limit`` characters is cut, with a note, so one call cannot fill the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResultText:
    text: str
    note: str | None = None  # one sentence for the user about what was sent


def result_text(name: str, value: Any, limit: int) -> ResultText:
    """``value`` as text of at most ``limit`` characters, and a note when it was changed."""
    note = None
    if isinstance(value, str):
        text = value
    else:
        from pydantic_core import to_json

        try:
            text = to_json(value).decode("utf-8")
        except Exception:  # no JSON form: its repr stands in
            text = repr(value)
            note = (
                f"{name} returned a value of type {type(value).__name__}, which is not "
                "JSON-serialisable, so its repr was sent."
            )
    if len(text) > limit:
        note = (
            f"{name} returned {len(text):,} characters; the first {limit:,} were sent (the "
            "context has room for no more)."
        )
        text = text[:limit] + " …[cut]"
    return ResultText(text, note)


def error_text(name: str, err: BaseException) -> str:
    """A tool's exception as the model (and the user) reads it: one line."""
    message = " ".join(str(err).split())
    kind = type(err).__name__
    return f"{name} raised {kind}: {message}" if message else f"{name} raised {kind}"
