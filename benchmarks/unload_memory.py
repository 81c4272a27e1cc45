"""What an unload leaves resident, with and without handing the heap's free pages back.

For each model, one process loads it, asks one question and unloads it, ``--cycles`` times. After
each unload (and a garbage collection) it reads the resident set twice: first as glibc leaves it
(``heap.release_free_pages`` switched off inside the unload), then after calling it. So both
figures come from the same cycles, side by side:

* kept MiB: resident set after an unload minus the trimmed one, i.e. free heap pages glibc held;
* trim ms: what ``malloc_trim(0)`` costs;
* growth: the trimmed resident set from cycle ``cycles // 10`` to the last cycle (a leak shows
  here; allocator noise does not, since the free pages are gone);
* in use: the bytes malloc holds for live blocks (glibc's ``mallinfo2``), change per cycle over
  the same cycles: what a native leak would add.

The models: the bundled demo model and a random ~75M-parameter f16 GGUF written to a temporary
directory. Linux with glibc only (elsewhere there is no malloc_trim to compare). ``--model SPEC``
runs one model in this process, e.g. under heaptrack, whose leak total at exit should not depend
on ``--cycles``.

    .venv/bin/python benchmarks/unload_memory.py             # 100 cycles per model
    .venv/bin/python benchmarks/unload_memory.py --cycles 5  # a smoke test
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp  # noqa: F401  (before numpy, as Session.load does)
import psutil

from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.engine.llama import heap
from exaone_jupyter.session import Session
from exaone_jupyter.testing import TinyShape, write_random_gguf

MIB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def in_use_bytes() -> int:
    """Bytes in live malloc blocks, heap and mmapped (glibc 2.33+)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def measure(spec: str, cycles: int) -> dict:
    session, process = Session(), psutil.Process()
    release = heap.release_free_pages
    kept, trim_ms, trimmed, in_use = [], [], [], []
    for _ in range(cycles):
        session.load(spec)
        session.ask(
            "한국의 수도는 어디인가요?", Sampling(temperature=0, max_tokens=16), history=False
        ).consume()
        heap.release_free_pages = lambda: False  # the unload as glibc alone would leave it
        try:
            session.unload()
        finally:
            heap.release_free_pages = release
        gc.collect()
        before = process.memory_info().rss
        started = time.perf_counter()
        if not release():
            raise SystemExit("this C library has no malloc_trim; nothing to compare")
        trim_ms.append((time.perf_counter() - started) * 1e3)
        after = process.memory_info().rss
        kept.append((before - after) / MIB)
        trimmed.append(after / MIB)
        in_use.append(in_use_bytes())
    first = max(1, cycles // 10) - 1
    return {
        "kept_median": statistics.median(kept),
        "kept_max": max(kept),
        "trim_ms": statistics.median(trim_ms),
        "rss": trimmed[-1],
        "growth": trimmed[-1] / trimmed[first] - 1,
        "from_cycle": first + 1,
        "in_use_kb_per_cycle": (in_use[-1] - in_use[first]) / 1024 / max(1, cycles - 1 - first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--model", help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args()
    if args.model:
        print(json.dumps(measure(args.model, args.cycles)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        big = write_random_gguf(
            Path(tmp) / "75M.gguf",
            dtype="f16",
            shape=TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=2048),
        )
        models = {
            "exaone-demo (3.4 MB)": "exaone-demo",
            f"random 75M f16 ({big.stat().st_size / 1e6:.0f} MB)": str(big),
        }
        print(
            f"{args.cycles} load / ask / unload cycles per model, each model in a fresh process\n"
        )
        print(
            "| model | kept after unload, MiB (median / max) | trim ms | RSS after trim, MiB "
            "| growth of trimmed RSS | in use, KB per cycle |"
        )
        print("|---|---|---|---|---|---|")
        for label, spec in models.items():
            child = subprocess.run(
                [sys.executable, __file__, "--model", spec, "--cycles", str(args.cycles)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(child.stdout.splitlines()[-1])
            print(
                f"| {label} | {r['kept_median']:.1f} / {r['kept_max']:.1f} | {r['trim_ms']:.1f} "
                f"| {r['rss']:.1f} | {r['growth']:+.1%} from cycle {r['from_cycle']} "
                f"| {r['in_use_kb_per_cycle']:+.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
