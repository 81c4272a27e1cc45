"""The first answer after a fresh install against a warm one: `make demo`'s command, timed whole.

A fresh environment has no caches: no bytecode of any package (a pip install writes some; this
has none at all, so it is harsher than a fresh install), nothing compiled for this machine. Each
round runs the command cold (a new, empty ``PYTHONPYCACHEPREFIX``: every module is compiled from
source) and then warm (the same prefix again), so both halves of a round see the same machine
load. Goal: cold within 1.5x of warm (the median of the rounds' ratios).

    .venv/bin/python benchmarks/first_answer.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [
    sys.executable,
    "-m",
    "exaone_jupyter",
    "--model",
    "exaone-demo",
    "-t",
    "0",
    "한국의 수도는 어디인가요? Answer in one sentence.",
]
GOAL = 1.5


def timed(prefix: str) -> float:
    """Wall seconds of one run of the demo command with its bytecode under ``prefix``."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": prefix, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(COMMAND, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="pycache-") as prefix:
            cold = timed(prefix)
            warm = timed(prefix)
        rows.append((cold, warm))
        print(f"cold {cold:.2f} s, warm {warm:.2f} s, {cold / warm:.2f}x", flush=True)
    ratio = statistics.median(cold / warm for cold, warm in rows)
    verdict = "yes" if ratio <= GOAL else "NO"
    print(f"- first answer within {GOAL}x of a warm one: {verdict} (median {ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
