"""Model text as safe HTML for the panel, and the panel's status lines and transcript turns.

A model's text is untrusted: it is escaped first, then a few Markdown forms are turned into tags,
so no HTML the model writes can reach the page (it shows as text), and nothing else it wrote is
dropped: a ``$`` stays a ``$``. (The ``markdown`` package may be missing, and neither it nor
mistune's default renderer escapes raw HTML.) Math (``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) is kept as
written, untouched by the Markdown forms, in a span marked ``mathjax_process``: a frontend that
typesets the panel (an ``HTMLMath`` widget whose text sits in ``mathjax_ignore``) renders it as
math and nothing else.
"""

from __future__ import annotations

import html
import re

from ..engine.backend import BackendInfo
from . import code_blocks

_NO_BLANK_LINE = r"(?:(?!\n[ \t]*\n).)+?"
_PROTECTED = re.compile(  # code spans and math: their text is shown as it is
    rf"(?P<code>(?P<ticks>`+)(?P<code_text>.+?)(?<!`)(?P=ticks)(?!`))"
    rf"|(?P<math>\$\${_NO_BLANK_LINE}\$\$|\\\({_NO_BLANK_LINE}\\\)|\\\[{_NO_BLANK_LINE}\\\])",
    re.S,
)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_HEADING = re.compile(r" {0,3}#{1,6} +(.+?)(?: +#+)? *$")
_LIST_ITEM = re.compile(r"( *)([-*+]|\d{1,9}[.)]) +(.*)$")
_TABLE_RULE = re.compile(r" *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$")
_RULE = re.compile(r" {0,3}([-*_])(?: *\1){2,} *$")
_QUOTE = re.compile(r" {0,3}> ?(.*)$")
_CODE_STYLE = "background:rgba(127,127,127,0.15);border-radius:3px;padding:0 3px"
_PRE_STYLE = (
    "background:rgba(127,127,127,0.12);border-radius:4px;padding:6px 8px;margin:4px 0;"
    "white-space:pre-wrap;font-size:0.92em"
)
_MATH_STYLE = "font-family:var(--jp-code-font-family,monospace);font-size:0.92em"
_P_STYLE = "margin:0 0 6px"
_LIST_STYLE = "margin:0 0 6px;padding-left:22px"
_TABLE_STYLE = "border-collapse:collapse;margin:0 0 6px"
_CELL_STYLE = "border:1px solid rgba(127,127,127,0.35);padding:2px 6px"
_QUOTE_STYLE = "border-left:3px solid rgba(127,127,127,0.4);padding-left:8px;margin:0 0 6px"


def markdown_html(text: str) -> str:
    """A small, safe Markdown renderer: paragraphs, headings, lists, tables, quotes, rules, code
    blocks (where ``code_blocks`` finds them, as the cell does) and spans, bold, italic; math
    kept as written."""
    return "".join(
        _pre([line.code_text for line in run if not line.is_fence])
        if code
        else _blocks([line.text for line in run])
        for code, run in code_blocks.runs(text)
    )


def _pre(lines: list[str]) -> str:
    return f"<pre style='{_PRE_STYLE}'><code>{html.escape(chr(10).join(lines))}</code></pre>"


