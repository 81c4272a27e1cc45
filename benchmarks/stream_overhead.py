"""What the engine costs per token beyond an independent floor, on EXAONE's real vocabulary size.

The floor is a bare llama.cpp loop, timed on the wall clock: ``llama_decode`` of one token, numpy
``argmax`` on the logits, repeat, at the best thread count found on this machine. It shares no
code with the engine (its own context, raw llama_cpp calls) and runs interleaved with it token by
token: after each piece the engine yields, the bare loop decodes as many tokens, so both halves of
a pair see the same load on a shared machine (pairing whole replies seconds apart left ±100-200 µs
of noise). The engine's cost per token beyond it covers sampling, detokenizing and the generator
hops a consumer sees; llama.cpp's perf counters are not used.

Sections, printed as Markdown and written to ``benchmarks/results/stream_overhead.json``:

1. threads: the bare loop's decode rate at 1..cores threads on a compute-bound tiny model and a
   memory-bound ~75M one, against the engine's default thread count (goal: >= 0.95x the best);
2. cost per token beyond the floor on a 102,400-token vocabulary (random-weight exaone4 GGUF,
   width 64, 2 layers: a token costs ~1 ms, so the engine's own work shows) for greedy, the
   default (t 0.7, top-k 40, top-p 0.95) and top-p alone (t 0.7, top-k 0, top-p 0.95), at 100
   and 2,000 tokens, and how it grows from 100 to 2,000 tokens (goal: < 3x). Which sampler runs
   is decided at real model sizes by ``sampler_choice.py``; this model only magnifies costs;
3. exactness: greedy tokens identical to the bare loop's.

    .venv/bin/python benchmarks/stream_overhead.py            # full run (~7 minutes on 2 cores)
    .venv/bin/python benchmarks/stream_overhead.py --quick    # a smoke run, writes no JSON
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp
import numpy as np

from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling
from exaone_jupyter.engine.llama import threads
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.testing import TinyShape, write_random_gguf

N_CTX = 4096
PROMPT = "[|system|][|endofturn|]\n[|user|]Tell me about Seoul.\n[|assistant|]"
RESULTS = Path(__file__).resolve().parent / "results" / "stream_overhead.json"

MODELS = {
    # compute-bound: 13M parameters, most of them the 102,400-row output layer (f32, 52 MB)
    "vocab102k": {
        "shape": TinyShape(n_ctx=N_CTX),
        "arch": "exaone4",
        "pre": "exaone4",
        "n_vocab": 102_400,
    },
    # memory-bound: ~75M parameters in f16 (150 MB, more than the CPU caches)
    "75M": {
        "shape": TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=N_CTX),
        "dtype": "f16",
    },
}
MODES = {
    "greedy": Sampling(temperature=0),
    "default (t 0.7, top-k 40, top-p 0.95)": Sampling(temperature=0.7, top_k=40, top_p=0.95),
    "top-p alone (t 0.7, top-k 0, top-p 0.95)": Sampling(temperature=0.7, top_k=0, top_p=0.95),
}


class BareLoop:
    """llama_decode + numpy argmax on a context of its own: the floor any engine pays."""

    def __init__(self, path: Path, n_threads: int, n_gpu_layers: int = 0) -> None:
        self.llm = llama_cpp.Llama(
            str(path),
            n_ctx=N_CTX,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.ctx = self.llm.ctx
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(
            llama_cpp.llama_model_get_vocab(self.llm.model)
        )
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.prompt = self.llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        self._views: dict[int, np.ndarray] = {}
        self.tokens: list[int] = []
        self.position = 0

    def set_threads(self, n: int) -> None:
        llama_cpp.llama_set_n_threads(self.ctx, n, n)

    def _decode(self, tokens: list[int], position: int) -> None:
        b = self.batch
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, position + i, 1, 0
            b.logits[i] = i == len(tokens) - 1
        b.n_tokens = len(tokens)
        if llama_cpp.llama_decode(self.ctx, b) != 0:
            raise SystemExit("llama_decode failed in the bare loop")

    def begin(self) -> None:
        """A new reply: the prompt decoded, its greedy token picked (not timed)."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._decode(self.prompt, 0)
        self.tokens, self.position = [self._argmax()], len(self.prompt)

    def step(self) -> float:
        """Decode the last token and pick the next: the wall seconds it took."""
        started = time.perf_counter()
        self._decode([self.tokens[-1]], self.position)
        self.tokens.append(self._argmax())
        self.position += 1
        return time.perf_counter() - started

    def _argmax(self) -> int:
        address = ctypes.cast(llama_cpp.llama_get_logits_ith(self.ctx, -1), ctypes.c_void_p).value
        view = self._views.get(address or 0)
        if view is None:
            buffer = (ctypes.c_float * self.n_vocab).from_address(address or 0)
            view = self._views[address or 0] = np.frombuffer(buffer, np.float32)
        return int(view.argmax())

    def run(self, n: int) -> tuple[list[int], float]:
        """(the n greedy tokens, wall seconds per token over the last n - 1)."""
        self.begin()
        started = time.perf_counter()
        for _ in range(n - 1):
            self.step()
        return self.tokens, (time.perf_counter() - started) / (n - 1)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        self.llm.close()


