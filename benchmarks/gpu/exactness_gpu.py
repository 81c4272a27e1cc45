"""On a GPU: are the engine's answers the ones a bare loop and one-by-one replies give?

With every layer offloaded the engine samples in llama.cpp's graph and a map batches sequences on
the GPU, paths the CPU tests cannot take. Checks, on a random-weight exaone4 model of
EXAONE-4.0-1.2B's width (102,400-token vocabulary, Q8_0, ``--layers`` blocks):

1. greedy tokens from the engine equal a bare ``llama_decode`` + argmax loop's, for 200 tokens;
2. a seeded sampled reply is the same twice, and another seed gives another reply;
3. ``map(parallel=16)`` greedy answers equal one-by-one answers (the trained demo model too).

    python3 benchmarks/gpu/exactness_gpu.py [--layers 4] [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# llama_cpp before numpy: on the GPU image the other order crashes model loads (RESULTS.md)
import llama_cpp  # noqa: E402  isort: skip

from stream_overhead import PROMPT, BareLoop  # noqa: E402

from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling  # noqa: E402
from exaone_jupyter.engine.llama.local import LocalBackend  # noqa: E402
from exaone_jupyter.mapping import run_map  # noqa: E402
from exaone_jupyter.model.gguf_check import read_gguf  # noqa: E402
from exaone_jupyter.session import Session  # noqa: E402
from exaone_jupyter.testing import write_exaone4_1_2b_shape  # noqa: E402


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"- {name}: {'yes' if ok else 'NO'}{f' ({detail})' if detail else ''}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args(argv)
    gpu = llama_cpp.llama_supports_gpu_offload()
    layers = "all" if gpu else "none"
    results = []
    with tempfile.TemporaryDirectory(prefix="exaone-gpu-") as tmp:
        path = args.model or Path(tmp) / "exaone4-shape.gguf"
        if not path.exists():
            write_exaone4_1_2b_shape(path, n_layer=args.layers, dtype="q8_0")
        backend = LocalBackend(read_gguf(path), LoadOptions(gpu_layers=layers))
        print(f"{path.name}: layers {layers}; sampler: {backend.info.local.sampler}", flush=True)
        ids = backend.tokenize(PROMPT, special=True)
        greedy = Sampling(temperature=0, max_tokens=200)
        backend.stream(Request(greedy, prompt_ids=ids)).consume()
        engine_tokens = list(backend._kv_ids[len(ids) :])
        bare = BareLoop(path, backend.threads.decode, n_gpu_layers=-1 if gpu else 0)
        bare_tokens = bare.run(200)[0][:199]
        bare.close()
        same = next(
            (i for i, (a, b) in enumerate(zip(engine_tokens, bare_tokens, strict=False)) if a != b),
            None,
        )
        results.append(
            check(
                "greedy tokens equal the bare loop's (199 decoded)",
                engine_tokens == bare_tokens,
                "" if same is None else f"first difference at token {same}",
            )
        )

        def text(seed: int) -> str:
            s = Sampling(temperature=0.7, top_k=40, top_p=0.95, max_tokens=40, seed=seed)
            return backend.stream(Request(s, prompt_ids=ids)).consume().text

        results.append(check("a seed gives the same sampled reply", text(7) == text(7)))
        results.append(check("another seed gives another reply", text(7) != text(8)))
        backend.close()

        for spec in ("exaone-demo", str(path)):
            session = Session()
            session.load(spec, gpu_layers=layers)
            questions = [f"Question {i}: tell me about the number {i * 7}." for i in range(32)]
            if spec == "exaone-demo":
                questions = ["What is 2 + 2?", "1 더하기 1은?", "Hello!", "Goodbye."] * 8
            alone = [
                "".join(session.ask(q, Sampling(temperature=0, max_tokens=32), history=False))
                for q in questions
            ]
            batched = list(
                run_map(session, questions, "{}", parallel=16, max_tokens=32, cache=False)
            )
            differ = [i for i, (a, b) in enumerate(zip(alone, batched, strict=True)) if a != b]
            results.append(
                check(
                    f"map(parallel=16) equals one by one on {Path(spec).name} (32 rows)",
                    not differ,
                    f"{len(differ)} rows differ, e.g. {alone[differ[0]]!r} vs {batched[differ[0]]!r}"
                    if differ
                    else "",
                )
            )
            session.unload()
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
