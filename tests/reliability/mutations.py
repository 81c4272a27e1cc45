"""Seeded corruptions of a GGUF file, for the fuzz test: the kinds of damage a user's file gets.

A download cut short (truncation), bit rot or a bad disk (bit flips in the header, the metadata or
the tensor table) and a file from a buggy writer (absurd counts, string and array lengths,
impossible hyperparameters). ``mutate(data, seed)`` is deterministic: a failing seed can be
replayed alone.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KINDS = (
    "truncate",
    "flip_header",
    "flip_metadata",
    "flip_tensor_info",
    "absurd_length",
    "bad_hparam",
)


@dataclass(frozen=True)
class Regions:
    """Where the parts of a GGUF lie: header, metadata, tensor table, tensor data."""

    size: int
    metadata: int  # first metadata byte (after the 24-byte header)
    tensor_info: int  # first byte of the tensor table
    data: int  # first byte of tensor data
    lengths: tuple[int, ...]  # offsets of uint64 string/array lengths inside the metadata
    counts: tuple[int, ...]  # offsets of the tensor and metadata counts in the header
    hparams: tuple[tuple[int, str], ...]  # (offset, key) of the uint32 hyperparameter values


@lru_cache(maxsize=4)
def regions(path: str) -> Regions:
    import gguf

    reader = gguf.GGUFReader(path)
    lengths, hparams = [], []
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        lengths.append(f.offset)  # the key's own length
        value_at = f.offset + 8 + len(key.encode()) + 4
        if f.types[0] == gguf.GGUFValueType.STRING:
            lengths.append(value_at)
        elif f.types[0] == gguf.GGUFValueType.ARRAY:
            lengths.append(value_at + 4)  # after the element type
            if f.types[-1] == gguf.GGUFValueType.STRING:
                lengths.append(value_at + 12)  # the first element's length
        elif f.types[0] == gguf.GGUFValueType.UINT32:
            hparams.append((value_at, key))
    first_tensor = min(t.field.offset for t in reader.tensors)
    return Regions(
        size=Path(path).stat().st_size,
        metadata=24,
        tensor_info=first_tensor,
        data=reader.data_offset,
        lengths=tuple(lengths),
        counts=(8, 16),
        hparams=tuple(hparams),
    )


def mutate(data: bytes, seed: int, r: Regions) -> tuple[str, bytes]:
    """One corruption of ``data`` (the bytes of the file ``r`` describes): (description, bytes)."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    out = bytearray(data)
    if kind == "truncate":
        # a quarter of the cuts land in the header or metadata, the rest anywhere
        end = r.tensor_info if rng.random() < 0.25 else r.size - 1
        cut = rng.randrange(1, end)
        return f"truncate at {cut}", bytes(out[:cut])
    if kind.startswith("flip_"):
        lo, hi = {
            "flip_header": (0, r.metadata),
            "flip_metadata": (r.metadata, r.tensor_info),
            "flip_tensor_info": (r.tensor_info, r.data),
        }[kind]
        flips = [(rng.randrange(lo, hi), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
        for at, bit in flips:
            out[at] ^= 1 << bit
        return f"{kind} {', '.join(f'{at}:{bit}' for at, bit in flips)}", bytes(out)
    if kind == "absurd_length":
        at = rng.choice(r.lengths + r.counts)
        value = rng.choice([2**64 - 1, 2**63, 2**32 + 7, 2**31, 10**9, 0])
        struct.pack_into("<Q", out, at, value)
        return f"absurd_length {value} at {at}", bytes(out)
    at, key = rng.choice(r.hparams)
    (old,) = struct.unpack_from("<I", out, at)
    value = rng.choice([0, 1, 3, 2**32 - 1, 2**31, old + 1, old * 1000 % 2**32, max(old - 1, 0)])
    struct.pack_into("<I", out, at, value)
    return f"bad_hparam {key}={value} (was {old})", bytes(out)
