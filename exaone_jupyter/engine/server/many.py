"""Many one-off requests to a server at once: ``RemoteBackend.generate_many``.

The server batches what arrives together. Two servers' ways are handled here, so that each row
still ends as its answer or one error sentence: a server that cuts the reply it streams short
when another request arrives (llama-cpp-python's, by default) gets the rows one at a time from
then on, and a server that cannot be reached gets no more rows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING

from ...errors import ExaoneError
from ..backend import BatchResult, OnRow, Request, RowOutput
from .server_errors import ReplyCutShort, ServerUnreachable

if TYPE_CHECKING:
    from .remote import RemoteBackend

DEFAULT_REMOTE_PARALLEL = 4  # requests at a time to a server


def generate_many(
    backend: RemoteBackend,
    requests: Sequence[Request],
    parallel: int | None,
    on_row: OnRow | None,
    on_tokens: Callable[[int], None] | None,
) -> BatchResult:
    """Send each request with up to ``parallel`` at once; rows end in any order, each with
    ``on_row(index, output)``, ``on_tokens(n)`` as its tokens are counted.

    A reply that the server cut short while other requests were waiting is asked again, and from
    then on one request goes out at a time: llama-cpp-python's server ends the reply it streams
    when another request arrives (unless it runs with ``--interrupt_requests False``). Once the
    server cannot be reached, the rows not yet sent are not sent; ``unreachable`` says why. The
    run holds the server throughout (``exclusive``), as a local batch holds the model: while a
    reply streams it is busy (ModelBusyError), and a cell asked meanwhile is told so.
    """
    workers = parallel or DEFAULT_REMOTE_PARALLEL
    serial = threading.Event()  # set once the server cut a reply short
    one_at_a_time = threading.Lock()
    unreachable: list[str] = []
    stopping = threading.Event()
    live: set = set()  # replies being read, stopped on Ctrl-C

    notes: list[str] = []
    outputs = [RowOutput() for _ in requests]

    def ask(request: Request) -> RowOutput:
        error = ""
        for _ in range(workers + 1):  # each request already sent can cut one reply short
            if unreachable:
                return RowOutput(finish_reason="error", error=unreachable[0])
            if stopping.is_set():
                return RowOutput(finish_reason="interrupted")
            gate = one_at_a_time if serial.is_set() else contextlib.nullcontext()
            with gate:
                try:
                    reply = backend.stream_held(request)
                    live.add(reply)
                    try:
                        text = "".join(reply)
                    finally:
                        live.discard(reply)
                except ReplyCutShort as err:
                    if workers == 1:
                        return RowOutput(finish_reason="error", error=str(err))
                    serial.set()
                    error = str(err)
                    continue
                except ServerUnreachable as err:
                    unreachable.append(str(err))
                    return RowOutput(finish_reason="error", error=str(err))
                except ExaoneError as err:
                    return RowOutput(finish_reason="error", error=str(err))
            if reply.note:
                notes.append(reply.note)  # the same note from many rows: kept once, below
            made = reply.stats.completion_tokens
            if on_tokens is not None and made:
                on_tokens(made)
            return RowOutput(text, made, reply.stats.finish_reason or "stop", reply.error)
        return RowOutput(finish_reason="error", error=error)

    with backend.exclusive(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(ask, request): i for i, request in enumerate(requests)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                outputs[i] = future.result()
                if on_row is not None:
                    on_row(i, outputs[i])
        except KeyboardInterrupt:
            stopping.set()
            for future in futures:
                future.cancel()
            for reply in list(live):
                reply.stop()
    if serial.is_set():
        notes.append(
            "The server cut replies short when it was sent several at once (llama-cpp-python's "
            "server does, unless started with --interrupt_requests False), so those rows were "
            "asked again one at a time."
        )
    for out in outputs:
        if out.finish_reason is None:
            out.finish_reason = "interrupted"
    return BatchResult(outputs, list(dict.fromkeys(notes)), unreachable[0] if unreachable else None)
