"""Saved KV states on disk, so a restarted kernel continues where the last one stopped.

A state is valid only for what computed it: the model file, the context size, the KV cache's
types, flash attention and the llama.cpp build (``StateKey``). Each stored state carries its key,
its token ids and a CRC-32 of its bytes; one that does not match, or is cut short, is never
restored: it is removed, with a note. The store is diskcache (SQLite and one file a state, safe
for several kernels at once; least recently used evicted beyond the budget), in the user's cache
folder. States are written by a thread of their own after a reply, so a reply never waits for
the disk; at exit, writes still queued get a few seconds to finish.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import shutil
import struct
import threading
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...paths import cache_root
from .kv_state import State, buffer, common_prefix

MAGIC = b"EXKVST01"  # this module's format, version 1
EXIT_WAIT_S = 10.0  # how long a closing kernel waits for states still being written
_HEAD = struct.Struct("<8sI")  # MAGIC, then the JSON header's length
# What reading a damaged or foreign file raises: the state is then removed, never restored.
_DAMAGED = (OSError, ValueError, KeyError, TypeError, struct.error)


def default_dir() -> Path:
    """Where states are saved unless ``cache_dir`` says: the user's cache folder, ``kv``."""
    return cache_root() / "kv"


@dataclass(frozen=True)
class StateKey:
    """What a saved state is valid for; a state saved under another key is never restored."""

    model: str  # the GGUF's resolved path
    model_size: int
    model_mtime_ns: int
    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: bool
    build: str  # llama-cpp-python's version: it pins the llama.cpp whose format the bytes are

    @classmethod
    def of(cls, path: Path, **settings: Any) -> StateKey:
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns, **settings)

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class DiskStates:
    """The saved states of one model and its settings in a shared folder."""

    def __init__(self, folder: Path, budget_bytes: int, key: StateKey) -> None:
        """Open (or make) the store; OSError, or SQLite's error, when the folder cannot be
        written."""
        import diskcache

        self.folder, self.budget_bytes, self.key = folder, budget_bytes, key
        self._prefix = f"kv/{key.digest}/"
        self._store = diskcache.Cache(
            str(folder),
            size_limit=budget_bytes,
            eviction_policy="least-recently-used",
            disk_min_file_size=0,
        )
        self._ids: dict[str, tuple[int, ...]] = {}  # stored name -> token ids (headers read)
        self._sizes: dict[str, int] = {}
        self._queue: list[State] = []
        self._busy = threading.Condition()
        self._writing = False  # a state is queued or being written
        self._writer: threading.Thread | None = None
        self._closing = False
        self.notes: list[str] = []  # sentences for the next reply (failures, removed files)
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- finding and reading --------------------------------------------------------------------
    def best(self, ids: Sequence[int]) -> tuple[str | None, int]:
        """The stored state sharing the longest prefix with ``ids`` (its name), and how many
        tokens it shares."""
        found, length = None, 0
        for name, stored in self._index().items():
            n = common_prefix(stored, ids)
            if n > length:
                found, length = name, n
        return found, length

    def load(self, name: str) -> State | None:
        """The state called ``name``, checked; None (and a note) when it is gone or damaged."""
        try:
            file = self._store.get(name, read=True)
            if file is None:  # another kernel evicted it meanwhile
                self._forget(name)
                return None
            with file:
                header = _read_header(file, self.key)
                data = buffer(header["size"])
                if file.readinto(data) != header["size"] or file.read(1):
                    raise ValueError("it is cut short")
                if zlib.crc32(data) != header["crc32"]:
                    raise ValueError("its checksum does not match")
            return State(tuple(header["ids"]), data)
        except _DAMAGED as err:
            self._remove(name, err)
            return None

    def _index(self) -> dict[str, tuple[int, ...]]:
        """The token ids of each state stored under this key; headers are read once."""
        names = [k for k in self._store.iterkeys() if isinstance(k, str)]
        names = [k for k in names if k.startswith(self._prefix)]
        for name in set(self._ids) - set(names):
            self._forget(name)
        for name in names:
            if name not in self._ids:
                self._read_index_entry(name)
        return dict(self._ids)

    def _read_index_entry(self, name: str) -> None:
        try:
            file = self._store.get(name, read=True)
            if file is None:
                return
            with file:
                header = _read_header(file, self.key)
        except _DAMAGED as err:
            self._remove(name, err)
            return
        self._ids[name] = tuple(header["ids"])
        self._sizes[name] = int(header["size"])

    def _forget(self, name: str) -> None:
        self._ids.pop(name, None)
        self._sizes.pop(name, None)

    def _remove(self, name: str, err: Exception) -> None:
        self._forget(name)
        with contextlib.suppress(Exception):
            self._store.delete(name)
        self.notes.append(
            f"A saved KV state in {self.folder} was damaged ({_reason(err)}); it was removed "
            "and the prompt is evaluated in full."
        )

    # -- writing --------------------------------------------------------------------------------
    def save(self, state: State) -> None:
        """Write ``state`` in the background; a newer state queued after it replaces it when it
        extends it."""
        if state.size + 2**20 > self.budget_bytes:
            return
        with self._busy:
            self._queue = [q for q in self._queue if state.ids[: len(q.ids)] != q.ids]
            self._queue.append(state)
            self._writing = True
            if self._writer is None:  # one thread for the store's life, not one per burst
                self._writer = threading.Thread(
                    target=self._write_queued, name="exaone-kv-disk", daemon=True
                )
                self._writer.start()
            self._busy.notify_all()

    def _write_queued(self) -> None:
        """The writer thread: the queued states, one by one, until the store closes."""
        while True:
            with self._busy:
                while not self._queue:
                    self._writing = False
                    self._busy.notify_all()
                    if self._closing:
                        return
                    self._busy.wait()
                state = self._queue.pop(0)
            try:
                self._write(state)
            except Exception as err:  # the disk's boundary: whatever broke, one sentence
                self.notes.append(
                    f"A KV state could not be saved in {self.folder} ({_reason(err)}); after a "
                    "restart that prompt is evaluated again. Free some space or lower "
                    "cache_disk_mb."
                )
                with contextlib.suppress(Exception):
                    self._store.check(fix=True)  # removes a file the failure left half-written

    def _write(self, state: State) -> None:
        free = shutil.disk_usage(self.folder).free
        if free < state.size * 2:
            raise OSError(f"only {free // 2**20} MiB free on that disk")
        name = self._prefix + hashlib.sha256(str(state.ids).encode()).hexdigest()[:24]
        header = json.dumps(
            {
                "key": asdict(self.key),
                "ids": list(state.ids),
                "size": state.size,
                "crc32": zlib.crc32(state.data),
            }
        ).encode("utf-8")
        self._store.set(
            name, _Chunks(_HEAD.pack(MAGIC, len(header)) + header, state.data), read=True
        )
        # The states this one extends serve nothing it does not. (The index is the reader
        # thread's: it finds the new state, and forgets these, at its next look.)
        for older, ids in dict(self._ids).items():
            if older != name and state.ids[: len(ids)] == ids:
                self._store.delete(older)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the queued states are written; False when ``timeout`` came first."""
        with self._busy:
            return self._busy.wait_for(lambda: not self._writing, timeout)

    # -- use ------------------------------------------------------------------------------------
    def usage(self) -> tuple[int, int, int]:
        """(states of this model, their bytes, bytes of the whole folder)."""
        index = self._index()
        return len(index), sum(self._sizes.get(n, 0) for n in index), int(self._store.volume())

    def clear(self) -> None:
        """Remove every saved state in the folder, of every model."""
        self.flush(EXIT_WAIT_S)
        self._store.clear()
        self._ids.clear()
        self._sizes.clear()

    def close(self) -> None:
        self.flush(EXIT_WAIT_S)
        with self._busy:
            self._closing = True
            self._busy.notify_all()
        if self._writer is not None:
            self._writer.join(EXIT_WAIT_S)
        self._store.close()


def _read_header(file: Any, key: StateKey) -> dict[str, Any]:
    magic, length = _HEAD.unpack(file.read(_HEAD.size))
    if magic != MAGIC:
        raise ValueError("it is not a state file of this version")
    header = json.loads(file.read(length))
    if header["key"] != asdict(key):
        raise ValueError("it was saved for another model, context or llama.cpp build")
    return header


class _Chunks:
    """A header and a state's bytes as one file-like ``read(n)``, so nothing is copied whole."""

    def __init__(self, head: bytes, data: Any) -> None:
        self._parts = [memoryview(head), memoryview(data).cast("B")]

    def read(self, n: int) -> bytes:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        part = self._parts[0]
        self._parts[0] = part[n:]
        return bytes(part[:n])


def _reason(err: Exception) -> str:
    if isinstance(err, struct.error):
        return "it is cut short"
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return text.rstrip(".") or type(err).__name__


def _flush_at_exit(ref: weakref.ref) -> None:
    store = ref()
    if store is not None:
        store.flush(EXIT_WAIT_S)
