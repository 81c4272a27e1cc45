"""Picking the next token from the logits, in numpy, as llama.cpp's sampler chain picks it.

Why not ``llama_sampler_sample``: on every token it copies all logits into a 12-byte-per-token
array (102,400 entries for EXAONE: ~140 µs on one core before any sampler runs), and its top-p
without a top-k sorts whatever share of the vocabulary the cut needs: all of it when the
distribution is flat (13 ms a token). This sampler reads the logits in place and does the same
chain, ``penalties -> top-k -> top-p -> temperature -> dist`` (temperature 0: greedy), with
partial selections instead of sorts:

* greedy: ``argmax`` on the logits; llama.cpp's greedy picks the first maximum too, so the tokens
  are the same.
* top-k: a threshold from a strided sample of the logits keeps a few hundred candidates (checked:
  at least k of them, else it lowers the threshold), and only those are sorted.
* top-p: its kept set is a prefix of the tokens sorted by probability; the cut is found by one
  pass that keeps the candidates on the smaller side of an estimated cut (the top few when the
  distribution is peaked, the bottom few when it is flat), checks that the cut lies among them,
  and sorts only them. Ties at the cut keep the lowest ids (llama.cpp's order there is unspecified).
* dist: std::mt19937 seeded as llama.cpp's dist sampler is, and its uniform double draw.

Same seed, same tokens? With a top-k (the default, k 40) the kept tokens are in llama.cpp's order
(by logit, descending) and the draw is llama.cpp's, so the tokens equal llama.cpp's chain token
for token, except where float rounding differs at a boundary (``tests/test_speed.py`` counts it).
Without a top-k, a large kept set is drawn from in token-id order, not sorted: the same
distribution, other tokens for a given seed. A seed always gives the same tokens here.
"""

from __future__ import annotations

import ctypes
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Sampling

PENALTY_LAST_N = 64  # the tokens the repetition penalty looks back on (llama.cpp's ring buffer)
_STRIDE = 64  # every 64th logit estimates where a cut falls
_SMALL = 4096  # up to this many logits, plain sorts are cheap enough
_BLOCK = 256  # the dist draw finds its block of tokens first, then the token in it
_EXACT_ORDER = 4096  # a kept set up to this size is drawn from in llama.cpp's (sorted) order


def logits_view(ctx: Any, i: int, n_vocab: int) -> np.ndarray:
    """The logits of output ``i`` of the last ``llama_decode`` (-1: the last one) as a numpy view
    of llama.cpp's buffer: no copy. Valid until the next decode."""
    import llama_cpp

    address = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, i), ctypes.c_void_p).value
    if not address:
        raise RuntimeError(f"llama.cpp has no logits for output {i}")
    floats: Any = (ctypes.c_float * n_vocab).from_address(address)  # a buffer numpy can view
    return np.frombuffer(floats, dtype=np.float32)


