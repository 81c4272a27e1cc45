"""What ``%exaone`` shows about the model and the conversation: the info table, the history,
the dry-run prompt and the "Loaded ..." line. Built from typed facts (``SessionInfo``), never
from dicts read by key presence."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..chat.conversation import Conversation
from ..chat.turn import Turn
from ..engine.backend import PrefixCacheUsage
from ..engine.server.tool_wire import call_text
from ..model import catalog
from ..session import SessionInfo
from .render import code_block, reply_markdown, show_markdown


def info_rows(info: SessionInfo) -> list[tuple[str, object]]:
    """``%exaone info`` as (name, value) rows."""
    backend = info.backend
    rows: list[tuple[str, object]] = [
        ("model", backend.model),
        ("spec", info.spec),
        ("backend", backend.label),
    ]
    local = backend.local
    if local is not None:
        gguf, plan = local.gguf, local.offload
        rows += [
            ("file", short_path(gguf.path)),
            ("architecture", gguf.architecture),
            ("parameters", f"{gguf.n_params / 1e6:,.1f} M"),
            ("quantization", gguf.quantization),
            ("file size", f"{gguf.file_size / 2**20:,.1f} MiB"),
            ("context", f"{backend.n_ctx} tokens (trained for {gguf.context_length})"),
            (
                "threads",
                f"{local.n_threads}: {local.threads_why}" if local.threads_why else local.n_threads,
            ),
            ("sampling", local.sampler),
            (
                "KV cache",
                f"{local.kv_cache} in {short_path(local.kv_folder)}"
                if local.kv_folder
                else local.kv_cache,
            ),
            ("GPU layers", f"{plan.n_gpu_layers} of {plan.n_layers}: {plan.reason}"),
            (
                "llama.cpp's count",
                "not reported (CPU-only build)"
                if local.llama_gpu_layers is None
                else f"{local.llama_gpu_layers}/{plan.n_layers + 1} offloaded (it counts the output "
                "layer as one; it goes to the GPU with any block)",
            ),
            (
                "GPU support",
                "yes" + (f" ({local.gpu.name})" if local.gpu.name else "")
                if local.gpu.supports_offload
                else "no: this build runs on the CPU only",
            ),
        ]
    elif backend.server is not None:
        server = backend.server
        rows += [
            ("context", f"{backend.n_ctx} tokens" if backend.n_ctx else "not reported"),
            ("served models", ", ".join(server.served_models)),
            ("API key", f"from ${server.api_key_env}" if server.api_key_env else "none"),
        ]
    rows += [
        ("template", info.template_family),
        ("system prompt", info.system_prompt),
        ("turns", info.turns),
    ]
    if info.template_notice:
        rows.append(("note", info.template_notice))
    entry = catalog.lookup(info.spec or "")
    if entry is not None and not entry.repo:
        rows.append(("what it is", entry.description))
    return rows


def cache_rows(usage: PrefixCacheUsage) -> list[tuple[str, object]]:
    """``%exaone cache`` as (name, value) rows."""
    disk = (
        f"{usage.disk_states} states of this model, {_mib(usage.disk_bytes)} "
        f"({_mib(usage.disk_folder_bytes)} of {_mib(usage.disk_budget)} used in all)"
        if usage.folder
        else "off (cache_disk_mb=0, or the folder cannot be written)"
    )
    rows: list[tuple[str, object]] = [
        (
            "memory",
            f"{usage.ram_states} states, {_mib(usage.ram_bytes)} of {_mib(usage.ram_budget)}",
        ),
        ("disk", disk),
    ]
    if usage.folder:
        rows.append(("folder", short_path(Path(usage.folder))))
    return rows


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def show_history(conversation: Conversation) -> None:
    """``%exaone history``: Markdown in a notebook, the exact text in a terminal."""
    plain = "\n\n".join(f"{label}: {text}" for label, text in _history(conversation))
    show_markdown(history_markdown(conversation), plain=plain)


def history_markdown(conversation: Conversation) -> str:
    """The conversation as Markdown: each message under its label, shown as a cell shows a reply
    (a ``$`` is not math, a tag is text, a code fence left open does not swallow what follows)."""
    return "\n\n".join(
        f"{label}:\n\n{reply_markdown(text)}" for label, text in _history(conversation)
    )


def _calls_text(message: dict) -> str:
    """An assistant's tool calls as the model wrote them (the reply shows them folded)."""
    calls = [c.get("function", c) for c in message.get("tool_calls") or ()]
    return "".join("\n" + call_text(c.get("name"), c.get("arguments")) for c in calls)


def _history(conversation: Conversation) -> list[tuple[str, str]]:
    """Each message's label (its role, the cell that asked it (its ``In [n]``), whether it was
    interrupted) and its text."""
    labelled = [("**system**", conversation.system)] if conversation.system else []
    for m in conversation.messages:
        mark = " *(interrupted)*" if m.get("interrupted") else ""
        where = ""
        if m.get("cell") and m["role"] == "user":
            where = f" *(cell In [{m['run']}])*" if m.get("run") else " *(a notebook cell)*"
        labelled.append((f"**{m['role']}**{where}{mark}", m["content"] + _calls_text(m)))
    return labelled


def show_loaded(info: SessionInfo) -> None:
    backend = info.backend
    if backend.local is not None:
        where = backend.local.offload.label
        print(f"Loaded {backend.model} ({where}, context {backend.n_ctx}).")
    else:
        print(
            f"Connected to {backend.model} ({backend.label}, context {backend.n_ctx or 'unknown'})."
        )


def show_dry_run(turn: Turn) -> None:
    if turn.prompt is None:
        show_markdown(
            "The server applies its own chat template; these messages would be sent:\n\n"
            + code_block(json.dumps(turn.messages, ensure_ascii=False, indent=1), "json")
        )
        return
    ids = turn.prompt.ids
    if len(ids) > 24:
        shown = ", ".join(map(str, ids[:16])) + ", …, " + ", ".join(map(str, ids[-8:]))
    else:
        shown = ", ".join(map(str, ids))
    show_markdown(
        f"**Prompt: {len(ids)} tokens** (nothing generated)\n\n"
        f"{code_block(turn.prompt.text, 'text')}\n\nids: `[{shown}]`"
    )


def short_spec(spec: str) -> str:
    """What the meter calls the model: the alias or REPO:FILE as typed, a path by its file name."""
    if spec.lower().endswith(".gguf") and ("/" in spec or "\\" in spec) and ":" not in spec[2:]:
        return spec.replace("\\", "/").rsplit("/", 1)[-1]
    return spec


def short_path(path: Path) -> str:
    """The bundled model by name, others with the home folder as ~ (saved notebooks travel)."""
    if path in catalog.bundled_paths():
        return f"{path.name} (bundled with exaone-jupyter)"
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def show_table(rows: list[tuple[str, object]]) -> None:
    """Key-value rows as a Markdown table; values are escaped for the Markdown renderer only,
    so a terminal's plain text reads ``llama.cpp's``, not ``llama.cpp&#x27;s``."""
    marked, plain = ["| | |", "|---|---|"], ["| | |", "|---|---|"]
    for key, value in rows:
        text = "" if value is None else str(value)
        marked.append(f"| {key} | {html.escape(text).replace('|', '&#124;')} |")
        plain.append(f"| {key} | {text} |")
    show_markdown("\n".join(marked), plain="\n".join(plain))
