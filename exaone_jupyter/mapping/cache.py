"""``map``'s cache of reproducible rows: in memory for this kernel, and on disk when asked.

A row is reproducible when its sampling is (temperature 0, or a seed). Its key is a hash of the
model's identity (local: the GGUF's path, size and modification time; a server: its URL and model
name), what the model is fed (local: the prompt's token ids; a server: the messages), the
sampling and the schema. The value is the reply text and its finish reason; the parsed value is
made again from the text, so a changed parser never serves a stale object.

``cache="disk"`` (or a folder) keeps rows across kernel restarts with diskcache (SQLite, safe
for several processes at once; at most 1 GB, the oldest rows go first) under the user's cache
folder. Values are stored as JSON text, never pickled. A disk cache that cannot be opened, read
or written never fails the run: the rows are kept in memory and the run's summary says why, in
one sentence.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ExaoneError
from ..paths import cache_root

MEMORY_LIMIT = 100_000  # rows kept in memory; the oldest go first
DISK_LIMIT_BYTES = 1 << 30

_memory: dict[str, tuple[str, str]] = {}  # key -> (reply text, finish reason)


def default_dir() -> Path:
    """Where ``cache="disk"`` keeps rows: the user's cache folder (``paths.cache_root``),
    ``map``."""
    return cache_root() / "map"


def disk_dir(cache: Any) -> Path | None:
    """The folder of a disk cache for map's ``cache=`` argument; None for memory or no cache."""
    if isinstance(cache, bool) or cache == "memory":
        return None
    if cache == "disk":
        return default_dir()
    if isinstance(cache, os.PathLike) or (
        isinstance(cache, str) and cache and (os.sep in cache or "/" in cache or cache[0] in "~.")
    ):
        return Path(cache).expanduser()
    raise ExaoneError(
        f"cache must be True (in memory), False, 'disk' or a folder such as './map-cache', "
        f"not {cache!r}."
    )


def row_key(identity: tuple, fed: Any, sampling: dict, schema: str | None) -> str:
    """A row's key: the same inputs give the same key in every process."""
    text = json.dumps([identity, fed, sampling, schema], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clear_cache(disk: Any = None) -> None:
    """Forget every row cached in memory; ``clear_cache("disk")`` (or a folder) empties that disk
    cache too."""
    _memory.clear()
    folder = disk_dir(disk) if disk is not None else None
    if folder is not None and folder.is_dir():
        import diskcache

        try:
            with diskcache.Cache(str(folder)) as store:
                store.clear()
        except Exception as err:  # the disk's boundary: whatever broke, one sentence
            raise ExaoneError(
                f"The disk cache at {folder} could not be cleared ({_reason(folder, err)}); "
                "delete that folder to empty it."
            ) from None


class RowCache:
    """One run's view of the cache: ``get`` and ``put`` rows; ``note`` says why the disk cache
    was left out, if it was."""

    def __init__(self, cache: Any) -> None:
        self.enabled = cache is not False
        self.folder = disk_dir(cache) if self.enabled else None
        self.note: str | None = None
        self._disk: Any = None
        if self.folder is not None:
            try:
                import diskcache

                self.folder.mkdir(parents=True, exist_ok=True)
                self._disk = diskcache.Cache(str(self.folder), size_limit=DISK_LIMIT_BYTES)
            except Exception as err:  # the disk's boundary: whatever broke, one sentence
                self._give_up_disk(err, "opened")

    def get(self, key: str) -> tuple[str, str, bool] | None:
        """(text, finish reason, whether it came from disk), or None."""
        hit = _memory.get(key)
        if hit is not None:
            return (*hit, False)
        if self._disk is None:
            return None
        try:
            stored = self._disk.get(key)
            if stored is None:
                return None
            text, finish = json.loads(stored)
        except Exception as err:
            self._give_up_disk(err, "read")
            return None
        self._remember(key, text, finish)
        return text, finish, True

    def put(self, key: str, text: str, finish: str) -> None:
        self._remember(key, text, finish)
        if self._disk is None:
            return
        try:
            self._disk.set(key, json.dumps([text, finish], ensure_ascii=False))
        except Exception as err:
            self._give_up_disk(err, "written")

    def close(self) -> None:
        if self._disk is not None:
            disk, self._disk = self._disk, None
            try:
                disk.close()
            except Exception as err:
                self._give_up_disk(err, "closed")

    @staticmethod
    def _remember(key: str, text: str, finish: str) -> None:
        if key not in _memory and len(_memory) >= MEMORY_LIMIT:
            _memory.pop(next(iter(_memory)))
        _memory[key] = (text, finish)

    def _give_up_disk(self, err: BaseException, what: str) -> None:
        """From now on, memory only; the first reason is the one the summary gives."""
        disk, self._disk = self._disk, None
        if disk is not None:
            with contextlib.suppress(Exception):  # already failing; the note says so
                disk.close()
        if self.note is None:
            self.note = (
                f"The disk cache at {self.folder} could not be {what} "
                f"({_reason(self.folder, err)}), so this run's rows are cached in memory only; "
                "fix or delete that folder, or pass cache=True."
            )


def _reason(folder: Path | None, err: BaseException) -> str:
    """Why a disk cache failed, in a few words for a sentence."""
    if folder is not None and folder.exists() and not folder.is_dir():
        return "it is a file, not a folder"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror  # "Permission denied", without the errno and the path
    return " ".join(str(err).split()).rstrip(".") or type(err).__name__
