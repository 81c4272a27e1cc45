"""A conversation: the system prompt and the turns so far; saved and restored as JSON.

The history is never cut. When it no longer fits the context, ``fit`` picks the newest turns that
do (the system prompt and the current question always stay) and says how many it left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ExaoneError

FORMAT = "exaone-jupyter/conversation"
ROLES = ("user", "assistant", "tool")


@dataclass
class Conversation:
    system: str | None = None
    messages: list[dict] = field(default_factory=list)  # user/assistant/tool, no system

    def to_messages(self, *extra: dict) -> list[dict]:
        """What the template sees: the system prompt (if any), the history, then ``extra``."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.messages] + list(extra)

    def add(self, role: str, content: str, **flags: object) -> None:
        self.messages.append({"role": role, "content": content, **flags})

    def reset(self) -> None:
        self.messages.clear()

    @property
    def turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "user")

    # -- the context budget ---------------------------------------------------------------------
    def fit(self, question: dict, count: Callable[[list[dict]], int], limit: int
            ) -> tuple[list[dict], int]:
        """The newest messages whose prompt takes at most ``limit`` tokens, and how many turns
        were left out. Raises ExaoneError when even the system prompt and question alone do not fit.
        """
        starts = [i for i, m in enumerate(self.messages) if m["role"] == "user"] or [0]
        starts = sorted(set(starts + [0]))
        for dropped, start in enumerate(starts):
            head = [{"role": "system", "content": self.system}] if self.system else []
            messages = head + [dict(m) for m in self.messages[start:]] + [question]
            if count(messages) <= limit:
                return messages, dropped
        bare = ([{"role": "system", "content": self.system}] if self.system else []) + [question]
        if count(bare) <= limit:
            return bare, len(starts)
        raise ExaoneError(f"This message and the system prompt need {count(bare)} tokens, more "
                          f"than the {limit} the context leaves after the reply's max_tokens; "
                          "shorten it, lower --max-tokens, or load the model with a larger n_ctx.")

    # -- files ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": 1, "system": self.system,
                           "messages": self.messages}, ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path).expanduser()
        try:
            path.write_text(self.to_json() + "\n", encoding="utf-8")
        except OSError as err:
            raise ExaoneError(f"Could not write {path} ({err.strerror}); choose a writable path.") \
                from None
        return path

    @classmethod
    def from_json(cls, text: str, source: str = "the file") -> "Conversation":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ExaoneError(f"{source} is not valid JSON (line {err.lineno}); restore from a "
                              "file written by `%exaone save`.") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExaoneError(f"{source} is not a saved exaone-jupyter conversation; restore from "
                              "a file written by `%exaone save`.")
        system, messages = data.get("system"), data.get("messages")
        ok = (system is None or isinstance(system, str)) and isinstance(messages, list) and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages)
        if not ok:
            raise ExaoneError(f"{source} has a malformed message list (each needs a role of user, "
                              "assistant or tool and a text content); fix or re-save it.")
        return cls(system=system, messages=[dict(m) for m in messages])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Conversation":
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ExaoneError(f"There is no file at {path}; give the path `%exaone save` wrote.") \
                from None
        except (OSError, UnicodeDecodeError) as err:
            raise ExaoneError(f"Could not read {path} ({err}); give the path `%exaone save` wrote.") \
                from None
        return cls.from_json(text, source=path.name)
