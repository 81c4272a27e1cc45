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

import numpy as np
from numba import njit

BLOCK = 64  # logits per block of the maxima pass and of the running sums
STRIDE = 64  # every 64th logit estimates where top-p cuts
BINS = 64  # value ranges of the band that holds the cut


def kernel(signature: str, *, summing: bool = False):
    """``njit`` as every kernel here is: compiled for ``signature`` when this module loads (at the
    model's load, not the first token), cached on disk, without the GIL or bounds checks.
    ``summing`` lets LLVM reassociate float sums, so that a sum over the vocabulary vectorizes."""
    fastmath = {"reassoc", "nsz", "contract"} if summing else False
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
# The cut sums and lists with passes that LLVM vectorizes or that skip what is empty (a single pass
# that lists ids as it goes cannot be vectorized): faster on warm logits, as on a GPU's host;
# right after a CPU decode the two ways measured the same.
@kernel("UniTuple(float64, 2)(float32[::1], float32[::1], float32)", summing=True)
def mass_below(x, e, low):
    """The sum of ``e`` over the logits below ``low``, and how many they are."""
    mass = 0.0
    count = 0.0
    for i in range(x.shape[0]):
        below = x[i] < low
        mass += np.float64(e[i]) if below else 0.0
        count += 1.0 if below else 0.0
    return mass, count


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
    "UniTuple(int64, 2)(float32[::1], float32[::1], float32, float64, float64, float32[::1], "
    "uint8[::1], int32[::1])"
)
def top_p_cut(x, e, m, total, p, ascending, marks, band):
    """Top-p's kept set over the whole vocabulary: the fewest tokens, by logit descending (ties:
    lowest ids first), whose mass ``e`` (``exp(x - m)``, summing to ``total``) reaches
    ``p * total``. Returns ``(last, kept)``: the set is every token with a logit above
    ``x[last]`` and those equal to it with an id up to ``last``; ``kept`` is its size.

    llama.cpp sorts the vocabulary to find it. Here ``ascending`` (every STRIDE-th logit, sorted)
    estimates where the cut falls and a band of logits around it; the mass below the band is
    summed, the band listed (both widened until the band holds the cut), and the band's logits
    split into BINS value ranges so that only the range holding the cut is sorted. ``marks`` is
    scratch of the vocabulary's size rounded up to 8 (zeros beyond it), ``band`` of its size."""
    n = x.shape[0]
    target = p * total
    size = ascending.shape[0]
    # The mass below the cut, estimated from the bottom up: the many small logits estimate it
    # steadily, where the few large ones would make an estimate from the top noisy.
    below = 0.0
    rank = size - 1  # in the sample sorted descending: where the cut falls
    for j in range(size):
        below += np.float64(np.exp(ascending[j] - m)) * STRIDE
        if below >= (1.0 - p) * total:
            rank = size - 1 - j
            break
    else:
        rank = 0
    margin = 4 + int(2 * np.sqrt(min(rank, size - rank) + 1))
    while True:
        low_rank, high_rank = rank + margin, rank - margin
        low = ascending[size - 1 - low_rank] if low_rank < size else np.float32(-np.inf)
        high = ascending[size - 1 - high_rank] if high_rank >= 0 else np.float32(np.inf)
        under, n_under = mass_below(x, e, low)
        mark_band(x, low, high, marks)
        count = list_marked(marks, band)
        mass = 0.0
        for j in range(count):
            mass += e[band[j]]
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
        bins[int((np.float64(x[band[j]]) - lowest) * scale)] += e[band[j]]
    reached, n_before, chosen = above, n_above, 0
    for b in range(BINS - 1, -1, -1):
        if reached + bins[b] >= target or b == 0:
            chosen = b
            break
        reached += bins[b]
    in_bin = 0  # the ids of the chosen range, moved to the front of band, ascending
    for j in range(count):
        b = int((np.float64(x[band[j]]) - lowest) * scale)
        if b > chosen:
            n_before += 1
        elif b == chosen:
            band[in_bin] = band[j]
            in_bin += 1
    # A stable insertion sort by logit, descending: ties keep the lowest ids first.
    for j in range(1, in_bin):
        token, v = band[j], x[band[j]]
        k = j
        while k > 0 and x[band[k - 1]] < v:
            band[k] = band[k - 1]
            k -= 1
        band[k] = token
    for j in range(in_bin):
        reached += e[band[j]]
        if reached >= target:
            return band[j], n_before + j + 1
    return band[in_bin - 1], n_before + in_bin  # rounding: the whole range


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
