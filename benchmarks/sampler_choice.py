"""Which sampler the engine runs on the CPU: candidates side by side, at real model sizes.

For each model, one decode loop; after each ``llama_decode`` every candidate picks a token from
the same logits, each timed on the wall clock (their order rotates token by token, so none always
finds the logits in the cache first). The floor is what any engine pays: the decode plus a numpy
``argmax``. A candidate's ratio is floor / (decode + its pick): 1.00x costs nothing beyond the
floor. The token fed back is llama.cpp's chain's, so every mode runs on its own real text.

Candidates:
- ``llama.cpp chain``: ``llama_sampler_sample`` on llama.cpp's own chain (penalties, top-k,
  top-p, temperature, dist; greedy at temperature 0; a schema's grammar first).
- ``numpy``: plain numpy on a view of the logits: argmax; top-k by ``argpartition``; top-p alone
  by one sort of the probabilities (``exaone_jupyter.engine.llama.sampling.TopP``).
- ``mix``: the chain, except top-p alone, which numpy does (the chain sorts the vocabulary there):
  the engine's choice.
- ``compiled``, a numba sampler, was a candidate until this benchmark removed it: its figures are
  in ``results/sampler_choice_with_compiled.json``, from the run at commit 3f93c85.

Modes: greedy; default (t 0.7, top-k 40, top-p 0.95); top-p alone (t 0.7, top-k 0, top-p 0.95); a
grammar (a JSON schema's, with the default sampling; only llama.cpp can run a grammar).

Models (random weights, EXAONE 4.0's 102,400-token vocabulary, Q8_0): the EXAONE-4.0-1.2B shape
(30 layers, width 2048), a ~310M shape (8 layers, width 1024) and, for reference, a 64-wide one.

    .venv/bin/python benchmarks/sampler_choice.py --json benchmarks/results/sampler_choice.json
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402  isort: skip
import numpy as np  # noqa: E402

from exaone_jupyter.engine.backend import Sampling  # noqa: E402
from exaone_jupyter.engine.llama import sampling, threads  # noqa: E402
from exaone_jupyter.engine.llama.grammar import grammar_of  # noqa: E402
from exaone_jupyter.mapping.structured import Schema  # noqa: E402
from exaone_jupyter.testing import EXAONE_4_1_2B, TinyShape, write_random_gguf  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sampler_choice.json"
PROMPT = "[|system|][|endofturn|]\n[|user|]Tell me about Seoul.\n[|assistant|]"
DEFAULT = Sampling(temperature=0.7, top_k=40, top_p=0.95)
MODES: dict[str, tuple[Sampling, bool]] = {  # name: (sampling, with a grammar)
    "greedy": (Sampling(temperature=0), False),
    "default (t 0.7, top-k 40, top-p 0.95)": (DEFAULT, False),
    "top-p alone (t 0.7, top-k 0, top-p 0.95)": (replace(DEFAULT, top_k=0), False),
    "grammar (a JSON schema, default sampling)": (DEFAULT, True),
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
MODELS = {
    "EXAONE-4.0-1.2B shape": replace(EXAONE_4_1_2B, n_ctx=1024),
    "~310M shape": TinyShape(n_embd=1024, n_head=16, n_head_kv=8, n_ff=4096, n_layer=8, n_ctx=1024),
    "64-wide (reference)": TinyShape(n_ctx=1024),
}
WITHIN = 0.02  # a design is kept if it is within 2% of the best candidate in every mode


class Logits:
    """The logits of the last decode's last output, as a numpy view of llama.cpp's buffer."""

    def __init__(self, ctx, n_vocab: int) -> None:
        self.ctx, self.n_vocab = ctx, n_vocab

    def __call__(self) -> np.ndarray:
        address = ctypes.cast(llama_cpp.llama_get_logits_ith(self.ctx, -1), ctypes.c_void_p).value
        return np.frombuffer((ctypes.c_float * self.n_vocab).from_address(address or 0), np.float32)


def numpy_top_k(s: Sampling, seed: int) -> Callable[[np.ndarray], int]:
    """Plain numpy for a top-k chain: argpartition, then top-p, temperature and dist on the k."""
    rng = np.random.default_rng(seed)

    def pick(x: np.ndarray) -> int:
        n = len(x)
        ids = np.argpartition(x, n - s.top_k)[n - s.top_k :]
        ids = ids[np.lexsort((ids, -x[ids]))]
        xs = x[ids].astype(np.float64)
        probs = np.exp(xs - xs[0])
        keep = int(np.searchsorted(np.cumsum(probs / probs.sum()), s.top_p)) + 1
        w = np.cumsum(np.exp((xs[:keep] - xs[0]) / s.temperature))
        return int(ids[min(int(np.searchsorted(w, rng.random() * w[-1], "right")), keep - 1)])

    return pick


class Candidates:
    """Each candidate's pick for one mode on one context: name -> pick(logits) -> token."""

    def __init__(self, ctx, vocab, n_vocab: int, s: Sampling, grammar: str | None, seed: int):
        self.chains: list = []
        chain = self._chain(vocab, s, grammar, seed)
        picks: dict[str, Callable[[np.ndarray], int]] = {
            "llama.cpp chain": lambda _x: llama_cpp.llama_sampler_sample(chain, ctx, -1)
        }
        if grammar is None:
            if s.temperature == 0:
                numpy_pick: Callable[[np.ndarray], int] = lambda x: int(x.argmax())  # noqa: E731
            elif s.top_k:
                numpy_pick = numpy_top_k(s, seed)
            else:
                numpy_pick = sampling.TopP(n_vocab, s, seed=seed).pick
            picks["numpy"] = numpy_pick
        self.picks = picks

    def _chain(self, vocab, s: Sampling, grammar: str | None, seed: int):
        s = replace(s, seed=seed)
        chain = sampling.llama_chain(s, (), vocab, grammar=grammar)
        self.chains.append(chain)
        return chain

    def free(self) -> None:
        for chain in self.chains:
            llama_cpp.llama_sampler_free(chain)


