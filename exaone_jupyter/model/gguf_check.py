"""Read and validate a GGUF's header and metadata before llama.cpp sees the file.

llama.cpp aborts the whole process on some malformed files, and with ``verbose=False`` reports
the rest as "Failed to load model". Reading the file with the ``gguf`` package first lets every
problem a user can cause end in one sentence, and gives ``%exaone info`` its facts.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExaoneError

if TYPE_CHECKING:
    import gguf

_HEADER_BYTES = 24  # magic, version, tensor count, metadata count
_REDOWNLOAD = "delete it and download or convert it again"


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF says about itself."""

    path: Path
    file_size: int
    architecture: str
    name: str
    n_params: int
    quantization: str
    context_length: int
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    chat_template: str | None
    eos_token_id: int | None
    tokenizer_pre: str | None
    layer_bytes: list[int] = field(repr=False)  # bytes of blk.N tensors, per layer
    other_bytes: int = 0  # embeddings, output head, norms

    @property
    def is_exaone_arch(self) -> bool:
        return (
            self.architecture in ("exaone", "exaone4", "exaone-moe")
            or "exaone" in self.name.lower()
        )


def known_architectures() -> set[str]:
    import gguf

    return set(gguf.MODEL_ARCH_NAMES.values())


def read_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Validate ``path`` and describe it; raises ExaoneError with one sentence when it is unusable."""
    path = Path(path)
    shown = path.name
    size = _check_file(path)
    reader = _open_reader(path, size)
    _check_tensors_inside(reader, shown, size)
    meta = _Metadata(reader, shown)
    arch = _check_architecture(meta, shown)
    _check_tokenizer(meta, shown)
    n_layers, n_embd, n_ctx = _check_dimensions(meta, arch, shown)
    layer_bytes, other = _bytes_per_layer(reader.tensors, n_layers, arch, shown)

    template = meta.get("tokenizer.chat_template")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    name = str(meta.get("general.name", path.stem))
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    quantization = _quantization(meta.get("general.file_type"), reader.tensors)
    n_head = _int(meta.get(f"{arch}.attention.head_count"), 1)
    n_head_kv = _int(meta.get(f"{arch}.attention.head_count_kv"), n_head)
    return GGUFInfo(
        path=path.resolve(),
        file_size=size,
        architecture=arch,
        name=name,
        n_params=n_params,
        quantization=quantization,
        context_length=n_ctx,
        n_layers=n_layers,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        chat_template=template if isinstance(template, str) and template else None,
        eos_token_id=eos if isinstance(eos, int) else None,
        tokenizer_pre=meta.get("tokenizer.ggml.pre"),
        layer_bytes=layer_bytes,
        other_bytes=other,
    )


def _check_file(path: Path) -> int:
    """The file's size, once it is a non-empty file that starts with a whole GGUF header.

    These are the mistakes a user makes most (a wrong path, a folder, a cut download, another
    format), and each gets its own advice before the ``gguf`` reader sees a byte.
    """
    shown = path.name
    if not path.exists():
        raise ExaoneError(
            f"There is no file at {path}; check the path, or name a model from `%exaone models`."
        )
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".gguf")[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ExaoneError(f"{path} is a directory{hint}; give the path of the .gguf file itself.")
    size = path.stat().st_size
    if size == 0:
        raise ExaoneError(
            f"{shown} is empty (0 bytes), probably an interrupted download; {_REDOWNLOAD}."
        )
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if head[:4] != b"GGUF":
        raise ExaoneError(
            f"{shown} is not a GGUF file (it does not start with 'GGUF'); download a "
            ".gguf model, or convert a checkpoint with llama.cpp's convert_hf_to_gguf.py."
        )
    if len(head) < _HEADER_BYTES:
        raise ExaoneError(f"{shown} is truncated inside its header ({size} bytes); {_REDOWNLOAD}.")
    return size


def _open_reader(path: Path, size: int) -> gguf.GGUFReader:
    """A ``gguf.GGUFReader`` of ``path``; any failure of the reader becomes one sentence.

    The reader maps every tensor's data and fails on a file cut inside it, so the tensor table
    it got to is kept: from it the sentence can say how many bytes the tensors need.
    """
    import gguf

    table: dict = {}

    class _Reader(gguf.GGUFReader):
        """Keeps the tensor table: the reader maps every tensor's data, and fails if it is cut."""

        def _build_tensors(self, start_offs, fields):
            table.update(data_offset=start_offs, fields=fields)
            super()._build_tensors(start_offs, fields)

    try:
        return _Reader(path)
    except Exception as err:
        # the reader raises ValueError, IndexError, UnicodeError... on bad bytes
        end = _tensor_end(table)
        if end is not None and end > size:
            raise ExaoneError(
                f"{path.name} is truncated: its tensors need {end:,} bytes but the file "
                f"has {size:,}; {_REDOWNLOAD}."
            ) from None
        raise ExaoneError(
            f"{path.name} is truncated or corrupt: its metadata or tensor table cannot be "
            f"read ({_short(err)}); {_REDOWNLOAD}."
        ) from None


