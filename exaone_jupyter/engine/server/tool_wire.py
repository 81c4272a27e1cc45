"""Tool use over OpenAI's chat API: messages out in its shape, streamed calls back as text.

A conversation keeps a call's arguments as a JSON object (as Hugging Face's templates want
them); OpenAI's API carries them as a JSON string, and a ``tool`` message names the call it
answers. A server that parses the model's calls (vLLM's ``--tool-call-parser``) streams them as
``tool_calls`` pieces; they are put together and written back as the text the model wrote
(``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, EXAONE 4.0's and Hermes's form), so
the reply reads as the local engine's, and the layers above read calls from one place.
"""

from __future__ import annotations

import json
from typing import Any


def call_text(name: str, arguments: Any) -> str:
    """One call as EXAONE 4.0's template (and Hermes's) writes it; the one writer of that form
    (the history report uses it too)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def wire_message(message: dict[str, Any], *, calls_as_text: bool = False) -> dict[str, Any]:
    """A conversation message as OpenAI's API takes it. ``calls_as_text`` sends an assistant's
    calls back as the text the model wrote, for a server that returned them so (llama-cpp-
    python's): it would hand their arguments to the template as OpenAI's JSON string, which
    EXAONE 4.0's template writes quoted, a prompt the model never wrote."""
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    calls = message.get("tool_calls")
    if calls and calls_as_text:
        text = "\n".join(
            call_text(c["function"]["name"], c["function"]["arguments"]) for c in calls
        )
        out["content"] = "\n".join(part for part in (message["content"], text) if part)
    elif calls:
        out["tool_calls"] = [
            {
                "id": call.get("id") or f"call_{n}",
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.dumps(call["function"]["arguments"], ensure_ascii=False),
                },
            }
            for n, call in enumerate(calls, 1)
        ]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id") or "call_1"
    return out


class StreamedCalls:
    """The ``tool_calls`` pieces of a streamed reply, put together by their index."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, pieces: Any) -> None:
        for piece in pieces or ():
            index = getattr(piece, "index", None)
            key = index if isinstance(index, int) else len(self._calls)
            call = self._calls.setdefault(key, {"name": "", "arguments": ""})
            function = getattr(piece, "function", None)
            call["name"] += getattr(function, "name", None) or ""
            call["arguments"] += getattr(function, "arguments", None) or ""

    def text(self) -> str:
        """The calls as the model wrote them; arguments that are not JSON stay as sent."""
        calls = []
        for _, call in sorted(self._calls.items()):
            try:
                arguments: Any = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = call["arguments"]
            calls.append(call_text(call["name"], arguments))
        return "\n".join(calls)
