"""Prove that ``gpu_layers`` auto|all|none|N does on a real GPU what the package reports.

For each setting it loads one random-weight GGUF with EXAONE-3.0-7.8B's layer structure (scaled
down in width so it is written in seconds) through ``LocalBackend`` and prints the layers on the
GPU as the package plans them (``plan.n_gpu_layers``) and as llama.cpp reports them ("offloaded
N/M layers"), where llama.cpp really put the weights (its "model buffer size" lines), the GPU
memory taken (nvidia-smi), and the engine's own prompt and decode rates for a 512-token prompt
and 128 greedy tokens (the model's EOS never wins, so every run decodes all of them). Then
``auto`` twice on a GPU that is "too small": once told so by an injected ``GpuInfo``, once
really filled by another process, and it must choose a partial offload that loads and runs.

    # GPU machine, after benchmarks/gpu/build_cuda.sh (see RESULTS.md):
    . /tmp/llama-cuda/env.sh; python3 benchmarks/gpu/gpu_check.py --dtype f16 --out "$OUT"
    # anywhere, CPU build: 0 layers and the CPU-only reason, on a small model
    .venv/bin/python benchmarks/gpu/gpu_check.py --small

Each case runs in its own process (a llama.cpp crash costs that case, and is reported with its
Python frames); writes gpu_check-DTYPE.md (the table) and gpu_check-DTYPE.json to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Before numpy: on the GPU image, numpy (scipy-openblas) loaded before llama.cpp's libraries makes
# every larger model load segfault (RESULTS.md).
import llama_cpp

from exaone_jupyter.engine.backend import (
    LoadOptions,
    Request,
    Sampling,
)
from exaone_jupyter.engine.llama import llama_log
from exaone_jupyter.engine.llama.gpu import probe_gpu
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.engine.offload import RESERVE_BYTES, GpuInfo
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.testing import EXAONE_SPECIAL_TOKENS, TinyShape, write_random_gguf

MiB = 2**20
FIRST_BYTE_TOKEN = len(EXAONE_SPECIAL_TOKENS)  # ids after the markers are the 256 byte tokens
BUFFER_LINE = re.compile(r"(\S+) (model|KV|compute) buffer size =\s*([\d.]+) MiB")


def log(*parts: object, sep: str = " ") -> None:
    print(*parts, sep=sep, flush=True)


# -- the GPU as nvidia-smi sees it -------------------------------------------------------------
def smi_gpu() -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,memory.used,memory.free",
                "--format=csv,noheader,nounits",
                "-i",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    name, driver, total, used, free = [p.strip() for p in out.split(",")]
    return {
        "name": name,
        "driver": driver,
        "total_mib": int(total),
        "used_mib": int(used),
        "free_mib": int(free),
    }


def smi_process_mib(pid: int) -> int | None:
    """What nvidia-smi charges to one process (context + buffers + pools), if it can tell."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1])
    return None


