"""A tokenizer that remembers: a conversation's past turns are tokenized once, not at every
question.

Every question renders the whole conversation and tokenizes it again, and ``Conversation.fit``
may measure it a few times more. The template's text comes in pieces (``ChatTemplate.prompt``
tokenizes what lies between two markers on its own, a message's text among them), so the pieces
of earlier turns repeat exactly and their ids can be reused. Measured on the demo model: a
resumed conversation holding a 4.5 MB message took 3.4 s of tokenizing for every later question;
with the memo, one tokenizing, then none.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ..engine.backend import Tokenizer

DEFAULT_BUDGET_CHARS = 64 * 2**20  # the texts remembered, least recently used forgotten first
MIN_CHARS = 256  # shorter pieces (markers, short questions) tokenize in microseconds


class TokenMemo:
    """``tokenizer`` with the ids of its longer texts remembered."""

    def __init__(self, tokenizer: Tokenizer, budget_chars: int = DEFAULT_BUDGET_CHARS) -> None:
        self.tokenizer = tokenizer
        self.budget_chars = budget_chars
        self._ids: OrderedDict[tuple[str, bool], list[int]] = OrderedDict()
        self._chars = 0
        self.tokenized_chars = 0  # what the tokenizer itself was given, for tests and benchmarks

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        if len(text) < MIN_CHARS:
            return self._tokenize(text, special)
        key = (text, special)
        ids = self._ids.get(key)
        if ids is None:
            ids = self._tokenize(text, special)
            self._remember(key, ids)
        else:
            self._ids.move_to_end(key)
        return list(ids)

    def control_token_texts(self) -> Sequence[str]:
        return self.tokenizer.control_token_texts()

    def _tokenize(self, text: str, special: bool) -> list[int]:
        self.tokenized_chars += len(text)
        return self.tokenizer.tokenize(text, special=special)

    def _remember(self, key: tuple[str, bool], ids: list[int]) -> None:
        if len(key[0]) > self.budget_chars:
            return
        self._ids[key] = ids
        self._chars += len(key[0])
        while self._chars > self.budget_chars:
            (text, _), _ = self._ids.popitem(last=False)
            self._chars -= len(text)
