"""``%%exaone --tools``: the cell's side of the tool loop (``tool_loop.py``).

The names after ``--tools`` are looked up in the notebook; each call the model makes is shown in
the cell, confirmed with ``input()`` (the frontend's input box) unless ``--yes`` or
``%config ExaoneMagics.confirm_tools = False`` says not to ask, and its outcome is shown folded,
as reasoning is. A frontend that cannot answer ``input()`` (nbclient, nbval: no stdin) gets one
sentence that says to use ``--yes``; the call does not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..engine.backend import Sampling
from ..engine.reply import Reply
from ..errors import ExaoneError
from ..session import get_session
from ..tool_loop import DEFAULT_MAX_ROUNDS, ConsoleUI, ToolUI, run_with_tools
from ..tools import Tool, describe_all
from ..tools.calls import ToolCall
from .render import code_block, publish, renderer_for
from .reports import short_spec

NO_STDIN = (
    "This frontend cannot answer a confirmation prompt (it allows no input, as nbclient and "
    "nbval do), so the tool did not run; {yes}, or set "
    "%config ExaoneMagics.confirm_tools = False, to run tools without asking."
)
MAGIC_YES, PYTHON_YES = "add --yes", "pass yes=True"  # how each caller says "do not ask"


def lookup_tools(names: str, namespace: Mapping[str, Any]) -> list[Tool]:
    """The tools ``--tools f,g`` names, described; ExaoneError (one sentence) for a name the
    notebook does not define or a value that cannot be a tool."""
    found = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name not in namespace:
            raise ExaoneError(
                f"--tools names {name}, which this notebook does not define; define the "
                "function first, or fix the name."
            )
        found.append((name, namespace[name]))
    if not found:
        raise ExaoneError("--tools names no function; give names like --tools get_weather,add.")
    return describe_all(found)


class CellToolUI:
    """Shows the rounds through the cell's renderer, asks with ``input()``, shows outcomes."""

    def __init__(
        self, renderer: Any, *, model: str = "", gpu: str = "", yes: str = MAGIC_YES
    ) -> None:
        self.renderer, self.model, self.gpu, self.yes = renderer, model, gpu, yes

    def stream(self, reply: Reply) -> Reply:
        return self.renderer.stream(reply, model=self.model, gpu=self.gpu)

    def confirm(self, call: ToolCall) -> bool:
        from IPython.core.error import StdinNotImplementedError

        try:
            answer = input(f"Run {call.signature()}? [y/N] ")
        except StdinNotImplementedError:
            raise ExaoneError(NO_STDIN.format(yes=self.yes)) from None
        except EOFError:  # a terminal whose input has ended: nobody said yes
            return False
        return answer.strip().lower() in ("y", "yes")

    def outcome(self, call: ToolCall, text: str, *, ran: bool, note: str | None) -> None:
        state = "result" if ran else "not run"
        summary = f"🔧 {call.signature()}: {state}"
        markdown = (
            f"<details><summary>{_escape(summary)}</summary>\n\n{code_block(text, 'text')}\n\n"
            "</details>"
        )
        publish({"text/markdown": markdown, "text/plain": f"{summary}\n{text}"})
        if note:
            self.note(note)

    def note(self, text: str) -> None:
        self.renderer.note(text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ask_with_tools(
    question: str,
    tools: Sequence[Callable[..., object]],
    *,
    yes: bool = False,
    think: bool = False,
    new: bool = False,
    system: str | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    **sampling: Any,
) -> Reply | None:
    """Ask the kernel's conversation ``question``, letting the model call ``tools`` (the
    functions themselves); returns the last Reply: ``%%exaone --tools`` from Python, shown in
    the cell as the magic shows it (printed, outside IPython).

    Each call is shown and confirmed with ``input()`` unless ``yes``; the model may call again
    up to ``max_rounds`` rounds. ``think``, ``new`` and ``system`` as a cell's ``--think``,
    ``--new`` and ``-s``; ``sampling`` as ``map``'s (``temperature``, ``max_tokens``...).
    """
    from IPython import get_ipython

    chosen = Sampling.from_options(Sampling(), **sampling)  # a misspelling, before anything
    session = get_session()
    described = describe_all(
        (getattr(f, "__name__", f"tools[{n}]"), f) for n, f in enumerate(tools)
    )
    turn = session.prepare(question, chosen, tools=described, think=think, new=new, system=system)
    shell = get_ipython()
    ui: ToolUI = ConsoleUI()
    if shell is not None:
        renderer = renderer_for(shell, split=session.split_reasoning)
        ui = CellToolUI(
            renderer,
            model=short_spec(session.model_spec or ""),
            gpu=session.require_backend().info.gpu_label,
            yes=PYTHON_YES,
        )
    return run_with_tools(session, turn, described, ui, ask=not yes, max_rounds=max_rounds)
