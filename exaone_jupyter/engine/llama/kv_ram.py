"""Saved KV states in memory, least recently used evicted, within a byte budget.

Several prefixes live here at once (the conversation, a document asked about, another one), so
switching between them restores instead of evaluating again. A state whose tokens another state
extends is dropped: the longer one serves every prompt the shorter one would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .kv_state import State, common_prefix


class RamStates:
    """States by their token ids, the most recently used last."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(budget_bytes, 0)
        self._states: OrderedDict[tuple[int, ...], State] = OrderedDict()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def add(self, state: State) -> None:
        """Keep ``state``, dropping the states it extends, then the least recently used ones
        until the budget holds. A state larger than the whole budget is not kept."""
        if state.size > self.budget_bytes:
            return
        for ids in [ids for ids in self._states if state.ids[: len(ids)] == ids]:
            self._drop(ids)
        self._states[state.ids] = state
        self.used_bytes += state.size
        while self.used_bytes > self.budget_bytes:
            self._drop(next(iter(self._states)))

    def best(self, ids: Sequence[int]) -> tuple[State | None, int]:
        """The state sharing the longest prefix with ``ids``, and how many tokens it shares;
        the state counts as used."""
        found, length = None, 0
        for state in self._states.values():
            n = common_prefix(state.ids, ids)
            if n > length:
                found, length = state, n
        if found is not None:
            self._states.move_to_end(found.ids)
        return found, length

    def clear(self) -> None:
        self._states.clear()
        self.used_bytes = 0

    def _drop(self, ids: tuple[int, ...]) -> None:
        self.used_bytes -= self._states.pop(ids).size
