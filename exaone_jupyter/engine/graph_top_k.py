"""Top-k in llama.cpp's graph as a few small sorts instead of one large one.

llama.cpp's top-k sampler puts one ``ggml_top_k`` over the whole vocabulary into the graph. On a
CUDA build with CCCL older than 3.2 (CUDA 13.0 and earlier) that op is a full CUB radix sort of
all 102,400 logits, the largest part of default sampling's cost on a GPU
(benchmarks/gpu/graph_sampler_cost.py). The k largest of a vector are the k largest of the
k largest of each of its parts, so this sampler splits the logits into rows of at most 1,024,
where ggml sorts a row inside one thread block, keeps each row's k largest, and repeats on the
survivors until one row is left: three levels for EXAONE's vocabulary and k = 40.

The survivors and their logits are the ones llama.cpp's top-k keeps, so the chain after it
draws the same tokens. Where the vocabulary does not split so, the sampler is llama.cpp's single
``ggml_top_k``; off the graph (the CPU chain) it is llama.cpp's top-k sampler itself.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections.abc import Callable
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


class _Ggml:
    """The ggml functions the graph is built with, from the library llama.cpp itself loaded."""

    def __init__(self) -> None:
        import llama_cpp

        from .gpu import _load_lib

        lib = _load_lib(Path(llama_cpp.__file__).parent / "lib", "ggml-base")
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
            "ggml_init": (p, [_InitParams]),
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


class _InitParams(ctypes.Structure):
    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


_ggml: _Ggml | None = None


def _lib() -> _Ggml:
    global _ggml
    if _ggml is None:
        _ggml = _Ggml()
    return _ggml


def top_k(ctx: int, logits: int, k: int, made: list[int] | None = None) -> tuple[int, int]:
    """(values, ids): the k largest of ``logits`` (a contiguous tensor) as ops added to graph
    context ``ctx``; ids are int32 places in ``logits``. ``made`` collects every op built."""
    g = _lib()
    n = g.nelements(logits)
    plan = levels(n, k)

    def op(tensor: int) -> int:
        if made is not None:
            made.append(tensor)
        return tensor

    if plan is None:
        return _one_sort(ctx, logits, k, op)
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


def _one_sort(ctx: int, logits: int, k: int, op: Callable[[int], int] = int) -> tuple[int, int]:
    """llama.cpp's own top-k: one ``ggml_top_k`` over the whole vector (``op`` sees each op)."""
    g = _lib()
    n = g.nelements(logits)
    ids = op(g.top_k(ctx, g.reshape_2d(ctx, logits, n, 1), k))
    return op(g.get_rows(ctx, g.reshape_2d(ctx, logits, 1, n), ids)), ids


# -- the llama.cpp sampler ------------------------------------------------------------------------
class _State:
    def __init__(self, k: int) -> None:
        import llama_cpp

        self.k = k
        self.on_cpu = llama_cpp.llama_sampler_init_top_k(k)  # the chain's top-k off the graph


_states: dict[int, _State] = {}
_keys = itertools.count(1)


def _state(smpl: Any) -> _State:
    return _states[smpl.contents.ctx]


_NAME = ctypes.create_string_buffer(b"top-k (in blocks)")


def _name(smpl: Any) -> int:
    return ctypes.addressof(_NAME)  # a callback returns an address that outlives it


def _apply(smpl: Any, cur_p: Any) -> None:
    import llama_cpp

    llama_cpp.llama_sampler_apply(_state(smpl).on_cpu, cur_p)


def _clone(smpl: Any) -> int:
    return ctypes.cast(sampler(_state(smpl).k), ctypes.c_void_p).value or 0


def _free(smpl: Any) -> None:
    import llama_cpp

    state = _states.pop(smpl.contents.ctx, None)
    if state is not None:
        llama_cpp.llama_sampler_free(state.on_cpu)


def _backend_init(smpl: Any, buft: int, n_outputs_max_per_seq: int) -> bool:
    """Whether the logits' device runs every op this sampler adds (built once on a scratch
    context), as llama.cpp asks of its own samplers."""
    g = _lib()
    device = g.backend_buft_get_device(buft)
    if not device:
        return True  # the CPU runs every op
    scratch = g.init(_InitParams(256 * g.tensor_overhead(), None, True))
    try:
        made: list[int] = []
        top_k(scratch, g.new_tensor_1d(scratch, GGML_TYPE_F32, 102_400), _state(smpl).k, made)
        return all(g.backend_dev_supports_op(device, tensor) for tensor in made)
    finally:
        g.free(scratch)


def _backend_apply(smpl: Any, ctx: int, gf: int, data: Any) -> None:
    g, k, d = _lib(), _state(smpl).k, data.contents
    try:
        values, ids = top_k(ctx, d.logits, k)
    except Exception:  # a callback cannot raise into C: say so, and build llama.cpp's one sort
        log.exception("top-k in blocks could not be built; ggml_top_k does it")
        values, ids = _one_sort(ctx, d.logits, k)
    if d.candidates:  # an earlier sampler has chosen already: ids index its candidates
        chosen = g.get_rows(ctx, g.reshape_2d(ctx, d.candidates, 1, g.nelements(d.candidates)), ids)
        ids = g.reshape_2d(ctx, chosen, k, 1)
    d.logits, d.candidates = values, ids


def _interface() -> Any:
    import llama_cpp as lc

    returns_address = ctypes.CFUNCTYPE(ctypes.c_void_p, lc.llama_sampler_p_ctypes)
    callbacks: list[tuple[str, Any, Callable[..., Any]]] = [
        ("name", returns_address, _name),  # ctypes callbacks return no char* or struct pointer
        ("apply", lc.llama_sampler_i_apply, _apply),
        ("clone", returns_address, _clone),
        ("free", lc.llama_sampler_i_free, _free),
        ("backend_init", lc.llama_sampler_i_backend_init, _backend_init),
        ("backend_apply", lc.llama_sampler_i_backend_apply, _backend_apply),
    ]
    iface = lc.llama_sampler_i()
    for field, prototype, function in callbacks:
        fields: Any = lc.llama_sampler_i._fields_
        field_type = dict(fields)[field]
        setattr(iface, field, ctypes.cast(prototype(function), field_type))  # keeps it alive
    return iface


_iface: Any = None


def sampler(k: int) -> Any:
    """A llama.cpp sampler keeping the ``k`` largest logits, as ``llama_sampler_init_top_k(k)``."""
    import llama_cpp

    global _iface
    if _iface is None:
        _iface = _interface()  # lives as long as the process: samplers point at it
    key = next(_keys)
    _states[key] = _State(k)
    return llama_cpp.llama_sampler_init(ctypes.byref(_iface), key)
