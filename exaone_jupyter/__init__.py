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
    "get_session",
    "last_reply",
    "load_ipython_extension",
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


def __getattr__(name: str) -> Any:
    if name == "ChatPanel":  # ipywidgets is imported only when the panel is wanted
        from .ui.panel import ChatPanel

        return ChatPanel
    raise AttributeError(name)
