"""graph_samplers: our samplers in llama.cpp's graph, computed by ggml and inside a decode.

What the ops compute is the same on ggml's CPU backend, which these tests run; the GPU is where
the small sorts would pay (benchmarks/gpu/graph_sampler_cost.py).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from exaone_jupyter.engine.backend import Request, Sampling  # noqa: E402
from exaone_jupyter.engine.llama import graph_samplers  # noqa: E402
from exaone_jupyter.engine.llama.gpu import load_lib  # noqa: E402

PROMPT = "[|user|]Tell me about Seoul.\n[|assistant|]"


def test_levels_split_the_vocabulary_into_rows_a_block_sorts():
    assert graph_samplers.levels(102_400, 40) == [(1024, 100), (1000, 4), (160, 1)]
    assert graph_samplers.levels(102_400, 1) == [(1024, 100), (100, 1)]
    assert graph_samplers.levels(102_400, 100) == [(1024, 100), (1000, 10), (1000, 1)]
    assert graph_samplers.levels(32_000, 40) == [(1000, 32), (640, 2), (80, 1)]
    # no split: one ggml_top_k, as llama.cpp's own sampler does
    assert graph_samplers.levels(268, 40) is None  # fits one row
    assert graph_samplers.levels(151_936, 40) is None  # 128 x 1,187 (a prime): no second level
    assert graph_samplers.levels(102_400, 600) is None  # two rows' survivors overflow a row


# -- the ops, computed by ggml's CPU backend ------------------------------------------------------
def ggml_top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """graph_samplers.build_top_k's (values, ids) of ``x``, built in a ggml context, computed."""
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    base, cpu = load_lib(lib_dir, "ggml-base"), load_lib(lib_dir, "ggml-cpu")
    p = ctypes.c_void_p
    base.ggml_init.restype, base.ggml_init.argtypes = p, [graph_samplers.InitParams]
    base.ggml_new_tensor_1d.restype = p
    base.ggml_new_tensor_1d.argtypes = [p, ctypes.c_int, ctypes.c_int64]
    base.ggml_get_data.restype, base.ggml_get_data.argtypes = p, [p]
    base.ggml_new_graph.restype, base.ggml_new_graph.argtypes = p, [p]
    base.ggml_build_forward_expand.argtypes = [p, p]
    base.ggml_free.argtypes = [p]
    cpu.ggml_graph_compute_with_ctx.argtypes = [p, p, ctypes.c_int]
    ctx = base.ggml_init(graph_samplers.InitParams(64 * 2**20, None, False))
    try:
        logits = base.ggml_new_tensor_1d(ctx, graph_samplers.GGML_TYPE_F32, len(x))
        data = (ctypes.c_float * len(x)).from_address(base.ggml_get_data(logits))
        np.ctypeslib.as_array(data)[:] = x
        values, ids = graph_samplers.build_top_k(ctx, logits, k)
        graph = base.ggml_new_graph(ctx)
        base.ggml_build_forward_expand(graph, values)
        base.ggml_build_forward_expand(graph, ids)
        assert cpu.ggml_graph_compute_with_ctx(ctx, graph, 2) == 0
        read = lambda t, c: np.ctypeslib.as_array((c * k).from_address(base.ggml_get_data(t)))  # noqa: E731
        return read(values, ctypes.c_float).copy(), read(ids, ctypes.c_int32).copy()
    finally:
        base.ggml_free(ctx)


@pytest.mark.parametrize(
    ("n", "k"),
    [(102_400, 40), (102_400, 1), (102_400, 100), (32_000, 40), (268, 40), (151_936, 40)],
)
def test_the_cut_keeps_the_k_largest_with_their_logits(n, k):
    rng = np.random.default_rng(n + k)
    for _ in range(3):
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        values, ids = ggml_top_k(x, k)
        assert sorted(ids.tolist()) == sorted(np.argsort(-x, kind="stable")[:k].tolist())
        assert np.array_equal(values, x[ids])  # each id with its own logit


