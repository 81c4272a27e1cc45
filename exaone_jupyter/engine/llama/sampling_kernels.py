"""The sampler's passes over the whole vocabulary, compiled with numba.

Why compiled: after a decode the CPU's caches hold the model, not the sampler, and every numpy
call of a pick paid for that; a top-k 40 pick made about ten of them (``benchmarks/
stream_overhead.py`` times a pick where the loop runs it, "pick in place"). Here a top-k pick is
one call: block maxima in one pass, the k-th largest of them as a threshold that at least k logits
reach, and an insertion into a sorted list of k from only the blocks that reach it. The arithmetic
of top-p, temperature and dist is llama.cpp's, as ``sampling`` documents it.

Compiled once per machine (``cache=True``: numba keeps the machine code beside this file, or in
the user's cache folder where this folder is read-only) and loaded with the model, not at the
first token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

BLOCK = 64  # logits per block of the maxima pass and of the running sums
STRIDE = 64  # every 64th logit estimates where top-p cuts
BINS = 64  # value ranges of the band that holds the cut


def kernel(signature: str, *, summing: bool = False):
    """``njit`` as every kernel here is: compiled for ``signature`` when this module loads (at the
    model's load, not the first token), cached on disk, without the GIL or bounds checks.
    ``summing`` lets LLVM reassociate float sums and take the inputs for numbers (no NaN), so
    that a sum over the vocabulary, and the selects and maxima in it, vectorize."""
    fastmath = {"reassoc", "nsz", "contract", "nnan"} if summing else False
    return njit(signature, cache=True, nogil=True, boundscheck=False, fastmath=fastmath)


@njit(cache=True, nogil=True, boundscheck=False)  # typed by its callers, the kernels below
def _insert(x, start, end, k, count, ids, vals):
    """Insert ``x[start:end]`` into the sorted lists ``ids``/``vals`` (``count`` of at most ``k``
    filled); returns the new count. Logit descending; an equal logit goes after the ones already
    in (a higher id), so ties keep the lowest ids, as a stable sort does."""
    for j in range(start, end):
        v = x[j]
        if count < k:
            p = count
            count += 1
        elif v > vals[k - 1]:
            p = k - 1
        else:
            continue
        while p > 0 and vals[p - 1] < v:
            vals[p] = vals[p - 1]
            ids[p] = ids[p - 1]
            p -= 1
        vals[p] = v
        ids[p] = j
    return count


@kernel("void(float32[::1], float32[::1])")
def block_maxima(x, out):
    """``out[b]`` = the largest of ``x[b * BLOCK : (b + 1) * BLOCK]``, for every whole block."""
    for b in range(x.shape[0] // BLOCK):
        top = x[b * BLOCK]
        for j in range(b * BLOCK, (b + 1) * BLOCK):
            v = x[j]
            top = v if v > top else top
        out[b] = top


@kernel("int64(float32[::1], int64, int64[::1], float32[::1], float32[::1], int64[::1])")
def top_k(x, k, ids, vals, maxima, scratch):
    """The k largest logits: their ids into ``ids[:k]`` and logits into ``vals[:k]``, by logit
    descending, ties lowest id first; returns how many (k, or fewer logits). ``maxima`` holds a
    float per block, ``scratch`` k ids. Fast where k is small beside the vocabulary: with k above
    a quarter of the blocks it inserts every logit (cheap for a small vocabulary only)."""
    n = x.shape[0]
    blocks = n // BLOCK
    if k * 4 > blocks:
        return _insert(x, 0, n, k, 0, ids, vals)
    block_maxima(x, maxima)
    # The k-th largest block maximum: k blocks reach it, so at least k logits do, and every one
    # of the k largest logits lies in a block whose maximum reaches it.
    _insert(maxima, 0, blocks, k, 0, scratch, vals)
    threshold = vals[k - 1]
    count = 0
    for b in range(blocks):
        if maxima[b] >= threshold:
            count = _insert(x, b * BLOCK, (b + 1) * BLOCK, k, count, ids, vals)
    return _insert(x, blocks * BLOCK, n, k, count, ids, vals)  # the last, partial block


@kernel("int64(float32[::1], int64, float32)")
def top_p_keep(xs, count, p):
    """How many of ``xs[:count]`` (logits, descending) llama.cpp's top-p keeps: its float32
    softmax, then its float32 running sum until it reaches ``p``."""
    top = xs[0]
    total = np.float32(0.0)
    for i in range(count):
        total += np.exp(xs[i] - top)
    reached = np.float32(0.0)
    for i in range(count):
        reached += np.exp(xs[i] - top) / total
        if reached >= p:
            return i + 1
    return count


@kernel("int64(float32[::1], int64, float32, float64)")
def draw_sorted(xs, count, temperature, u):
    """llama.cpp's temperature and dist on ``xs[:count]`` (logits, descending), ``u`` its uniform
    draw in [0, 1): the index drawn. float32 logits over the temperature, float32 weights, a double
    running sum."""
    if count == 1:
        return 0
    top = xs[0] / temperature
    total = 0.0
    for i in range(count):
        total += np.float64(np.exp(xs[i] / temperature - top))
    target = total * u
    running = 0.0
    for i in range(count):
        running += np.float64(np.exp(xs[i] / temperature - top))
        if running >= target:
            return i
    return count - 1


@kernel(
    "int64(float32[::1], int64, float32, float32, float64, int64[::1], float32[::1], "
    "float32[::1], int64[::1])"
)
def pick_top_k(x, k, top_p, temperature, u, ids, vals, maxima, scratch):
    """The whole chain after the penalties, with a top-k: top-k, top-p, temperature, dist."""
    count = top_k(x, k, ids, vals, maxima, scratch)
    if top_p < 1.0:
        count = top_p_keep(vals, count, top_p)
    return ids[draw_sorted(vals, count, temperature, u)]


# -- top-p over the whole vocabulary (no top-k) ---------------------------------------------------
# The cut's passes vectorize or skip what is empty: the masses are summed as they are computed,
# by an exp of plain arithmetic, never stored; the band is marked, then listed eight at a time.
def _bits_as_float32(typingctx, bits):
    """The float32 whose bits are the int32 ``bits`` (a reinterpretation, free in LLVM)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_float_from_bits: Any = intrinsic(_bits_as_float32)  # numba's intrinsic has no static type


@njit(inline="always", fastmath={"contract"})
def exp_neg(r):
    """exp(r) in float32 for r <= 0: Cephes' expf (r = n ln 2 + g, a degree-7 polynomial in g
    times 2^n built from its bits), within 3e-7 of exp. Plain arithmetic, so that a pass
    calling it vectorizes: numba has no vectorized exp (numpy's is a call per element). 0 below
    -87, where float32 leaves its normal range."""
    n = np.floor(max(r, np.float32(-87.0)) * np.float32(1.4426950408889634) + np.float32(0.5))
    g = r - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * g + np.float32(1.3981999507e-3)
    p = p * g + np.float32(8.3334519073e-3)
    p = p * g + np.float32(4.1665795894e-2)
    p = p * g + np.float32(1.6666665459e-1)
    p = p * g + np.float32(5.0000001201e-1)
    p = p * g * g + g + np.float32(1.0)
    scale = _float_from_bits(np.int32((n + np.float32(127.0)) * np.float32(8388608.0)))
    return p * scale if r >= np.float32(-87.0) else np.float32(0.0)


@kernel("UniTuple(float64, 3)(float32[::1], float32, float32)", summing=True)
def masses(x, m, low):
    """The sum of ``exp(x - m)`` over the vocabulary, its sum over the logits below ``low``, and
    how many those are; one pass, float32 lanes within a block of BLOCK, float64 across."""
    total, below, n_below = 0.0, 0.0, 0.0
    n = x.shape[0]
    whole = n - n % BLOCK
    for start in range(0, whole, BLOCK):
        block_total, block_below, block_count = np.float32(0), np.float32(0), np.float32(0)
        for i in range(start, start + BLOCK):
            w = exp_neg(x[i] - m)
            under = np.float32(x[i] < low)
            block_total += w
            block_below += w * under
            block_count += under
        total += block_total
        below += block_below
        n_below += block_count
    for i in range(whole, n):
        w = np.float64(exp_neg(x[i] - m))
        total += w
        if x[i] < low:
            below += w
            n_below += 1.0
    return total, below, n_below


@kernel("float64(float32[::1], float32)", summing=True)
def weigh(values, m):
    """``values`` replaced by ``exp(values - m)``; returns their sum."""
    total = 0.0
    for j in range(values.shape[0]):
        w = exp_neg(values[j] - m)
        values[j] = w
        total += np.float64(w)
    return total


@kernel("void(float32[::1], float32, float32, uint8[::1])")
def mark_band(x, low, high, marks):
    """``marks[i]`` = 1 where ``x[i]`` is in ``[low, high]``, else 0 (``marks`` may be longer:
    its tail stays 0)."""
    for i in range(x.shape[0]):
        v = x[i]
        marks[i] = np.uint8((v >= low) & (v <= high))


@kernel("int64(uint8[::1], int32[::1])")
def list_marked(marks, ids):
    """The ids marked 1, ascending, into ``ids``; returns how many. Eight marks are read as one
    word, so that a sparse band costs a look per eight logits (``len(marks)`` a multiple of 8)."""
    words = marks.view(np.uint64)
    count = 0
    for w in range(words.shape[0]):
        if words[w]:
            for i in range(w * 8, w * 8 + 8):
                ids[count] = i
                count += marks[i]
    return count


@kernel(
    "Tuple((int64, int64, float64))(float32[::1], float32[::1], float32, float64, float32[::1], "
    "uint8[::1], int32[::1])"
)
def top_p_cut(x, e, m, p, ascending, marks, band):
    """Top-p's kept set over the whole vocabulary: the fewest tokens, by logit descending (ties:
    lowest ids first), whose mass (``exp(x - m)``, ``m`` the largest logit) reaches ``p`` of the
    total. Returns ``(last, kept, total)``: the set is every token with a logit above ``x[last]``
    and those equal to it with an id up to ``last``; ``kept`` is its size, ``total`` the mass of
    the vocabulary.

    llama.cpp sorts the vocabulary to find it. Here ``ascending`` (every STRIDE-th logit, sorted)
    estimates where the cut falls and a band of logits around it; one pass sums the masses (all,
    and below the band) without storing them, the band is listed (both widened until the band
    holds the cut), and the band's logits are split into BINS value ranges so that only the range
    holding the cut is sorted. ``e`` is scratch of the vocabulary's size (the band's masses, in
    the band's order), ``marks`` of that size rounded up to 8 (zeros beyond it), ``band`` of that
    size."""
    n = x.shape[0]
    size = ascending.shape[0]
    # Where the cut falls in the sample, from the bottom up: the many small logits estimate the
    # mass below it steadily, where the few large ones would make an estimate from the top noisy.
    weights = ascending.copy()
    estimate = weigh(weights, m)
    below = 0.0
    rank = 0  # in the sample sorted descending
    for j in range(size):
        below += weights[j]
        if below >= (1.0 - p) * estimate:
            rank = size - 1 - j
            break
    margin = 4 + int(2 * np.sqrt(min(rank, size - rank) + 1))
    while True:
        low_rank, high_rank = rank + margin, rank - margin
        low = ascending[size - 1 - low_rank] if low_rank < size else np.float32(-np.inf)
        high = ascending[size - 1 - high_rank] if high_rank >= 0 else np.float32(np.inf)
        total, under, n_under = masses(x, m, low)
        mark_band(x, low, high, marks)
        count = list_marked(marks, band)
        for j in range(count):
            e[j] = x[band[j]]
        mass = weigh(e[:count], m)  # e[j]: the mass of band[j]
        target = p * total
        above, n_above = total - under - mass, n - int(n_under) - count
        whole = low_rank >= size and high_rank < 0
        if (above < target and target <= above + mass) or whole:
            break
        margin *= 4
    # Split the band into value ranges (monotone: ties share one), find the range holding the
    # cut from the top, and sort only that range.
    lowest, highest = x[band[0]], x[band[0]]
    for j in range(count):
        v = x[band[j]]
        lowest = min(lowest, v)
        highest = max(highest, v)
    bins = np.zeros(BINS, np.float64)
    scale = (BINS - 1) / (np.float64(highest) - lowest) if highest > lowest else 0.0
    for j in range(count):
        bins[int((np.float64(x[band[j]]) - lowest) * scale)] += e[j]
    reached, n_before, chosen = above, n_above, 0
    for b in range(BINS - 1, -1, -1):
        if reached + bins[b] >= target or b == 0:
            chosen = b
            break
        reached += bins[b]
    in_bin = 0  # the chosen range, moved to the front of band (and e), ascending ids
    for j in range(count):
        b = int((np.float64(x[band[j]]) - lowest) * scale)
        if b > chosen:
            n_before += 1
        elif b == chosen:
            band[in_bin], e[in_bin] = band[j], e[j]
            in_bin += 1
    # A stable insertion sort by logit, descending: ties keep the lowest ids first.
    for j in range(1, in_bin):
        token, v, w = band[j], x[band[j]], e[j]
        k = j
        while k > 0 and x[band[k - 1]] < v:
            band[k], e[k] = band[k - 1], e[k - 1]
            k -= 1
        band[k], e[k] = token, w
    for j in range(in_bin):
        reached += e[j]
        if reached >= target:
            return band[j], n_before + j + 1, total
    return band[in_bin - 1], n_before + in_bin, total  # rounding: the whole range


@kernel("int64(float32[::1], int64, int32[::1], float32, float64)")
def draw_kept(x, last, ids, temperature, u):
    """llama.cpp's temperature and dist on a small top-p set (``top_p_cut``'s ``last``), in its
    order: by logit descending, ties lowest id first. ``ids`` is scratch; returns the token."""
    threshold = x[last]
    count = 0
    for i in range(x.shape[0]):
        v = x[i]
        if v > threshold or (v == threshold and i <= last):
            ids[count] = i
            count += 1
    kept = ids[:count]
    order = np.argsort(-x[kept], kind="mergesort")  # stable: ties stay in id order
    xs = np.empty(count, np.float32)
    for j in range(count):
        xs[j] = x[kept[order[j]]]
    return kept[order[draw_sorted(xs, count, temperature, u)]]


@kernel("void(float32[::1], float64[::1])", summing=True)
def block_ends(w, ends):
    """``ends[b]``: the sum of ``w`` over its first ``b + 1`` blocks of BLOCK (``len(w)`` a
    multiple of BLOCK): where ``find`` starts."""
    running = 0.0
    for b in range(ends.shape[0]):
        block = np.float32(0.0)  # float32 lanes within a block, a double running sum across
        for j in range(b * BLOCK, (b + 1) * BLOCK):
            block += w[j]
        running += block
        ends[b] = running


@kernel("int64(float32[::1], float64[::1], float64)")
def find(w, ends, u):
    """The token at ``u`` of the way through the weights ``w`` (``ends``: ``block_ends``'s). A
    token of weight 0 is never found."""
    target = ends[-1] * u
    b = min(np.searchsorted(ends, target, side="right"), ends.shape[0] - 1)
    running = ends[b - 1] if b > 0 else 0.0
    for j in range(b * BLOCK, (b + 1) * BLOCK):
        running += w[j]
        if running > target and w[j] > 0:
            return j
    for j in range((b + 1) * BLOCK - 1, b * BLOCK - 1, -1):  # rounding: the last positive one
        if w[j] > 0:
            return j
    return np.argmax(w)