def _check_tensors_inside(reader: gguf.GGUFReader, shown: str, size: int) -> None:
    """Refuse a file whose tensors run past its end (a cut download the reader did not notice)."""
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ExaoneError(
            f"{shown} is truncated: its tensors need {end:,} bytes but the file has "
            f"{size:,}; {_REDOWNLOAD}."
        )


class _Metadata:
    """A GGUF's metadata values, read so that a value whose bytes are corrupt ends in one sentence."""

    def __init__(self, reader: gguf.GGUFReader, shown: str) -> None:
        self._fields = reader.fields
        self._shown = shown

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default=None):
        """The value of ``key``, or ``default`` when the file does not have it."""
        f = self._fields.get(key)
        if f is None or not f.types:
            return default
        try:
            return f.contents()
        except Exception:
            raise ExaoneError(
                f"{self._shown} has a corrupt metadata value for {key}; {_REDOWNLOAD}."
            ) from None


def _check_architecture(meta: _Metadata, shown: str) -> str:
    """The file's architecture, once this llama.cpp build is known to have it."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ExaoneError(
            f"{shown} has no general.architecture, so it is not a model llama.cpp can "
            "load; use a GGUF converted by llama.cpp."
        )
    if arch not in known_architectures():
        raise ExaoneError(
            f"{shown} has the architecture '{arch}', which this llama.cpp build does not "
            "know; use a GGUF of a supported architecture (EXAONE uses llama, exaone "
            "or exaone4) or upgrade llama-cpp-python."
        )
    return arch


def _check_tokenizer(meta: _Metadata, shown: str) -> None:
    """Refuse a file without an embedded tokenizer: llama.cpp could not turn text into tokens."""
    if meta.get("tokenizer.ggml.model") is None or "tokenizer.ggml.tokens" not in meta:
        raise ExaoneError(
            f"{shown} has no tokenizer; convert the model again with llama.cpp's "
            "convert_hf_to_gguf.py, which embeds it."
        )


def _check_dimensions(meta: _Metadata, arch: str, shown: str) -> tuple[int, int, int]:
    """(layers, width, context length), each a positive whole number: what every size is made of."""
    n_layers = meta.get(f"{arch}.block_count")
    n_embd = meta.get(f"{arch}.embedding_length")
    n_ctx = meta.get(f"{arch}.context_length")
    for key, v in (
        (f"{arch}.block_count", n_layers),
        (f"{arch}.embedding_length", n_embd),
        (f"{arch}.context_length", n_ctx),
    ):
        if not isinstance(v, int) or v <= 0:
            raise ExaoneError(f"{shown} lacks a valid {key}; {_REDOWNLOAD}.")
    return n_layers, n_embd, n_ctx


def _bytes_per_layer(
    tensors: list[gguf.ReaderTensor], n_layers: int, arch: str, shown: str
) -> tuple[list[int], int]:
    """Bytes of each layer's ``blk.N`` tensors, and of the rest: what offloading plans with.

    A block count larger than the layers the tensors hold is refused before a list is sized by
    it: a corrupt count such as 0xFFFFFFF0 would exhaust memory.
    """
    layers_held = 1 + max((_layer_of(t.name) for t in tensors), default=-1)
    if n_layers > layers_held:
        raise ExaoneError(
            f"{shown} is corrupt: its {arch}.block_count says {n_layers:,} layers but its "
            f"tensors hold {layers_held}; {_REDOWNLOAD}."
        )
    layer_bytes = [0] * n_layers
    other = 0
    for t in tensors:
        layer = _layer_of(t.name)
        if 0 <= layer < n_layers:
            layer_bytes[layer] += int(t.n_bytes)
        else:
            other += int(t.n_bytes)
    return layer_bytes, other


def _tensor_end(table: dict) -> int | None:
    """Where the last tensor's data ends, from the table the reader got to; None if unknown."""
    if "fields" not in table:
        return None
    import gguf
    import numpy as np

    try:
        end = 0
        for f in table["fields"]:
            _name_len, _name, _n_dims, dims, raw_dtype, offset = f.parts
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_dtype[0]))]
            n_bytes = int(np.prod(dims, dtype=np.int64)) * type_size // block
            end = max(end, int(table["data_offset"]) + int(offset[0]) + n_bytes)
        return end
    except Exception:
        return None


def _layer_of(tensor_name: str) -> int:
    """N of a layer's ``blk.N.*`` tensor; -1 for the rest (embeddings, output head, norms)."""
    parts = tensor_name.split(".")
    if parts[0] == "blk" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1])
    return -1


def _int(v, default: int) -> int:
    # head counts may be per-layer arrays in some architectures; the first layer stands for all
    if isinstance(v, list) and v:
        v = v[0]
    return v if isinstance(v, int) and v > 0 else default


def _quantization(file_type, tensors) -> str:
    import gguf

    if isinstance(file_type, int):
        try:
            name = gguf.LlamaFileType(file_type).name
            return name.replace("MOSTLY_", "").replace("ALL_", "")
        except ValueError:
            pass
    counts = Counter(t.tensor_type.name for t in tensors if len(t.shape) > 1)
    return counts.most_common(1)[0][0] if counts else "unknown"


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:80]
