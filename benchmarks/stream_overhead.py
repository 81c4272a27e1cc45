"""What streaming costs per token beyond llama.cpp's own decode, against create_chat_completion.

For each model and reply length this prints, as a Markdown table (medians of several runs):

* engine tok/s: this package's LocalBackend, (completion tokens - 1) / wall time from the first
  sampled token to the end of the reply, measured while a consumer iterates the Reply;
* llama.cpp decode tok/s: llama.cpp's perf counters for the same runs (time inside llama_decode);
* overhead µs/token: engine wall time per token minus llama.cpp's decode time per token, i.e.
  sampling, detokenizing, the generator hops and the consumer loop;
* floor µs/token: the same figure for the barest Python loop over llama.cpp (llama_decode and a
  greedy llama_sampler_sample through ctypes, nothing else): what any Python engine pays;
* create_chat_completion(stream=True) tok/s on the same model, counted in tokens (llm.n_tokens),
  not chunks, from its first content chunk to its end.

The models are random-weight GGUFs written into a temporary directory: a ~100K-parameter one
(llama.cpp's decode is nearly free, so the overhead shows) and a ~75M-parameter f16 one with a
realistic cost per token. Control tokens are quiet, so greedy decoding never stops early and every
run produces exactly the asked number of tokens. By default the models write valid text, as a
trained model does: greedy decoding repeats "한국 Seoul! " one byte token at a time (3-byte Hangul
and ASCII; ``favour_text``, same size and cost per token as plain random weights).
``--output bytes`` uses plain random weights instead, whose greedy output is mostly invalid
UTF-8: create_chat_completion then holds its whole reply back and slows down sharply.

    .venv/bin/python benchmarks/stream_overhead.py            # full: 50, 400, 2000 tokens
    .venv/bin/python benchmarks/stream_overhead.py --quick    # a short run for a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp

from exaone_jupyter.engine.backend import (
    LoadOptions,
    Request,
    Sampling,
)
from exaone_jupyter.engine.local import LocalBackend
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.testing import TinyShape, write_random_gguf

N_CTX = 4096
USER = "Tell me about Seoul."
TEXT = "한국 Seoul!"  # every byte differs, as favour_text requires
PROMPT = f"[|system|][|endofturn|]\n[|user|]{USER}\n[|assistant|]"  # what the GGUF template renders

MODELS = {
    "tiny": (TinyShape(n_ctx=N_CTX), "f32"),
    "75M": (
        TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=N_CTX),
        "f16",
    ),
}


@dataclass
class Row:
    model: str
    tokens: int
    engine: float  # tok/s
    decode: float  # llama.cpp's decode tok/s during the engine runs
    ratio: float  # median over runs of engine / decode (each run against its own decode rate)
    overhead_us: float
    floor_us: float  # the same for a bare ctypes loop
    ccc: float | None  # create_chat_completion tok/s
    ccc_note: str = ""


def engine_once(backend: LocalBackend, ids: list[int], n: int) -> tuple[float, float, float]:
    """(engine tok/s, llama.cpp decode tok/s, µs per token outside llama_decode) of one reply."""
    reply = backend.stream(Request(Sampling(temperature=0, max_tokens=n), prompt_ids=ids))
    for _piece in reply:  # a consumer, as the renderer is
        pass
    s = reply.stats
    if s.completion_tokens != n or s.finish_reason != "length":
        raise SystemExit(
            f"engine produced {s.completion_tokens} tokens ({s.finish_reason}), not {n}"
        )
    wall = s.total_s - s.ttft_s  # the n - 1 decode steps after the first sampled token
    return (n - 1) / wall, s.decode_tok_s, (wall / (n - 1) - 1 / s.decode_tok_s) * 1e6


def ccc_once(llm: llama_cpp.Llama, n_prompt: int, n: int, budget_s: float):
    """(tok/s, note, capped) of create_chat_completion(stream=True), stopped after ``budget_s``."""
    chunks = llm.create_chat_completion(
        [{"role": "user", "content": USER}], max_tokens=n, temperature=0, stream=True
    )
    started = time.perf_counter()
    first_at, first_k, capped, note = None, 0, False, ""
    for chunk in chunks:
        now = time.perf_counter()
        if first_at is None and chunk["choices"][0]["delta"].get("content"):
            # the chunk of token k is out when tokens 1..k-1 have been evaluated
            first_at, first_k = now, llm.n_tokens - n_prompt + 1
        if now - started > budget_s:
            chunks.close()
            capped = True
            break
    end = time.perf_counter()
    done = llm.n_tokens - n_prompt + (0 if capped else 1)
    if first_at is None:
        return None, "no text", capped
    if done - first_k < done // 2:  # the text was held back: count from the call instead
        first_at, first_k, note = started, 0, "text held back"
    if capped:
        note = f"stopped after {done} tokens in {budget_s:.0f} s"
    elif done != n:
        note = f"{done} tokens"
    return (done - first_k) / (end - first_at), note, capped


def floor_once(llm: llama_cpp.Llama, n_prompt: int, n: int) -> float:
    """µs per token outside llama_decode for the barest loop: decode, greedy sample, repeat.

    Runs on ``llm``'s context from its cached prompt, and leaves just the prompt cached.
    """
    ctx = llm.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    last = int(llm.input_ids[n_prompt - 1])
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    batch.n_tokens, batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 1, 0, 1
    try:
        llama_cpp.llama_memory_seq_rm(memory, 0, n_prompt - 1, -1)
        batch.token[0], batch.pos[0] = last, n_prompt - 1
        llama_cpp.llama_decode(ctx, batch)
        llama_cpp.llama_perf_context_reset(ctx)
        token, position = llama_cpp.llama_sampler_sample(chain, ctx, -1), n_prompt
        started = time.perf_counter()
        for _ in range(n - 1):
            batch.token[0], batch.pos[0] = token, position
            llama_cpp.llama_decode(ctx, batch)
            token = llama_cpp.llama_sampler_sample(chain, ctx, -1)
            position += 1
        wall = time.perf_counter() - started
        perf = llama_cpp.llama_perf_context(ctx)
        return (wall / (n - 1) - perf.t_eval_ms / 1000 / perf.n_eval) * 1e6
    finally:
        llama_cpp.llama_memory_seq_rm(memory, 0, n_prompt - 1, -1)
        llm.n_tokens = n_prompt - 1  # what the cache now holds, for llama-cpp-python's bookkeeping
        llama_cpp.llama_sampler_free(chain)
        llama_cpp.llama_batch_free(batch)


def run_model(
    label: str,
    directory: Path,
    lengths: list[int],
    repeats: int,
    budget_s: float,
    threads: int | None,
    output: str,
) -> tuple[list[Row], str]:
    shape, dtype = MODELS[label]
    started = time.perf_counter()
    path = write_random_gguf(
        directory / f"{label}.gguf",
        shape=shape,
        dtype=dtype,
        quiet_control_tokens=True,
        favour_text=TEXT if output == "text" else None,
    )
    info = read_gguf(path)
    about = (
        f"{label}: {info.n_params / 1e6:.2f}M parameters, {info.quantization}, "
        f"{info.file_size / 2**20:.1f} MiB (written in {time.perf_counter() - started:.1f} s)"
    )
    print(about, file=sys.stderr, flush=True)

    # Both engines stay loaded and take turns, so both see the same load on a shared machine.
    backend = LocalBackend(info, LoadOptions(n_ctx=N_CTX, gpu_layers="none", n_threads=threads))
    ids = backend.tokenize(PROMPT, special=True)
    backend.stream(Request(Sampling(temperature=0, max_tokens=8), prompt_ids=ids)).consume()
    thread_args = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
    llm = llama_cpp.Llama(str(path), n_ctx=N_CTX, n_gpu_layers=0, verbose=False, **thread_args)
    list(
        llm.create_chat_completion(
            [{"role": "user", "content": USER}], max_tokens=1, temperature=0, stream=True
        )
    )
    n_prompt = llm.n_tokens  # the prompt, evaluated; a 1-token reply adds nothing
    if [int(t) for t in llm.input_ids[:n_prompt]] != ids:
        print("note: create_chat_completion's prompt differs from ours", file=sys.stderr)

    rows: list[Row] = []
    for n in lengths:
        runs: dict[str, list[float]] = {
            "engine": [],
            "decode": [],
            "ratio": [],
            "overhead": [],
            "floor": [],
            "ccc": [],
        }
        note, capped, spent, run = "", False, 0.0, 0
        # Short runs are repeated more (up to 25 or about a second): one preemption of a few ms
        # would otherwise add tens of µs to every token of a 50-token reply.
        while run < repeats or (run < 25 and spent < 1.0):
            engine, decode, overhead = engine_once(backend, ids, n)
            spent += (n - 1) / engine
            runs["engine"].append(engine)
            runs["decode"].append(decode)
            runs["ratio"].append(engine / decode)
            runs["overhead"].append(overhead)
            if run < repeats and not capped:  # one run stopped by the budget shows the trend
                rate, note, capped = ccc_once(llm, n_prompt, n, budget_s)
                if rate is not None:
                    runs["ccc"].append(rate)
            if run == 0 or spent < 20:  # the floor is steady: once is enough for long runs
                runs["floor"].append(floor_once(llm, n_prompt, n))
            run += 1
        m = {k: statistics.median(v) if v else None for k, v in runs.items()}
        rows.append(
            Row(
                label,
                n,
                m["engine"],
                m["decode"],
                m["ratio"],
                m["overhead"],
                m["floor"],
                m["ccc"],
                note,
            )
        )
        ccc = "-" if m["ccc"] is None else f"{m['ccc']:,.1f}"
        print(
            f"  {n:>5} tokens: engine {m['engine']:,.0f} tok/s, decode {m['decode']:,.0f} tok/s, "
            f"overhead {m['overhead']:.1f} µs/token (floor {m['floor']:.1f}), "
            f"create_chat_completion {ccc} tok/s {note}",
            file=sys.stderr,
            flush=True,
        )
    backend.close()
    llm.close()
    return rows, about


def table(rows: list[Row]) -> str:
    lines = [
        "| model | tokens | engine tok/s | llama.cpp decode tok/s | engine / decode | "
        "overhead µs/token | floor µs/token | create_chat_completion tok/s | engine / ccc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ccc = "n/a" if r.ccc is None else f"{r.ccc:,.1f}"
        ccc += f" ({r.ccc_note})" if r.ccc_note else ""
        speedup = "n/a" if not r.ccc else f"{r.engine / r.ccc:,.1f}×"
        lines.append(
            f"| {r.model} | {r.tokens:,} | {r.engine:,.0f} | {r.decode:,.0f} | "
            f"{r.ratio:.3f} | {r.overhead_us:.1f} | {r.floor_us:.1f} | {ccc} | "
            f"{speedup} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    out = []
    tiny = [r for r in rows if r.model == "tiny"]
    if tiny:
        worst = max(r.overhead_us for r in tiny)
        spread = worst - min(r.overhead_us for r in tiny)
        out.append(
            f"- tiny: overhead ≤ 50 µs/token: {'yes' if worst <= 50 else 'NO'} "
            f"(worst {worst:.1f}); flat from {tiny[0].tokens} to {tiny[-1].tokens} tokens: "
            f"{'yes' if spread <= 10 else 'NO'} (spread {spread:.1f} µs)"
        )
    big = [r for r in rows if r.model != "tiny"]
    if big:
        low = min(r.ratio for r in big)
        out.append(
            f"- {big[0].model}: engine ≥ 0.98× llama.cpp decode: "
            f"{'yes' if low >= 0.98 else 'NO'} (lowest {low:.3f})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50 and 400 tokens only, short create_chat_completion budget",
    )
    parser.add_argument("--lengths", type=int, nargs="+", help="reply lengths in tokens")
    parser.add_argument(
        "--repeats",
        type=int,
        help="runs per measurement, at least (default 3; the median is shown)",
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "75M"])
    parser.add_argument(
        "--ccc-budget",
        type=float,
        help="seconds after which a create_chat_completion run is stopped",
    )
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: its own)")
    parser.add_argument(
        "--output",
        choices=["text", "bytes"],
        default="text",
        help="what the models write: valid text (default) or random bytes",
    )
    args = parser.parse_args(argv)
    lengths = args.lengths or ([50, 400] if args.quick else [50, 400, 2000])
    repeats = args.repeats or 3
    budget = args.ccc_budget or (15.0 if args.quick else 120.0)

    rows, abouts = [], []
    with tempfile.TemporaryDirectory(prefix="exaone-bench-") as tmp:
        for label in args.models:
            got, about = run_model(
                label, Path(tmp), lengths, repeats, budget, args.threads, args.output
            )
            rows += got
            abouts.append(about)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"llama-cpp-python {llama_cpp.__version__}, threads {args.threads or 'default'}, "
        f"median of {repeats}+ runs (create_chat_completion: stopped after {budget:.0f} s), "
        f"output {args.output}"
    )
    for about in abouts:
        print(f"model {about}")
    print()
    print(table(rows))
    print()
    print("\n".join(verdict(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
