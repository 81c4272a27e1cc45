"""Stream a Reply into a notebook cell (or a terminal) with a live meter under it.

In a notebook the reply and the meter update in place through one display handle, at most every
``interval`` seconds. When the reply ends, that live output is emptied and the final reply and
meter are displayed as outputs of their own. The saved notebook therefore holds the whole reply as
Markdown and plain text (readable anywhere, no widgets), and a notebook checker such as nbval,
which compares first displays and ignores updates, sees exactly what was saved: an empty live
output, the answer, and the meter (whose timings a sanitizer normalises).
"""

from __future__ import annotations

import html
import time
from typing import Callable

from ..engine.reply import Reply, Stats


def meter_text(stats: Stats, *, model: str = "", gpu: str = "", live: bool = False) -> str:
    """One line of figures: what the meter shows, in plain text."""
    parts = []
    if stats.decode_tok_s:
        parts.append(f"{stats.decode_tok_s:.1f} tok/s")
    elif live and stats.completion_tokens:
        parts.append("… tok/s")
    parts.append(f"{stats.completion_tokens} tokens")
    if stats.ttft_s is not None:
        parts.append(f"first token {stats.ttft_s * 1000:.0f} ms")
    prompt = f"prompt {stats.prompt_tokens} tok"
    if stats.prompt_tokens_evaluated != stats.prompt_tokens:
        prompt += f" ({stats.prompt_tokens_evaluated} new)"
    if stats.prompt_tok_s:
        prompt += f" at {stats.prompt_tok_s:.0f} tok/s"
    parts.append(prompt)
    if stats.n_ctx:
        parts.append(f"context {stats.context_used}/{stats.n_ctx}")
    if model:
        parts.append(model)
    if gpu:
        parts.append(gpu)
    if stats.rate_source != "llama.cpp":
        parts.append(f"rate from {stats.rate_source}")
    if not live and stats.finish_reason and stats.finish_reason != "stop":
        parts.append({"length": "stopped at max tokens", "interrupted": "interrupted",
                      "error": "ended by an error"}.get(stats.finish_reason, stats.finish_reason))
    return " · ".join(parts)


def reply_markdown(answer: str, reasoning: str = "", *, finish_reason: str | None = None,
                   live: bool = False) -> str:
    body = answer
    if reasoning:
        state = "thinking…" if live and not answer else "reasoning"
        body = (f"<details><summary>{state} ({len(reasoning)} characters)</summary>\n\n"
                f"{reasoning}\n\n</details>\n\n{answer}")
    if finish_reason == "interrupted":
        body += "\n\n*⏹ interrupted*"
    return body


class _Bundle:
    """Several mimetypes in one object: each frontend shows the best one it knows."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data


def show_markdown(text: str) -> None:
    """Markdown in a notebook, the same text readable in a terminal."""
    from IPython.display import display
    display(_Bundle({"text/markdown": text, "text/plain": text}))


def _meter_bundle(text: str) -> _Bundle:
    return _Bundle({"text/plain": text,
                    "text/html": f"<div style='font-size:0.85em;opacity:0.7;font-family:monospace'>"
                                 f"⚡ {html.escape(text)}</div>"})


def _reply_bundle(markdown: str, plain: str) -> _Bundle:
    return _Bundle({"text/markdown": markdown, "text/plain": plain})


class CellRenderer:
    """Throttled display-handle streaming for notebook frontends."""

    def __init__(self, *, interval: float = 0.1, model: str = "", gpu: str = "",
                 split: Callable[[Reply], tuple[str, str]] | None = None) -> None:
        self.interval = interval
        self.model, self.gpu = model, gpu
        self.split = split or (lambda reply: ("", reply.text))
        self.updates = 0  # live updates sent, for tests and the benchmark

    def note(self, text: str) -> None:
        from IPython.display import display
        display(_Bundle({"text/plain": f"ℹ {text}", "text/markdown": f"*ℹ {text}*"}))

    def stream(self, reply: Reply) -> Reply:
        from IPython.display import display

        live = display(_Bundle({"text/plain": ""}), display_id=True)
        live.update(_reply_bundle("*evaluating the prompt…*", "evaluating the prompt…"))
        last = time.perf_counter()
        try:
            for _ in reply:
                now = time.perf_counter()
                if now - last >= self.interval:
                    self._update(live, reply)
                    last = now
        except KeyboardInterrupt:  # landed here rather than inside the engine's loop
            reply.close()
        live.update(_Bundle({"text/plain": ""}))
        reasoning, answer = self.split(reply)
        markdown = reply_markdown(answer, reasoning, finish_reason=reply.stats.finish_reason)
        display(_reply_bundle(markdown, reply.text))
        display(_meter_bundle(meter_text(reply.stats, model=self.model, gpu=self.gpu)))
        return reply

    def _update(self, live, reply: Reply) -> None:
        reasoning, answer = self.split(reply)
        stats = reply.stats
        if stats.completion_tokens > 1 and stats.ttft_s is not None:
            # live rate: tokens after the first over the time since it came
            since_first = reply.elapsed_s - stats.ttft_s
            if since_first > 0:
                stats = Stats(**{**stats.as_dict(),
                                 "decode_tok_s": (stats.completion_tokens - 1) / since_first})
        meter = meter_text(stats, model=self.model, gpu=self.gpu, live=True)
        markdown = reply_markdown(answer, reasoning, live=True) + "▌"
        live.update(_Bundle({"text/markdown": f"{markdown}\n\n<sub>⚡ {html.escape(meter)}</sub>",
                             "text/plain": f"{reply.text}\n\n{meter}"}))
        self.updates += 1


class TerminalRenderer:
    """Plain printing for terminal IPython, where display updates would re-print everything."""

    def __init__(self, *, model: str = "", gpu: str = "", **_: object) -> None:
        self.model, self.gpu = model, gpu
        self.updates = 0

    def note(self, text: str) -> None:
        print(f"ℹ {text}")

    def stream(self, reply: Reply) -> Reply:
        try:
            for piece in reply:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            reply.close()
        if reply.stats.finish_reason == "interrupted":
            print(" [interrupted]", end="")
        print(f"\n\n{meter_text(reply.stats, model=self.model, gpu=self.gpu)}")
        return reply


def renderer_for(shell, **options):
    """Display handles in a notebook kernel, plain prints in a terminal."""
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:  # pragma: no cover - ipykernel is there whenever a notebook is
        ZMQInteractiveShell = ()
    if isinstance(shell, ZMQInteractiveShell):
        return CellRenderer(**options)
    return TerminalRenderer(**options)
