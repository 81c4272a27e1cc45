"""The tool loop: reply, read its tool calls, confirm, run, send the results back, continue.

The session streams each round as any reply; this module reads the calls the reply made
(the ``<tool_call>`` text a local model writes, or a server's ``tool_calls``), asks the UI to
show and confirm each one, runs it, and puts the call and its result into the turn's steps, so
the next round's prompt, and the exchange the notebook keeps, hold them. It ends when a reply
makes no call, after ``max_rounds`` rounds of calls (one sentence says so), or at Ctrl-C, which
at every step keeps what happened so far. Nothing here knows IPython: ``ToolUI`` is the UI's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .chat.turn import Turn
from .engine.reply import Reply
from .errors import ExaoneError
from .session import Session
from .tools import Tool
from .tools.calls import ToolCall, parse_calls
from .tools.results import ResultText, error_text, result_text

DEFAULT_MAX_ROUNDS = 3
DECLINED = "The user declined to run this call; it did not run."
INTERRUPTED = "Interrupted by the user (Ctrl-C) before it returned."
STOPPED = "The user stopped the tools (Ctrl-C) before this call ran; it did not run."


class ToolUI(Protocol):
    """What the loop asks of a UI: show a reply as it streams, ask, show a call's outcome."""

    def stream(self, reply: Reply) -> Reply: ...

    def confirm(self, call: ToolCall) -> bool:
        """True to run ``call``; may raise KeyboardInterrupt (stop) or ExaoneError."""
        ...

    def outcome(self, call: ToolCall, text: str, *, ran: bool, note: str | None) -> None: ...

    def note(self, text: str) -> None: ...


class _Stop(Exception):
    """Ctrl-C inside a tool: its result is recorded, the loop ends."""


def run_with_tools(
    session: Session,
    turn: Turn,
    tools: Sequence[Tool],
    ui: ToolUI,
    *,
    ask: bool = True,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    record: Callable[[Reply], None] | None = None,
) -> Reply | None:
    """Run ``turn`` round by round until the model answers without a call; returns the last
    reply. The conversation gets the whole exchange once, however it ended; then
    ``record(last reply)`` (the cell keeps the exchange in its output)."""
    base = list(turn.messages)
    reply: Reply | None = None
    rounds = 0
    try:
        while True:
            reply = ui.stream(session.send(turn, settle=False))
            turn.ends_in_steps = False
            if reply.stats.finish_reason != "stop":
                break  # stopped, cut at max_tokens or failed: kept as it is
            rest, calls = _calls_of(session, reply)
            if not calls:
                break
            if rounds >= max_rounds:
                ui.note(
                    f"The model asked for tools again after {rounds} rounds, the limit "
                    "(--max-tool-rounds); those calls did not run."
                )
                break
            rounds += 1
            _record_calls(turn, rest, calls)
            for n, call in enumerate(calls):
                try:
                    text = _run_one(call, tools, ui, ask=ask, limit=_result_limit(session, turn))
                except BaseException as stop:  # Ctrl-C, or a UI that could not ask
                    _answer_unrun(turn, calls[n:], ui, stop)
                    raise
                _answer(turn, call, text)
            _next_round(session, turn, base)
    except KeyboardInterrupt:
        ui.note("Stopped; the conversation keeps the tool calls and results so far.")
    except _Stop:
        ui.note("Stopped inside the tool; the conversation keeps its calls and results so far.")
    finally:
        if reply is not None:
            session.settle(turn, reply)
            if record is not None and (reply.text or reply.stats.finish_reason != "error"):
                record(reply)
    return reply


def _calls_of(session: Session, reply: Reply) -> tuple[str, list[ToolCall]]:
    """(the reply's answer without its calls, the calls): a server's structured calls, else
    the ``<tool_call>`` text of the answer (reasoning left out, as the template leaves it)."""
    served: list[ToolCall] | None = getattr(reply, "tool_calls", None)
    _, answer = session.split_reasoning(reply)
    if served:
        return answer.strip(), served
    return parse_calls(answer, prefix=f"call_{len(reply.text)}")


def _record_calls(turn: Turn, rest: str, calls: list[ToolCall]) -> None:
    """The assistant's message with its calls. A call that names no tool (not JSON) stays in
    its text, as the model wrote it: the template could not write it back."""
    broken = "\n".join(f"<tool_call>{call.raw}</tool_call>" for call in calls if call.name == "?")
    message: dict = {"role": "assistant", "content": "\n".join(p for p in (rest, broken) if p)}
    named = [call.message() for call in calls if call.name != "?"]
    if named:
        message["tool_calls"] = named
    turn.steps.append(message)
    turn.ends_in_steps = True


