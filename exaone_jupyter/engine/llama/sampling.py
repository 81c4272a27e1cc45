"""Picking the next token from the logits in place, as llama.cpp's sampler chain picks it.

Why not ``llama_sampler_sample``: on every token it copies all logits into a 12-byte-per-token
array (102,400 entries for EXAONE: ~140 µs on one core before any sampler runs), and its top-p
without a top-k sorts whatever share of the vocabulary the cut needs: all of it when the
distribution is flat (13 ms a token). This sampler reads the logits where llama.cpp wrote them and
does the same chain, ``penalties -> top-k -> top-p -> temperature -> dist`` (temperature 0:
greedy), with partial selections instead of sorts; the passes over the vocabulary are compiled
(``sampling_kernels``), the rest is numpy:

* greedy: ``argmax`` on the logits; llama.cpp's greedy picks the first maximum too, so the tokens
  are the same.
* top-k: the k-th largest of the block maxima is a threshold at least k logits reach; only the
  blocks that reach it are inserted into a sorted list of k.
* top-p: its kept set is a prefix of the tokens sorted by probability; a strided sample estimates
  where the cut falls, one pass sums the mass above a band around it, one lists the band, and only
  the band's value range that holds the cut is sorted. Ties at the cut keep the lowest ids
  (llama.cpp's order there is unspecified).
* dist: std::mt19937 seeded as llama.cpp's dist sampler is, and its uniform double draw.

Same seed, same tokens? With a top-k (the default, k 40), or a top-p set of at most 4,096 tokens,
the kept tokens are in llama.cpp's order (by logit, descending) and the draw is llama.cpp's, so
the tokens equal llama.cpp's chain token for token, except where float rounding differs at a
boundary (``tests/test_speed.py`` counts it). A larger top-p set is drawn from by rejection
sampling: the same distribution (tested against the definition), other tokens for a given seed.
A seed always gives the same tokens here.
"""

from __future__ import annotations

import ctypes
import functools
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ExaoneError
from ..backend import Sampling
from . import graph_samplers
from . import sampling_kernels as kernels

PENALTY_LAST_N = 64  # the tokens the repetition penalty looks back on (llama.cpp's ring buffer)
_BLOCK = 1024  # TopP's draw: weights summed in blocks of this many tokens
_STRIDE = 32  # TopP's cut: every 32nd mass, sorted, estimates where the cut falls
_EXACT_ORDER = 4096  # a kept set up to this size is drawn from in llama.cpp's (sorted) order


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
    for sampler in _llama_samplers(s, vocab, in_graph=in_graph):
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


def _llama_samplers(s: Sampling, vocab: Any, *, in_graph: bool) -> Iterator[Any]:
    """llama.cpp's samplers for ``s``, in its order (top-k in the graph: ``graph_samplers``')."""
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
        yield (
            graph_samplers.top_k(s.top_k, n_vocab)
            if in_graph
            else llama_cpp.llama_sampler_init_top_k(s.top_k)
        )
    if s.top_p < 1.0:
        yield llama_cpp.llama_sampler_init_top_p(s.top_p, 1)
    yield llama_cpp.llama_sampler_init_temp(s.temperature)
    seed = s.seed if s.seed is not None else random.SystemRandom().getrandbits(32)
    yield llama_cpp.llama_sampler_init_dist(seed)


def mt19937(seed: int) -> random.Random:
    """Python's Mersenne Twister in the state ``std::mt19937(seed)`` starts in.

    ``random.Random(seed)`` seeds differently (init_by_array); the state set here is the classic
    init_genrand, so ``getrandbits(32)`` yields std::mt19937's numbers.
    """
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    rng = random.Random()
    rng.setstate((3, (*state, 624), None))
    return rng


def uniform(rng: random.Random) -> float:
    """``std::uniform_real_distribution<double>(0, 1)(mt19937)`` as libstdc++ computes it."""
    low, high = rng.getrandbits(32), rng.getrandbits(32)
    u = (low + high * 4294967296.0) / 18446744073709551616.0
    return u if u < 1.0 else math.nextafter(1.0, 0.0)


