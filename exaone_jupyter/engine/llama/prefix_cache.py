"""Never read the same context twice: a prompt continues from the longest prefix of its tokens
that was ever evaluated, wherever it is kept.

Three places hold evaluated tokens: the context's own sequence (what the last reply left), saved
states in memory (``kv_ram``: the conversation, a document, another document) and saved states on
disk (``kv_disk``: the same, across kernel restarts). After each reply the sequence's state is
saved to both; before a prompt is evaluated, the place sharing the most tokens with it wins, and a
saved state is restored onto the sequence when it shares more than the sequence itself does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backend import PrefixCacheUsage
from .kv_disk import DiskStates, StateKey
from .kv_ram import RamStates
from .kv_state import MIN_TOKENS, State, capture, common_prefix, restore


class PrefixCache:
    """The saved states of one loaded model, in memory and (when a budget allows) on disk."""

    def __init__(self, ram_bytes: int, disk_bytes: int, folder: Path, key: StateKey) -> None:
        self.ram = RamStates(ram_bytes)
        self.disk: DiskStates | None = None
        self.notes: list[str] = []
        self._saved: tuple[int, ...] = ()  # the ids of the last state saved (not saved twice)
        self.restored_from: str | None = None  # where the last prompt's prefix came from
        if disk_bytes > 0:
            try:
                self.disk = DiskStates(folder, disk_bytes, key)
            except Exception as err:  # the disk's boundary: an unusable folder, one sentence
                reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
                self.notes.append(
                    f"The KV cache folder {folder} cannot be used ({reason}); prompt states are "
                    "kept in memory only. Pass cache_dir= a writable folder, or cache_disk_mb=0."
                )

    def continue_from(self, ctx: Any, live_ids: Sequence[int], ids: Sequence[int]) -> list[int]:
        """The tokens sequence 0 holds after putting there the saved state that shares the most
        of ``ids``, when it shares more than ``live_ids`` (what the sequence holds) does."""
        self.restored_from = None
        live = common_prefix(live_ids, ids)
        found = self._best(ids, better_than=live)
        if found is None:
            return list(live_ids)
        state, where = found
        if not restore(ctx, state):
            self._refused()
            return []
        self._saved, self.restored_from = state.ids, where
        return list(state.ids)

    def restore_into(self, ctx: Any, ids: Sequence[int], seq: int) -> int:
        """Put on the empty sequence ``seq`` the saved state sharing the most of ``ids``, cut to
        what it shares; how many tokens of ``ids`` it holds (0: none was worth it)."""
        found = self._best(ids, better_than=0)
        if found is None:
            return 0
        state, _ = found
        if not restore(ctx, state, seq):
            self._refused()
            return 0
        shared = common_prefix(state.ids, ids)
        _cut(ctx, seq, shared)
        return shared

    def _best(self, ids: Sequence[int], better_than: int) -> tuple[State, str] | None:
        """The saved state sharing the most of ``ids``, and where it was ("memory", "disk"),
        when it shares at least MIN_TOKENS more than ``better_than``; a state read from disk
        is kept in memory too."""
        state, in_ram = self.ram.best(ids)
        name, on_disk = self.disk.best(ids) if self.disk else (None, 0)
        if max(in_ram, on_disk) < better_than + MIN_TOKENS:
            return None
        if on_disk > in_ram and self.disk is not None and name is not None:
            loaded = self.disk.load(name)
            if loaded is not None:
                self.ram.add(loaded)
                return loaded, "disk"
            if in_ram < better_than + MIN_TOKENS:
                return None
        assert state is not None
        return state, "memory"

    def _refused(self) -> None:
        self.notes.append(
            "llama.cpp refused a saved KV state (another build's format?); the prompt is "
            "evaluated in full."
        )

    def save(self, ctx: Any, ids: Sequence[int], seq: int = 0) -> None:
        """Keep the state of sequence ``seq``, which holds ``ids``, in memory and on disk."""
        if len(ids) < MIN_TOKENS or tuple(ids) == self._saved:
            return
        state = capture(ctx, ids, seq)
        if state is None:
            return
        self._saved = state.ids
        self.ram.add(state)
        if self.disk is not None:
            self.disk.save(state)

    def take_note(self) -> str | None:
        """One pending sentence about the cache for the next reply (the disk writer's too)."""
        while self.disk is not None and self.disk.notes:  # the writer thread may add more
            self.notes.append(self.disk.notes.pop(0))
        return self.notes.pop(0) if self.notes else None

    def usage(self) -> PrefixCacheUsage:
        disk = self.disk
        states, stored, folder_bytes = disk.usage() if disk else (0, 0, 0)
        return PrefixCacheUsage(
            ram_states=len(self.ram),
            ram_bytes=self.ram.used_bytes,
            ram_budget=self.ram.budget_bytes,
            disk_states=states,
            disk_bytes=stored,
            disk_folder_bytes=folder_bytes,
            disk_budget=disk.budget_bytes if disk else 0,
            folder=str(disk.folder) if disk else None,
        )

    def clear(self) -> None:
        """Forget every saved state, in memory and in the disk folder (every model's)."""
        self.ram.clear()
        self._saved = ()
        if self.disk is not None:
            self.disk.clear()

    def close(self) -> None:
        self.ram.clear()
        if self.disk is not None:
            self.disk.close()


def _cut(ctx: Any, seq: int, keep: int) -> None:
    import llama_cpp

    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq, keep, -1)
