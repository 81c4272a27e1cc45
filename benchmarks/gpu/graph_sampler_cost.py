"""What each of llama.cpp's samplers costs inside its graph on a GPU, a token (issue 17, item 5).

speed_gpu.py found default sampling in the graph ~90 µs a token dearer than greedy. This splits
that figure: one context on EXAONE-4.0-1.2B's shape (102,400-token vocabulary), one bare
``llama_decode`` loop, and a chain attached with ``llama_set_sampler`` per case, interleaved round
by round against the floor of speed_gpu.py (numpy argmax on the copied logits, no sampler). The
suspect is top-k: ggml's CUDA top-k is CUB's ``DeviceTopK`` only when built with CCCL >= 3.2;
with older headers (CUDA 13.0's) it sorts the whole row. Beside llama.cpp's chains run the
engine's (ending in ``engine/llama/graph_samplers.token_only``, which leaves only the token to
copy back), each checked to draw llama.cpp's tokens for the same seed. It runs on a CPU build
too (``--model`` any GGUF).

    python3 benchmarks/gpu/graph_sampler_cost.py --model /tmp/m.gguf [--tokens 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# llama_cpp before numpy: on the GPU image the other order crashes model loads (RESULTS.md)
import llama_cpp  # isort: skip

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from stream_overhead import BareLoop  # noqa: E402

from exaone_jupyter.engine.llama import graph_samplers, threads  # noqa: E402

Chain = Callable[[int], list]  # the samplers of one case for a vocabulary size, freshly made
GREEDY, GREEDY_ENGINE = "greedy", "greedy, token only (the engine's)"
TOP_K = "top-k 40 + dist"
DEFAULT_LLAMA = "default (top-k 40, top-p 0.95, temp 0.7, dist)"
DEFAULT_ENGINE = "default, token only (the engine's)"
SAME_TOKENS = [  # (llama.cpp's chain, ours): the same seed must draw the same tokens
    (GREEDY, GREEDY_ENGINE),
    (DEFAULT_LLAMA, DEFAULT_ENGINE),
]


def default_tail() -> list:
    return [
        llama_cpp.llama_sampler_init_top_p(0.95, 1),
        llama_cpp.llama_sampler_init_temp(0.7),
        llama_cpp.llama_sampler_init_dist(1),
    ]


CASES: dict[str, Chain] = {
    GREEDY: lambda n: [llama_cpp.llama_sampler_init_greedy()],
    GREEDY_ENGINE: lambda n: [llama_cpp.llama_sampler_init_greedy(), graph_samplers.token_only()],
    TOP_K: lambda n: [llama_cpp.llama_sampler_init_top_k(40), llama_cpp.llama_sampler_init_dist(1)],
    "temp 0.7 + dist (softmax and cumsum over the vocabulary)": lambda n: [
        llama_cpp.llama_sampler_init_temp(0.7),
        llama_cpp.llama_sampler_init_dist(1),
    ],
    DEFAULT_LLAMA: lambda n: [llama_cpp.llama_sampler_init_top_k(40), *default_tail()],
    DEFAULT_ENGINE: lambda n: [
        llama_cpp.llama_sampler_init_top_k(40),
        *default_tail(),
        graph_samplers.token_only(),
    ],
    "top-p 0.95 alone (+ temp, dist)": lambda n: default_tail(),
}


class Loop(BareLoop):
    """The floor's loop; ``run(n, chain)`` samples in the graph with the chain, or (chain None)
    by numpy argmax on the logits as the floor does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, threads.choose_threads().decode, n_gpu_layers=-1)

    def _argmax(self) -> int:
        address = ctypes.cast(llama_cpp.llama_get_logits_ith(self.ctx, -1), ctypes.c_void_p)
        buffer = (ctypes.c_float * self.n_vocab).from_address(address.value or 0)
        return int(np.frombuffer(buffer, np.float32).argmax())

    def run(self, n: int, make_chain: Chain | None) -> float:
        """Wall seconds a token over the last n - 1."""
        chain = None
        if make_chain is not None:
            chain = llama_cpp.llama_sampler_chain_init(
                llama_cpp.llama_sampler_chain_default_params()
            )
            for sampler in make_chain(self.n_vocab):
                llama_cpp.llama_sampler_chain_add(chain, sampler)
            if not llama_cpp.llama_set_sampler(self.ctx, 0, chain):
                raise SystemExit("llama.cpp would not run this chain in its graph")
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._decode(self.prompt, 0)

        def pick() -> int:
            if chain is None:
                return self._argmax()
            token = llama_cpp.llama_get_sampled_token_ith(self.ctx, -1)
            llama_cpp.llama_sampler_accept(chain, token)
            return token

        token, position = pick(), len(self.prompt)
        self.tokens = [token]  # the last run's, for comparing chains
        started = time.perf_counter()
        for _ in range(n - 1):
            self._decode([token], position)
            token = pick()
            self.tokens.append(token)
            position += 1
        seconds = (time.perf_counter() - started) / (n - 1)
        llama_cpp.llama_set_sampler(self.ctx, 0, None)
        if chain is not None:
            llama_cpp.llama_sampler_free(chain)
        return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    loop = Loop(args.model)
    for _name, make_chain in (("floor", None), *CASES.items()):
        loop.run(16, make_chain)  # warm-up: graphs reserved
    floor: list[float] = []
    cases: dict[str, list[float]] = {name: [] for name in CASES}
    drawn: dict[str, list[list[int]]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        floor.append(loop.run(args.tokens, None))
        for name, make_chain in CASES.items():
            cases[name].append(loop.run(args.tokens, make_chain))
            drawn[name].append(loop.tokens)
    floor_s = statistics.median(floor)
    print(f"floor (numpy argmax on the copied logits): {1 / floor_s:,.0f} tok/s")
    print("\n| in llama.cpp's graph | tok/s | vs the floor | beyond the floor, µs/token |")
    print("|---|---:|---:|---:|")
    for name, runs in cases.items():
        s = statistics.median(runs)
        print(f"| {name} | {1 / s:,.0f} | {floor_s / s:.3f}x | {(s - floor_s) * 1e6:.0f} |")
    for llamas, ours in SAME_TOKENS:
        same = sum(a == b for a, b in zip(drawn[llamas], drawn[ours], strict=True))
        print(f"- {ours}: the tokens of {llamas} (seed 1) in {same} of {args.rounds} runs")
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
