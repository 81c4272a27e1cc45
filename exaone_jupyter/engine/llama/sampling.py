"""Picking the next token: llama.cpp's own sampler chain, and numpy where that chain sorts.

On the CPU a sequence samples with llama.cpp's chain (``penalties -> top-k -> top-p ->
temperature -> dist``, greedy at temperature 0, a schema's grammar first): the same tokens as
llama.cpp for a seed, and a cost per token (~0.1-0.3 ms) that is noise beside a real model's
decode (~100 ms at EXAONE-4.0-1.2B's shape on 2 cores). One mode is the exception: top-p without
a top-k, where llama.cpp sorts the whole vocabulary when the distribution is flat (13 ms a
token). ``TopP`` does that mode in numpy with partial sorts: the same distribution, other tokens
for a given seed. ``benchmarks/sampler_choice.py`` measured the candidates side by side (this
chain, plain numpy everywhere, a compiled sampler, and this mix) at real sizes; the mix was the
simplest within 2% of the best in every mode (docs/performance.md). On a GPU the chain runs in
llama.cpp's graph instead (``llama_chain(in_graph=True)``).
"""

from __future__ import annotations

import ctypes
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ...errors import ExaoneError
from ..backend import Sampling
from . import graph_samplers

PENALTY_LAST_N = 64  # the tokens the repetition penalty looks back on (llama.cpp's ring buffer)
_BLOCK = 1024  # TopP's draw: weights summed in blocks of this many tokens
_STRIDE = 32  # TopP's cut: every 32nd mass, sorted, estimates where the cut falls


class LogitsReader:
    """``reader(i)``: the logits of output ``i`` of the last ``llama_decode`` (-1: the last one) as
    a numpy view of llama.cpp's buffer, no copy, valid until the next decode. llama.cpp keeps its
    output buffer from decode to decode, so the view of an address is made once: making one after
    each decode cost more than a compiled pick."""

    def __init__(self, ctx: Any, n_vocab: int) -> None:
        import llama_cpp

        self._ctx, self._n_vocab = ctx, n_vocab
        # llama_get_logits_ith declared to return a plain address: no pointer object to cast
        function = ctypes.cast(llama_cpp.llama_get_logits_ith, ctypes.c_void_p).value or 0
        self._get = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(function)
        self._views: dict[int, np.ndarray] = {}

    def __call__(self, i: int) -> np.ndarray:
        address = self._get(self._ctx, i)
        if not address:
            raise RuntimeError(f"llama.cpp has no logits for output {i}")
        view = self._views.get(address)
        if view is None:
            if len(self._views) > 1024:  # llama.cpp moved its buffer (a larger batch): start over
                self._views.clear()
            floats: Any = (ctypes.c_float * self._n_vocab).from_address(address)
            view = self._views[address] = np.frombuffer(floats, dtype=np.float32)
        return view


def llama_chain(
    s: Sampling,
    prompt: Sequence[int],
    vocab: Any,
    *,
    grammar: str | None = None,
    in_graph: bool = False,
) -> Any:
    """The same chain as llama.cpp's own samplers, for where llama.cpp must run it: inside its
    graph (``LoadOptions.sample_in_graph``), or behind a schema's grammar (a llama.cpp sampler).
    In the graph it ends in ``graph_samplers.token_only``: the token is all the engine reads."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if grammar is not None:
        constraint = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not constraint:
            llama_cpp.llama_sampler_free(chain)
            raise ExaoneError(
                "llama.cpp could not parse the grammar made from the schema; simplify the schema."
            )
        llama_cpp.llama_sampler_chain_add(chain, constraint)
    for sampler in _llama_samplers(s, vocab):
        # The repetition penalty looks back into the prompt too; the grammar must not see it.
        for token in prompt[-PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(sampler, token)
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    if in_graph:
        llama_cpp.llama_sampler_chain_add(chain, graph_samplers.token_only())
    return chain


def host_picker(
    ctx: Any,
    vocab: Any,
    n_vocab: int,
    s: Sampling,
    prompt: Sequence[int],
    *,
    grammar: str | None = None,
) -> tuple[Callable[[int], int], Callable[[], None] | None]:
    """``(pick, release)`` for a sequence sampled on the CPU: ``pick(i)`` is the token after
    output ``i`` of the last decode, accepted into the sampler's state; ``release`` frees what
    the sampler holds (None: nothing). llama.cpp's own chain, except for top-p over the whole
    vocabulary (top-k off), where that chain sorts the vocabulary and ``TopP`` does it in numpy
    (``benchmarks/sampler_choice.py`` measured the choice)."""
    import llama_cpp

    seed = s.seed if s.seed is not None else random.SystemRandom().getrandbits(32)
    whole_vocabulary = not 0 < s.top_k < n_vocab
    if grammar is None and s.temperature > 0 and whole_vocabulary and s.top_p < 1.0:
        top_p = TopP(n_vocab, s, seed=seed, history=prompt)
        logits = LogitsReader(ctx, n_vocab)

        def pick_top_p(i: int) -> int:
            token = top_p.pick(logits(i))
            top_p.accept(token)
            return token

        return pick_top_p, None
    chain = llama_chain(replace(s, seed=seed), prompt, vocab, grammar=grammar)
    return (
        lambda i: llama_cpp.llama_sampler_sample(chain, ctx, i),
        lambda: llama_cpp.llama_sampler_free(chain),
    )


def _llama_samplers(s: Sampling, vocab: Any) -> Iterator[Any]:
    """llama.cpp's samplers for ``s``, in its order."""
    import llama_cpp

    if s.temperature == 0:
        yield llama_cpp.llama_sampler_init_greedy()
        return
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    if s.repeat_penalty != 1.0:
        yield llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, s.repeat_penalty, 0, 0
        )
    if 0 < s.top_k < n_vocab:  # k >= vocabulary cuts nothing (and ggml_top_k asserts k <= n)
        yield llama_cpp.llama_sampler_init_top_k(s.top_k)
    if s.top_p < 1.0:
        yield llama_cpp.llama_sampler_init_top_p(s.top_p, 1)
    yield llama_cpp.llama_sampler_init_temp(s.temperature)
    seed = s.seed if s.seed is not None else random.SystemRandom().getrandbits(32)
    yield llama_cpp.llama_sampler_init_dist(seed)