def run_model(label: str, path: Path, n_threads: int, tokens: int) -> dict:
    llm = llama_cpp.Llama(
        str(path), n_ctx=1024, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
    )
    ctx, vocab = llm.ctx, llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    logits = Logits(ctx, n_vocab)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    grammar = grammar_of(Schema.of(SCHEMA).response_format())

    def decode(ids: list[int], position: int) -> None:
        for i, token in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = (
                token,
                position + i,
                1,
                0,
            )
            batch.logits[i] = i == len(ids) - 1
        batch.n_tokens = len(ids)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    decode(prompt, 0)
    for i in range(8):  # warm-up: the weights paged in, the graph reserved
        decode([int(logits().argmax())], len(prompt) + i)
    modes = {}
    for mode, (s, grammared) in MODES.items():
        candidates = Candidates(ctx, vocab, n_vocab, s, grammar if grammared else None, seed=7)
        names = list(candidates.picks)
        decode_s: list[float] = []
        argmax_s: list[float] = []
        pick_s: dict[str, list[float]] = {name: [] for name in names}
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        decode(prompt, 0)
        position = len(prompt)
        for step in range(tokens):
            order = names[step % len(names) :] + names[: step % len(names)]
            fed = None
            for name in order:
                started = time.perf_counter()
                token = candidates.picks[name](logits())
                pick_s[name].append(time.perf_counter() - started)
                if name == "llama.cpp chain":
                    fed = token
            started = time.perf_counter()
            int(logits().argmax())
            argmax_s.append(time.perf_counter() - started)
            if fed is None or llama_cpp.llama_vocab_is_eog(vocab, fed):
                fed = int(logits().argmax())  # keep going past an end of turn
            started = time.perf_counter()
            decode([fed], position)
            decode_s.append(time.perf_counter() - started)
            position += 1
        candidates.free()
        floor = statistics.median(decode_s) + statistics.median(argmax_s)
        row = {"floor_ms": floor * 1e3, "argmax_us": statistics.median(argmax_s) * 1e6}
        for name in names:
            pick = statistics.median(pick_s[name])
            row[name] = {
                "pick_us": pick * 1e6,
                "ratio": floor / (statistics.median(decode_s) + pick),
            }
        if "numpy" in names:  # the mix: the chain, but numpy for top-p alone
            row["mix"] = row["numpy"] if mode.startswith("top-p alone") else row["llama.cpp chain"]
        else:
            row["mix"] = row["llama.cpp chain"]
        modes[mode] = row
        print(f"  {label} / {mode}: " + describe(row), file=sys.stderr, flush=True)
    llama_cpp.llama_batch_free(batch)
    llm.close()
    return modes


