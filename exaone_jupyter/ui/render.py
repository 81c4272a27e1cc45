"""Stream a Reply into a notebook cell (or a terminal) with a live meter under it.

In a notebook the reply and the meter update in place through one display handle, at most every
``interval`` seconds (never more than 20 times a second); a small thread sends those updates, so
the token loop never waits on the frontend. When the reply ends, that live output is emptied and
the final reply and meter are displayed as outputs of their own. The saved notebook therefore
holds the whole reply as Markdown and plain text (readable anywhere, no widgets), and a notebook
checker such as nbval, which compares first displays and ignores updates, sees exactly what was
saved: an empty live output, the answer, and the meter (whose timings a sanitizer normalises).
"""

from __future__ import annotations

import contextvars
import re
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..engine.reply import Reply
from ..tools.calls import OPEN as OPEN_CALL
from ..tools.calls import split_calls
from . import code_blocks
from .meter import live_rate, meter_line_data, meter_line_html, meter_text

DEFAULT_INTERVAL = 0.1  # seconds between live updates of a streaming reply (cells and panel)
MIN_INTERVAL = 0.05  # seconds: at most 20 live updates a second, whatever the setting


def reply_markdown(
    answer: str, reasoning: str = "", *, finish_reason: str | None = None, live: bool = False
) -> str:
    """The reply as Markdown that shows what the model wrote; ``live`` adds the typing cursor.

    Markdown structure renders; what would otherwise be eaten is kept (see ``as_written``): a
    ``$`` that is not math, HTML tags outside code. Only a reply that needs it is wrapped in a
    block that keeps MathJax off everything but its math and lets long words wrap. Tool calls
    (``<tool_call>…``) show folded under the answer, as the reasoning shows above it.
    """
    calls: list[str] = []
    if OPEN_CALL in answer:
        answer, calls = split_calls(answer)
    body, wrap = as_written(answer)
    body = close_fences(body, cursor=live and not calls)
    if calls:
        blocks = "\n\n".join(code_block(call.strip(), "json") for call in calls)
        label = "tool call" if len(calls) == 1 else f"{len(calls)} tool calls"
        body += f"\n\n<details><summary>{label}</summary>\n\n{blocks}\n\n</details>"
    if reasoning:
        thought, wrap_thought = as_written(reasoning)
        wrap = wrap or wrap_thought
        state = "thinking…" if live and not answer else "reasoning"
        body = (
            f"<details><summary>{state} ({len(reasoning)} characters)</summary>\n\n"
            f"{close_fences(thought)}\n\n</details>\n\n{body}"
        )
    if wrap:
        body = f"{_NO_MATH_OPEN}\n\n{body}\n\n</div>"
    if finish_reason == "interrupted":
        body += "\n\n*⏹ interrupted*"
    return body


