"""``map`` on a server: the rows as concurrent requests, each a one-off question.

The server batches what arrives together. Two servers' ways are handled here, so that each row
still ends as its answer or one error sentence: a server that cuts the reply it streams short
when another request arrives (llama-cpp-python's, by default) gets the rows one at a time from
then on, and a server that cannot be reached gets no more rows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .engine.backend import Request, Sampling
from .engine.server_errors import ReplyCutShort, ServerUnreachable
from .errors import ExaoneError

DEFAULT_REMOTE_PARALLEL = 4  # requests at a time to a server


def run_remote(
    backend: Any,
    todo: list,
    sampling: Sampling,
    parallel: int | None,
    response_format: dict | None,
    row_done: Callable[..., None],
    notes: list[str],
) -> str | None:
    """Ask each row of ``todo`` (``.messages``) with up to ``parallel`` requests at once; rows
    end in any order, each with ``row_done(row, text, finish, error)``; ``notes`` gains the
    sentences about the run as a whole.

    A reply that the server cut short while other requests were waiting is asked again, and from
    then on one request goes out at a time: llama-cpp-python's server ends the reply it streams
    when another request arrives (unless it runs with ``--interrupt_requests False``). Once the
    server cannot be reached, the rows not yet sent are not sent; the sentence that says so is
    returned. The map holds the server throughout (``exclusive``), as a local map holds the model:
    while a reply streams it is busy (ModelBusyError), and a cell asked meanwhile is told so.
    """
    workers = parallel or DEFAULT_REMOTE_PARALLEL
    serial = threading.Event()  # set once the server cut a reply short
    one_at_a_time = threading.Lock()
    unreachable: list[str] = []
    stopping = threading.Event()
    live: set = set()  # replies being read, stopped on Ctrl-C

    def ask(row: Any) -> tuple[str, str, str | None]:
        request = Request(sampling, messages=row.messages, response_format=response_format)
        error = ""
        for _ in range(workers + 1):  # each request already sent can cut one reply short
            if unreachable:
                return "", "error", unreachable[0]
            if stopping.is_set():
                return "", "interrupted", None
            gate = one_at_a_time if serial.is_set() else contextlib.nullcontext()
            with gate:
                try:
                    reply = backend.stream(request, held=True)
                    live.add(reply)
                    try:
                        text = "".join(reply)
                    finally:
                        live.discard(reply)
                except ReplyCutShort as err:
                    if workers == 1:
                        return "", "error", str(err)
                    serial.set()
                    error = str(err)
                    continue
                except ServerUnreachable as err:
                    unreachable.append(str(err))
                    return "", "error", str(err)
                except ExaoneError as err:
                    return "", "error", str(err)
            if reply.note:
                notes.append(reply.note)  # the same note from many rows: kept once, below
            return text, reply.stats.finish_reason or "stop", reply.error
        return "", "error", error

    with backend.exclusive(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(ask, row): row for row in todo}
        try:
            for future in as_completed(futures):
                row_done(futures[future], *future.result())
        except KeyboardInterrupt:
            stopping.set()
            for future in futures:
                future.cancel()
            for reply in list(live):
                reply.stop()
            raise
    if serial.is_set():
        notes.append(
            "The server cut replies short when it was sent several at once (llama-cpp-python's "
            "server does, unless started with --interrupt_requests False), so those rows were "
            "asked again one at a time."
        )
    notes[:] = list(dict.fromkeys(notes))
    return unreachable[0] if unreachable else None