class TopP:
    """llama.cpp's chain with top-p over the whole vocabulary (top-k off), in numpy: penalties,
    top-p, temperature, dist.

    llama.cpp's top-p sorts the candidates it keeps, all of the vocabulary when the distribution
    is flat. Here one sort of the probabilities' values finds the cut (the fewest most probable
    tokens whose mass reaches p, as llama.cpp keeps them; tokens tied at the cut are all kept),
    and the draw walks the kept tokens in id order: the same distribution as llama.cpp's chain,
    other tokens for a given seed. A seed always gives the same tokens here.
    """

    def __init__(
        self, n_vocab: int, s: Sampling, *, seed: int, history: Sequence[int] = ()
    ) -> None:
        self.top_p, self.temperature = s.top_p, s.temperature
        self.penalty = np.float32(s.repeat_penalty)
        self.rng = np.random.default_rng(seed)
        self._recent: deque[int] = deque(history[-PENALTY_LAST_N:], maxlen=PENALTY_LAST_N)
        self._x = np.empty(n_vocab, np.float32)  # penalized logits
        self._e = np.empty(n_vocab, np.float32)  # exp(x - max): the cut's masses
        # the draw's weights (temperature applied), in whole blocks: zeros past the vocabulary
        self._padded = np.zeros(-(-n_vocab // _BLOCK) * _BLOCK, np.float32)

    def pick(self, logits: np.ndarray) -> int:
        """A token drawn from the weights: a block of them by the blocks' running sums, then
        the token within it (two short running sums instead of one over the vocabulary)."""
        w = self.weights(logits)
        blocks = self._padded.reshape(-1, _BLOCK).sum(axis=1)  # the padding stays 0
        ends = np.cumsum(blocks, dtype=np.float64)
        target = self.rng.random() * ends[-1]
        block = min(int(np.searchsorted(ends, target, side="right")), len(ends) - 1)
        start = block * _BLOCK
        target -= ends[block - 1] if block else 0.0
        inside = np.cumsum(w[start : start + _BLOCK], dtype=np.float64)
        i = min(int(np.searchsorted(inside, target, side="right")), len(inside) - 1)
        while w[start + i] == 0:  # rounding put the target past the block's last weight
            i -= 1
        return start + i

    def weights(self, logits: np.ndarray) -> np.ndarray:
        """The draw's weights: softmax(x / temperature) up to a factor, 0 outside top-p's set
        (``x``: the logits after the repetition penalty). A view of a buffer reused per call."""
        x = self._penalized(logits) if self.penalty != 1.0 else logits
        top = x.max()
        e = np.exp(np.subtract(x, top, out=self._e), out=self._e)
        kept = e >= self._cut(e)
        w = self._padded[: len(e)]
        if self.temperature == 1.0:
            return np.multiply(e, kept, out=w)
        np.subtract(x, top, out=w)
        w *= np.float32(1.0 / self.temperature)
        np.exp(w, out=w)
        w *= kept
        return w

    def _cut(self, e: np.ndarray) -> np.float32:
        """The smallest mass top-p keeps (``e``: the masses, exp(x - max)).

        Sorting all masses costs ~0.7 ms on 102,400 tokens; only the side of the cut that holds
        fewer tokens is sorted here. A strided sample estimates how many tokens are kept; few:
        the largest masses (twice the estimate) are sorted and summed until they reach p; many:
        the smallest are, until their sum would pass what top-p leaves out. Where the estimate
        missed the cut, all masses are sorted.
        """
        n = len(e)
        total = np.float32(e.sum())
        wanted = np.float32(self.top_p) * total
        sample = np.cumsum(np.sort(e[::_STRIDE])[::-1])  # the sample's running mass, from the top
        share = int(np.searchsorted(sample, np.float32(self.top_p) * sample[-1])) + 1
        estimate = min(share * _STRIDE, n)
        if estimate <= n // 2:  # few kept: the largest masses, descending
            k = min(n, 2 * estimate + 4 * _STRIDE)
            largest = np.sort(np.partition(e, n - k)[n - k :])[::-1]
            reached = np.cumsum(largest)
            if reached[-1] >= wanted:
                return largest[int(np.searchsorted(reached, wanted))]
        else:  # many kept: the smallest masses, ascending, which top-p may leave out
            m = min(n, 2 * (n - estimate) + 4 * _STRIDE)
            smallest = np.sort(np.partition(e, m - 1)[:m])
            left_out = int(np.searchsorted(np.cumsum(smallest), total - wanted, side="right"))
            if left_out < m:
                return smallest[left_out]
        descending = np.sort(e)[::-1]  # the estimate missed: all of them
        return descending[min(int(np.searchsorted(np.cumsum(descending), wanted)), n - 1)]

    def accept(self, token: int) -> None:
        if self.penalty != 1.0:
            self._recent.append(token)

    def _penalized(self, logits: np.ndarray) -> np.ndarray:
        x = self._x
        np.copyto(x, logits)
        if self._recent:
            ids = np.fromiter(set(self._recent), np.intp)
            values = x[ids]
            x[ids] = np.where(values <= 0, values * self.penalty, values / self.penalty)
        return x
