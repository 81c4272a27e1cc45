"""Never read the same context twice, measured: the wait for a follow-up's first token in a warm
kernel, after a restart with the saved KV states on disk, and after a restart without them; and
two documents asked about in turn, with and without the saved states in memory.

Each "kernel" is a process of its own that loads the model (a restart is a new process on the
same cache folder); only the follow-up's time to first token is compared, not the load. Before a
restarted process reads a state, the state's file is dropped from the page cache
(``posix_fadvise(DONTNEED)``), so the read is the disk's, as after a reboot. The prompt is a
document of ``--doc-tokens`` tokens and a question; the follow-up adds an answer and a second
question, as a resumed conversation does.

Goals (issue 29): after a restart the follow-up's first token within 1.5x of the warm kernel's,
plus the state's read time; alternating documents evaluate only their new tokens.

    .venv/bin/python benchmarks/resume.py [--models 75M 1.2B] [--doc-tokens 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exaone_jupyter.testing import benchmark_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "resume.json"
GOAL = 1.5
WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "long",
    "document",
    "about",
    "the",
    "history",
    "of",
    "Korean",
    "cities",
    "and",
    "their",
    "ports",
]


# -- one process: a kernel ----------------------------------------------------------------------
def worker(job: dict) -> dict:
    """Load the model with ``job``'s options, answer its prompts in order, report each one."""
    from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling
    from exaone_jupyter.engine.llama.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    started = time.perf_counter()
    backend = LocalBackend(read_gguf(Path(job["model"])), LoadOptions(**job["options"]))
    load_s = time.perf_counter() - started
    if job.get("evict"):
        evict(Path(job["options"]["cache_dir"]))
    answers = []
    for ids in job["prompts"]:
        sampling = Sampling(temperature=0, max_tokens=job["max_tokens"])
        reply = backend.stream(Request(sampling, prompt_ids=ids)).consume()
        stats = reply.stats
        answers.append(
            {
                "ttft_s": stats.ttft_s,
                "prompt_tokens": stats.prompt_tokens,
                "evaluated": stats.prompt_tokens_evaluated,
                "restored_from": stats.restored_from,
                "note": reply.note,
            }
        )
    read = read_time(backend, job["prompts"][-1]) if job.get("time_read") else None
    backend.close()
    return {"load_s": load_s, "answers": answers, "read": read}