def _answer(turn: Turn, call: ToolCall, text: str) -> None:
    turn.steps.append({"role": "tool", "content": text, "tool_call_id": call.id, "name": call.name})


def _answer_unrun(turn: Turn, calls: list[ToolCall], ui: ToolUI, stop: BaseException) -> None:
    """The loop stops with ``calls`` unanswered: each still gets an answer saying why. OpenAI's
    API takes no call without one, and a model reads on from a whole exchange, not a cut one."""
    for n, call in enumerate(calls):
        if isinstance(stop, _Stop) and n == 0:
            _answer(turn, call, INTERRUPTED)  # _run_one has shown it
        elif isinstance(stop, ExaoneError):
            _answer(turn, call, str(stop))  # e.g. no input to confirm with: the cell says it
        else:
            ui.outcome(call, STOPPED, ran=False, note=None)
            _answer(turn, call, STOPPED)


def _run_one(call: ToolCall, tools: Sequence[Tool], ui: ToolUI, *, ask: bool, limit: int) -> str:
    """What goes back to the model for ``call``: its result, or one sentence saying why not."""
    by_name = {tool.name: tool for tool in tools}
    try:
        if call.error is not None:
            raise ExaoneError(call.error)
        tool = by_name.get(call.name)
        if tool is None:
            raise ExaoneError(
                f"The model called {call.name}, which is not a tool of this question "
                f"({', '.join(by_name) or 'none'}); nothing ran."
            )
        arguments = tool.check(call.arguments)
    except ExaoneError as err:
        ui.outcome(call, str(err), ran=False, note=None)
        return str(err)
    if ask and not ui.confirm(call):
        ui.outcome(call, DECLINED, ran=False, note=None)
        return DECLINED
    try:
        value = tool.run(arguments)
    except KeyboardInterrupt:
        ui.outcome(call, INTERRUPTED, ran=False, note=None)
        raise _Stop from None
    except Exception as err:  # the tool's own failure goes back to the model, as text
        text = error_text(call.name, err)
        ui.outcome(call, text, ran=True, note=None)
        return text
    result: ResultText = result_text(call.name, value, limit)
    ui.outcome(call, result.text, ran=True, note=result.note)
    return result.text


def _result_limit(session: Session, turn: Turn) -> int:
    """Characters a result may have: what the context leaves after the prompt and the reply,
    a character a token (cautious: English runs about four characters a token, but a small
    vocabulary or Korean text can take one a character), at least 200."""
    backend = session.require_backend()
    used = len(turn.prompt) if turn.prompt is not None else 0
    return max(200, backend.n_ctx - used - turn.sampling.max_tokens)


def _next_round(session: Session, turn: Turn, base: list[dict]) -> None:
    """The turn's prompt for the next round: the question's messages, then the steps."""
    turn.messages = base + [dict(step) for step in turn.steps]
    backend = session.require_backend()
    template, tokenizer = session.template, backend.tokenizer
    if template is None or tokenizer is None:  # a server renders the prompt itself
        turn.prompt = None
        return
    prompt = template.prompt(turn.messages, tokenizer, **turn.template_kwargs)
    if len(prompt) + turn.sampling.max_tokens > backend.n_ctx:
        raise ExaoneError(
            f"The tool results make the prompt {len(prompt)} tokens, which leaves no room for "
            f"a {turn.sampling.max_tokens}-token reply in the {backend.n_ctx}-token context; "
            "lower --max-tokens, or return less from the tool."
        )
    turn.prompt = prompt


class ConsoleUI:
    """The loop in plain Python (a script, a terminal): prints the replies and outcomes, asks
    with ``input()``."""

    def stream(self, reply: Reply) -> Reply:
        try:
            for piece in reply:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            reply.close()
        print()
        return reply

    def confirm(self, call: ToolCall) -> bool:
        try:
            return input(f"Run {call.signature()}? [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False

    def outcome(self, call: ToolCall, text: str, *, ran: bool, note: str | None) -> None:
        print(f"🔧 {call.signature()}: {'result' if ran else 'not run'}\n{text}")
        if note:
            self.note(note)

    def note(self, text: str) -> None:
        print(f"ℹ {text}")