def mapped_ggml_libraries() -> list[str]:
    """The ggml/llama libraries mapped into this process (a second copy would show twice)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if "/libggml" in line or "/libllama" in line
        }
    )


# -- one load + generation ---------------------------------------------------------------------
def prompt_ids(n: int, salt: int) -> list[int]:
    """``n`` byte-token ids, deterministic; different salts differ in their first token."""
    return [FIRST_BYTE_TOKEN + (salt * 31 + i * 7919) % 256 for i in range(n)]


def run_case(label: str, request: object, info, args, *, gpu: GpuInfo | None = None) -> dict:
    row: dict = {"case": label, "gpu_layers": str(request)}
    gc.collect()
    before = smi_gpu()
    position = llama_log.mark()
    log(f"\n== {label}: gpu_layers={request}" + (" (GpuInfo injected)" if gpu else ""))
    try:
        backend = LocalBackend(
            info,
            LoadOptions(gpu_layers=request, n_ctx=args.n_ctx, use_mmap=not args.no_mmap),
            gpu=gpu,
        )
    except Exception as err:  # a failed load is a result: report it and go on
        row["error"] = f"{type(err).__name__}: {err}"
        log("   load FAILED:", row["error"])
        return row
    try:
        facts = backend.info.local
        row.update(
            package_layers=facts.offload.n_gpu_layers,
            layers=facts.offload.n_layers,
            llama_layers=facts.llama_gpu_layers,
            reason=facts.offload.reason,
            notices=list(backend.info.notices),
            load_s=round(facts.load_s, 2),
            planned_free_mib=None
            if facts.gpu.free_bytes is None
            else round(facts.gpu.free_bytes / MiB),
        )
        buffers: dict[str, float] = {}
        for line in llama_log.since(position, 2):
            match = BUFFER_LINE.search(line)
            if match:
                key = f"{match.group(1)} {match.group(2)}"
                buffers[key] = buffers.get(key, 0.0) + float(match.group(3))
        row["buffers_mib"] = {k: round(v, 1) for k, v in buffers.items()}
        row["weights_on_gpu_mib"] = round(
            sum(v for k, v in buffers.items() if k.endswith(" model") and _is_gpu(k)), 1
        )
        row["weights_on_cpu_mib"] = round(
            sum(v for k, v in buffers.items() if k.endswith(" model") and not _is_gpu(k)), 1
        )
        offload_lines = [line for line in llama_log.since(position, 2) if "offload" in line]
        row["llama_offload_log"] = offload_lines
        log(f"   package: {row['package_layers']}/{row['layers']} ({row['reason']})")
        log(f"   llama.cpp: {offload_lines or 'no offload lines (CPU-only build)'}")
        log(f"   buffers (MiB): {row['buffers_mib']}")
        print("PARTIAL " + json.dumps(row, default=str), flush=True)  # survives a crash below

        warm = backend.stream(
            Request(Sampling(temperature=0, max_tokens=8), prompt_ids=prompt_ids(32, salt=1))
        ).consume()
        reply = backend.stream(
            Request(
                Sampling(temperature=0, max_tokens=args.gen_tokens),
                prompt_ids=prompt_ids(args.prompt_tokens, salt=2),
            )
        ).consume()
        s = reply.stats
        row.update(
            prompt_tokens=s.prompt_tokens_evaluated,
            completion_tokens=s.completion_tokens,
            finish=s.finish_reason,
            prompt_tok_s=_round(s.prompt_tok_s),
            decode_tok_s=_round(s.decode_tok_s),
            ttft_s=_round(s.ttft_s, 3),
            total_s=_round(s.total_s, 2),
            warmup_finish=warm.stats.finish_reason,
        )
        after = smi_gpu()
        if before and after:
            row["gpu_used_delta_mib"] = after["used_mib"] - before["used_mib"]
            row["gpu_used_mib"] = after["used_mib"]
        row["process_gpu_mib"] = smi_process_mib(os.getpid())
        log(
            f"   prompt {s.prompt_tokens_evaluated} tok at {row['prompt_tok_s']} tok/s "
            f"(ttft {row['ttft_s']} s), decode {s.completion_tokens} tok at "
            f"{row['decode_tok_s']} tok/s, finish={s.finish_reason}; GPU used "
            f"+{row.get('gpu_used_delta_mib')} MiB (process {row['process_gpu_mib']} MiB)"
        )
        if s.completion_tokens != args.gen_tokens or s.finish_reason != "length":
            row["warning"] = (
                f"expected {args.gen_tokens} tokens ending by length, got "
                f"{s.completion_tokens} ({s.finish_reason})"
            )
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
        log("   run FAILED:", row["error"])
    finally:
        backend.close()
        del backend
        gc.collect()
    closed = smi_gpu()  # what an unload leaves on the GPU (the CUDA context stays)
    if before and closed:
        row["gpu_after_unload_delta_mib"] = closed["used_mib"] - before["used_mib"]
    return row


def _is_gpu(buffer_key: str) -> bool:
    """CUDA0, ROCm0, Vulkan0, MTL0...; not CPU, CPU_Mapped, CPU_REPACK, AMX nor CUDA_Host."""
    return re.fullmatch(r"(CUDA|ROCm|Vulkan|SYCL|MTL|Metal)\d*", buffer_key.split()[0]) is not None


def _round(value, digits: int = 1):
    return None if value is None else round(value, digits)


# -- filling the GPU from another process ------------------------------------------------------
FILLER = r"""
import ctypes, sys
rt = ctypes.CDLL(sys.argv[1])
ptr = ctypes.c_void_p()
err = rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(int(sys.argv[2])))
print("ready", err, flush=True)
sys.stdin.read()
"""


def cudart_path() -> str | None:
    for lib in mapped_ggml_libraries() + _mapped("libcudart"):
        if "libcudart" in lib:
            return lib
    return None


def _mapped(fragment: str) -> list[str]:
    try:
        return sorted(
            {
                line.split()[-1]
                for line in Path("/proc/self/maps").read_text().splitlines()
                if fragment in line
            }
        )
    except OSError:
        return []


def start_filler(n_bytes: int) -> subprocess.Popen | None:
    path = cudart_path()
    if path is None:
        log("   no libcudart mapped in this process; cannot fill the GPU")
        return None
    proc = subprocess.Popen(
        [sys.executable, "-c", FILLER, path, str(n_bytes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    if line[:2] != ["ready", "0"]:
        log(f"   filler failed: {line}")
        stop_filler(proc)
        return None
    return proc


def stop_filler(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


# -- report ------------------------------------------------------------------------------------
def _plus(mib: int | None) -> str:
    return "n/a" if mib is None else f"{mib:+d}"


def table(rows: list[dict], card: str, model: str) -> str:
    head = (
        "| card | model | case | gpu_layers | layers on GPU: package / llama.cpp | "
        "weights on GPU / CPU (MiB) | GPU memory used (MiB) | prompt tok/s (TTFT s) | "
        "decode tok/s | GPU MiB left after unload |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "package_layers" not in r:
            lines.append(
                f"| {card} | {model} | {r['case']} | {r['gpu_layers']} | "
                f"load failed: {r['error'][:120]} | | | | | |"
            )
            continue
        llama = "not reported" if r.get("llama_layers") is None else r["llama_layers"]
        layers = (
            f"{r.get('package_layers')}/{r.get('layers')} / {llama}/{r.get('layers', 0) + 1}"
            if r.get("llama_layers") is not None
            else f"{r.get('package_layers')}/{r.get('layers')} / {llama}"
        )
        used = r.get("gpu_used_delta_mib")
        used_text = "n/a" if used is None else f"+{used}"
        if r.get("process_gpu_mib") is not None:
            used_text += f" (process {r['process_gpu_mib']})"
        lines.append(
            f"| {card} | {model} | {r['case']} | {r['gpu_layers']} | {layers} | "
            f"{r.get('weights_on_gpu_mib')} / {r.get('weights_on_cpu_mib')} | {used_text} | "
            f"{r.get('prompt_tok_s')} ({r.get('ttft_s')}) | {r.get('decode_tok_s')} | "
            f"{_plus(r.get('gpu_after_unload_delta_mib'))} |"
            if "error" not in r
            else f"| {card} | {model} | {r['case']} | {r['gpu_layers']} | {layers} | "
            f"{r.get('weights_on_gpu_mib')} / {r.get('weights_on_cpu_mib')} | "
            f"crashed while generating | | | |"
        )
    return "\n".join(lines)


def spawn_case(
    label: str, request: object, args, path: Path, *, fake_free: int | None = None
) -> dict:
    """Run one case in a child process, so a crash in llama.cpp costs that case only."""
    command = (
        [
            sys.executable,
            "-X",
            "faulthandler",
            __file__,
            "--model",
            str(path),
            "--n-ctx",
            str(args.n_ctx),
            "--prompt-tokens",
            str(args.prompt_tokens),
            "--gen-tokens",
            str(args.gen_tokens),
            "--run-case",
            label,
            str(request),
            str(fake_free or 0),
        ]
        + (["--verbose-llama"] if args.verbose_llama else [])
        + (["--no-mmap"] if args.no_mmap else [])
    )
    child = subprocess.run(command, capture_output=True, text=True, timeout=args.case_timeout)
    result, partial = None, None
    for line in child.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif line.startswith("PARTIAL "):
            partial = json.loads(line[len("PARTIAL ") :])
        else:
            log(line)
    if child.returncode != 0 or result is None:
        errors = [line.strip() for line in child.stderr.splitlines() if line.strip()]
        log(f"   child exited with {child.returncode}:", *errors[-14:], sep="\n      ")
        frames = [line for line in errors if line.startswith("File ")][:2]  # most recent call first
        where = "generating" if partial else "loading"
        return {
            "case": label,
            "gpu_layers": str(request),
            **(partial or {}),
            "error": f"process died while {where} (exit {child.returncode}; "
            f"{'; '.join(frames) or errors[-1:]})",
        }
    return result


def child_main(args) -> int:
    label, request, fake_free = args.run_case
    if args.verbose_llama:  # Llama(verbose=False) silences fds 1 and 2 while loading: no trace
        import llama_cpp

        init = llama_cpp.Llama.__init__
        llama_cpp.Llama.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "verbose": True})
    request = int(request) if request.isdigit() else request
    info = read_gguf(args.model)
    gpu = None
    if int(fake_free):
        real = probe_gpu()
        gpu = GpuInfo(True, real.name, int(fake_free), real.total_bytes)
    row = run_case(label, request, info, args, gpu=gpu)
    print("RESULT " + json.dumps(row, default=str), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--n-embd", type=int, default=2048)
    parser.add_argument("--n-ff", type=int, default=7168)
    parser.add_argument("--n-head", type=int, default=16)
    parser.add_argument("--n-head-kv", type=int, default=4)
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["f32", "f16", "q8_0"],
        help="default q8_0, as the model card's GGUF (f16 with --small)",
    )
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--middle", type=int, default=None, help="the N case (default layers/2)")
    parser.add_argument("--model", type=Path, default=None, help="reuse or write the GGUF here")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or "artifacts/gpu_check")
    )
    parser.add_argument("--no-fill", action="store_true", help="skip the filled-GPU case")
    parser.add_argument("--case-timeout", type=int, default=240, help="seconds per case")
    parser.add_argument(
        "--small",
        action="store_true",
        help="a CPU-sized smoke run: 4 layers of width 256, 64+16 tokens",
    )
    parser.add_argument(
        "--verbose-llama",
        action="store_true",
        help="load with Llama(verbose=True), so a crash while loading shows",
    )
    parser.add_argument("--no-mmap", action="store_true", help="LoadOptions(use_mmap=False)")
    parser.add_argument(
        "--run-case", nargs=3, metavar=("LABEL", "REQUEST", "FAKE_FREE"), help=argparse.SUPPRESS
    )  # internal: one case, in a child process
    args = parser.parse_args()
    if args.run_case:
        return child_main(args)
    if args.small:
        args.layers, args.n_embd, args.n_ff, args.n_head, args.n_head_kv = 4, 256, 512, 4, 2
        args.prompt_tokens, args.gen_tokens, args.n_ctx = 64, 16, 512
        # f16: on the 2-core dev machine (AMX_INT8, native build) llama.cpp 0.3.36 segfaults in
        # llama_decode on every Q8_0 model, our engine or llama-cpp-python's own alike.
        args.dtype = args.dtype or "f16"
    args.dtype = args.dtype or "q8_0"
    middle = args.middle if args.middle is not None else args.layers // 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    report: dict = {
        "llama_cpp": llama_cpp.__version__,
        "llama_cpp_file": llama_cpp.__file__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }
    log(f"llama-cpp-python {report['llama_cpp']} at {report['llama_cpp_file']}")
    log(f"system info: {report['system_info']}")
    log(f"llama_supports_gpu_offload: {report['supports_gpu_offload']}")

    # probe_gpu (ggml's device registry) against nvidia-smi
    smi = smi_gpu()
    gpu = probe_gpu()
    smi_after = smi_gpu()
    report["probe_gpu"] = {
        "supports_offload": gpu.supports_offload,
        "name": gpu.name,
        "free_mib": None if gpu.free_bytes is None else round(gpu.free_bytes / MiB),
        "total_mib": None if gpu.total_bytes is None else round(gpu.total_bytes / MiB),
    }
    report["nvidia_smi"] = smi_after
    report["mapped_libraries"] = mapped_ggml_libraries()
    log(f"probe_gpu: {report['probe_gpu']}")
    log(f"nvidia-smi: before probe {smi}, after {smi_after}")
    log("mapped ggml/llama libraries:", *report["mapped_libraries"], sep="\n   ")
    if smi_after and gpu.total_bytes:
        report["probe_vs_smi"] = {
            "name_matches": gpu.name == smi_after["name"],
            "total_diff_mib": round(gpu.total_bytes / MiB) - smi_after["total_mib"],
            "free_diff_mib": round(gpu.free_bytes / MiB) - smi_after["free_mib"],
        }
        log(f"probe_gpu vs nvidia-smi: {report['probe_vs_smi']}")
    card = smi_after["name"] if smi_after else (gpu.name or "CPU only")
    card = card.replace("NVIDIA ", "")

    # the model
    shape = TinyShape(
        n_embd=args.n_embd,
        n_head=args.n_head,
        n_head_kv=args.n_head_kv,
        n_ff=args.n_ff,
        n_layer=args.layers,
        n_ctx=max(4096, args.n_ctx),
    )
    path = args.model or Path(tempfile.gettempdir()) / (
        f"exaone-shape-{args.layers}x{args.n_embd}-{args.dtype}.gguf"
    )
    if not path.exists():
        t = time.perf_counter()
        write_random_gguf(
            path,
            shape=shape,
            dtype=args.dtype,
            quiet_control_tokens=True,
            name="random-weight EXAONE-3.0-7.8B-structured GPU check (not EXAONE)",
        )
        written = time.perf_counter() - t
        report["write_s"] = round(written, 1)
        log(
            f"\nwrote {path} ({path.stat().st_size / MiB:.0f} MiB) in {written:.1f} s "
            f"({path.stat().st_size / MiB / written:.0f} MiB/s)"
        )
    info = read_gguf(path)
    model = (
        f"{info.n_params / 1e9:.2f}B {info.quantization}, {info.file_size / 2**30:.2f} GiB, "
        f"{info.n_layers} layers"
    )
    report["model"] = {
        "path": str(path),
        "file_bytes": info.file_size,
        "params": info.n_params,
        "quantization": info.quantization,
        "layers": info.n_layers,
        "layer_bytes": info.layer_bytes[0],
        "other_bytes": info.other_bytes,
        "options": {k: str(v) for k, v in vars(args).items()},
    }
    log(
        f"model: {model}; one layer {info.layer_bytes[0] / MiB:.1f} MiB, rest "
        f"{info.other_bytes / MiB:.1f} MiB"
    )

    # GPU cases first: a crash on the CPU side must not cost them
    rows = [
        spawn_case("all", "all", args, path),
        spawn_case("auto", "auto", args, path),
        spawn_case(f"N={middle}", middle, args, path),
        spawn_case("none", "none", args, path),
    ]

    # auto on a GPU that is too small: first told so, then really so
    if gpu.supports_offload and gpu.free_bytes:
        from exaone_jupyter.engine.llama.llama_load import kv_bytes_per_layer

        per_layer = info.layer_bytes[0] + kv_bytes_per_layer(info, args.n_ctx)
        fake_free = RESERVE_BYTES + middle * per_layer + per_layer // 2
        rows.append(
            spawn_case(
                f"auto, GpuInfo says {fake_free / 2**30:.2f} GiB free",
                "auto",
                args,
                path,
                fake_free=fake_free,
            )
        )
        if not args.no_fill:
            now = probe_gpu()
            contexts = 1100 * MiB  # the filler's CUDA context and the case's own
            fill = now.free_bytes - fake_free - contexts
            log(
                f"\nfilling the GPU with {fill / 2**30:.1f} GiB from another process "
                f"(free now {now.free_bytes / 2**30:.1f} GiB, aiming at {fake_free / 2**30:.2f})"
            )
            filler = start_filler(fill) if fill > 0 else None
            if filler is not None:
                try:
                    seen = smi_gpu()
                    report["filled_smi"] = seen
                    log(f"   nvidia-smi now: {seen}")
                    free_text = f"{seen['free_mib'] / 1024:.2f} GiB" if seen else "little"
                    rows.append(
                        spawn_case(
                            f"auto, GPU filled by another process ({free_text} free)",
                            "auto",
                            args,
                            path,
                        )
                    )
                finally:
                    stop_filler(filler)
    else:
        log(
            "\nthis build cannot offload (or cannot tell the free memory): the too-small-GPU "
            "cases are skipped"
        )

    report["rows"] = rows
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = table(rows, card, model)
    notes = [
        f"- {r['case']}: {r.get('reason') or ''}"
        + (f" Notice: {' '.join(r['notices'])}" if r.get("notices") else "")
        + (f" ERROR: {r['error']}" if r.get("error") else "")
        + (f" WARNING: {r['warning']}" if r.get("warning") else "")
        for r in rows
    ]
    markdown = (
        f"{text}\n\nReasons (`%exaone info`):\n"
        + "\n".join(notes)
        + f"\n\nllama-cpp-python {report['llama_cpp']}; {report['system_info']}\n"
    )
    stem = f"gpu_check-{args.dtype}"
    (args.out / f"{stem}.md").write_text(markdown)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    log("\n" + markdown)
    log(f"done in {report['seconds']} s; wrote {args.out}/{stem}.md and {stem}.json")
    if not args.model:
        path.unlink(missing_ok=True)
    failed = [r["case"] for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
