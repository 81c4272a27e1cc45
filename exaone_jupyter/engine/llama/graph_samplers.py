"""Samplers of our own inside llama.cpp's graph: the token alone comes back, and top-k can be
a few small sorts instead of one large one.

llama.cpp runs a chain in its decode graph when every sampler in it has a backend form
(``llama_set_sampler``); a sampler made here has one, built from ggml ops through ctypes.

- ``token_only()`` ends the engine's chains. After a chain, llama.cpp copies to the host every
  tensor the chain leaves behind: the sampled token, and the last logits, probabilities and
  candidates; after greedy the logits are the whole vocabulary's (400 KB a token). The engine
  reads the token only, so this sampler leaves nothing else to copy.
- ``top_k(k)``: llama.cpp's top-k puts one ``ggml_top_k`` over the whole vocabulary into the
  graph, on a CUDA build with CCCL older than 3.2 (CUDA 13.0 and earlier) a full CUB radix
  sort of all 102,400 logits, the largest part of default sampling's cost on a GPU
  (benchmarks/gpu/graph_sampler_cost.py). The k largest of a vector are the k largest of the
  k largest of each of its parts, so the "blocks" form splits the logits into rows of at most
  1,024, which ggml sorts inside one thread block, keeps each row's k largest, and repeats on
  the survivors: three levels for EXAONE's vocabulary and k = 40. It keeps the same tokens
  with the same logits as llama.cpp's top-k (where logits tie at the k-th place, maybe another
  of the tied), so the chain after it draws the same tokens.
  ``pays_off`` decides where it runs.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROW = 1024  # the longest row ggml's CUDA argsort sorts inside one thread block
GGML_TYPE_F32, GGML_TYPE_I32 = 0, 26


def levels(n: int, k: int) -> list[tuple[int, int]] | None:
    """The (row length, rows) of each level's sort for the k largest of ``n`` logits, or None
    where they do not split into rows of at most ``ROW`` (then one ``ggml_top_k`` does it).

    >>> levels(102_400, 40)
    [(1024, 100), (1000, 4), (160, 1)]
    """
    width = next((w for w in range(ROW, k - 1, -1) if n % w == 0), None)
    if width is None or k < 1 or n <= ROW:
        return None
    plan = [(width, n // width)]
    while plan[-1][1] > 1:
        rows = plan[-1][1]
        group = max((g for g in range(2, rows + 1) if rows % g == 0 and g * k <= ROW), default=0)
        if group == 0:
            return None
        plan.append((group * k, rows // group))
    return plan


def pays_off(device: int | None) -> bool:
    """Whether top-k runs as small sorts where the logits are (``device``; None: the CPU).

    Not yet anywhere. On the CPU ggml's ``top_k`` is a partial sort already and every extra op
    costs a barrier of its threads (slower, measured). On a GPU the small sorts replace CUB's
    full sort with about as many, smaller kernels; no GPU run has timed them yet, and with
    CCCL >= 3.2 llama.cpp's op is CUB's own top-k. graph_sampler_cost.py times both forms
    side by side (its "in blocks" rows) and checks they draw the same tokens; where they win,
    this returns True for GPU devices (``ggml_backend_dev_type``).
    """
    return False


class InitParams(ctypes.Structure):
    """``struct ggml_init_params``."""

    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


class _Ggml:
    """The ggml functions the graph is built with, from the library llama.cpp itself loaded."""

    def __init__(self) -> None:
        import llama_cpp

        from .gpu import load_lib

        lib = load_lib(Path(llama_cpp.__file__).parent / "lib", "ggml-base")
        p, i64, f32, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "ggml_nelements": (i64, [p]),
            "ggml_reshape_2d": (p, [p, p, i64, i64]),
            "ggml_reshape_3d": (p, [p, p, i64, i64, i64]),
            "ggml_top_k": (p, [p, p, c_int]),
            "ggml_get_rows": (p, [p, p, p]),
            "ggml_cast": (p, [p, p, c_int]),
            "ggml_add": (p, [p, p, p]),
            "ggml_arange": (p, [p, f32, f32, f32]),
            "ggml_new_tensor_1d": (p, [p, c_int, i64]),
            "ggml_tensor_overhead": (ctypes.c_size_t, []),
            "ggml_init": (p, [InitParams]),
            "ggml_free": (None, [p]),
            "ggml_backend_buft_get_device": (p, [p]),
            "ggml_backend_dev_supports_op": (ctypes.c_bool, [p, p]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
            setattr(self, name.removeprefix("ggml_"), function)

    def __getattr__(self, name: str) -> Any:  # the functions set above, for the type checker
        raise AttributeError(name)


@functools.cache
def ggml() -> _Ggml:
    """The ggml functions, bound on first use."""
    return _Ggml()


def build_top_k(
    ctx: int, logits: int, k: int, *, blocks: bool = True, made: list[int] | None = None
) -> tuple[int, int]:
    """(values, ids): the k largest of ``logits`` (a contiguous tensor) as ops added to graph
    context ``ctx``; ids are int32 places in ``logits``. ``blocks=False`` (or a vocabulary that
    does not split) builds llama.cpp's one ``ggml_top_k``; ``made`` collects every op built."""
    g = ggml()
    n = g.nelements(logits)
    plan = levels(n, k) if blocks else None

    def op(tensor: int) -> int:
        if made is not None:
            made.append(tensor)
        return tensor

    if plan is None:
        ids = op(g.top_k(ctx, g.reshape_2d(ctx, logits, n, 1), k))
        return op(g.get_rows(ctx, g.reshape_2d(ctx, logits, 1, n), ids)), ids
    values, places = logits, None  # places: each value's place in logits, as float32
    for (width, rows), (next_width, next_rows) in itertools.pairwise([*plan, (k, 1)]):
        local = op(g.top_k(ctx, g.reshape_2d(ctx, values, width, rows), k))  # [k, rows]
        values = op(g.get_rows(ctx, g.reshape_3d(ctx, values, 1, width, rows), local))
        if places is None:  # the first level: place = row * width + place in the row
            starts = g.reshape_2d(ctx, op(g.arange(ctx, 0.0, float(n), float(width))), 1, rows)
            places = op(g.add(ctx, op(g.cast(ctx, local, GGML_TYPE_F32)), starts))
        else:
            places = op(g.get_rows(ctx, g.reshape_3d(ctx, places, 1, width, rows), local))
        values = g.reshape_2d(ctx, values, next_width, next_rows)
        places = g.reshape_2d(ctx, places, next_width, next_rows)
    return values, op(g.cast(ctx, places, GGML_TYPE_I32))