# MathJax 3 (JupyterLab, Notebook 7) skips text inside ``mathjax_ignore`` except inside
# ``mathjax_process``; MathJax 2 (classic Notebook, nbconvert's HTML) reads the ``tex2jax_`` names.
# ``anywhere`` also lets a long word in a table cell wrap; JupyterLab's sanitizer (an output it
# does not trust, e.g. from a notebook opened again) keeps only the ``break-word`` before it.
_NO_MATH_OPEN = (
    '<div class="mathjax_ignore tex2jax_ignore" '
    'style="overflow-wrap:break-word;overflow-wrap:anywhere">'
)
_MATH_OPEN = '<span class="mathjax_process tex2jax_process">'
_LONG_WORD = re.compile(r"\S{30,}")  # a word or URL that may not fit a narrow cell
_NO_BLANK_LINE = r"(?:(?!\n[ \t]*\n).)+?"  # math stays within a paragraph
_PROSE_TOKEN = re.compile(
    rf"""(?P<code>`+)
      | \$\$(?P<display>{_NO_BLANK_LINE})\$\$
      | \\\((?P<inline>{_NO_BLANK_LINE})\\\)
      | \\\[(?P<bracket>{_NO_BLANK_LINE})\\\]
      | (?P<env>\\begin\{{(?P<name>[A-Za-z]+\*?)\}}{_NO_BLANK_LINE}\\end\{{(?P=name)\}})
      | \\(?P<escaped>[!-/:-@\[-`{{-~])
      | (?P<dollar>\$)
      | (?P<tag><)
      | (?P<entity>&(?=\#[0-9]{{1,7}};|\#[xX][0-9a-fA-F]{{1,6}};|[A-Za-z][A-Za-z0-9]{{1,31}};))
    """,
    re.S | re.X,
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def as_written(text: str) -> tuple[str, bool]:
    """``text`` as Markdown that a notebook shows as written, and whether it needs the block that
    keeps MathJax to its math and lets long words wrap.

    Code (blocks as ``code_blocks`` reads them, and spans) is kept verbatim. Elsewhere ``$``
    becomes ``\\$`` (not a math delimiter, for JupyterLab's Markdown step and for MathJax alike),
    ``<`` becomes ``\\<`` (a tag shows as text, neither rendered nor stripped) and ``&`` before an
    entity name becomes ``\\&``.
    ``$$…$$``, ``\\(…\\)``, ``\\[…\\]`` and ``\\begin{…}…\\end{…}`` are math: each is marked for
    MathJax, and ``\\(`` is written ``\\\\(`` so that Markdown leaves a backslash for MathJax (as
    JupyterLab expects). Text with none of these comes back unchanged.
    """
    out: list[str] = []
    wrap = bool(_LONG_WORD.search(text))
    for code, run in code_blocks.runs(text):
        lines = "\n".join(line.text for line in run)
        if code:
            out.append(lines)
        else:
            written, needs = _prose(lines)
            out.append(written)
            wrap = wrap or needs
    return "\n".join(out), wrap


def _prose(text: str) -> tuple[str, bool]:
    """Markdown text outside code blocks, as ``as_written`` says; and whether it holds math or
    a ``$``."""
    out: list[str] = []
    math_or_dollar = False
    pos = 0
    while match := _PROSE_TOKEN.search(text, pos):
        out.append(text[pos : match.start()])
        pos = match.end()
        if match.group("code") is not None:  # a code span runs to the next run as long
            end = _span_end(text, pos, match.group("code"))
            if end > 0:
                out.append(text[match.start() : end])
                pos = end
            else:  # no closing run: the backticks are text
                out.append(match.group("code"))
            continue
        if match.group("escaped") is not None:  # the model's own Markdown escape, kept
            char = match.group("escaped")
            out.append("\\\\" + char if char in "()[]" else "\\" + char)
            math_or_dollar = math_or_dollar or char == "$"
            continue
        if match.group("tag") is not None:
            out.append("\\<")
            continue
        if match.group("entity") is not None:
            out.append("\\&")
            continue
        math_or_dollar = True
        if match.group("dollar") is not None:
            out.append("\\$")
        elif match.group("display") is not None:
            out.append(f"{_MATH_OPEN}$${match.group('display')}$$</span>")
        elif match.group("inline") is not None:
            out.append(f"{_MATH_OPEN}\\\\({match.group('inline')}\\\\)</span>")
        elif match.group("bracket") is not None:
            out.append(f"{_MATH_OPEN}\\\\[{match.group('bracket')}\\\\]</span>")
        else:
            out.append(f"{_MATH_OPEN}{match.group('env')}</span>")
    out.append(text[pos:])
    return "".join(out), math_or_dollar


def _span_end(text: str, pos: int, run: str) -> int:
    """Where the code span opened by ``run`` just before ``pos`` ends (after its closing run of
    exactly as many backticks, within the paragraph), or -1."""
    limit = _BLANK_LINE.search(text, pos)
    stop = limit.start() if limit else len(text)
    for closing in re.finditer(r"`+", text[:stop]):
        if closing.start() >= pos and len(closing.group()) == len(run):
            return closing.end()
    return -1


def close_fences(text: str, *, cursor: bool = False) -> str:
    """``text`` with a code fence it leaves open closed, so that what follows (the cursor, the
    live meter, "interrupted") is not swallowed into the code block; ``cursor`` appends ``▌``
    where it cannot break a fence line."""
    *_, last = code_blocks.lines(text)
    open_fence = last.open_fence
    if cursor:
        text += "\n▌" if last.is_fence else "▌"
    if open_fence:
        text += "\n" + open_fence
    return text


def code_block(text: str, info: str = "") -> str:
    """``text`` as a fenced code block that shows it exactly: the fence is longer than any run of
    backticks in the text (CommonMark), so no line of it can close the block early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


class _Bundle:
    """Several mimetypes in one object: each frontend shows the best one it knows."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data


def show_markdown(text: str, *, plain: str | None = None) -> None:
    """Markdown in a notebook; in a terminal ``plain``, or the same text (readable as it is)."""
    from IPython.display import display

    display(_Bundle({"text/markdown": text, "text/plain": text if plain is None else plain}))


class CellRenderer:
    """Throttled display-handle streaming for notebook frontends.

    The token loop runs in the cell's (main) thread, so the kernel's interrupt lands between
    tokens. The live output is refreshed by a small ticker thread every ``interval`` seconds, and
    only when something changed: building and sending an update (the text so far, the meter) then
    overlaps llama.cpp's decode, which releases the GIL, instead of adding to every token.
    Updates are routed by display id, so frontends apply them wherever they came from.
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        split: Callable[[Reply], tuple[str, str]] | None = None,
        meter: bool = True,
    ) -> None:
        self.interval = max(float(interval), MIN_INTERVAL)
        self.meter = meter
        self.model = self.gpu = ""  # the meter's labels, given with each reply
        self.split = split or (lambda reply: ("", reply.text))
        self.updates = 0  # live updates sent, for tests and the benchmark
        self._last_text: str | None = None

    def note(self, text: str) -> None:
        publish({"text/plain": f"ℹ {text}", "text/markdown": f"*ℹ {text}*"})

    def stream(
        self,
        reply: Reply,
        *,
        model: str = "",
        gpu: str = "",
        record: Callable[[Reply], dict[str, Any]] | None = None,
    ) -> Reply:
        """Show ``reply`` as it comes; ``model`` and ``gpu`` label its meter. ``record(reply)``
        gives more mimetypes for the final output (the exchange the notebook keeps)."""
        self.model, self.gpu = model, gpu
        self.updates, self._last_text = 0, None
        live = uuid.uuid4().hex
        # First display = final state of this output (empty): what nbval compares with the file.
        publish({"text/plain": ""}, display_id=live)
        ticker = _Ticker(self.interval, lambda: self._update(live, reply))
        ticker.start()
        failure: Exception | None = None
        try:
            for _ in reply:
                pass
        except KeyboardInterrupt:  # landed here rather than inside the engine's loop
            reply.close()
        except Exception as err:  # the engine failed mid-reply: show what came, then report
            failure = err
        finally:
            ticker.stop()  # no live update may follow the final state
        steps = []
        if self.updates:  # else the live output still shows its first state: nothing to undo
            steps.append(lambda: publish({"text/plain": ""}, display_id=live, update=True))
        if failure is None or reply.text:
            reasoning, answer = self.split(reply)
            markdown = reply_markdown(answer, reasoning, finish_reason=reply.stats.finish_reason)
            meter = meter_text(reply.stats, model=self.model, gpu=self.gpu)
            final: dict[str, Any] = {"text/markdown": markdown, "text/plain": reply.text}
            if record is not None:
                final.update(record(reply))
            steps.append(lambda: publish(final))
            if self.meter:
                steps.append(lambda: publish(meter_line_data(meter)))
        _despite_interrupts(steps)
        if ticker.error is not None:  # a bug, not a user error: say so, the reply is shown
            print(f"(live updates stopped early: {ticker.error!r})", file=sys.stderr)
        if failure is not None:
            raise failure
        return reply

    def _update(self, live: str, reply: Reply) -> None:
        stats = reply.stats
        if stats.completion_tokens == 0:
            if self.updates == 0:  # the prompt takes a while: say so, once
                self.updates += 1  # counted first: a failed send still gets the final emptying
                publish(
                    {
                        "text/markdown": "*evaluating the prompt…*",
                        "text/plain": "evaluating the prompt…",
                    },
                    display_id=live,
                    update=True,
                )
            return
        text = reply.text
        if text == self._last_text:
            return
        self._last_text = text
        rate = live_rate(reply)
        if rate is not None:
            stats = replace(stats, decode_tok_s=rate)
        reasoning, answer = self.split(reply)
        markdown = reply_markdown(answer, reasoning, live=True)
        if self.meter:
            meter = meter_text(stats, model=self.model, gpu=self.gpu, live=True)
            data = {
                "text/markdown": f"{markdown}\n\n{meter_line_html(meter)}",
                "text/plain": f"{text}\n\n{meter}",
            }
        else:
            data = {"text/markdown": markdown, "text/plain": text}
        self.updates += 1
        publish(data, display_id=live, update=True)


class _Ticker:
    """Calls ``tick`` every ``interval`` seconds in a daemon thread until ``stop``.

    ``stop`` does not wait for the thread to wake up and end (on a busy machine that alone can
    take milliseconds); it waits only for a tick in progress, and no tick starts after it.
    """

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        self.interval, self.tick = interval, tick
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ticking = threading.Lock()
        # The cell's context goes along: ipykernel keeps the cell's parent message in a context
        # variable, so the updates are tagged with this cell even while another one is queued.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="exaone-meter", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._ticking:
                if self._stop.is_set():
                    return
                try:
                    self.tick()
                except Exception as err:  # a failed refresh must not end the reply; the final
                    self.error = err  # state is sent from the cell's thread anyway
                    return

    def stop(self) -> None:
        self._stop.set()

        def wait_for_the_tick() -> None:  # a tick in progress ends first
            self._ticking.acquire()

        _despite_interrupts([wait_for_the_tick])
        self._ticking.release()


def _despite_interrupts(steps: list[Callable[[], None]]) -> None:
    """Run each step once even if a late Ctrl-C lands: the reply is over, finish showing it."""
    for step in steps:
        while True:
            try:
                step()
                break
            except KeyboardInterrupt:
                continue


def publish(data: dict[str, Any], *, display_id: str | None = None, update: bool = False) -> None:
    """One display message straight to the frontends (IPython's display() adds a formatter pass)."""
    from IPython.display import publish_display_data

    if display_id is None:
        publish_display_data(data)
    else:
        publish_display_data(data, transient={"display_id": display_id}, update=update)


class TerminalRenderer:
    """Plain printing for terminal IPython, where display updates would re-print everything.
    The pieces print as they come (reasoning included, as the model wrote it)."""

    def __init__(self, *, meter: bool = True) -> None:
        self.meter = meter

    def note(self, text: str) -> None:
        print(f"ℹ {text}")

    def stream(
        self,
        reply: Reply,
        *,
        model: str = "",
        gpu: str = "",
        record: Callable[[Reply], dict[str, Any]] | None = None,
    ) -> Reply:
        """Print ``reply`` as it comes (a terminal keeps no record: ``record`` is unused)."""
        try:
            for piece in reply:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            reply.close()
        if reply.stats.finish_reason == "interrupted":
            print(" [interrupted]", end="")
        print()
        if self.meter:
            print(f"\n{meter_text(reply.stats, model=model, gpu=gpu)}")
        return reply


def in_notebook(shell: object) -> bool:
    """Whether ``shell`` is a kernel's (display handles reach a frontend), not a terminal's."""
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:  # pragma: no cover - ipykernel is there whenever a notebook is
        return False
    return isinstance(shell, ZMQInteractiveShell)


def renderer_for(
    shell,
    *,
    interval: float = DEFAULT_INTERVAL,
    split: Callable[[Reply], tuple[str, str]] | None = None,
    meter: bool = True,
) -> CellRenderer | TerminalRenderer:
    """Display handles in a notebook kernel, plain prints in a terminal."""
    if in_notebook(shell):
        return CellRenderer(interval=interval, split=split, meter=meter)
    return TerminalRenderer(meter=meter)
