"""The tool calls a model writes, read from its reply.

EXAONE 4.0 writes each call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(several in a row allowed), after the (possibly empty) reasoning block. A call whose text is not
such JSON is still a call: it carries a one-sentence ``error`` that goes back to the model as the
tool's answer, so a small model that writes a broken call learns what went wrong instead of the
cell failing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|\Z)", re.S)


@dataclass(frozen=True)
class ToolCall:
    """One call: the tool's name and arguments, or why they could not be read."""

    name: str
    arguments: Any  # the parsed JSON (a dict when the model got it right)
    id: str = ""  # a server's id for the call; the local engine numbers them
    error: str | None = None  # one sentence when the call's text is not a call
    raw: str = ""  # the call's text as the model wrote it

    def message(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` item (OpenAI's shape, with the
        arguments as a JSON object, as Hugging Face's templates expect them)."""
        arguments = self.arguments if isinstance(self.arguments, dict) else {}
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
        }

    def signature(self) -> str:
        """``name(a=1, b='x')``: the call as a person reads it."""
        if not isinstance(self.arguments, dict):
            return f"{self.name}(…)"
        inside = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.name}({inside})"


def supports_tools(template: Any) -> bool:
    """Whether a chat template (``ChatTemplate``) renders tools and tool calls."""
    return "tool_calls" in template.source and "tools" in template.source


def split_calls(text: str) -> tuple[str, list[str]]:
    """(the text without its calls, each call's raw JSON text); a call still being written
    (no closing tag yet) counts too, so a streaming reply shows it as a call at once."""
    raws = [m.group(1) for m in _CALL.finditer(text)]
    return _CALL.sub("", text).strip(), raws


def parse_calls(text: str, prefix: str = "call") -> tuple[str, list[ToolCall]]:
    """(the text without its calls, the calls), each call numbered ``{prefix}_{n}``."""
    rest, raws = split_calls(text)
    return rest, [parse_call(raw, f"{prefix}_{n}") for n, raw in enumerate(raws, 1)]


def parse_call(raw: str, call_id: str = "") -> ToolCall:
    """One call's JSON text (``{"name": ..., "arguments": {...}}``) as a ToolCall."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return ToolCall(
            "?", None, call_id, f"The tool call {_clip(raw)} is not JSON; nothing ran.", raw
        )
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        return ToolCall(
            "?", None, call_id, f"The tool call {_clip(raw)} names no tool; nothing ran.", raw
        )
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models (and OpenAI's API) write the object as text
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return ToolCall(
                name,
                arguments,
                call_id,
                f"The arguments of {name} are not JSON ({_clip(arguments)}); the tool did not run.",
                raw,
            )
    return ToolCall(name, arguments, call_id, raw=raw)


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