# -- the samplers ---------------------------------------------------------------------------------
class _Sampler:
    """What a sampler of ours does at each of llama.cpp's calls (``llama_sampler_i``)."""

    name = ctypes.create_string_buffer(b"sampler")  # an address llama.cpp may keep

    def apply(self, cur_p: Any) -> None:
        """On the CPU, where the chain does not run in the graph."""

    def clone(self) -> _Sampler:
        """A new sampler in this one's state, with resources of its own."""
        raise NotImplementedError

    def free(self) -> None:
        """Release what the sampler holds besides itself."""

    def backend_init(self, device: int | None) -> bool:
        """Whether the sampler runs in the graph on ``device`` (None: the CPU)."""
        return True

    def backend_apply(self, ctx: int, data: Any) -> None:
        """Add the sampler's ops to the graph: read and replace ``data``'s tensors."""


class _TokenOnly(_Sampler):
    name = ctypes.create_string_buffer(b"token only")

    def clone(self) -> _Sampler:
        return _TokenOnly()

    def backend_apply(self, ctx: int, data: Any) -> None:
        data.logits = data.probs = data.candidates = None  # nothing but the token to copy


class _TopK(_Sampler):
    name = ctypes.create_string_buffer(b"top-k")

    def __init__(self, k: int, n_vocab: int, blocks: bool | None) -> None:
        import llama_cpp

        self.k, self.n_vocab = k, n_vocab
        self.wants_blocks = blocks  # None: where pays_off says
        self.blocks = False  # in this graph (backend_init decides)
        self.on_cpu = llama_cpp.llama_sampler_init_top_k(k)  # llama.cpp's, for the CPU chain

    def apply(self, cur_p: Any) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_apply(self.on_cpu, cur_p)

    def clone(self) -> _Sampler:
        return _TopK(self.k, self.n_vocab, self.wants_blocks)

    def free(self) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(self.on_cpu)

    def backend_init(self, device: int | None) -> bool:
        wanted = pays_off(device) if self.wants_blocks is None else self.wants_blocks
        self.blocks = wanted and (not device or self._runs_on(device, blocks=True))
        return not device or self.blocks or self._runs_on(device, blocks=False)

    def _runs_on(self, device: int, *, blocks: bool) -> bool:
        """Whether ``device`` runs every op of this top-k on this vocabulary (built on a scratch
        context: a device may support a sort only up to some length)."""
        g = ggml()
        scratch = g.init(InitParams(256 * g.tensor_overhead(), None, True))
        try:
            made: list[int] = []
            logits = g.new_tensor_1d(scratch, GGML_TYPE_F32, self.n_vocab)
            build_top_k(scratch, logits, self.k, blocks=blocks, made=made)
            return all(g.backend_dev_supports_op(device, op) for op in made)
        finally:
            g.free(scratch)

    def backend_apply(self, ctx: int, data: Any) -> None:
        g = ggml()
        try:
            values, ids = build_top_k(ctx, data.logits, self.k, blocks=self.blocks)
        except Exception:  # a callback cannot raise into C: say so, build llama.cpp's one sort
            log.exception("top-k in blocks could not be built; ggml_top_k does it")
            values, ids = build_top_k(ctx, data.logits, self.k, blocks=False)
        if data.candidates:  # an earlier sampler has chosen already: ids index its candidates
            n = g.nelements(data.candidates)
            chosen = g.get_rows(ctx, g.reshape_2d(ctx, data.candidates, 1, n), ids)
            ids = g.reshape_2d(ctx, chosen, self.k, 1)
        data.logits, data.candidates = values, ids