def describe(row: dict) -> str:
    parts = [f"floor {row['floor_ms']:.2f} ms"]
    for name, value in row.items():
        if isinstance(value, dict):
            parts.append(f"{name} {value['pick_us']:.0f} µs {value['ratio']:.3f}x")
    return ", ".join(parts)


def verdicts(results: dict) -> dict[str, str]:
    """Per design: within 2% of the best candidate in every mode at the 1.2B shape?"""
    at_size = results["EXAONE-4.0-1.2B shape"]
    designs = sorted({n for row in at_size.values() for n, v in row.items() if isinstance(v, dict)})
    out = {}
    for design in designs:
        worst = None
        for mode, row in at_size.items():
            best = max(v["ratio"] for v in row.values() if isinstance(v, dict))
            mine = row.get(design, row["llama.cpp chain"] if mode.startswith("grammar") else None)
            if mine is None:
                continue
            gap = best - mine["ratio"]
            worst = gap if worst is None else max(worst, gap)
        out[design] = (
            f"{'YES' if worst is not None and worst <= WITHIN else 'NO'} (worst gap {worst:.3f})"
        )
    return out


def table(results: dict) -> str:
    lines = []
    for label, modes in results.items():
        lines += [
            f"\n### {label}\n",
            "| mode | floor ms/token | candidate: pick µs, ratio |",
            "|---|---|---|",
        ]
        for mode, row in modes.items():
            cells = "; ".join(
                f"{name} {v['pick_us']:.0f} µs, {v['ratio']:.3f}x"
                for name, v in row.items()
                if isinstance(v, dict) and name != "mix"
            )
            lines.append(f"| {mode} | {row['floor_ms']:.2f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens per mode and model")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="which of the models")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    n_threads = threads.choose_threads().decode
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for label in args.models:
            started = time.perf_counter()
            path = write_random_gguf(
                Path(folder) / "model.gguf",
                shape=MODELS[label],
                arch="exaone4",
                pre="exaone4",
                n_vocab=102_400,
                dtype="q8_0",
                quiet_control_tokens=True,
            )
            print(f"{label}: written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            results[label] = run_model(label, path, n_threads, args.tokens)
            path.unlink()
    print(table(results))
    chosen = verdicts(results) if "EXAONE-4.0-1.2B shape" in results else {}
    print("\nWithin 2% of the best in every mode at the 1.2B shape:")
    for design, verdict in chosen.items():
        print(f"- {design}: {verdict}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.date.today().isoformat(),
                    "machine": {
                        "cpu": platform.processor() or platform.machine(),
                        "cpus_usable": len(threads.usable_cpus()),
                        "threads": n_threads,
                        "numpy": np.__version__,
                        "llama_cpp_python": llama_cpp.__version__,
                    },
                    "tokens": args.tokens,
                    "results": results,
                    "verdicts": chosen,
                },
                indent=1,
                ensure_ascii=False,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
