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
    ``on_row(index, output)``, ``on_tokens(n)`` as its tokens are counted. Ctrl-C stops the
    replies being read and sends no more: finished rows keep their outputs.

    The run holds the server throughout (``exclusive``), as a local batch holds the model: while
    a reply streams it is busy (ModelBusyError), and a cell asked meanwhile is told so.
    """
    rows = _Rows(backend, parallel or DEFAULT_REMOTE_PARALLEL, on_tokens)
    outputs = [RowOutput() for _ in requests]
    with backend.exclusive(), ThreadPoolExecutor(max_workers=rows.workers) as pool:
        futures = {pool.submit(rows.ask, request): i for i, request in enumerate(requests)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                outputs[i] = future.result()
                if on_row is not None:
                    on_row(i, outputs[i])
        except KeyboardInterrupt:
            rows.stop()
            for future in futures:
                future.cancel()
    for out in outputs:
        if out.finish_reason is None:
            out.finish_reason = "interrupted"
    return BatchResult(outputs, rows.notes(), rows.unreachable[0] if rows.unreachable else None)


class _Rows:
    """How the rows are asked. A reply that the server cut short while other requests were
    waiting is asked again, and from then on one request goes out at a time: llama-cpp-python's
    server ends the reply it streams when another request arrives (unless it runs with
    ``--interrupt_requests False``). Once the server cannot be reached, no more rows are sent."""

    def __init__(
        self, backend: RemoteBackend, workers: int, on_tokens: Callable[[int], None] | None
    ) -> None:
        self.backend, self.workers, self.on_tokens = backend, workers, on_tokens
        self.serial = threading.Event()  # set once the server cut a reply short
        self.one_at_a_time = threading.Lock()
        self.stopping = threading.Event()
        self.unreachable: list[str] = []
        self.live: set = set()  # replies being read, stopped on Ctrl-C
        self._notes: list[str] = []

    def ask(self, request: Request) -> RowOutput:
        """One row's output: its reply, or one sentence why there is none."""
        error = ""
        for _ in range(self.workers + 1):  # each request already sent can cut one reply short
            if self.unreachable:
                return RowOutput(finish_reason="error", error=self.unreachable[0])
            if self.stopping.is_set():
                return RowOutput(finish_reason="interrupted")
            gate = self.one_at_a_time if self.serial.is_set() else contextlib.nullcontext()
            with gate:
                try:
                    return self._read(request)
                except ReplyCutShort as err:
                    if self.workers == 1:
                        return RowOutput(finish_reason="error", error=str(err))
                    self.serial.set()
                    error = str(err)
                except ServerUnreachable as err:
                    self.unreachable.append(str(err))
                    return RowOutput(finish_reason="error", error=str(err))
                except ExaoneError as err:
                    return RowOutput(finish_reason="error", error=str(err))
        return RowOutput(finish_reason="error", error=error)

    def _read(self, request: Request) -> RowOutput:
        reply = self.backend.stream_held(request)
        self.live.add(reply)
        try:
            text = "".join(reply)
        finally:
            self.live.discard(reply)
        if reply.note:
            self._notes.append(reply.note)  # the same note from many rows: kept once
        made = reply.stats.completion_tokens
        if self.on_tokens is not None and made:
            self.on_tokens(made)
        return RowOutput(text, made, reply.stats.finish_reason or "stop", reply.error)

    def stop(self) -> None:
        self.stopping.set()
        for reply in list(self.live):
            reply.stop()

    def notes(self) -> list[str]:
        """The run's sentences, each once."""
        notes = list(self._notes)
        if self.serial.is_set():
            notes.append(
                "The server cut replies short when it was sent several at once "
                "(llama-cpp-python's server does, unless started with --interrupt_requests "
                "False), so those rows were asked again one at a time."
            )
        return list(dict.fromkeys(notes))
