"""The subprocess probe on its own (no kernel): a file that would abort llama.cpp, and the cache."""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.model import probe as probe_module
from exaone_jupyter.model.catalog import demo_model_path


def duplicate_token_gguf(path):
    """The demo model with token "Ì" turned into "Î", which the vocabulary already has."""
    data = bytearray(demo_model_path().read_bytes())
    at = data.index(b"\x02\x00\x00\x00\x00\x00\x00\x00\xc3\x8c")
    data[at + 9] ^= 0x02
    path.write_bytes(bytes(data))
    return path


def test_probe_takes_the_abort(tmp_path):
    path = duplicate_token_gguf(tmp_path / "twice.gguf")
    with pytest.raises(ExaoneError) as err:
        probe_module.probe(path)
    one_sentence(
        err,
        "twice.gguf makes llama.cpp crash",
        "it aborted: assertion",
        "id_to_token.size() == token_to_id.size()",
        "download or convert it again",
    )


def test_probe_passes_once_per_file(tmp_path, monkeypatch):
    path = tmp_path / "demo.gguf"
    path.write_bytes(demo_model_path().read_bytes())
    probe_module.probe(path)

    def no_child(*args, **kwargs):
        raise AssertionError("probed twice")

    monkeypatch.setattr(probe_module.subprocess, "run", no_child)
    probe_module.probe(path)  # remembered by path, size and modification time
