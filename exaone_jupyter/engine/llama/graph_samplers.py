"""A sampler of our own inside llama.cpp's graph: ``token_only()``, the end of the engine's chains.

llama.cpp runs a chain in its decode graph when every sampler in it has a backend form
(``llama_set_sampler``). After a chain, llama.cpp copies to the host every tensor the chain
leaves behind: the sampled token, and the last logits, probabilities and candidates; after greedy
the logits are the whole vocabulary's (400 KB a token). The engine reads the token only, so this
sampler, the chain's last, leaves nothing else to copy. It is a llama.cpp sampler whose callbacks
are Python functions (ctypes), found by the key llama.cpp keeps as the sampler's context.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
from typing import Any


class _TokenOnly:
    """What the sampler does at each of llama.cpp's calls (``llama_sampler_i``)."""

    name = ctypes.create_string_buffer(b"token only")  # an address llama.cpp may keep

    def apply(self, cur_p: Any) -> None:
        """On the CPU, where the chain does not run in the graph: nothing to do."""

    def backend_apply(self, ctx: int, data: Any) -> None:
        data.logits = data.probs = data.candidates = None  # nothing but the token to copy


def token_only() -> Any:
    """A llama.cpp sampler for the end of a chain in the graph: only the token is copied back."""
    return _make(_TokenOnly())


# -- llama.cpp's side: one interface whose callbacks find the sampler by its ctx ------------------
_samplers: dict[int, _TokenOnly] = {}
_keys = itertools.count(1)


def _make(sampler: _TokenOnly) -> Any:
    import llama_cpp

    key = next(_keys)
    _samplers[key] = sampler
    return llama_cpp.llama_sampler_init(ctypes.byref(_interface()), key)


def _of(smpl: Any) -> _TokenOnly:
    return _samplers[smpl.contents.ctx]


def _free(smpl: Any) -> None:
    _samplers.pop(smpl.contents.ctx, None)


@functools.cache
def _interface() -> Any:
    """The one ``llama_sampler_i``; cached for the process, as every sampler points at it."""
    import llama_cpp as lc

    # ctypes callbacks cannot return a char* or a struct pointer: these return addresses
    returns_address = ctypes.CFUNCTYPE(ctypes.c_void_p, lc.llama_sampler_p_ctypes)
    clone = lambda smpl: ctypes.cast(_make(_TokenOnly()), ctypes.c_void_p).value  # noqa: E731
    callbacks: dict[str, tuple[Any, Any]] = {
        "name": (returns_address, lambda smpl: ctypes.addressof(_of(smpl).name)),
        "apply": (lc.llama_sampler_i_apply, lambda smpl, cur_p: _of(smpl).apply(cur_p)),
        "clone": (returns_address, clone),
        "free": (lc.llama_sampler_i_free, _free),
        # it adds no op to the graph, so every device runs it
        "backend_init": (lc.llama_sampler_i_backend_init, lambda smpl, buft, _n: True),
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