def test_a_peak_in_one_row_survives_every_level():
    """The k largest all in one row of the first level, and at the very end of the vector."""
    x = np.zeros(102_400, np.float32)
    x[-40:] = np.arange(1, 41, dtype=np.float32)
    _, ids = ggml_top_k(x, 40)
    assert sorted(ids.tolist()) == list(range(102_360, 102_400))


# -- in a decode: the same draws as llama.cpp's own chain ------------------------------------------
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


BUILD = graph_samplers.build_top_k


@pytest.fixture
def built(monkeypatch):
    """The ``blocks`` argument of every top-k built into a graph while the test runs."""
    seen: list[bool] = []

    def recorded(*args, blocks=True, **kwargs):
        seen.append(blocks)
        return BUILD(*args, blocks=blocks, **kwargs)

    monkeypatch.setattr(graph_samplers, "build_top_k", recorded)
    return seen


def reply(backend, s: Sampling) -> list[int]:
    """The engine's reply to PROMPT: the tokens it decoded (all but the last sampled)."""
    ids = backend.tokenize(PROMPT, special=True)
    backend.stream(Request(s, prompt_ids=ids)).consume()
    return backend._kv_ids[len(ids) :]


def test_the_small_sorts_draw_what_llamas_own_chain_draws(in_graph, built, monkeypatch):
    """The blocks pay off on a GPU if anywhere; here they run on the CPU, by the test's choice."""
    path, backend = in_graph
    monkeypatch.setattr(graph_samplers, "pays_off", lambda device: True)
    ids = backend.tokenize(PROMPT, special=True)
    for seed, temperature in ((1, 0.7), (2, 1.5)):
        s = Sampling(temperature=temperature, top_k=40, top_p=0.95, max_tokens=40, seed=seed)
        drawn = reply(backend, s)
        assert len(drawn) == 39 and drawn == llama_chain_tokens(path, ids, s, 39)
    assert built and all(built)  # in the graph, as blocks


def test_the_engine_cuts_with_llamas_one_sort_until_the_blocks_pay_off(in_graph, built):
    path, backend = in_graph
    s = Sampling(temperature=0.7, top_k=40, top_p=0.95, max_tokens=12, seed=4)
    drawn = reply(backend, s)
    assert drawn == llama_chain_tokens(path, backend.tokenize(PROMPT, special=True), s, 11)
    assert built and not any(built)


def test_a_cut_that_cannot_be_built_is_llamas_own_and_says_so(in_graph, monkeypatch, caplog):
    path, backend = in_graph

    def broken(*args, blocks=True, **kwargs):
        if blocks:
            raise RuntimeError("no such op")
        return BUILD(*args, blocks=False, **kwargs)

    monkeypatch.setattr(graph_samplers, "pays_off", lambda device: True)
    monkeypatch.setattr(graph_samplers, "build_top_k", broken)
    s = Sampling(temperature=0.7, top_k=40, top_p=0.95, max_tokens=20, seed=3)
    with caplog.at_level(logging.ERROR, logger=graph_samplers.__name__):
        drawn = reply(backend, s)
    assert "ggml_top_k does it" in caplog.text
    assert drawn == llama_chain_tokens(path, backend.tokenize(PROMPT, special=True), s, 19)


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
    llama_cpp.llama_sampler_chain_add(chain, graph_samplers.top_k(40, 102_400))
    llama_cpp.llama_sampler_chain_add(chain, graph_samplers.token_only())
    copy = llama_cpp.llama_sampler_clone(chain)
    names = [
        llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(copy, i)) for i in range(2)
    ]
    assert names == [b"top-k", b"token only"]
    before = len(graph_samplers._samplers)
    llama_cpp.llama_sampler_free(chain)
    assert len(graph_samplers._samplers) == before - 2  # the copy's are still there
    llama_cpp.llama_sampler_free(copy)
    assert len(graph_samplers._samplers) == before - 4