def llama_chain(s: Sampling, prompt: Sequence[int], vocab: Any) -> Any:
    """The same chain as llama.cpp's own samplers, for where llama.cpp must run it: inside its
    graph (``LoadOptions.sample_in_graph``), or behind a schema's grammar (a llama.cpp sampler)."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
    if s.temperature == 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    if s.repeat_penalty != 1.0:
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, s.repeat_penalty, 0, 0))
    if s.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(s.top_k))
    if s.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
    add(llama_cpp.llama_sampler_init_temp(s.temperature))
    seed = s.seed if s.seed is not None else random.SystemRandom().getrandbits(32)
    add(llama_cpp.llama_sampler_init_dist(seed))
    return _accepted(chain, prompt)


def _accepted(chain: Any, prompt: Sequence[int]) -> Any:
    """The chain, having seen the prompt: the repetition penalty looks back into it too."""
    import llama_cpp

    for token in prompt[-PENALTY_LAST_N:]:
        llama_cpp.llama_sampler_accept(chain, token)
    return chain


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


_exp_sum: ExpSum | None = None


def exp_sum() -> ExpSum:
    global _exp_sum
    if _exp_sum is None:
        _exp_sum = _load_ggml_exp_sum()
    return _exp_sum


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
        padded = -(-n_vocab // _BLOCK) * _BLOCK
        self._e = np.zeros(padded, np.float32)  # exp(logit - max): the top-p masses
        self._w = np.zeros(padded, np.float32)  # the dist weights (temperature applied)
        self._x = np.empty(n_vocab, np.float32)  # penalized logits
        self._scaled = np.empty(n_vocab, np.float32)  # logits / temperature
        self._ones = np.ones(_BLOCK, np.float32)
        self._exp_sum = exp_sum()

    # -- the chain ------------------------------------------------------------------------------
    def pick(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(logits.argmax())
        x = self._penalized(logits) if self.penalty != 1.0 else logits
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
        if self.top_p < 1.0:
            keep = _top_p_sorted(xs, self.top_p)
            top, xs = top[:keep], xs[:keep]
        return int(top[self._draw_sorted(xs)])

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
    def _draw_sorted(self, xs: np.ndarray) -> int:
        """llama.cpp's temperature and dist on candidates sorted by logit, descending: the index."""
        u = uniform(self.rng)
        if len(xs) == 1:
            return 0
        scaled = xs / np.float32(self.temperature)
        weights = np.exp(scaled - scaled[0])
        cumulative = np.cumsum(weights, dtype=np.float64)  # a double sum of floats, in order
        index = int(np.searchsorted(cumulative, cumulative[-1] * u, side="left"))
        return min(index, len(xs) - 1)

    def _draw_masked(self, x: np.ndarray, m: float, cut: Cut | None = None) -> int:
        """A token drawn from softmax(x / temperature) over the vocabulary in id order (``m`` is
        the largest logit), within top-p's kept set where ``cut`` is given."""
        n, w = self.n, self._w
        scale = 1.0 / self.temperature
        scaled = np.multiply(x, np.float32(scale), out=self._scaled)
        self._exp_sum(w[:n], scaled, m * scale)
        if cut is not None:
            w[:n] *= x >= cut.threshold
            w[cut.tied_out] = 0.0
        ends = np.cumsum(w.reshape(-1, _BLOCK) @ self._ones, dtype=np.float64)
        return _pick(w, ends, uniform(self.rng))

    # -- top-p over the whole vocabulary ----------------------------------------------------------
    def _top_p_full(self, x: np.ndarray) -> int:
        e = self._e
        m = float(x.max())
        total = self._exp_sum(e[: self.n], x, m)
        cut = top_p_cut(x, e[: self.n], m, total, self.top_p)
        kept = cut.kept_ids
        if kept is not None and len(kept) <= _EXACT_ORDER:  # in llama.cpp's order
            xs = x[kept]
            order = np.argsort(-xs, kind="stable")
            return int(kept[order][self._draw_sorted(xs[order])])
        if kept is not None:  # in a fixed order (not sorted: a draw needs none)
            scaled = x[kept] * np.float32(1.0 / self.temperature)
            weights = np.empty_like(scaled)
            self._exp_sum(weights, scaled, m / self.temperature)
            cumulative = np.cumsum(weights, dtype=np.float64)
            index = int(np.searchsorted(cumulative, cumulative[-1] * uniform(self.rng), "right"))
            return int(kept[min(index, len(kept) - 1)])
        # A large kept set (a flat distribution): propose from exp(x - m), which is at hand,
        # and accept with the ratio of the tempered weight to it (rejection sampling; exact).
        # A few misses in a row hand over to the direct draw, which is exact too.
        ends = np.cumsum(e.reshape(-1, _BLOCK) @ self._ones, dtype=np.float64)
        power = 1.0 / self.temperature - 1.0
        floor = 1.0 if power >= 0 else math.exp(float(cut.threshold) - m)  # the envelope
        tied_in = set(cut.tied_in.tolist())
        for _ in range(8):
            i = _pick(e, ends, uniform(self.rng))
            if x[i] < cut.threshold or (x[i] == cut.threshold and i not in tied_in):
                continue  # not in top-p's set
            if power == 0 or uniform(self.rng) < (float(e[i]) / floor) ** power:
                return i
        return self._draw_masked(x, m, cut)


def _pick(weights: np.ndarray, ends: np.ndarray, u: float) -> int:
    """The token at ``u`` of the way through ``weights`` (``ends``: the running sums of its
    _BLOCK-sized blocks). A token of weight 0 is never picked."""
    target = ends[-1] * u
    b = min(int(np.searchsorted(ends, target, side="right")), len(ends) - 1)
    block = weights[b * _BLOCK : (b + 1) * _BLOCK]
    inside = np.cumsum(block, dtype=np.float64) + (ends[b - 1] if b else 0.0)
    i = int(np.searchsorted(inside, target, side="right"))
    if i >= _BLOCK or block[i] == 0:  # rounding at the block's end: its last positive token
        i = int(np.flatnonzero(block)[-1])
    return b * _BLOCK + i


class Cut:
    """Where top-p cuts: it keeps the tokens whose logit is above ``threshold``, and of those
    equal to it ``tied_in`` (the lowest ids, up to the cut), not ``tied_out``. ``kept_ids`` lists
    the kept set where it was found from the top (a peaked distribution), else it is None."""

    def __init__(
        self,
        threshold: np.float32,
        tied_in: np.ndarray,
        tied_out: np.ndarray,
        kept_ids: np.ndarray | None,
    ) -> None:
        self.threshold = threshold
        self.tied_in = tied_in
        self.tied_out = tied_out
        self.kept_ids = kept_ids


