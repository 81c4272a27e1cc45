"""The meter: a reply's figures as one line of text, as a line under a cell, and as the panel's
live meter with a tokens/s sparkline. One wording for all of them."""

from __future__ import annotations

import html

from ..engine.reply import Reply, Stats

_FINISH_WORDS = {
    "length": "stopped at max tokens",
    "interrupted": "interrupted",
    "error": "ended by an error",
}


def finish_words(reason: str | None, *, done: str = "") -> str:
    """How a reply ended, in words ("stop" is ``done``: nothing to say under a cell)."""
    if reason in (None, "stop"):
        return done if reason else ""
    return _FINISH_WORDS.get(reason, reason)


def meter_text(stats: Stats, *, model: str = "", gpu: str = "", live: bool = False) -> str:
    """One line of figures: what the meter shows, in plain text."""
    parts = []
    if stats.decode_tok_s:
        parts.append(f"{stats.decode_tok_s:.1f} tok/s")
    elif live and stats.completion_tokens:
        parts.append("… tok/s")
    parts.append(f"{stats.completion_tokens} token{'' if stats.completion_tokens == 1 else 's'}")
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
        parts.append(finish_words(stats.finish_reason))
    return " · ".join(parts)


def meter_line_html(text: str) -> str:
    """The meter under a cell's reply: the line of ``meter_text``, small and dim."""
    return (
        f"<div style='font-size:0.85em;opacity:0.7;font-family:monospace'>"
        f"⚡ {html.escape(text)}</div>"
    )


def meter_line_data(text: str) -> dict[str, str]:
    return {"text/plain": text, "text/html": meter_line_html(text)}


def sparkline_svg(values: list[float], *, width: int = 150, height: int = 30) -> str:
    """An inline SVG line of ``values`` (tokens/s samples), scaled to its own peak."""
    if not values:
        return (
            f"<svg class='exaone-sparkline' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}'></svg>"
        )
    peak = max(max(values), 1e-9)
    if len(values) == 1:
        values = values * 2
    step = (width - 2) / (len(values) - 1)
    points = " ".join(
        f"{1 + i * step:.1f},{height - 2 - (v / peak) * (height - 4):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f"<svg class='exaone-sparkline' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' style='vertical-align:middle'>"
        f"<title>tokens/s over the reply, peak {peak:.1f}</title>"
        f"<rect x='0' y='0' width='{width}' height='{height}' rx='3' "
        f"fill='rgba(127,127,127,0.08)'/>"
        f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{points}'/></svg>"
    )


def meter_html(
    stats: Stats | None, rates: list[float], *, live: bool = False, phase: str = ""
) -> str:
    """The live meter: tokens/s, time to first token, context used, and the tokens/s sparkline."""
    cell = "display:inline-block;margin-right:14px;vertical-align:middle"
    if stats is None:
        return (
            f"<div class='exaone-meter-body' data-tokens='0' style='font-family:monospace;"
            f"font-size:12px;opacity:0.6'><span style='{cell}'>⚡ no reply yet</span>"
            f"{sparkline_svg([])}</div>"
        )
    rate = stats.decode_tok_s if not live else (rates[-1] if rates else None)
    rate_text = f"{rate:,.1f}" if rate else "…"
    ttft = f"{stats.ttft_s * 1000:,.0f} ms" if stats.ttft_s is not None else "…"
    used, n_ctx = stats.context_used, stats.n_ctx
    share = min(used / n_ctx, 1.0) if n_ctx else 0.0
    bar = (
        f"<span style='display:inline-block;width:80px;height:8px;margin-left:6px;"
        f"background:rgba(127,127,127,0.2);border-radius:4px;vertical-align:middle'>"
        f"<span style='display:block;width:{share * 100:.1f}%;height:8px;border-radius:4px;"
        f"background:{'#d62728' if share > 0.9 else '#2ca02c'}'></span></span>"
    )
    state = phase or ("writing…" if live else finish_words(stats.finish_reason, done="done"))
    plain = html.escape(meter_text(stats, live=live), quote=True)
    return (
        f"<div class='exaone-meter-body' data-tokens='{stats.completion_tokens}' "
        f"title='{plain}' style='font-family:monospace;font-size:12px;line-height:2'>"
        f"<span style='{cell}'>⚡ <b style='font-size:15px'>{rate_text}</b> tok/s</span>"
        f"<span style='{cell}'>{stats.completion_tokens} tokens</span>"
        f"<span style='{cell}'>first token {ttft}</span>"
        f"<span style='{cell}'>context {used:,}/{n_ctx:,}{bar}</span>"
        f"<span style='{cell}'>{sparkline_svg(rates)}</span>"
        f"<span style='{cell};opacity:0.7'>{html.escape(state)}</span></div>"
    )


def live_rate(reply: Reply) -> float | None:
    """Tokens after the first over the time since it came (llama.cpp's figure comes at the end)."""
    stats = reply.stats
    if stats.completion_tokens > 1 and stats.ttft_s is not None:
        since_first = reply.elapsed_s - stats.ttft_s
        if since_first > 0:
            return (stats.completion_tokens - 1) / since_first
    return None