ExpSum = Callable[[np.ndarray, np.ndarray, float], float]


def _numpy_exp_sum(out: np.ndarray, x: np.ndarray, shift: float) -> float:
    np.subtract(x, np.float32(shift), out=out)
    np.exp(out, out=out)
    return float(out.sum(dtype=np.float64))


def _load_ggml_exp_sum() -> ExpSum:
    """``out = exp(x - shift)`` and its sum, by ggml's vectorized softmax kernel where it loads.

    numpy's float32 exp runs ~2.4 ns an element on a CPU without AVX-512 (250 µs for EXAONE's
    vocabulary); ggml's ``ggml_vec_soft_max_f32`` (the kernel of llama.cpp's own softmax) does it
    in a third of that. It is an exported symbol of the CPU backend, not public API: it is checked
    against numpy on a small vector first, and numpy does the work where it is missing or differs.
    """
    try:
        import llama_cpp

        folder = Path(llama_cpp.__file__).parent / "lib"
        libraries = sorted(folder.glob("libggml-cpu*.so*")) + sorted(folder.glob("ggml-cpu*.dll"))
        function = ctypes.CDLL(str(libraries[0])).ggml_vec_soft_max_f32
    except (ImportError, OSError, AttributeError, IndexError):
        return _numpy_exp_sum
    function.restype = ctypes.c_double
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]

    def ggml_exp_sum(out: np.ndarray, x: np.ndarray, shift: float) -> float:
        return function(len(x), out.ctypes.data, x.ctypes.data, shift)

    probe = np.linspace(-20.0, 3.0, 37, dtype=np.float32)
    got, want = np.empty_like(probe), np.empty_like(probe)
    total = ggml_exp_sum(got, probe, 3.0)
    expected = _numpy_exp_sum(want, probe, 3.0)
    if np.allclose(got, want, rtol=1e-5, atol=0) and math.isclose(total, expected, rel_tol=1e-5):
        return ggml_exp_sum
    return _numpy_exp_sum


@functools.cache
def exp_sum() -> ExpSum:
    """``out = exp(x - shift)`` and its sum: ggml's kernel where it checks out, else numpy's."""
    return _load_ggml_exp_sum()


