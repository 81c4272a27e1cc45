"""exaone-jupyter: chat with EXAONE inside Jupyter.

``%load_ext exaone_jupyter`` registers ``%exaone`` and ``%%exaone``. Importing the package stays
fast: llama_cpp is imported by the first model load, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "ChatPanel",
    "ask_with_tools",
    "get_session",
    "last_reply",
    "load_ipython_extension",
    "map",
    "render_prompt",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    from .ui.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .ui.magics import unregister

    unregister(ipython)


def get_session():
    """The kernel's one session: the loaded model and the conversation."""
    from .session import get_session as _get

    return _get()


def last_reply():
    """The last Reply: ``.text`` and ``.stats`` (tokens, rates, finish reason)."""
    return get_session().last_reply


def render_prompt(messages: Sequence[dict], **variables: Any) -> tuple[str, list[int]]:
    """The prompt text and token ids the loaded model would be fed for ``messages``.

    ``variables`` reach the chat template as ``apply_chat_template``'s keyword arguments do
    (``enable_thinking=True``, ``tools=[...]``, ``add_generation_prompt=False``); a ``bos_token``
    or ``eos_token`` among them replaces the model's own.
    """
    return get_session().render_prompt(messages, **variables)


def map(  # shadows the builtin inside this module only; nothing here uses it
    items: Any,
    prompt: Any,
    *,
    system: str | None = None,
    schema: Any = None,
    parallel: int | None = None,
    memory_mb: int | None = None,
    cache: Any = True,
    progress: bool = True,
    **sampling: Any,
) -> Any:
    """Ask ``prompt`` once per item, batched; the results in input order (a ``MapResult`` list).

    ``items``: a list, tuple, pandas Series or DataFrame. ``prompt``: a string where ``{}`` is
    the item and ``{column}`` a DataFrame column or dict key (``{{name}}`` is a literal
    ``{name}``; other braces stay as written), or a function of the item that returns the
    question. Each row is a one-off question under ``system`` (default: the session's system
    prompt) with no history. ``schema``: a JSON Schema dict, a pydantic model class or a field
    list such as ``"name, age int"``; each result is then the parsed value (a server is sent
    it as ``response_format``). ``parallel``: sequences decoded together (default 8, fewer when
    their KV cache would pass ``memory_mb``, default 1024 MiB), or requests at once to a server
    (default 4). Each row must fit the model's trained context on its own. ``sampling``:
    ``temperature`` (default 0 here), ``max_tokens`` (default 256), ``top_p``, ``top_k``,
    ``repeat_penalty``, ``seed``.

    ``cache``: reproducible rows (temperature 0 or a seed) are cached, so a re-run computes only
    what changed. ``True`` (default): in memory, for this kernel; ``"disk"``: also on disk, in
    the user's cache folder (``~/.cache/exaone-jupyter/map`` on Linux), so rows survive a kernel
    restart; a folder (``"./map-cache"``, a ``pathlib.Path``): on disk there; ``False``: no
    cache. ``exaone_jupyter.mapping.clear_cache()`` empties the memory cache,
    ``clear_cache("disk")`` a disk cache too.

    A row that fails is a ``RowError`` in its place; Ctrl-C keeps the finished rows and marks
    the rest. A server that cannot be reached raises one sentence when no row was answered.
    ``df["answer"] = exaone_jupyter.map(df, ...)`` makes a column.
    """
    from .ui.map_progress import map_with_progress

    shell = None
    if progress:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover - IPython is a dependency
            shell = None
    return map_with_progress(
        get_session(),
        items,
        prompt,
        shell=shell,
        progress=progress,
        system=system,
        schema=schema,
        parallel=parallel,
        memory_mb=memory_mb,
        cache=cache,
        **sampling,
    )


def __getattr__(name: str) -> Any:
    if name == "ChatPanel":  # ipywidgets is imported only when the panel is wanted
        from .ui.panel import ChatPanel

        return ChatPanel
    if name == "ask_with_tools":  # the tool loop is imported when tools are wanted
        from .ui.tool_cell import ask_with_tools

        return ask_with_tools
    raise AttributeError(name)
