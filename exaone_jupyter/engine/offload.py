"""How many layers go to the GPU: ``auto``, ``all``, ``none`` or a number, and why.

Kept free of llama.cpp so the decision can be tested anywhere by feeding it a GPU's
figures; ``local.py`` measures the real ones and passes them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ExaoneError

GPU_BUILD_HINT = (
    'install a GPU build: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall '
    "--no-cache-dir llama-cpp-python==0.3.36"
)
# Kept free beyond weights and KV cache: llama.cpp's compute buffers, the CUDA context, other users.
RESERVE_BYTES = 768 * 2**20
CHOICES = "auto, all, none, or a number of layers"


@dataclass(frozen=True)
class GpuInfo:
    """What the running llama.cpp build can see; ``free_bytes`` None when it cannot tell."""

    supports_offload: bool
    name: str | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int  # what llama.cpp is asked for (0 .. n_layers)
    n_layers: int
    reason: str  # one sentence, shown by %exaone info
    notice: str | None = None  # something the user should see once, at load

    @property
    def label(self) -> str:
        return f"{self.n_gpu_layers}/{self.n_layers} layers on GPU"

    @property
    def llama_n_gpu_layers(self) -> int:
        """llama.cpp's ``n_gpu_layers`` for this plan.

        llama.cpp counts the output layer as one more layer and offloads from the top, so
        ``N`` would put N-1 blocks and the output layer on the GPU. We mean N blocks, so we ask
        for N+1 (the output layer rides along, as it does with ``all``).
        """
        if self.n_gpu_layers == 0:
            return 0
        return -1 if self.n_gpu_layers >= self.n_layers else self.n_gpu_layers + 1


def parse_request(value: object) -> str | int:
    """``auto``/``all``/``none`` or a non-negative layer count; anything else is an error."""
    if isinstance(value, bool):
        raise ExaoneError(f"gpu_layers must be {CHOICES}, not {value!r}.")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        if text in ("auto", "all", "none"):
            return text
        try:
            number = int(text)
        except ValueError:
            raise ExaoneError(f"gpu_layers must be {CHOICES}, not {value!r}.") from None
    if number == -1:
        return "all"  # llama.cpp's own spelling of "all"
    if number < 0:
        raise ExaoneError(f"gpu_layers must be {CHOICES}; {number} is negative.")
    return "none" if number == 0 else number


def plan_offload(
    request: object,
    *,
    layer_bytes: Sequence[int],
    head_bytes: int,
    kv_bytes_per_layer: int,
    gpu: GpuInfo,
) -> OffloadPlan:
    """Decide the layer count for ``request`` on ``gpu``."""
    want = parse_request(request)
    n = len(layer_bytes)
    if want == "none":
        return OffloadPlan(0, n, "GPU offload was turned off (gpu_layers=none).")
    if not gpu.supports_offload:
        if want == "auto":
            return OffloadPlan(
                0,
                n,
                "This llama-cpp-python build runs on the CPU only; to use a "
                f"GPU, {GPU_BUILD_HINT}.",
            )
        return OffloadPlan(
            0,
            n,
            "This llama-cpp-python build runs on the CPU only, so no layer could go to the GPU.",
            notice=f"gpu_layers={want} asks for a GPU, but this llama-cpp-python "
            f"build has no GPU support; {GPU_BUILD_HINT}.",
        )
    where = gpu.name or "the GPU"
    if want == "all":
        return OffloadPlan(n, n, f"All {n} layers were asked for on {where} (gpu_layers=all).")
    if isinstance(want, int):
        if want > n:
            return OffloadPlan(
                n,
                n,
                f"All {n} layers are on {where}.",
                notice=f"gpu_layers={want} is more than the model's {n} layers, "
                "so all of them go to the GPU.",
            )
        return OffloadPlan(want, n, f"{want} of {n} layers were asked for on {where}.")

    # auto: everything if it fits, else as many whole layers as fit, else none.
    if gpu.free_bytes is None:
        return OffloadPlan(n, n, f"All {n} layers go to {where} (its free memory is unknown).")
    budget = gpu.free_bytes - RESERVE_BYTES
    need_all = sum(layer_bytes) + head_bytes + n * kv_bytes_per_layer
    free_gib = gpu.free_bytes / 2**30
    if need_all <= budget:
        return OffloadPlan(
            n,
            n,
            f"All {n} layers fit in {where}'s {free_gib:.1f} GiB free "
            f"(they need {need_all / 2**30:.2f} GiB).",
        )
    used, fit = head_bytes, 0  # a partial offload puts the output layer on the GPU first
    for size in layer_bytes:
        if used + size + kv_bytes_per_layer > budget:
            break
        used += size + kv_bytes_per_layer
        fit += 1
    if fit == 0:
        return OffloadPlan(
            0,
            n,
            f"Not even one layer fits in {where}'s {free_gib:.1f} GiB free, "
            "so the model runs on the CPU.",
        )
    return OffloadPlan(
        fit,
        n,
        f"{fit} of {n} layers fit in {where}'s {free_gib:.1f} GiB free "
        f"(all would need {need_all / 2**30:.2f} GiB); the rest run on the CPU.",
    )
