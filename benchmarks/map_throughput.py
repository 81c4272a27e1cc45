"""map's throughput: the same 64 prompts one by one vs ``map(parallel=1, 4, 8, 16)``.

For each model this prints one Markdown table: wall seconds, rows/s, generated tokens/s (all
completion tokens / wall time, prompt evaluation included) and the speed-up over one by one.
"One by one" is what a loop of ``--no-history`` cells does: ``Session.ask`` per prompt, each
reply consumed to its end. Every run is greedy with ``max_tokens`` 32 and no cache.

Models: the shipped demo model (its 63 trained questions and one more; replies end on their own)
and a ~75M-parameter f16 random-weight model written into a temporary directory (control tokens
quiet, so every reply is exactly 32 tokens: "한국" over and over). On a GPU machine, ``1.2B``: a
random-weight model of EXAONE-4.0-1.2B's shape (exaone4, 30 layers, width 2048, 102,400-token
vocabulary, Q8_0), all layers offloaded; goal: 6x at parallel=16.

    .venv/bin/python benchmarks/map_throughput.py             # both models
    .venv/bin/python benchmarks/map_throughput.py --models demo
    python3 benchmarks/map_throughput.py --models 1.2B --parallel 1 4 8 16 32   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# llama_cpp before numpy: on the GPU image the other order crashes model loads (gpu/RESULTS.md)
import llama_cpp  # noqa: F401  isort: skip

from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.mapping import run_map
from exaone_jupyter.session import Session
from exaone_jupyter.testing import TinyShape, write_exaone4_1_2b_shape, write_random_gguf

MAX_TOKENS = 32
PARALLEL = (1, 4, 8, 16)
N_PROMPTS = 64


def demo_prompts() -> list[str]:
    data = Path(__file__).resolve().parent.parent / "exaone_jupyter" / "data"
    dialogues = json.loads((data / "demo_dialogues.json").read_text("utf-8"))
    questions = [
        [m["content"] for m in d["messages"] if m["role"] == "user"][-1] for d in dialogues
    ]
    return (questions + ["What is 2 + 2?"])[:N_PROMPTS]


def random_prompts() -> list[str]:
    return [f"Question {i}: tell me about the number {i * 7}." for i in range(N_PROMPTS)]


def measure(
    session: Session, prompts: list[str], parallels: tuple[int, ...] = PARALLEL
) -> list[tuple[str, float, int]]:
    """(label, seconds, completion tokens) for one by one and each parallel."""
    rows = []
    started = time.perf_counter()
    tokens = 0
    for prompt in prompts:
        reply = session.ask(prompt, Sampling(temperature=0, max_tokens=MAX_TOKENS), history=False)
        for _ in reply:
            pass
        tokens += reply.stats.completion_tokens
    rows.append(("one by one", time.perf_counter() - started, tokens))
    for parallel in parallels:
        started = time.perf_counter()
        result = run_map(
            session, prompts, "{}", parallel=parallel, max_tokens=MAX_TOKENS, cache=False
        )
        elapsed = time.perf_counter() - started
        assert not result.errors, result.summary()
        rows.append((f"map(parallel={parallel})", elapsed, result.progress.tokens))
    return rows


def table(name: str, rows: list[tuple[str, float, int]]) -> str:
    base = rows[0][1]
    lines = [
        f"\n{name}: {N_PROMPTS} prompts, max_tokens {MAX_TOKENS}, greedy\n",
        "| run | seconds | rows/s | tokens/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, seconds, tokens in rows:
        lines.append(
            f"| {label} | {seconds:.2f} | {N_PROMPTS / seconds:.1f} | {tokens / seconds:.0f} | "
            f"{base / seconds:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=["demo", "75M", "1.2B"], default=["demo", "75M"]
    )
    parser.add_argument("--parallel", nargs="+", type=int, default=list(PARALLEL))
    parser.add_argument("--model", type=Path, help="the 1.2B model's file (written if missing)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            session = Session()
            if name == "demo":
                session.load("exaone-demo")
                prompts = demo_prompts()
            elif name == "1.2B":
                path = args.model or Path(tmp) / "exaone4-1.2b-shape.gguf"
                if not path.exists():
                    write_exaone4_1_2b_shape(path)
                session.load(str(path), gpu_layers="all")
                prompts = random_prompts()
            else:
                path = write_random_gguf(
                    Path(tmp) / "75m.gguf",
                    shape=TinyShape(
                        n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=4096
                    ),
                    dtype="f16",
                    favour_text="한국",
                )
                session.load(str(path))
                prompts = random_prompts()
            rows = measure(session, prompts, tuple(args.parallel))
            print(table(f"{name} ({session.backend.info.model})", rows), flush=True)
            session.unload()


if __name__ == "__main__":
    main()
