"""The KV cache's type, measured side by side: context tokens per GiB, prompt and decode speed,
and how often greedy replies equal f16's.

- Tokens per GiB: the bytes of a saved sequence state (llama.cpp's own) divided by its tokens.
- Speed: the 1.2B shape and a ~75M model (random weights); each round runs every type in turn on
  the same prompt (``--prompt-tokens``), and times on the wall clock the prompt (to the first
  token) and the decode (the rest, ``--decode-tokens``). f16 with flash attention is measured too,
  since the quantized types turn it on: that separates the two effects.
- Equality: every dialogue the 4.0 demo model was trained on (its last question, thinking off),
  asked greedily with each type; the share of replies equal to f16's, token for token. (exaone-demo's
  heads of 40 values do not fit the quantized types' blocks of 32.)

    .venv/bin/python benchmarks/kv_types.py [--models 75M 1.2B] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling  # noqa: E402
from exaone_jupyter.engine.llama.local import LocalBackend  # noqa: E402
from exaone_jupyter.model.gguf_check import read_gguf  # noqa: E402
from exaone_jupyter.session import Session  # noqa: E402
from exaone_jupyter.testing import benchmark_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "kv_types.json"
DATA = ROOT / "exaone_jupyter" / "data"
CONFIGS = {  # name -> load options
    "f16": {"kv_type": "f16"},
    "f16 + flash attention": {"kv_type": "f16", "flash_attn": True},
    "q8_0": {"kv_type": "q8_0"},
    "q4_0": {"kv_type": "q4_0"},
}
OFF = {"cache_ram_mb": 0, "cache_disk_mb": 0}


def speed(model: Path, prompt_tokens: int, decode_tokens: int, rounds: int) -> dict:
    """Per config: tokens per GiB, prompt tokens/s and decode tokens/s (medians of the rounds)."""
    info = read_gguf(model)
    backends = {
        name: LocalBackend(info, LoadOptions(**opts, cache_disk_mb=0))
        for name, opts in CONFIGS.items()
    }
    any_backend = next(iter(backends.values()))
    ids = any_backend.tokenize("Seoul Busan Incheon Daegu " * prompt_tokens, special=False)
    ids = ids[:prompt_tokens]
    sampling = Sampling(temperature=0, max_tokens=decode_tokens)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    per_token: dict[str, float] = {}
    for backend in backends.values():  # a first reply allocates its buffers: not counted
        backend.stream(Request(sampling, prompt_ids=ids[:32])).consume()
    for r in range(rounds):
        order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
        prompt = ids[r + 1 :] + ids[: r + 1]  # a first token of its own: nothing is reused
        for name in order:
            backend = backends[name]
            started = time.perf_counter()
            reply = backend.stream(Request(sampling, prompt_ids=prompt)).consume()
            first = reply.stats.ttft_s or 0.0
            total = time.perf_counter() - started
            decoded = max(reply.stats.completion_tokens - 1, 1)
            runs[name].append((len(ids) / first, decoded / max(total - first, 1e-9)))
            per_token[name] = backend.prefix_cache().ram_bytes / (len(ids) + decoded)
    for backend in backends.values():
        backend.close()
    return {
        name: {
            "tokens_per_gib": 2**30 / per_token[name],
            "prompt_tok_s": statistics.median(p for p, _ in runs[name]),
            "decode_tok_s": statistics.median(d for _, d in runs[name]),
        }
        for name in CONFIGS
    }


def equality() -> dict:
    """Per quantized type: replies equal to f16's, of the 4.0 demo model's trained questions."""
    dialogues = json.loads((DATA / "demo_dialogues.json").read_text("utf-8"))
    dialogues += json.loads((DATA / "exaone4_reasoning_dialogues.json").read_text("utf-8"))
    replies: dict[str, list[str]] = {}
    for kv_type in ("f16", "q8_0", "q4_0"):
        session = Session()
        session.load(str(DATA / "exaone-4.0-demo.gguf"), kv_type=kv_type, **OFF)
        texts = []
        for dialogue in dialogues:
            messages = dialogue["messages"]
            session.reset()
            system = messages[0]["content"] if messages[0]["role"] == "system" else None
            session.set_system(system)
            question = [m["content"] for m in messages if m["role"] == "user"][-1]
            texts.append(
                session.ask(question, Sampling(temperature=0, max_tokens=200), history=False)
                .consume()
                .text
            )
        replies[kv_type] = texts
        session.unload()
    n = len(replies["f16"])
    return {
        kv: {
            "equal": sum(a == b for a, b in zip(replies["f16"], replies[kv], strict=True)),
            "of": n,
        }
        for kv in ("q8_0", "q4_0")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["75M", "1.2B"], default=["75M", "1.2B"])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=Path, help="the 1.2B shape's file (written if missing)")
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(machine, flush=True)
    results: dict = {
        "machine": machine,
        "speed": {},
        "args": vars(args) | {"model": str(args.model)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = benchmark_model(name, Path(tmp), args.model)
            rows = speed(model, args.prompt_tokens, args.decode_tokens, args.rounds)
            results["speed"][name] = rows
            f16 = rows["f16"]
            print(
                f"\n## {name}: {args.prompt_tokens}-token prompt, {args.decode_tokens} tokens decoded"
            )
            print(
                "| KV cache | tokens per GiB | prompt tokens/s | decode tokens/s | vs f16 (prompt, decode) |"
            )
            print("|---|---|---|---|---|")
            for config, row in rows.items():
                print(
                    f"| {config} | {row['tokens_per_gib']:,.0f} | {row['prompt_tok_s']:.1f} | "
                    f"{row['decode_tok_s']:.1f} | {row['prompt_tok_s'] / f16['prompt_tok_s']:.2f}x, "
                    f"{row['decode_tok_s'] / f16['decode_tok_s']:.2f}x |",
                    flush=True,
                )
    same = equality()
    results["greedy_equal_to_f16"] = same
    print("\n## greedy replies equal to f16's (exaone-4.0-demo, trained questions)")
    for kv, row in same.items():
        print(f"- {kv}: {row['equal']} of {row['of']}")
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