def _blocks(lines: list[str]) -> str:
    """Markdown outside code blocks: each run of lines of one kind becomes one block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _RULE.match(line):
            out.append("<hr style='border:0;border-top:1px solid rgba(127,127,127,0.4)'>")
            i += 1
        elif heading := _HEADING.match(line):
            out.append(
                f"<div style='{_P_STYLE}'><strong>{_inline(heading.group(1))}</strong></div>"
            )
            i += 1
        elif (
            "|" in line
            and i + 1 < len(lines)
            and _TABLE_RULE.match(lines[i + 1])
            and "-" in lines[i + 1]
        ):
            end = i + 2
            while end < len(lines) and "|" in lines[end] and lines[end].strip():
                end += 1
            out.append(_table(lines[i], lines[i + 2 : end]))
            i = end
        elif _LIST_ITEM.match(line):
            end = i + 1
            while (
                end < len(lines)
                and lines[end].strip()
                and (_LIST_ITEM.match(lines[end]) or lines[end].startswith(" "))
            ):
                end += 1
            out.append(_list(lines[i:end]))
            i = end
        elif _QUOTE.match(line):
            end = i + 1
            while end < len(lines) and _QUOTE.match(lines[end]):
                end += 1
            quoted = [_QUOTE.match(q).group(1) for q in lines[i:end]]  # type: ignore[union-attr]
            out.append(f"<div style='{_QUOTE_STYLE}'>{_blocks(quoted)}</div>")
            i = end
        else:
            end = i + 1
            while end < len(lines) and lines[end].strip() and not _starts_block(lines, end):
                end += 1
            out.append(f"<p style='{_P_STYLE}'>{_inline(chr(10).join(lines[i:end]))}</p>")
            i = end
    return "".join(out)


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return bool(
        _HEADING.match(line)
        or _LIST_ITEM.match(line)
        or _QUOTE.match(line)
        or ("|" in line and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]))
    )


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def _table(header: str, rows: list[str]) -> str:
    head = "".join(f"<th style='{_CELL_STYLE}'>{_inline(c)}</th>" for c in _cells(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td style='{_CELL_STYLE}'>{_inline(c)}</td>" for c in _cells(r))
        + "</tr>"
        for r in rows
    )
    return f"<table style='{_TABLE_STYLE}'><tr>{head}</tr>{body}</table>"


def _list(lines: list[str]) -> str:
    """List items, nested by their indentation; an indented line that is not an item continues
    the item above it."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, "ul" or "ol") of the lists open
    for line in lines:
        item = _LIST_ITEM.match(line)
        if item is None:  # a continuation line
            out.append("<br>" + _inline(line.strip()))
            continue
        indent, kind = len(item.group(1)), "ol" if item.group(2)[0].isdigit() else "ul"
        while stack and (
            indent < stack[-1][0] or (indent == stack[-1][0] and kind != stack[-1][1])
        ):
            out.append(f"</li></{stack.pop()[1]}>")
        if stack and indent == stack[-1][0]:
            out.append("</li>")
        else:
            start = item.group(2)[:-1] if kind == "ol" else "1"
            first = f" start='{int(start)}'" if kind == "ol" and int(start) != 1 else ""
            out.append(f"<{kind}{first} style='{_LIST_STYLE}'>")
            stack.append((indent, kind))
        out.append(f"<li>{_inline(item.group(3))}")
    while stack:
        out.append(f"</li></{stack.pop()[1]}>")
    return "".join(out)


def _inline(text: str) -> str:
    """Inline Markdown: code spans and math as written, then bold, italic and line breaks."""
    out: list[str] = []
    pos = 0
    for match in _PROTECTED.finditer(text):
        out.append(_emphasis(text[pos : match.start()]))
        if match.group("code") is not None:
            code = html.escape(match.group("code_text"))
            out.append(f"<code style='{_CODE_STYLE}'>{code}</code>")
        else:
            math = html.escape(match.group("math"))
            out.append(
                f"<span class='exaone-math mathjax_process tex2jax_process' "
                f"style='{_MATH_STYLE}'>{math}</span>"
            )
        pos = match.end()
    out.append(_emphasis(text[pos:]))
    return "".join(out)


def _emphasis(text: str) -> str:
    text = html.escape(text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    return _ITALIC.sub(r"<em>\1</em>", text).replace("\n", "<br>")


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


def turn_html(
    role: str, body: str, *, live: bool = False, interrupted: bool = False, where: str = ""
) -> str:
    """One turn of the transcript around ``body`` (already HTML); ``live`` adds the cursor and
    ``where`` says where the turn came from (a notebook cell's In [n])."""
    if live:
        body += "<span style='opacity:0.6'>▌</span>"
    if interrupted:
        body += "<div style='font-size:11px;color:#ff7f0e'>■ interrupted</div>"
    who, tint = _ROLES.get(role, (role, "rgba(127,127,127,0.08)"))
    return (
        f"<div class='exaone-turn exaone-{html.escape(role)}' style='background:{tint};"
        f"border-radius:4px;padding:4px 8px;margin:3px 0'><div style='font-size:11px;"
        f"font-weight:bold;opacity:0.7'>{html.escape(who)}"
        + (
            f"<span class='exaone-where' style='font-weight:normal'> · {html.escape(where)}</span>"
            if where
            else ""
        )
        + "</div>"
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
