"""Fixtures shared by the test files: small generated GGUF models and the real engine on them.

Tests run the real llama.cpp engine on models they make (``exaone_jupyter.testing``), never a
fake backend. The session-wide model loads in milliseconds; tests that need a differently built
model write their own with ``write_random_gguf`` into ``tmp_path``.
"""

from __future__ import annotations

from typing import Callable

import pytest

from exaone_jupyter.testing import write_random_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """Path of a ~100K-parameter random-weight GGUF in EXAONE's format (f32, 512-token context)."""
    return write_random_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_backend(tiny_gguf):
    """The local engine with ``tiny_gguf`` loaded, shared by the session; closed at the end.

    Its KV cache carries over between tests: a test that counts evaluated prompt tokens should
    give its prompt unique text, or run it once before measuring.
    """
    pytest.importorskip("llama_cpp")
    from exaone_jupyter.engine.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    backend = LocalBackend(read_gguf(tiny_gguf))
    yield backend
    backend.close()


def exaone_prompt_ids(backend, user: str, *, system: str = "") -> list[int]:
    """Token ids of a one-turn EXAONE 3 prompt: markers as special tokens, text as plain text."""
    def marker(text: str) -> list[int]:
        return backend.tokenize(text, special=True)

    def plain(text: str) -> list[int]:
        return backend.tokenize(text, special=False) if text else []

    return (marker("[|system|]") + plain(system) + marker("[|endofturn|]\n[|user|]") + plain(user)
            + marker("\n[|assistant|]"))


@pytest.fixture(scope="session")
def prompt_ids() -> Callable[..., list[int]]:
    """``prompt_ids(backend, user, system="")``: the token ids of a one-turn EXAONE 3 prompt."""
    return exaone_prompt_ids
