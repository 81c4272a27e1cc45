"""Loading a GGUF into llama.cpp: what ``Llama(...)`` does not offer by itself.

The model parameters llama-cpp-python does not expose (the progress callback, repacked buffers),
the progress callback that lets Ctrl-C abort a load cleanly, the one model family where repacking
crashes, and llama.cpp's own count of offloaded layers, read from its log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ...model.gguf_check import GGUFInfo


class LoadProgress:
    """llama.cpp's load progress callback around ``on_progress``.

    llama.cpp calls it from the loading thread between tensors, so a Ctrl-C pending there
    surfaces inside it as KeyboardInterrupt; answering False then makes llama.cpp abort the load
    and free what it had (an exception cannot cross the C frames). A failing view never stops a
    load. The ctypes function object lives as long as this object (the load's duration).
    """

    def __init__(self, on_progress: Callable[[float], None] | None) -> None:
        import llama_cpp

        self.on_progress = on_progress
        self.interrupted = False
        self.callback = llama_cpp.llama_progress_callback(self._call)

    def _call(self, fraction: float, _user_data: Any) -> bool:
        try:
            if self.on_progress is not None:
                self.on_progress(min(max(float(fraction), 0.0), 1.0))
        except KeyboardInterrupt:
            self.interrupted = True
            return False
        except Exception:
            pass
        return True


def amx_hazard(info: GGUFInfo) -> bool:
    """True where llama.cpp's AMX weight repacking would crash this model.

    Measured with llama-cpp-python 0.3.36 built for a CPU with AMX (the default -march=native
    build): a Q8_0 model loads, then segfaults on the first batch of more than one token, in this
    engine and in llama-cpp-python's own API alike. Without the extra (repacked) buffers it runs.
    """
    import llama_cpp

    quantized = info.quantization.upper() not in ("F32", "F16", "BF16")
    return quantized and "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(
        "utf-8", "replace"
    )


@contextlib.contextmanager
def model_params(**fields: Any) -> Iterator[None]:
    """Set llamamodel_params fields that llama-cpp-python's Llama() does not expose.

    Llama() builds its parameters from ``llama_model_default_params()`` in the bindings module, so
    wrapping that function for the duration of one construction reaches them.
    """
    import llama_cpp.llama_cpp as bindings

    original = bindings.llama_model_default_params

    def with_fields():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    bindings.llama_model_default_params = with_fields
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


# Bytes an element of the KV cache takes: ggml's q8_0 and q4_0 blocks hold 32 values in 34 and
# 18 bytes. (So a q8_0 cache holds 1.88x the tokens of an f16 one, a q4_0 cache 3.56x.)
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
KV_BLOCK = 32  # a quantized cache's block: the head size must be a multiple of it


def head_dim(info: GGUFInfo) -> int:
    return info.n_embd // max(info.n_head, 1)


def kv_bytes_per_layer(info: GGUFInfo, n_ctx: int, kv_type: str = "f16") -> int:
    """Keys and values of ``n_ctx`` tokens in one layer."""
    return int(2 * n_ctx * info.n_head_kv * head_dim(info) * KV_ELEMENT_BYTES[kv_type])


def offloaded_from_log(lines: list[str]) -> int | None:
    """llama.cpp's own count from "offloaded N/M layers to GPU" (printed on GPU builds only)."""
    for line in lines:
        if "offloaded" in line and "layers to GPU" in line:
            try:
                return int(line.split("offloaded", 1)[1].split("/", 1)[0])
            except ValueError:
                return None
    return None
