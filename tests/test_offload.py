"""How many layers go to the GPU, decided from a GPU's figures (injected: no GPU needed)."""

from __future__ import annotations

import pytest

from exaone_jupyter.engine.offload import GPU_BUILD_HINT, RESERVE_BYTES, GpuInfo, plan_offload
from exaone_jupyter.errors import ExaoneError

MiB = 2**20
LAYERS = [100 * MiB] * 32  # EXAONE-3.0-7.8B has 32 layers
HEAD = 500 * MiB
KV = 16 * MiB  # per layer
NEED_ALL = sum(LAYERS) + HEAD + len(LAYERS) * KV

CPU_ONLY = GpuInfo(False)


def gpu(free_bytes: int | None) -> GpuInfo:
    return GpuInfo(True, "NVIDIA L4", free_bytes, 24 * 2**30)


def plan(request, device: GpuInfo):
    return plan_offload(
        request, layer_bytes=LAYERS, head_bytes=HEAD, kv_bytes_per_layer=KV, gpu=device
    )


def test_cpu_only_build_auto_runs_on_cpu_and_says_how_to_get_a_gpu_build():
    p = plan("auto", CPU_ONLY)
    assert (p.n_gpu_layers, p.n_layers) == (0, 32)
    assert "CPU only" in p.reason and GPU_BUILD_HINT in p.reason
    assert p.notice is None  # auto asked for nothing the build cannot do
    assert p.label == "0/32 layers on GPU"


@pytest.mark.parametrize("request_", ["all", 20, "20", -1])
def test_cpu_only_build_asked_for_gpu_layers_runs_on_cpu_with_a_notice(request_):
    p = plan(request_, CPU_ONLY)
    assert p.n_gpu_layers == 0
    assert "CPU only" in p.reason
    assert p.notice is not None and "no GPU support" in p.notice and GPU_BUILD_HINT in p.notice


def test_auto_puts_all_layers_on_a_gpu_they_fit():
    p = plan("auto", gpu(RESERVE_BYTES + NEED_ALL))
    assert p.n_gpu_layers == 32 and p.notice is None
    assert "All 32 layers fit in NVIDIA L4" in p.reason


@pytest.mark.parametrize("fit", [1, 7, 31])
def test_auto_puts_the_largest_count_that_fits(fit):
    # room for the output layer (it goes first) and `fit` blocks, not fit + 1
    free = RESERVE_BYTES + HEAD + fit * (100 * MiB + KV) + 50 * MiB
    p = plan("auto", gpu(free))
    assert p.n_gpu_layers == fit
    assert f"{fit} of 32 layers fit" in p.reason and "the rest run on the CPU" in p.reason


def test_auto_with_not_one_layer_of_room_runs_on_cpu():
    p = plan("auto", gpu(RESERVE_BYTES + 100 * MiB))
    assert p.n_gpu_layers == 0 and "Not even one layer fits" in p.reason


def test_auto_with_less_free_memory_than_the_reserve_runs_on_cpu():
    assert plan("auto", gpu(RESERVE_BYTES // 2)).n_gpu_layers == 0


def test_auto_with_unknown_free_memory_tries_all():
    p = plan("auto", gpu(None))
    assert p.n_gpu_layers == 32 and "free memory is unknown" in p.reason


@pytest.mark.parametrize("request_", ["all", "ALL", " all ", -1, "-1"])
def test_all_asks_for_every_layer_whatever_the_memory(request_):
    p = plan(request_, gpu(RESERVE_BYTES))
    assert p.n_gpu_layers == 32 and p.notice is None


@pytest.mark.parametrize("request_", ["none", "None", 0, "0"])
def test_none_and_zero_keep_everything_on_the_cpu(request_):
    p = plan(request_, gpu(RESERVE_BYTES + NEED_ALL))
    assert p.n_gpu_layers == 0 and "turned off" in p.reason


@pytest.mark.parametrize("request_", [12, "12"])
def test_a_number_is_taken_as_asked(request_):
    p = plan(request_, gpu(RESERVE_BYTES + NEED_ALL))
    assert p.n_gpu_layers == 12 and "12 of 32 layers were asked for" in p.reason


@pytest.mark.parametrize("request_", [33, 99, "1000"])
def test_a_number_above_the_layers_means_all_with_a_notice(request_):
    p = plan(request_, gpu(RESERVE_BYTES + NEED_ALL))
    assert p.n_gpu_layers == 32
    assert p.notice is not None and "more than the model's 32 layers" in p.notice


@pytest.mark.parametrize(
    "request_, said",
    [
        (-2, "-2 is negative"),
        ("-7", "-7 is negative"),
        ("lots", "'lots'"),
        ("", "''"),
        (3.5, "3.5"),
        (True, "True"),
        ("auto-ish", "'auto-ish'"),
    ],
)
def test_negative_and_junk_are_errors(request_, said):
    with pytest.raises(ExaoneError) as err:
        plan(request_, gpu(RESERVE_BYTES + NEED_ALL))
    text = str(err.value)
    assert text.startswith("gpu_layers must be auto, all, none, or a number of layers")
    assert said in text and text.endswith(".")


@pytest.mark.parametrize("blocks, llama", [(0, 0), (1, 2), (7, 8), (31, 32), (32, -1)])
def test_llama_cpp_is_asked_for_the_blocks_plus_its_output_layer(blocks, llama):
    """llama.cpp counts the output layer as a layer and offloads from the top: N blocks on the
    GPU means asking it for N + 1 (measured on an H100: asking for 4 of 8 put 3 blocks there)."""
    p = plan(blocks if blocks else "none", gpu(RESERVE_BYTES + NEED_ALL))
    assert p.n_gpu_layers == blocks and p.llama_n_gpu_layers == llama