def read_time(backend, ids) -> dict:
    """Seconds to read the saved state that serves ``ids`` from disk, page cache dropped."""
    disk = backend.states.disk
    evict(disk.folder)
    name, _ = disk.best(ids)
    started = time.perf_counter()
    state = disk.load(name)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": state.size, "tokens": len(state.ids)}


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (clean pages only: sync first)."""
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run(job: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the scenarios ------------------------------------------------------------------------------
def prompts(model: Path, doc_tokens: int) -> dict[str, list[int]]:
    """Token ids: two documents, a question, an answer and a follow-up, in the EXAONE format."""
    from exaone_jupyter.engine.backend import LoadOptions
    from exaone_jupyter.engine.llama.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    backend = LocalBackend(read_gguf(model), LoadOptions(cache_ram_mb=0, cache_disk_mb=0))

    def document(offset: int) -> list[int]:
        ids: list[int] = []
        i = offset
        while len(ids) < doc_tokens:
            ids += backend.tokenize(" " + WORDS[i % len(WORDS)], special=False)
            i += 7
        return backend.tokenize("[|system|]", special=True) + ids[:doc_tokens]

    def turn(text: str) -> list[int]:
        return backend.tokenize(text, special=True)

    ask = turn("[|endofturn|]\n[|user|]What is the document about?[|endofturn|]\n[|assistant|]")
    follow = turn(
        "It is about cities.[|endofturn|]\n[|user|]Which ports?[|endofturn|]\n[|assistant|]"
    )
    other = turn("[|endofturn|]\n[|user|]Who wrote it?[|endofturn|]\n[|assistant|]")
    a, b = document(0), document(3)
    backend.close()
    return {
        "first": a + ask,
        "follow": a + ask + follow,
        "a1": a + ask,
        "b1": b + ask,
        "a2": a + other,
        "b2": b + other,
    }


def measure(model: Path, doc_tokens: int, max_tokens: int) -> dict:
    p = prompts(model, doc_tokens)
    off = {"cache_ram_mb": 0, "cache_disk_mb": 0}
    with tempfile.TemporaryDirectory(prefix="kv-") as folder:
        on = {"cache_dir": folder}
        base = {"model": str(model), "max_tokens": max_tokens}
        warm = run({**base, "options": off, "prompts": [p["first"], p["follow"]]})
        run({**base, "options": on, "prompts": [p["first"]]})  # the kernel before the restart
        restarted = run(
            {**base, "options": on, "prompts": [p["follow"]], "evict": True, "time_read": True}
        )
        without = run({**base, "options": off, "prompts": [p["follow"]]})
    alternating = [p["a1"], p["b1"], p["a2"], p["b2"]]
    with tempfile.TemporaryDirectory(prefix="kv-") as folder:
        memory = {"cache_dir": folder, "cache_disk_mb": 0}
        cached = run({**base, "options": memory, "prompts": alternating})
    plain = run({**base, "options": off, "prompts": alternating})
    return {
        "warm": warm["answers"][1],
        "restart_with_disk": restarted["answers"][0],
        "restart_without": without["answers"][0],
        "read": restarted["read"],
        "alternating_cached": cached["answers"],
        "alternating_plain": plain["answers"],
        "expected_new": [len(p[k]) - _shared(p[k], p[k[0] + "1"]) for k in ("a2", "b2")],
    }


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def report(name: str, r: dict) -> list[str]:
    warm, disk, cold, read = r["warm"], r["restart_with_disk"], r["restart_without"], r["read"]
    mb_s = read["bytes"] / 2**20 / read["seconds"]
    allowed = GOAL * warm["ttft_s"] + read["seconds"]
    lines = [
        f"## {name}",
        "| follow-up, first token | seconds | prompt tokens evaluated |",
        "|---|---|---|",
        f"| warm kernel | {warm['ttft_s']:.3f} | {warm['evaluated']} of {warm['prompt_tokens']} |",
        f"| restart, saved state on disk | {disk['ttft_s']:.3f} | {disk['evaluated']} "
        f"(restored from {disk['restored_from']}) |",
        f"| restart, no saved state | {cold['ttft_s']:.3f} | {cold['evaluated']} |",
        f"state read from disk (page cache dropped): {read['bytes'] / 2**20:.1f} MiB "
        f"({read['tokens']} tokens) in {read['seconds'] * 1000:.0f} ms, {mb_s:,.0f} MiB/s",
        f"- restart within {GOAL}x warm + read ({allowed:.3f} s): "
        f"{'yes' if disk['ttft_s'] <= allowed else 'NO'} ({disk['ttft_s'] / warm['ttft_s']:.2f}x "
        f"warm; {cold['ttft_s'] / disk['ttft_s']:.1f}x faster than without the state)",
    ]
    cached, plain = r["alternating_cached"], r["alternating_plain"]
    lines += [
        "| alternating documents | A | B | A again | B again |",
        "|---|---|---|---|---|",
        "| evaluated, memory cache | " + " | ".join(str(a["evaluated"]) for a in cached) + " |",
        "| evaluated, none | " + " | ".join(str(a["evaluated"]) for a in plain) + " |",
        "| first token s, memory cache | "
        + " | ".join(f"{a['ttft_s']:.3f}" for a in cached)
        + " |",
        "| first token s, none | " + " | ".join(f"{a['ttft_s']:.3f}" for a in plain) + " |",
    ]
    only_new = [a["evaluated"] for a in cached[2:]] == r["expected_new"]
    lines.append(
        f"- alternating documents evaluate only new tokens: {'yes' if only_new else 'NO'} "
        f"({[a['evaluated'] for a in cached[2:]]}, new {r['expected_new']})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=["75M", "1.2B"], default=["75M", "1.2B"])
    parser.add_argument("--doc-tokens", type=int, default=1500)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--model", type=Path, help="the 1.2B shape's file (written if missing)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(machine, flush=True)
    results: dict = {"machine": machine, "doc_tokens": args.doc_tokens, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = benchmark_model(name, Path(tmp), args.model)
            r = measure(model, args.doc_tokens, args.max_tokens)
            results["models"][name] = r
            print("\n".join(report(name, r)), flush=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
