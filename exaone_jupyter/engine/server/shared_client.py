"""The remote engine's HTTP client, shared by concurrent streams (map's rows).

After a failed stream the next request must start on a fresh connection: a server may close
that connection only after the next request took it from the pool (llama-cpp-python's does). So a
failed stream swaps in a fresh client. The old one is not closed at once, because other streams
may still be reading through it (closing it under them breaks them: "Bad file descriptor"). It
is closed when the last stream using it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class SharedClient:
    """``take`` a client for a stream, ``release`` it when the stream ends, ``drop`` it after a
    failure; ``current`` is the one new requests get."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._in_use: dict[int, int] = {}  # id(client) -> streams using it
        self.current = make()

    def take(self) -> Any:
        with self._lock:
            client = self.current
            self._in_use[id(client)] = self._in_use.get(id(client), 0) + 1
            return client

    def release(self, client: Any) -> None:
        with self._lock:
            left = self._in_use.pop(id(client)) - 1
            if left:
                self._in_use[id(client)] = left
            retired = not left and client is not self.current
        if retired:
            client.close()

    def drop(self, client: Any) -> None:
        """New requests get a fresh client; ``client`` closes when no stream uses it."""
        with self._lock:
            if client is not self.current:  # another stream replaced it already
                return
            self.current = self._make()
            idle = not self._in_use.get(id(client))
        if idle:
            client.close()

    def close(self) -> None:
        self.current.close()