def token_only() -> Any:
    """A llama.cpp sampler for the end of a chain in the graph: only the token is copied back."""
    return _make(_TokenOnly())


def top_k(k: int, n_vocab: int, *, blocks: bool | None = None) -> Any:
    """A llama.cpp sampler keeping the ``k`` largest logits, as ``llama_sampler_init_top_k(k)``;
    in the graph as small sorts where ``blocks`` (None: where ``pays_off``)."""
    return _make(_TopK(k, n_vocab, blocks))


# -- llama.cpp's side: one interface whose callbacks find the sampler by its ctx ------------------
_samplers: dict[int, _Sampler] = {}
_keys = itertools.count(1)


def _make(sampler: _Sampler) -> Any:
    import llama_cpp

    key = next(_keys)
    _samplers[key] = sampler
    return llama_cpp.llama_sampler_init(ctypes.byref(_interface()), key)


def _of(smpl: Any) -> _Sampler:
    return _samplers[smpl.contents.ctx]


def _free(smpl: Any) -> None:
    sampler = _samplers.pop(smpl.contents.ctx, None)
    if sampler is not None:
        sampler.free()


@functools.cache
def _interface() -> Any:
    """The one ``llama_sampler_i``; cached for the process, as every sampler points at it."""
    import llama_cpp as lc

    # ctypes callbacks cannot return a char* or a struct pointer: these return addresses
    returns_address = ctypes.CFUNCTYPE(ctypes.c_void_p, lc.llama_sampler_p_ctypes)
    clone = lambda smpl: ctypes.cast(_make(_of(smpl).clone()), ctypes.c_void_p).value  # noqa: E731
    callbacks: dict[str, tuple[Any, Any]] = {
        "name": (returns_address, lambda smpl: ctypes.addressof(_of(smpl).name)),
        "apply": (lc.llama_sampler_i_apply, lambda smpl, cur_p: _of(smpl).apply(cur_p)),
        "clone": (returns_address, clone),
        "free": (lc.llama_sampler_i_free, _free),
        "backend_init": (
            lc.llama_sampler_i_backend_init,
            lambda smpl, buft, _n: _of(smpl).backend_init(ggml().backend_buft_get_device(buft)),
        ),
        "backend_apply": (
            lc.llama_sampler_i_backend_apply,
            lambda smpl, ctx, _gf, data: _of(smpl).backend_apply(ctx, data.contents),
        ),
    }
    interface = lc.llama_sampler_i()
    fields: Any = lc.llama_sampler_i._fields_
    for field, (prototype, function) in callbacks.items():
        # cast to the field's type keeps the callback object alive inside the interface
        setattr(interface, field, ctypes.cast(prototype(function), dict(fields)[field]))
    return interface
