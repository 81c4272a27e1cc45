"""Models, data and helpers for the chat-layer tests (template, conversation, session).

Import the fixtures into a test module by name (``from _chat_fixtures import demo_backend``).
Everything runs the real llama.cpp tokenizer: the shipped ``exaone-demo`` model, or a random
GGUF written by ``exaone_jupyter.testing`` (EXAONE's markers as control tokens, bytes for the rest).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import exaone_jupyter
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT

DATA = Path(exaone_jupyter.__file__).parent / "data"
DIALOGUES: list[list[dict]] = [
    d["messages"] for d in json.loads((DATA / "demo_dialogues.json").read_text("utf-8"))]


def find_dialogue(user: str, *, system: str | None = LG_SYSTEM_PROMPT,
                  turns: int = 1) -> list[dict]:
    """The trained dialogue whose last question is ``user``."""
    for messages in DIALOGUES:
        users = [m["content"] for m in messages if m["role"] == "user"]
        first_system = messages[0]["content"] if messages[0]["role"] == "system" else None
        if users[-1] == user and first_system == system and len(users) == turns:
            return messages
    raise AssertionError(f"dialogue {user!r} (system {system!r}, {turns} turns) is not in the data")


def _backend(path):
    pytest.importorskip("llama_cpp")
    from exaone_jupyter.engine.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    return LocalBackend(read_gguf(path))


@pytest.fixture(scope="module")
def demo_backend():
    """The shipped demo model (EXAONE 3 template, 927-token vocabulary)."""
    from exaone_jupyter.model.catalog import demo_model_path

    backend = _backend(demo_model_path())
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def random_backend(tmp_path_factory):
    """A random-weight GGUF: byte-level vocabulary, EXAONE's markers (with [|tool|])."""
    from exaone_jupyter.testing import write_random_gguf

    backend = _backend(write_random_gguf(tmp_path_factory.mktemp("chat") / "random.gguf"))
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=["demo", "random"])
def backend(request):
    """Each of the two real tokenizers in turn (import demo_backend and random_backend too)."""
    return request.getfixturevalue(f"{request.param}_backend")


def control_ids(backend, ids) -> list[int]:
    """The control tokens (markers) among ``ids``, in order."""
    return [t for t in ids if backend.is_control(t)]


def text_of(backend, ids) -> str:
    """Token ids back to text, markers included (llama.cpp detokenizes those to '')."""
    out: list[str] = []
    run: list[int] = []
    for t in ids:
        if backend.is_control(t):
            out.append(backend.detokenize(run))
            out.append(backend.token_text(t))
            run = []
        else:
            run.append(t)
    out.append(backend.detokenize(run))
    return "".join(out)


def one_sentence(message: str) -> bool:
    """A user-facing error: a single line that ends like a sentence."""
    return "\n" not in message and message.endswith(".") and "Traceback" not in message
