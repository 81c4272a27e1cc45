"""A sequence's KV state as bytes: what llama.cpp computed for some tokens, kept to restore
instead of computing it again.

Why: on a CPU the wait before the first token is the prompt. On the EXAONE-4.0-1.2B shape (2
cores) evaluating costs ~19 ms a token, restoring a saved state ~0.4 ms a token, and the next
token's logits after a restore equal the original's exactly. The bytes are llama.cpp's own
format (``llama_state_seq_get_data``), valid only for the same model file, context settings and
llama.cpp build (``kv_disk.StateKey``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_TOKENS = 8  # fewer tokens than this are cheaper to evaluate again than to keep


@dataclass(frozen=True, eq=False)
class State:
    """The keys and values of ``ids`` on one sequence. ``data`` is handed to llama.cpp without
    a copy."""

    ids: tuple[int, ...]
    data: bytearray

    @property
    def size(self) -> int:
        return len(self.data)


def buffer(size: int) -> bytearray:
    """Zeroed bytes for a state: llama.cpp writes into them (``readinto`` can fill them too).
    A bytearray, not ``ctypes.c_uint8 * size``: ctypes keeps every array type it makes, one a
    size, for the life of the process, and every state's size is another."""
    return bytearray(size)


def _pointer(data: bytearray) -> Any:
    """``data`` as the ``uint8_t *`` llama.cpp takes (the pointer keeps ``data`` alive)."""
    return ctypes.pointer(ctypes.c_uint8.from_buffer(data))


def capture(ctx: Any, ids: Sequence[int], seq: int = 0) -> State | None:
    """The state of sequence ``seq``, which holds ``ids``; None when llama.cpp gives none."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(ctx, seq)
    if size <= 0:
        return None
    data = buffer(size)
    if llama_cpp.llama_state_seq_get_data(ctx, _pointer(data), size, seq) != size:
        return None
    return State(tuple(ids), data)


def restore(ctx: Any, state: State, seq: int = 0) -> bool:
    """Put ``state`` on sequence ``seq`` in place of what it held. False when llama.cpp refuses
    the bytes (another build's format, a damaged file): the sequence is then empty."""
    import llama_cpp

    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
    read = llama_cpp.llama_state_seq_set_data(ctx, _pointer(state.data), state.size, seq)
    held = llama_cpp.llama_memory_seq_pos_max(memory, seq) + 1
    if read != state.size or held != len(state.ids):
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        return False
    return True


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
