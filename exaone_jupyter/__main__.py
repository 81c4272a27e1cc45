"""``python -m exaone_jupyter "question"``: one chat turn in a terminal (what `make demo` runs)."""

from __future__ import annotations

import argparse
import sys

from .engine.backend import Sampling
from .errors import ExaoneError
from .session import Session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exaone_jupyter", description=__doc__)
    parser.add_argument("question")
    parser.add_argument(
        "-m",
        "--model",
        default=None,
        help="path, REPO:FILE or catalog alias (default: $EXAONE_JUPYTER_MODEL "
        "or the catalog default)",
    )
    parser.add_argument("-t", "--temperature", type=float, default=0.0)
    parser.add_argument("-n", "--max-tokens", type=int, default=256)
    parser.add_argument("--gpu-layers", default="auto")
    parser.add_argument(
        "--think", action="store_true", help="reasoning mode, where the model has one (EXAONE 4.0)"
    )
    args = parser.parse_args(argv)

    session = Session()
    try:
        for notice in session.load(args.model, gpu_layers=args.gpu_layers):
            print(f"note: {notice}", file=sys.stderr)
        backend = session.info().backend
        where = backend.local.offload.label if backend.local else backend.label
        print(f"model: {backend.model} ({where})", file=sys.stderr)
        sampling = Sampling(temperature=args.temperature, max_tokens=args.max_tokens)
        turn = session.prepare(args.question, sampling, think=args.think)
        for note in turn.notes:
            print(f"note: {note}", file=sys.stderr)
        reply = session.send(turn)
        for piece in reply:
            print(piece, end="", flush=True)
    except ExaoneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    s = reply.stats
    rate = f"{s.decode_tok_s:.1f} tokens/s" if s.decode_tok_s else "n/a tokens/s"
    print(
        f"\n\n[{s.completion_tokens} tokens, {rate} decode, first token after "
        f"{(s.ttft_s or 0) * 1000:.0f} ms, finish: {s.finish_reason}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