def engine_run(
    backend: LocalBackend, ids: list[int], sampling_: Sampling, n: int, seed: int
) -> tuple[float, list[int]]:
    """(wall seconds per token after the first, the tokens decoded) of one reply, as a consumer
    that iterates it sees them. A sampled reply that stops early is run again with another seed."""
    for attempt in range(5):
        s = Sampling.from_options(sampling_, max_tokens=n, seed=seed + attempt)
        reply = backend.stream(Request(s, prompt_ids=ids))
        for _piece in reply:
            pass
        stats = reply.stats
        if stats.completion_tokens == n and stats.ttft_s is not None:
            decoded = list(backend._kv_ids[len(ids) :])
            return (stats.total_s - stats.ttft_s) / (n - 1), decoded
    raise SystemExit(f"the engine stopped before {n} tokens five times ({stats.finish_reason})")


def paired_run(
    backend: LocalBackend, bare: BareLoop, ids: list[int], sampling_: Sampling, n: int, seed: int
) -> tuple[float, float, list[int], list[int]]:
    """(engine, floor) wall seconds per token, and their tokens, measured token by token in turn:
    after each piece the engine yields, the bare loop decodes as many tokens as the engine made.
    A shared machine's load changes slowly beside a token (a few ms), so both halves of a pair see
    the same load. The prompt and first token are left out of both. A sampled reply that stops
    early is run again with another seed."""
    for attempt in range(5):
        s = Sampling.from_options(sampling_, max_tokens=n, seed=seed + attempt)
        reply = backend.stream(Request(s, prompt_ids=ids))
        pieces = iter(reply)
        next(pieces)
        bare.begin()
        engine_s = floor_s = 0.0
        made = first = reply.stats.completion_tokens
        for _ in range(first - 1):  # the engine's tokens before its first text: not timed
            bare.step()
        while True:
            started = time.perf_counter()
            ended = next(pieces, None) is None
            engine_s += time.perf_counter() - started
            new, made = reply.stats.completion_tokens - made, reply.stats.completion_tokens
            for _ in range(new):
                floor_s += bare.step()
            if ended:
                break
        if made == n:
            decoded = list(backend._kv_ids[len(ids) :])
            return engine_s / (n - first), floor_s / (n - first), decoded, bare.tokens
    raise SystemExit(f"the engine stopped before {n} tokens five times")


@dataclass
class ThreadRow:
    model: str
    threads: str  # the count
    tok_s: float  # median over rounds


@dataclass
class CostRow:
    mode: str
    tokens: int
    floor_tok_s: float
    engine_tok_s: float
    beyond_us: float  # median over interleaved pairs of (engine - floor) per token
    spread_us: float  # half the interquartile range of those pairs: the noise
    runs: int