class Sampler:
    """The sampler chain of one reply: ``pick(logits)`` per token, ``accept(token)`` after it.

    ``logits`` is a float32 vector of the vocabulary's size (a view of llama.cpp's buffer is fine:
    it is read, never written). Settings as in ``Sampling``; ``history`` is the prompt, whose last
    64 tokens the repetition penalty sees, as llama.cpp's penalties sampler does.
    """

    def __init__(
        self,
        n_vocab: int,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        repeat_penalty: float = 1.0,
        seed: int,
        history: Sequence[int] = (),
    ) -> None:
        self.n = n_vocab
        self.temperature = float(temperature)
        self.top_k = top_k if 0 < top_k < n_vocab else 0  # k >= vocabulary: nothing to cut
        self.top_p = float(top_p)
        self.penalty = np.float32(repeat_penalty)
        self.greedy = self.temperature == 0
        self.rng = mt19937(seed)
        self._recent: deque[int] = deque(maxlen=PENALTY_LAST_N)
        if repeat_penalty != 1.0 and not self.greedy:
            self._recent.extend(history[-PENALTY_LAST_N:])
        padded = -(-n_vocab // kernels.BLOCK) * kernels.BLOCK
        self._e = np.zeros(padded, np.float32)  # top-p: the band's masses; all, for proposals
        self._w = np.zeros(padded, np.float32)  # the dist weights (temperature applied)
        self._ends = np.empty(padded // kernels.BLOCK, np.float64)  # their running block sums
        self._x = np.empty(n_vocab, np.float32)  # penalized logits
        self._scaled = np.empty(n_vocab, np.float32)  # logits / temperature
        self._band = np.empty(n_vocab, np.int32)  # top-p's scratch
        self._marks = np.zeros(padded, np.uint8)  # its band, marked (zeros past the vocabulary)
        self._exp_sum = exp_sum()
        k = max(self.top_k, 1)
        self._ids = np.empty(k, np.int64)  # top-k's kept ids and logits, sorted
        self._vals = np.empty(k, np.float32)
        self._maxima = np.empty(n_vocab // kernels.BLOCK + 1, np.float32)
        self._scratch = np.empty(k, np.int64)
        self._compiled_top_k = self.top_k > 0 and compiled_top_k(n_vocab, self.top_k)
        self._top_p32 = np.float32(self.top_p)
        self._temperature32 = np.float32(self.temperature) if not self.greedy else np.float32(1)

    # -- the chain ------------------------------------------------------------------------------
    def pick(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(logits.argmax())
        x = self._penalized(logits) if self.penalty != 1.0 else logits
        if self._compiled_top_k:
            return int(
                kernels.pick_top_k(
                    x,
                    self.top_k,
                    self._top_p32,
                    self._temperature32,
                    uniform(self.rng),
                    self._ids,
                    self._vals,
                    self._maxima,
                    self._scratch,
                )
            )
        if self.top_k:
            top = top_k(x, self.top_k)
            return self._pick_sorted(top, x[top])
        if self.top_p < 1.0:
            return self._top_p_full(x)
        return self._draw_masked(x, float(x.max()))

    def pick_among(self, ids: np.ndarray, logits: np.ndarray) -> int:
        """``pick`` after top-k was cut elsewhere: ``ids`` are the k survivors (penalties applied,
        any order) and ``logits`` theirs. The engine does not split its chain so (measured in
        benchmarks/gpu/graph_sampler_cost.py: the cut in llama.cpp's graph and this on an H200's
        host cost more than the whole chain in the graph); the benchmark keeps the comparison."""
        order = np.lexsort((ids, -logits))  # by logit descending, ties: lowest id first
        return self._pick_sorted(ids[order], logits[order])

    def _pick_sorted(self, top: np.ndarray, xs: np.ndarray) -> int:
        """Top-p, temperature and dist on candidates sorted by logit, descending."""
        xs = np.ascontiguousarray(xs, np.float32)
        keep = len(xs)
        if self.top_p < 1.0:
            keep = kernels.top_p_keep(xs, keep, self._top_p32)
        return int(top[self._draw_sorted(xs, keep)])

    def accept(self, token: int) -> None:
        if self.penalty != 1.0 and not self.greedy:
            self._recent.append(token)

    def _penalized(self, logits: np.ndarray) -> np.ndarray:
        x = self._x
        np.copyto(x, logits)
        if self._recent:
            ids = np.fromiter(set(self._recent), np.intp)
            values = x[ids]
            x[ids] = np.where(values <= 0, values * self.penalty, values / self.penalty)
        return x

    # -- dist -----------------------------------------------------------------------------------
    def _draw_sorted(self, xs: np.ndarray, count: int | None = None) -> int:
        """llama.cpp's temperature and dist on candidates sorted by logit, descending (the first
        ``count`` of them): the index."""
        xs = np.ascontiguousarray(xs, np.float32)
        count = len(xs) if count is None else count
        return int(kernels.draw_sorted(xs, count, self._temperature32, uniform(self.rng)))

    def _draw_masked(self, x: np.ndarray, m: float, last: int | None = None) -> int:
        """A token drawn from softmax(x / temperature) over the vocabulary in id order (``m`` is
        the largest logit), within top-p's kept set where ``last`` (``top_p_cut``'s) is given."""
        n, w = self.n, self._w
        scale = 1.0 / self.temperature
        scaled = np.multiply(x, np.float32(scale), out=self._scaled)
        self._exp_sum(w[:n], scaled, m * scale)
        if last is not None:
            threshold = x[last]
            w[:n] *= x >= threshold
            tied = np.flatnonzero(x == threshold)
            w[tied[tied > last]] = 0.0
        kernels.block_ends(w, self._ends)
        return int(kernels.find(w, self._ends, uniform(self.rng)))

    # -- top-p over the whole vocabulary ----------------------------------------------------------
    def _top_p_full(self, x: np.ndarray) -> int:
        e = self._e
        m = np.float32(x.max())
        ascending = np.sort(x[:: kernels.STRIDE])  # while the max's pass left x in the cache
        last, kept, total = kernels.top_p_cut(
            x, e, m, self.top_p, ascending, self._marks, self._band
        )
        if kept <= _EXACT_ORDER:  # in llama.cpp's order
            u = uniform(self.rng)
            return int(kernels.draw_kept(x, last, self._band, self._temperature32, u))
        # A large kept set: rejection sampling, exact. Where the distribution is flat (the mean
        # of exp(x - m) above 1/8), propose uniformly and accept with the tempered weight: a few
        # tries and no pass over the vocabulary. Else propose from exp(x - m) (one exp pass),
        # and accept with the ratio of the tempered weight to it. A run of misses hands over to
        # the direct draw, exact too.
        threshold, top = float(x[last]), float(m)
        if total > 0.125 * self.n:
            for _ in range(32):
                i = min(int(uniform(self.rng) * self.n), self.n - 1)
                xi = float(x[i])
                if xi < threshold or (xi == threshold and i > last):
                    continue  # not in top-p's set
                if uniform(self.rng) < math.exp((xi - top) / self.temperature):
                    return i
        else:
            self._exp_sum(e[: self.n], x, float(m))  # the cut summed the masses without them
            kernels.block_ends(e, self._ends)
            power = 1.0 / self.temperature - 1.0
            floor = 1.0 if power >= 0 else math.exp(threshold - top)  # the envelope
            for _ in range(8):
                i = int(kernels.find(e, self._ends, uniform(self.rng)))
                if x[i] < threshold or (x[i] == threshold and i > last):
                    continue
                if power == 0 or uniform(self.rng) < (float(e[i]) / floor) ** power:
                    return i
        return self._draw_masked(x, float(m), last)


def top_p_cut(x: np.ndarray, p: float) -> tuple[int, int]:
    """``sampling_kernels.top_p_cut`` on logits alone: ``(last, kept)``, for tests and tools."""
    x = np.ascontiguousarray(x, np.float32)
    e, band = np.empty_like(x), np.empty(len(x), np.int32)
    marks = np.zeros(-(-len(x) // 8) * 8, np.uint8)
    ascending = np.sort(x[:: kernels.STRIDE])
    last, kept, _total = kernels.top_p_cut(x, e, np.float32(x.max()), p, ascending, marks, band)
    return last, kept


def compiled_top_k(n: int, k: int) -> bool:
    """Whether ``sampling_kernels.top_k`` is the fast way for k of n logits: k small beside n (its
    block maxima narrow the search), or small. Else a partition is (e.g. k 1,000 of 102,400)."""
    return k <= max(n // (4 * kernels.BLOCK), 64)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, sorted by logit descending (ties: lowest ids first)."""
    n = len(x)
    if compiled_top_k(n, k):
        ids, vals = np.empty(k, np.int64), np.empty(k, np.float32)
        maxima, scratch = np.empty(n // kernels.BLOCK + 1, np.float32), np.empty(k, np.int64)
        count = kernels.top_k(np.ascontiguousarray(x, np.float32), k, ids, vals, maxima, scratch)
        return ids[:count]
    candidates = np.argpartition(x, n - k)[n - k :]
    candidates.sort()  # ascending ids, so that the stable sort puts the lowest tied id first
    order = np.argsort(-x[candidates], kind="stable")[:k]
    return candidates[order]


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
