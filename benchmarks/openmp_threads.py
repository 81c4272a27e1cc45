"""What llama.cpp's OpenMP threads cost around the engine's thread policy (engine/threads.py).

Each case runs in a process of its own (OpenMP reads ``OMP_WAIT_POLICY`` once, when it loads), on
a ~75M-parameter f16 random-weight model, with raw llama_cpp calls:

1. a thread-count change: the time of a 28-token prompt right after decoding with ``n_threads``
   decode threads and ``n_threads_batch`` prompt threads (1/2, the old default on 2 cores, against
   1/1 and 2/2);
2. waiting threads that spin (OpenMP's default) or sleep (``PASSIVE``, the engine's): decode tok/s
   of one process alone and of two processes decoding at the same time.

    .venv/bin/python benchmarks/openmp_threads.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(model: str, decode_threads: int, batch_threads: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(
        model, n_ctx=512, n_threads=decode_threads, n_threads_batch=batch_threads, verbose=False
    )
    ctx, memory = llm.ctx, llama_cpp.llama_get_memory(llm.ctx)
    batch = llama_cpp.llama_batch_init(64, 0, 1)

    def decode(tokens: list[int], position: int) -> None:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0

    rates, prompts = [], []
    for _ in range(3):
        llama_cpp.llama_memory_clear(memory, True)
        decode(list(range(100, 128)), 0)
        started = time.perf_counter()
        for i in range(60):
            decode([200 + i], 28 + i)
        rates.append(60 / (time.perf_counter() - started))
        started = time.perf_counter()  # a new prompt right after decoding
        decode(list(range(130, 158)), 88)
        prompts.append((time.perf_counter() - started) * 1e3)
    return {"tok_s": statistics.median(rates), "prompt_ms": statistics.median(prompts)}


def run(model: Path, threads: tuple[int, int], policy: str | None, copies: int = 1) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, __file__, "--worker", str(model), *map(str, threads)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE) for _ in range(copies)]
    return [json.loads(p.communicate()[0]) for p in procs]


def main() -> None:
    from exaone_jupyter.testing import TinyShape, write_random_gguf

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_gguf(
            Path(tmp) / "75m.gguf",
            shape=TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=4096),
            dtype="f16",
        )
        print("\n| decode / prompt threads | OMP_WAIT_POLICY | 28-token prompt after decoding |")
        print("|---|---|---:|")
        for threads in ((1, 2), (1, 1), (2, 2)):
            for policy in (None, "PASSIVE"):
                ms = run(model, threads, policy)[0]["prompt_ms"]
                print(f"| {threads[0]} / {threads[1]} | {policy or 'unset'} | {ms:.1f} ms |")
        print("\n| OMP_WAIT_POLICY | threads | alone tok/s | two at once, tok/s each |")
        print("|---|---:|---:|---:|")
        for policy in (None, "PASSIVE"):
            for n in (2, 1):
                alone = run(model, (n, n), policy)[0]["tok_s"]
                pair = [r["tok_s"] for r in run(model, (n, n), policy, copies=2)]
                each = " / ".join(f"{r:.0f}" for r in pair)
                print(f"| {policy or 'unset (spin, then sleep)'} | {n} | {alone:.0f} | {each} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