def write_model(label: str, directory: Path) -> tuple[Path, str]:
    started = time.perf_counter()
    path = write_random_gguf(
        directory / f"{label}.gguf", quiet_control_tokens=True, **MODELS[label]
    )
    info = read_gguf(path)
    about = (
        f"{label}: {info.architecture}, {info.n_params / 1e6:.1f}M parameters, {info.quantization}, "
        f"{info.file_size / 2**20:.1f} MiB "
        f"(written in {time.perf_counter() - started:.1f} s)"
    )
    print(about, file=sys.stderr, flush=True)
    return path, about


def sweep_threads(path: Path, label: str, n: int, rounds: int) -> list[ThreadRow]:
    cores = len(threads.usable_cpus())
    bare = BareLoop(path, cores)
    rates: dict[str, list[float]] = {str(t): [] for t in range(1, cores + 1)}
    bare.run(8)  # warm-up
    for _ in range(rounds):
        for t in rates:
            bare.set_threads(int(t))
            rates[t].append(1 / bare.run(n)[1])
    bare.close()
    rows = [ThreadRow(label, t, statistics.median(r)) for t, r in rates.items()]
    print(
        "  threads: " + ", ".join(f"{r.threads}: {r.tok_s:,.0f} tok/s" for r in rows),
        file=sys.stderr,
        flush=True,
    )
    return rows


