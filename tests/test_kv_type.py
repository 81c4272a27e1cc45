"""The KV cache's type (``kv_type``): quantized caches load with flash attention on, hold what
llama.cpp says they hold, answer the trained questions as f16 does on the 4.0 demo model, and a
model whose heads do not fit the blocks is refused in one sentence, the loaded model kept."""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling
from exaone_jupyter.engine.llama.llama_load import kv_bytes_per_layer
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.session import Session
from kernel_helpers import DEMO_ANSWER, DEMO_QUESTION
from shared_fixtures import DATA

V4 = DATA / "exaone-4.0-demo.gguf"


@pytest.mark.parametrize("kv_type", ["f16", "q8_0", "q4_0"])
def test_each_kv_type_answers_and_holds_what_it_says(kv_type):
    session = Session()
    session.load(str(V4), kv_type=kv_type, cache_ram_mb=0, cache_disk_mb=0)
    try:
        backend = session.backend
        assert backend.info.local.kv_cache.startswith(
            f"{kv_type}, flash attention {'off' if kv_type == 'f16' else 'on'}"
        )
        reply = session.ask(DEMO_QUESTION, Sampling(temperature=0)).consume()
        assert reply.text == DEMO_ANSWER
    finally:
        session.unload()


def test_the_kv_bytes_a_token_takes_are_llama_cpps():
    """What the offload plan and map's memory budget count equals the bytes of a saved state."""
    info = read_gguf(V4)
    per_token = {}
    for kv_type in ("f16", "q8_0", "q4_0"):
        backend = LocalBackend(info, LoadOptions(kv_type=kv_type, cache_disk_mb=0))
        try:
            ids = backend.tokenize("word " * 600, special=False)
            backend.stream(Request(Sampling(temperature=0, max_tokens=1), prompt_ids=ids)).consume()
            per_token[kv_type] = backend.prefix_cache().ram_bytes / len(ids)  # the saved state
        finally:
            backend.close()
        expected = kv_bytes_per_layer(info, 1, kv_type) * info.n_layers
        assert expected <= per_token[kv_type] <= expected + 16  # and a cell's position, sequence
    assert (
        per_token["q8_0"] < per_token["f16"] * 0.55 and per_token["q4_0"] < per_token["f16"] * 0.3
    )


def test_a_kv_type_the_heads_cannot_take_is_one_sentence_and_the_model_stays():
    session = Session()
    session.load("exaone-demo")
    try:
        with pytest.raises(ExaoneError) as refused:
            session.load("exaone-demo", kv_type="q4_0")
        one_sentence(refused, "kv_type=q4_0", "heads have 40", "use kv_type=f16")
        reply = session.ask(DEMO_QUESTION, Sampling(temperature=0)).consume()
        assert reply.text == DEMO_ANSWER
    finally:
        session.unload()