def top_p_cut(x: np.ndarray, e: np.ndarray, m: float, total: float, p: float) -> Cut:
    """Top-p's kept set: the fewest tokens, by logit descending (ties: lowest ids first), whose
    mass ``e`` (``exp(x - m)``, summing to ``total``) reaches ``p * total``.

    llama.cpp sorts to find it. Here a strided sample of the logits estimates the rank of the cut
    and a band of logits around it. The mass above the band is summed in one pass, the band is
    taken out and checked to hold the cut (else it widens), and only the band is sorted. When the
    kept set is small (a peaked distribution) the tokens above the band are listed too.
    """
    n, target = len(x), p * total
    # The mass below the cut is estimated from the bottom up: the many small logits estimate it
    # steadily, where the few large ones would make an estimate from the top noisy.
    ascending = np.sort(x[::_STRIDE])
    below = np.cumsum(np.exp(ascending - np.float32(m)), dtype=np.float64) * _STRIDE
    size = len(ascending)
    sample = ascending[::-1]
    rank = max(size - 1 - int(np.searchsorted(below, (1.0 - p) * total)), 0)
    margin = 4 + int(2 * math.sqrt(min(rank, size - rank) + 1))
    while True:
        low, high = rank + margin, rank - margin  # sample[low] is below the cut, sample[high] above
        if n <= _SMALL or (low >= size and high < 0):
            return _cut_in(x, m, np.arange(n), above=0.0, target=target, listed=np.arange(0))
        if rank * 2 <= size:  # few tokens are kept: list them
            candidates = np.flatnonzero(x >= sample[low]) if low < size else np.arange(n)
            xc, ec = x[candidates], e[candidates]
            over = xc > sample[high] if high >= 0 else np.zeros(len(xc), bool)
            inside = np.flatnonzero(~over)
            band, listed = candidates[inside], candidates[over]
            above, mass = float(np.dot(ec, over)), float(ec[inside].sum(dtype=np.float64))
        else:
            over = x > sample[high] if high >= 0 else np.zeros(n, bool)
            band = np.flatnonzero((x >= sample[low]) ^ over if low < size else ~over)
            listed = None
            above, mass = float(np.dot(e, over)), float(e[band].sum(dtype=np.float64))
        if above < target <= above + mass:
            return _cut_in(x, m, band, above=above, target=target, listed=listed)
        margin *= 4


def _cut_in(
    x: np.ndarray,
    m: float,
    band: np.ndarray,
    *,
    above: float,
    target: float,
    listed: np.ndarray | None,
) -> Cut:
    """The cut within ``band`` (ascending ids, holding the cut); the tokens above it have mass
    ``above`` and, where known, the ids ``listed``."""
    xb = x[band]
    values = np.ascontiguousarray(np.sort(xb)[::-1])  # logits, descending
    masses = np.empty_like(values)
    exp_sum()(masses, values, m)  # the same function as ``e``'s, so the same values
    reached = above + np.cumsum(masses, dtype=np.float64)
    c = min(int(np.searchsorted(reached, target, side="left")), len(values) - 1)
    threshold = values[c]
    first_tied = int(np.searchsorted(-values, -threshold, side="left"))
    tied = band[xb == threshold]  # ascending ids: the lowest are in
    tied_in, tied_out = tied[: c - first_tied + 1], tied[c - first_tied + 1 :]
    kept = None
    if listed is not None:
        kept = np.concatenate([listed, band[xb > threshold], tied_in])
    return Cut(threshold, tied_in, tied_out, kept)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, sorted by logit descending (ties: lowest ids first).

    The logits are split into 64-row columns (ids equal modulo n // 64); the k-th largest column
    maximum is a threshold that at least k logits reach, so the k largest are among the logits at
    or above it, found in one contiguous pass (gathering the k best columns instead reads
    scattered cache lines).
    """
    n = len(x)
    columns = n // 64
    if n <= _SMALL or k * 64 * 4 > n:
        candidates = np.argpartition(x, n - k)[n - k :]
    else:
        maxima = x[: 64 * columns].reshape(64, columns).max(axis=0)
        threshold = np.partition(maxima, columns - k)[columns - k]
        candidates = np.flatnonzero(x >= threshold)  # every tie at the k-th included
    candidates.sort()  # ascending ids, so that the stable sort puts the lowest tied id first
    order = np.argsort(-x[candidates], kind="stable")[:k]
    return candidates[order]


def _top_p_sorted(xs: np.ndarray, p: float) -> int:
    """How many of the candidates (sorted by logit, descending) llama.cpp's top-p keeps: its
    float32 softmax and running sum, in its order."""
    weights = np.exp(xs - xs[0])
    probs = weights / np.cumsum(weights)[-1]  # cumsum: a sequential float sum, as llama.cpp's
    reached = np.cumsum(probs)
    return min(int(np.searchsorted(reached, np.float32(p), side="left")) + 1, len(xs))