def sampling_costs(
    path: Path, floor_threads: int, lengths: list[int], rounds: dict[int, int]
) -> tuple[list[CostRow], bool]:
    """Cost rows for every mode and length, and whether greedy's tokens equal the bare loop's."""
    # Both at the floor's thread count: this section measures what the engine adds per token;
    # the thread policy has its own section.
    options = LoadOptions(n_ctx=N_CTX, gpu_layers="none", n_threads=floor_threads)
    backend = LocalBackend(read_gguf(path), options)
    bare = BareLoop(path, floor_threads)
    ids = backend.tokenize(PROMPT, special=True)
    if ids != bare.prompt:
        raise SystemExit("the engine and the bare loop tokenize the prompt differently")
    backend.stream(Request(Sampling(temperature=0, max_tokens=8), prompt_ids=ids)).consume()
    bare.run(8)
    rows, identical = [], True
    for n in lengths:
        for mode, setting in MODES.items():
            floor, engine, beyond = [], [], []
            for r in range(rounds[n]):
                engine_s, floor_s, decoded, tokens = paired_run(
                    backend, bare, ids, setting, n, seed=1000 * n + r
                )
                if setting.temperature == 0 and decoded != tokens[: n - 1]:
                    identical = False
                floor.append(floor_s)
                engine.append(engine_s)
                beyond.append((engine_s - floor_s) * 1e6)
            quartiles = statistics.quantiles(beyond, n=4)
            row = CostRow(
                mode,
                n,
                1 / statistics.median(floor),
                1 / statistics.median(engine),
                statistics.median(beyond),
                (quartiles[2] - quartiles[0]) / 2,
                rounds[n],
            )
            rows.append(row)
            print(
                f"  {n:>5} tokens, {mode}: floor {row.floor_tok_s:,.0f} tok/s, engine "
                f"{row.engine_tok_s:,.0f} tok/s, beyond {row.beyond_us:.0f} µs/token",
                file=sys.stderr,
                flush=True,
            )
    backend.close()
    bare.close()
    return rows, identical


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = threads.usable_cpus()
    return {
        "cpu": model,
        "cpus_usable": len(cpus),
        "cpu_count": os.cpu_count(),
        "physical_cores": threads.physical_cores(cpus),
        "cgroup_quota": threads.cgroup_quota(),
        "gpu": "none used (CPU only)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "llama_cpp_python": llama_cpp.__version__,
        "engine_default_threads": asdict(threads.choose_threads()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no JSON written")
    parser.add_argument("--json", type=Path, help=f"where to write the results ({RESULTS})")
    args = parser.parse_args(argv)
    lengths = [100, 2000]
    rounds = {100: 5, 2000: 2} if args.quick else {100: 41, 2000: 9}
    load_before = os.getloadavg()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="exaone-bench-") as tmp:
        paths, abouts = {}, []
        for label in MODELS:
            paths[label], about = write_model(label, Path(tmp))
            abouts.append(about)
        print("threads sweep (bare loop)", file=sys.stderr)
        sweep = sweep_threads(paths["vocab102k"], "vocab102k", 300, 3 if args.quick else 7)
        sweep += sweep_threads(
            paths["75M"], "75M", 24 if args.quick else 48, 2 if args.quick else 5
        )
        fixed = [r for r in sweep if r.model == "vocab102k"]
        best = int(max(fixed, key=lambda r: r.tok_s).threads)
        print(f"sampling cost (floor at {best} threads)", file=sys.stderr)
        costs, identical = sampling_costs(paths["vocab102k"], best, lengths, rounds)

    default = threads.choose_threads()
    lines = [
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"machine: {machine()['cpu']}, {len(threads.usable_cpus())} usable CPUs, "
        f"llama-cpp-python {llama_cpp.__version__}, numpy {np.__version__}, load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"{time.perf_counter() - started:.0f} s",
        *[f"model {a}" for a in abouts],
        "",
        "Threads: bare-loop decode rate at each count (median of rounds, interleaved); the "
        f"engine's count is {default.decode} ({default.why})",
        "",
        "| model | threads | tok/s | vs best |",
        "|---|---:|---:|---:|",
    ]
    verdicts = []
    for label in MODELS:
        rows = [r for r in sweep if r.model == label]
        top = max(r.tok_s for r in rows)
        for r in rows:
            mark = " (engine)" if int(r.threads) == default.decode else ""
            lines.append(f"| {label} | {r.threads}{mark} | {r.tok_s:,.0f} | {r.tok_s / top:.2f} |")
        ratio = next(r.tok_s for r in rows if int(r.threads) == default.decode) / top
        verdicts.append(
            f"- threads, {label}: the engine's count reaches >= 0.95x the best count: "
            f"{'yes' if ratio >= 0.95 else 'NO'} ({ratio:.2f}x)"
        )
    lines += [
        "",
        "Cost per token beyond the bare loop (102,400-token vocabulary; floor at the best fixed "
        f"count, {best} threads; engine at its default; medians over replies of pairs interleaved "
        "token by token)",
        "",
        "| sampling | tokens | floor tok/s | engine tok/s | engine / floor | beyond floor µs/token "
        "(± noise) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        lines.append(
            f"| {c.mode} | {c.tokens:,} | {c.floor_tok_s:,.0f} | {c.engine_tok_s:,.0f} | "
            f"{c.engine_tok_s / c.floor_tok_s:.2f} | {c.beyond_us:.0f} (± {c.spread_us:.0f}) |"
        )
    for mode in MODES:
        # the paired medians of the table, not a difference of two rates:
        # near zero (greedy) that difference is noise, and its ratio swung to 6x in one run
        per_token = {c.tokens: c.beyond_us for c in costs if c.mode == mode}
        growth = max(per_token[2000], 1.0) / max(per_token[100], 1.0)
        verdicts.append(
            f"- {mode}: cost per token at 2,000 tokens < 3x the cost at 100: "
            f"{'yes' if growth < 3 else 'NO'} ({growth:.2f}x)"
        )
    verdicts.append(f"- greedy tokens identical to the bare loop's: {'yes' if identical else 'NO'}")
    lines += ["", *verdicts]
    print("\n".join(lines))

    if not args.quick or args.json:
        target = args.json or RESULTS
        target.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine(),
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "models": abouts,
            "threads": [asdict(r) for r in sweep],
            "floor_threads": best,
            "costs": [asdict(c) for c in costs],
            "greedy_identical": identical,
            "verdicts": verdicts,
        }
        target.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", "utf-8")
        print(f"\nwrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
