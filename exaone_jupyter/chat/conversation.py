"""A conversation: the system prompt and the turns so far; saved and restored as JSON.

The history is never cut. When it no longer fits the context, ``fit`` picks the newest turns that
do (the system prompt and the current question always stay), hands back the prompt it measured
(rendered and tokenized once) and says how many turns it left out.

An exchange that came from a notebook cell remembers the cell (``cell``: the frontend's cell id,
``run``: its execution count). Running the cell again replaces that exchange where it stands:
the conversation keeps the order in which cells first ran, and the re-run question sees only
what came before its exchange, as it did the first time.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeGuard, TypeVar

from ..errors import ExaoneError, PromptTooLong

FORMAT = "exaone-jupyter/conversation"
VERSION = 1
ROLES = ("user", "assistant", "tool")
CELL_KEYS = ("cell", "run")  # where an exchange came from: bookkeeping, never sent to a model

Measured = TypeVar("Measured", bound=Sized)  # a rendered prompt; its len() is its token count


@dataclass(frozen=True)
class Fitted(Generic[Measured]):
    """What ``Conversation.fit`` chose: the messages, their measured prompt, the turns left out."""

    messages: list[dict]
    prompt: Measured
    dropped: int


@dataclass
class Conversation:
    system: str | None = None
    messages: list[dict] = field(default_factory=list)  # user/assistant/tool, no system

    def to_messages(self, *extra: dict) -> list[dict]:
        """What the template sees: the system prompt (if any), the history, then ``extra``."""
        return self._head() + _for_model(self.messages) + [dict(m) for m in extra]

    def _head(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def add(self, role: str, content: str, **flags: object) -> None:
        if role not in ROLES:
            raise ExaoneError(
                f"A conversation message has the role user, assistant or tool, not "
                f"{role!r}; the system prompt is set on its own."
            )
        self.messages.append({"role": role, "content": content, **flags})

    def reset(self) -> None:
        self.messages.clear()

    # -- exchanges from cells -------------------------------------------------------------------
    def exchange_of(self, cell: str) -> slice | None:
        """Where the exchange that ``cell`` made sits in ``messages``, or None."""
        where = [i for i, m in enumerate(self.messages) if m.get("cell") == cell]
        return slice(where[0], where[-1] + 1) if where else None

    def messages_of(self, cell: str) -> list[dict]:
        """The messages of the exchange ``cell`` made, without the bookkeeping ([] if none)."""
        span = self.exchange_of(cell)
        return _for_model(self.messages[span]) if span else []

    def before(self, cell: str | None) -> Conversation:
        """The history a question from ``cell`` sees: what precedes the cell's earlier exchange
        (everything, when the cell has none)."""
        span = self.exchange_of(cell) if cell else None
        kept = self.messages if span is None else self.messages[: span.start]
        return Conversation(self.system, [dict(m) for m in kept])

    def start_at(self, cell: str | None) -> None:
        """A fresh start (``--new``) at ``cell``: what precedes its earlier exchange leaves, the
        exchanges that first ran after it stay, as a resume of the saved notebook keeps them
        (everything leaves when the cell has none)."""
        span = self.exchange_of(cell) if cell else None
        del self.messages[: len(self.messages) if span is None else span.start]

    def forget(self, cell: str) -> None:
        """Remove the exchange ``cell`` made, if any (the cell now asks a one-off question)."""
        span = self.exchange_of(cell)
        if span is not None:
            del self.messages[span]

    def put(self, exchange: list[dict], *, cell: str | None = None, run: int | None = None) -> None:
        """Add an exchange (a question and its reply). One from a cell that made one before
        replaces it in place; without a cell it is appended."""
        for message in exchange:
            if message.get("role") not in ROLES:
                raise ExaoneError(
                    "A conversation message has the role user, assistant or tool, not "
                    f"{message.get('role')!r}; the system prompt is set on its own."
                )
        tagged = [{**m, "cell": cell, "run": run} if cell else dict(m) for m in exchange]
        span = self.exchange_of(cell) if cell else None
        if span is None:
            self.messages.extend(tagged)
        else:
            self.messages[span] = tagged

    @property
    def turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "user")

    # -- the context budget ---------------------------------------------------------------------
    def fit(
        self, question: dict, measure: Callable[[list[dict]], Measured], limit: int
    ) -> Fitted[Measured]:
        """The newest messages whose prompt (``measure(messages)``, whose ``len()`` is its token
        count) takes at most ``limit`` tokens. The system prompt and ``question`` always stay;
        turns leave oldest first, whole (a user message and what answered it). The prompt comes
        back with the messages, so the caller never renders it again. Raises ExaoneError when
        even the system prompt and the question alone do not fit (PromptTooLong).
        """
        # Where each droppable turn starts; the last candidate drops the whole history.
        starts = (
            sorted({0} | {i for i, m in enumerate(self.messages) if m["role"] == "user"})
            if self.messages
            else []
        )
        starts.append(len(self.messages))

        def build(k: int) -> list[dict]:
            return self._head() + _for_model(self.messages[starts[k] :]) + [dict(question)]

        measured: dict[int, tuple[list[dict], Measured]] = {}

        def fits(k: int) -> bool:
            if k not in measured:
                messages = build(k)
                measured[k] = messages, measure(messages)
            return len(measured[k][1]) <= limit

        def chosen(k: int) -> Fitted[Measured]:
            messages, prompt = measured[k]
            return Fitted(messages, prompt, k)

        if fits(0):  # the common case: one measurement
            return chosen(0)
        last = len(starts) - 1
        if not fits(last):
            what = (
                "This message and the system prompt need" if self.system else "This message needs"
            )
            need = len(measured[last][1])
            raise PromptTooLong(
                f"{what} {need} tokens, more than the {limit} the context "
                "leaves after the reply's max_tokens; shorten it, lower "
                "--max-tokens, or load the model with a larger n_ctx.",
                need,
            )
        # Fewer messages never make a longer prompt, so the fewest turns to drop is a bisection.
        lo, hi = 0, last  # fits(lo) is False, fits(hi) is True
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid
        return chosen(hi)

    # -- files ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "system": self.system,
            "messages": self.messages,
        }
        text = json.dumps(data, ensure_ascii=False, indent=1)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escaped, it still reads back exactly
            text = json.dumps(data, ensure_ascii=True, indent=1)
        return text

    def save(self, path: str | os.PathLike) -> Path:
        """Write the conversation as JSON; the file is replaced whole or not at all."""
        path = Path(path).expanduser()
        text = self.to_json() + "\n"
        # a fresh name beside the file, made by open() so it gets the umask's mode (mkstemp
        # makes files only their owner can read)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException as err:  # Ctrl-C included: no half-written file is left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(err, OSError):
                raise ExaoneError(
                    f"Could not write {path} ({err.strerror or err}); choose a writable path."
                ) from None
            raise
        return path

    @classmethod
    def from_json(cls, text: str, source: str = "the file") -> Conversation:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            line = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
            raise ExaoneError(
                f"{source} is not valid JSON{line}; restore from a file written by `%exaone save`."
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExaoneError(
                f"{source} is not a saved exaone-jupyter conversation; restore from "
                "a file written by `%exaone save`."
            )
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
            raise ExaoneError(
                f"{source} was saved in format version {version!r}, which this "
                "exaone-jupyter cannot read; upgrade exaone-jupyter."
            )
        system, messages = data.get("system"), data.get("messages")
        if not (system is None or isinstance(system, str)) or not is_message_list(messages):
            raise ExaoneError(
                f"{source} has a malformed message list (each needs a role of user, "
                "assistant or tool and a text content); fix or re-save it."
            )
        return cls(system=system, messages=[dict(m) for m in messages])

    @classmethod
    def load(cls, path: str | os.PathLike) -> Conversation:
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ExaoneError(
                f"There is no file at {path}; give the path `%exaone save` wrote."
            ) from None
        except IsADirectoryError:
            raise ExaoneError(
                f"{path} is a folder; give the path of the file `%exaone save` wrote."
            ) from None
        except UnicodeDecodeError:
            raise ExaoneError(
                f"{path.name} is not UTF-8 text; restore from a file written by `%exaone save`."
            ) from None
        except OSError as err:
            raise ExaoneError(
                f"Could not read {path} ({err.strerror or err}); give the path "
                "`%exaone save` wrote."
            ) from None
        return cls.from_json(text, source=path.name)


def is_message_list(value: object) -> TypeGuard[list[dict]]:
    """A list of messages as a saved file holds them: each a role of ours and a text content."""
    return isinstance(value, list) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in value
    )


def _for_model(messages: list[dict]) -> list[dict]:
    """Copies of ``messages`` without the cell bookkeeping."""
    return [{k: v for k, v in m.items() if k not in CELL_KEYS} for m in messages]
