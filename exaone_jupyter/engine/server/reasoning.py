"""Reasoning that a server sends apart from the answer, written back into the reply's text.

vLLM (``--reasoning-parser``) and llama-server send a reasoning model's thoughts in
``reasoning_content`` (or ``reasoning``) and the answer in ``content``. The local engine's reply
is the model's text as written, thoughts inside the family's tags (EXAONE 4.0's
``<think>...</think>``), so the renderer folds them; ``ReasoningText`` puts the tags back, so a
server's reply reads the same.
"""

from __future__ import annotations

from typing import Any


def reasoning_of(delta: Any) -> str:
    """Reasoning text that servers split from the answer (vLLM, llama-server)."""
    if delta is None:
        return ""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


class ReasoningText:
    """The reply's text for each delta, reasoning inside ``tags``. ``opened``: the prompt itself
    opened the reasoning block (EXAONE Deep always, EXAONE 4.0 with thinking on), so the model
    writes no opening tag, and none is added."""

    def __init__(self, tags: tuple[str, str], opened: bool) -> None:
        self.opening, self.closing = tags
        self.opened = opened
        self.inside = False  # reasoning was written and not yet closed
        self._last_thought = ""  # whether the reasoning ended with a newline

    def text(self, thought: str, content: str) -> str:
        """What one delta adds to the reply."""
        text = ""
        if thought:
            if not self.inside:
                text += self._open(thought)
                self.inside = True
            text += thought
            self._last_thought = thought
        if content:
            if self.inside:
                text += self._close(content)
                self.inside = False
            text += content
        return text

    def end(self) -> str:
        """The closing tag a reply that ended inside its reasoning needs (none where the prompt
        opened the block: the model would have written it)."""
        if self.inside and not self.opened:
            self.inside = False
            return self._close("")
        return ""

    def _open(self, thought: str) -> str:
        """Nothing when the prompt opened the block (as in a local reply), else the tag, with
        a newline unless the thought starts with one."""
        if self.opened:
            return ""
        return self.opening if thought.startswith("\n") else self.opening + "\n"

    def _close(self, content: str) -> str:
        """vLLM's parser splits the model's text at the tag and keeps the whitespace around it,
        so the reply is the model's text exactly (as a local reply is); a server that trims the
        parts gets the newlines of EXAONE's format back."""
        before = "" if self._last_thought.endswith("\n") else "\n"
        after = "" if content.startswith("\n") else "\n\n"
        return before + self.closing + after
