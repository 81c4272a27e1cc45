"""Model text as safe HTML for the panel, and the panel's status lines and transcript turns.

A model's text is untrusted: it is escaped first, then a few Markdown forms are turned into tags,
so no HTML the model writes can reach the page. (The ``markdown`` package may be missing, and
neither it nor mistune's default renderer escapes raw HTML.)
"""

from __future__ import annotations

import html
import re

from ..engine.backend import BackendInfo

_FENCE = re.compile(r"```[^\n`]*\n(?P<code>.*?)(?:\n```[^\n]*|\Z)", re.S)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_HEADING = re.compile(r"^#{1,6} +(.+)$", re.M)
_CODE_STYLE = "background:rgba(127,127,127,0.15);border-radius:3px;padding:0 3px"
_PRE_STYLE = (
    "background:rgba(127,127,127,0.12);border-radius:4px;padding:6px 8px;margin:4px 0;"
    "white-space:pre-wrap;font-size:0.92em"
)


def markdown_html(text: str) -> str:
    """A small, safe Markdown renderer: fenced and inline code, bold, italic, headings, breaks."""
    parts, pos = [], 0
    for match in _FENCE.finditer(text):
        parts.append(_inline_html(text[pos : match.start()]))
        code = html.escape(match.group("code"))
        parts.append(f"<pre style='{_PRE_STYLE}'><code>{code}</code></pre>")
        pos = match.end()
    parts.append(_inline_html(text[pos:]))
    return "".join(parts)


def _inline_html(text: str) -> str:
    out = []
    for i, chunk in enumerate(_CODE_SPAN.split(text)):
        if i % 2:  # inside backticks: literal text
            out.append(f"<code style='{_CODE_STYLE}'>{html.escape(chunk)}</code>")
            continue
        chunk = html.escape(chunk)
        chunk = _HEADING.sub(r"<strong>\1</strong>", chunk)
        chunk = _BOLD.sub(r"<strong>\1</strong>", chunk)
        chunk = _ITALIC.sub(r"<em>\1</em>", chunk)
        out.append(chunk.replace("\n", "<br>"))
    return "".join(out)


def reply_html(answer: str, reasoning: str = "") -> str:
    """An assistant's turn: its reasoning folded away above the answer."""
    body = markdown_html(answer)
    if reasoning:
        body = (
            f"<details style='opacity:0.75'><summary>reasoning ({len(reasoning):,} "
            f"characters)</summary>{markdown_html(reasoning)}</details>" + body
        )
    return body


_ROLES = {"user": ("You", "rgba(31,119,180,0.08)"), "assistant": ("EXAONE", "rgba(44,160,44,0.08)")}


def turn_html(role: str, body: str, *, live: bool = False, interrupted: bool = False) -> str:
    """One turn of the transcript around ``body`` (already HTML); ``live`` adds the cursor."""
    if live:
        body += "<span style='opacity:0.6'>▌</span>"
    if interrupted:
        body += "<div style='font-size:11px;color:#ff7f0e'>■ interrupted</div>"
    who, tint = _ROLES.get(role, (role, "rgba(127,127,127,0.08)"))
    return (
        f"<div class='exaone-turn exaone-{html.escape(role)}' style='background:{tint};"
        f"border-radius:4px;padding:4px 8px;margin:3px 0'><div style='font-size:11px;"
        f"font-weight:bold;opacity:0.7'>{html.escape(who)}</div>"
        f"<div class='exaone-text'>{body}</div></div>"
    )


_STATUS = {
    "ok": ("✓", "#2ca02c"),
    "error": ("✗", "#d62728"),
    "busy": ("⋯", "inherit"),
    "stopped": ("■", "#ff7f0e"),
    "info": ("ℹ", "inherit"),
}


def status_html(kind: str, text: str) -> str:
    """A status line: ok, error, busy, stopped or info, with its icon."""
    icon, colour = _STATUS[kind]
    return (
        f"<div class='exaone-status-{kind}' style='font-size:13px'>"
        f"<span style='color:{colour}'>{icon}</span> {html.escape(text)}</div>"
    )


def model_facts_html(info: BackendInfo | None) -> str:
    """The panel's line about the loaded model: name, GPU layers, engine, context, quantization."""
    if info is None:
        return (
            "<div style='font-size:12px;opacity:0.7'>No model loaded. "
            "<code>exaone-demo</code> works offline.</div>"
        )
    parts = [f"<b>{html.escape(info.model)}</b>"]
    reason = ""
    if info.local is not None:
        local = info.local
        gpu = local.offload.label
        if not local.gpu.supports_offload:
            gpu += " (CPU-only build)"
        elif local.gpu.name:
            gpu += f" ({local.gpu.name})"
        if local.llama_gpu_layers is not None:
            gpu += f", llama.cpp offloaded {local.llama_gpu_layers}"
        parts.append(html.escape(gpu))
        reason = local.offload.reason
    parts.append(html.escape(info.label))
    if info.n_ctx:
        parts.append(f"context {info.n_ctx:,} tokens")
    if info.local is not None:
        parts.append(html.escape(info.local.gguf.quantization))
    return (
        f"<div class='exaone-model-facts' title='{html.escape(reason, quote=True)}' "
        f"style='font-size:12px'>{' · '.join(parts)}</div>"
    )
