"""A Reply: the text pieces of one generation as they arrive, then its figures.

The consumer pulls pieces (``for piece in reply``), so generation runs in the consumer's thread
and Ctrl-C lands between tokens. ``stop()`` may be called from any thread; either way the reply
ends cleanly with the partial text kept and ``finish_reason == "interrupted"``.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass


@dataclass
class Stats:
    """The figures of one reply. Rates are None until there is something to divide."""

    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0  # after prefix reuse: what the engine really computed
    restored_from: str | None = None  # "memory" or "disk": a saved KV state served the prefix
    completion_tokens: int = 0
    ttft_s: float | None = None
    prompt_tok_s: float | None = None
    decode_tok_s: float | None = None
    total_s: float = 0.0
    finish_reason: str | None = None  # "stop", "length", "interrupted", "error"
    n_ctx: int = 0
    rate_source: str = "llama.cpp"  # where decode_tok_s comes from: llama.cpp, server, client

    @property
    def context_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict:
        return asdict(self)


class Reply:
    """Iterable text pieces of one generation; ``.text`` and ``.stats`` fill in as it runs."""

    def __init__(
        self,
        pieces: Callable[[Reply], Generator[str, None, None]],
        *,
        prompt_tokens: int = 0,
        n_ctx: int = 0,
        thinking_opened: bool = False,
    ) -> None:
        self.stats = Stats(prompt_tokens=prompt_tokens, n_ctx=n_ctx)
        self.note: str | None = None  # one sentence the UI should show (e.g. context full)
        self.error: str | None = None  # set when the engine failed mid-reply
        # The prompt opened a reasoning block (<think>, <thought>): the text starts inside it.
        self.thinking_opened = thinking_opened
        self._parts: list[str] = []
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._source = pieces(self)
        self._done = False
        self._on_finish: list[Callable[[Reply], None]] = []
        self._on_stop: list[Callable[[], None]] = []

    def on_finish(self, callback: Callable[[Reply], None]) -> None:
        """Call ``callback(reply)`` once when the reply has ended, however it ended."""
        self._on_finish.append(callback)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at each ``stop()``, in the thread that stops: an engine that waits
        outside its loop (a server's socket) is woken there, since its loop cannot see the flag."""
        self._on_stop.append(callback)

    def _finish(self) -> None:
        self._done = True
        if self.stats.finish_reason is None:
            self.stats.finish_reason = "interrupted"
        callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback(self)

    # -- consuming ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        while not self._done:
            try:
                piece = next(self._source)
            except StopIteration:
                self._finish()
                break
            except KeyboardInterrupt:
                self.close()
                break
            except BaseException as err:
                self.error = str(err) or type(err).__name__
                self.stats.finish_reason = "error"
                self._finish()
                raise
            self._parts.append(piece)
            try:
                yield piece
            except GeneratorExit:  # the consumer left its loop: a break, or Ctrl-C in its body
                self.close()  # else the engine would hold the model until this reply is freed
                raise

    def consume(self) -> Reply:
        """Run to the end without a consumer; returns self (for scripts and tests)."""
        for _ in self:
            pass
        return self

    def stop(self) -> None:
        """Ask the engine to end after the current token; safe from any thread."""
        self._stop.set()
        for callback in self._on_stop:
            callback()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """End now (e.g. after Ctrl-C landed in the consumer): finish the figures, keep the text.
        A reply that never started ends without starting: its engine never runs."""
        if self._done:
            return
        self._stop.set()
        if inspect.getgeneratorstate(self._source) == inspect.GEN_CREATED:
            self._source.close()
            self._finish()
            return
        try:  # let the engine's loop see the stop flag and finish its figures
            for piece in self._source:
                self._parts.append(piece)
        except KeyboardInterrupt:
            self._source.close()
        finally:
            self._finish()

    # -- reading ------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._started

    def __repr__(self) -> str:
        head = self.text[:40].replace("\n", " ")
        return (
            f"<Reply {self.stats.completion_tokens} tokens, {self.stats.finish_reason}: "
            f"{head!r}{'...' if len(self.text) > 40 else ''}>"
        )
