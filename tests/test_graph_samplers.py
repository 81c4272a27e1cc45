"""graph_samplers.token_only: the end of the engine's chains in llama.cpp's graph.

The chain runs in the graph on ggml's CPU backend here (``in_graph`` forces it); on a GPU it is
the default where the output layer runs there. What it draws is llama.cpp's own chain's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from exaone_jupyter.engine.backend import Request, Sampling  # noqa: E402
from exaone_jupyter.engine.llama import graph_samplers  # noqa: E402

PROMPT = "[|user|]Tell me about Seoul.\n[|assistant|]"


def llama_chain_tokens(path: Path, prompt: list[int], s: Sampling, n: int) -> list[int]:
    """The tokens llama.cpp's own chain (its top-k sampler) draws in its graph: a bare loop."""
    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_gpu_layers=0, verbose=False)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(s.top_k),
        llama_cpp.llama_sampler_init_top_p(s.top_p, 1),
        llama_cpp.llama_sampler_init_temp(s.temperature),
        llama_cpp.llama_sampler_init_dist(s.seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    try:
        assert llama_cpp.llama_set_sampler(llm.ctx, 0, chain)
        llm.eval(prompt)
        tokens: list[int] = []
        for _ in range(n):
            tokens.append(llama_cpp.llama_get_sampled_token_ith(llm.ctx, -1))
            llama_cpp.llama_sampler_accept(chain, tokens[-1])
            llm.eval([tokens[-1]])
        return tokens
    finally:
        llama_cpp.llama_set_sampler(llm.ctx, 0, None)
        llama_cpp.llama_sampler_free(chain)
        llm.close()


def reply(backend, s: Sampling) -> list[int]:
    """The engine's reply to PROMPT: the tokens it decoded (all but the last sampled)."""
    ids = backend.tokenize(PROMPT, special=True)
    backend.stream(Request(s, prompt_ids=ids)).consume()
    return backend._kv_ids[len(ids) :]


def test_in_the_graph_the_engine_draws_what_llamas_own_chain_draws(in_graph):
    path, backend = in_graph
    ids = backend.tokenize(PROMPT, special=True)
    for seed, temperature in ((1, 0.7), (2, 1.5)):
        s = Sampling(temperature=temperature, top_k=40, top_p=0.95, max_tokens=40, seed=seed)
        drawn = reply(backend, s)
        assert len(drawn) == 39 and drawn == llama_chain_tokens(path, ids, s, 39)


def test_a_top_k_of_the_whole_vocabulary_or_more_cuts_nothing(in_graph):
    """As llama.cpp's own top-k and the host sampler treat it (ggml_top_k would abort)."""
    _, backend = in_graph
    uncut = reply(backend, Sampling(temperature=0.7, top_k=0, max_tokens=12, seed=5))
    for k in (backend.n_vocab, 200_000):
        assert reply(backend, Sampling(temperature=0.7, top_k=k, max_tokens=12, seed=5)) == uncut


@pytest.mark.parametrize("temperature", [0.7, 0])
def test_only_the_token_comes_back_from_the_graph(in_graph, temperature):
    """llama.cpp copies back whatever the chain leaves: after greedy, the vocabulary's logits."""
    _, backend = in_graph
    ctx = backend._llm.ctx
    reply(backend, Sampling(temperature=temperature, max_tokens=3, seed=1))
    counts = (
        llama_cpp.llama_get_sampled_logits_count_ith(ctx, -1),
        llama_cpp.llama_get_sampled_probs_count_ith(ctx, -1),
        llama_cpp.llama_get_sampled_candidates_count_ith(ctx, -1),
    )
    assert counts == (0, 0, 0)
    # what the test tells apart: llama.cpp's chain alone leaves them to copy
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    try:
        assert llama_cpp.llama_set_sampler(ctx, 0, chain)
        backend._decode_next(backend._kv_ids[-1])
        assert llama_cpp.llama_get_sampled_logits_count_ith(ctx, -1) == backend.n_vocab
    finally:
        llama_cpp.llama_set_sampler(ctx, 0, None)  # a chain attaches once: the next reply's
        llama_cpp.llama_sampler_free(chain)


def test_a_clone_is_a_sampler_of_its_own():
    """llama.cpp clones a chain sampler by sampler; each clone is freed on its own."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(40))
    llama_cpp.llama_sampler_chain_add(chain, graph_samplers.token_only())
    copy = llama_cpp.llama_sampler_clone(chain)
    names = [
        llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(copy, i)) for i in range(2)
    ]
    assert names == [b"top-k", b"token only"]
    before = len(graph_samplers._samplers)
    llama_cpp.llama_sampler_free(chain)
    assert len(graph_samplers._samplers) == before - 1  # the copy's is still there
    llama_cpp.llama_sampler_free(copy)
    assert len(graph_samplers._samplers) == before - 2
