"""The engine against a bare decode loop on a GPU, on EXAONE-4.0-1.2B's shape (issue 17, item 5).

Model: random weights in EXAONE-4.0-1.2B's layout (exaone4, 30 layers, width 2048, GQA 32:8,
feed-forward 4096, 102,400-token vocabulary), Q8_0, every layer offloaded. The floor is the bare
loop of ``stream_overhead.py`` (``llama_decode`` + numpy ``argmax`` on the logits, wall clock) on
its own context; the engine runs as a consumer sees it (``LocalBackend.stream``), interleaved with
the floor round by round, with llama.cpp's chain in its graph, and with the engine's CPU sampler
on the logits copied to the host. Goal:
engine >= 0.97x the floor with default sampling (t 0.7, top-k 40, top-p 0.95).

    python3 benchmarks/gpu/speed_gpu.py [--layers 30] [--tokens 100 500] [--rounds 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# llama_cpp before numpy: on the GPU image the other order crashes model loads (RESULTS.md)
import llama_cpp  # noqa: E402  isort: skip

from stream_overhead import MODES, PROMPT, BareLoop, engine_run  # noqa: E402

from exaone_jupyter.engine.backend import LoadOptions  # noqa: E402
from exaone_jupyter.engine.llama import threads  # noqa: E402
from exaone_jupyter.engine.llama.local import LocalBackend  # noqa: E402
from exaone_jupyter.model.gguf_check import read_gguf  # noqa: E402
from exaone_jupyter.testing import write_exaone4_1_2b_shape  # noqa: E402

GOAL = 0.97  # engine / floor with default sampling


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "no nvidia-smi"


def where(engine: LocalBackend) -> str:
    return "sampler in llama.cpp's graph" if engine.sample_in_graph else "sampler on the host"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--dtype", default="q8_0")
    parser.add_argument("--tokens", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", type=Path, help="the model's file (written if missing)")
    args = parser.parse_args(argv)
    n_gpu = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    gpu_layers = "all" if n_gpu else "none"
    with tempfile.TemporaryDirectory(prefix="exaone-gpu-") as tmp:
        started = time.perf_counter()
        path = args.model or Path(tmp) / "exaone4-1.2b-shape.gguf"
        if not path.exists():
            write_exaone4_1_2b_shape(path, n_layer=args.layers, dtype=args.dtype)
        info = read_gguf(path)
        about = (
            f"{info.architecture}, {args.layers} layers, {info.n_params / 1e9:.2f} B parameters, "
            f"{info.quantization}, {info.file_size / 2**30:.2f} GiB (written in "
            f"{time.perf_counter() - started:.0f} s); GPU: {gpu_name()}; layers offloaded: "
            f"{gpu_layers}; CPU threads {threads.choose_threads().decode}"
        )
        print(about, flush=True)
        n_threads = threads.choose_threads().decode
        options = LoadOptions(n_ctx=4096, gpu_layers=gpu_layers, n_threads=n_threads)
        default_engine = LocalBackend(info, options)
        other = LocalBackend(
            info,
            LoadOptions.from_options(options, sample_in_graph=not default_engine.sample_in_graph),
        )
        engines = {
            f"engine (default): {where(default_engine)}": default_engine,
            f"engine: {where(other)}": other,
        }
        bare = BareLoop(path, n_threads, n_gpu_layers=n_gpu)
        print(f"default sampler: {default_engine.info.local.sampler}", flush=True)
        ids = default_engine.tokenize(PROMPT, special=True)
        for engine in engines.values():
            engine_run(engine, ids, MODES["greedy"], 16, seed=1)  # warm-up
        bare.run(16)
        rows = []
        for n in args.tokens:
            for mode, setting in MODES.items():
                floor: list[float] = []
                runs: dict[str, list[float]] = {name: [] for name in engines}
                for r in range(args.rounds):
                    floor.append(bare.run(n)[1])
                    for name, engine in engines.items():
                        seconds = engine_run(engine, ids, setting, n, seed=1000 * n + r)[0]
                        runs[name].append(seconds)
                floor_s = statistics.median(floor)
                for name, seconds in runs.items():
                    engine_s = statistics.median(seconds)
                    row = {
                        "tokens": n,
                        "sampling": mode,
                        "engine": name,
                        "floor_tok_s": 1 / floor_s,
                        "engine_tok_s": 1 / engine_s,
                        "ratio": floor_s / engine_s,
                        "beyond_us": (engine_s - floor_s) * 1e6,
                    }
                    rows.append(row)
                    print(
                        f"{n:>4} tokens | {mode} | {name}: floor {row['floor_tok_s']:,.0f} tok/s, "
                        f"engine {row['engine_tok_s']:,.0f} tok/s, {row['ratio']:.3f}x, "
                        f"beyond {row['beyond_us']:.0f} µs/token",
                        flush=True,
                    )
        for engine in engines.values():
            engine.close()
        bare.close()
    print(
        "\n| tokens | sampling | engine | floor tok/s | engine tok/s | engine / floor | beyond µs |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tokens']} | {r['sampling']} | {r['engine']} | {r['floor_tok_s']:,.0f} | "
            f"{r['engine_tok_s']:,.0f} | {r['ratio']:.3f} | {r['beyond_us']:.0f} |"
        )
    for name in engines:
        rows_of = [r for r in rows if r["engine"] == name and r["sampling"].startswith("default")]
        worst = min(r["ratio"] for r in rows_of)
        print(
            f"- {name}, default sampling, >= {GOAL}x the floor: "
            f"{'yes' if worst >= GOAL else 'NO'} (worst {worst:.3f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps({"about": about, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
