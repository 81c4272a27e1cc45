"""What GPU this llama.cpp build can offload to, and how much of its memory is free.

Asked through ggml's device registry, which works for CUDA, Metal, Vulkan and ROCm alike.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from ..offload import GpuInfo


def probe_gpu() -> GpuInfo:
    """What this llama.cpp build can offload to, with the first GPU's free memory."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return GpuInfo(False)
    try:  # ggml's device registry: works for CUDA, Metal, Vulkan and ROCm alike
        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        ggml = load_lib(lib_dir, "ggml")
        base = load_lib(lib_dir, "ggml-base")
        ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        base.ggml_backend_dev_description.restype = ctypes.c_char_p
        base.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        base.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        for i in range(ggml.ggml_backend_dev_count()):
            dev = ggml.ggml_backend_dev_get(i)
            if base.ggml_backend_dev_type(dev) in (1, 2):  # GPU, integrated GPU
                free, total = ctypes.c_size_t(), ctypes.c_size_t()
                base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
                name = base.ggml_backend_dev_description(dev).decode("utf-8", "replace")
                return GpuInfo(True, name, free.value or None, total.value or None)
    except (OSError, AttributeError):
        pass
    return GpuInfo(True)


def load_lib(lib_dir: Path, stem: str) -> ctypes.CDLL:
    """The copy of ``stem`` that llama.cpp itself loaded.

    A wheel holds libggml.so, libggml.so.0 and libggml.so.0.x as three separate files, and
    libllama loads the one named by its soname (``.so.0``). Opening another copy would map a
    second, independent ggml into the process, so the soname-style names come first.
    """
    versioned = sorted((p.name for p in lib_dir.glob(f"lib{stem}.so.*")), key=len)
    versioned += sorted((p.name for p in lib_dir.glob(f"lib{stem}.*.dylib")), key=len)
    for name in (*versioned, f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (lib_dir / name).exists():
            return ctypes.CDLL(str(lib_dir / name))
    raise OSError(f"{stem} not found in {lib_dir}")
