"""A token budget, and the rendered text that kept to it.

Tokens are counted with the loaded model's tokenizer where the engine is fed our token ids (a
local model). A server tokenizes on its side, so there the count is ``estimate_tokens``: one
token per three bytes of UTF-8. That is above what EXAONE's 102,400-token vocabulary takes for
English prose (about four characters a token) and about what it takes for Korean (a syllable is
three bytes); text full of digits may take more, so a server's budget is a close estimate, not
a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import ExaoneError

Counter = Callable[[str], int]
_LONGEST_TOKEN = 16  # characters: a text longer than this many per token of budget cannot fit


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` takes, without a tokenizer: a token per three UTF-8 bytes."""
    return -(-len(text.encode("utf-8")) // 3)


class BudgetTooSmall(ExaoneError):
    """Even the shortest rendering of a value (its one-line summary) is over its budget."""

    def __init__(self, need: int, budget: int) -> None:
        super().__init__(f"needs {need} tokens, over its budget of {budget}")
        self.need, self.budget = need, budget


@dataclass(frozen=True)
class Rendered:
    """A value as the model gets it; ``cut`` says what was left out to fit ("" when nothing)."""

    text: str
    cut: str = ""


@dataclass(frozen=True)
class Budget:
    """At most ``tokens`` tokens, counted by ``count``."""

    tokens: int
    count: Counter = estimate_tokens

    def fits(self, text: str) -> bool:
        return self.count(text) <= self.tokens

    def share(self, parts: int) -> Budget:
        """An equal share of this budget for each of ``parts`` values."""
        return Budget(max(1, self.tokens // max(1, parts)), self.count)

    def first_fitting(self, candidates: Iterable[tuple[str, str]]) -> Rendered:
        """The first ``(text, cut)`` candidate that fits: renderers offer their fullest text
        first and shorter ones after. BudgetTooSmall when none does (the last is the shortest)."""
        text = ""
        for text, cut in candidates:
            text = f"{text}\n[cut to fit: {cut}]" if cut else text  # the model is told too
            if self.fits(text):
                return Rendered(text, cut)
        raise BudgetTooSmall(self.count(text), self.tokens)

    def cut_text(self, text: str, what: str = "characters", *, end: bool = False) -> Rendered:
        """``text`` whole when it fits, else its longest beginning (``end``: its longest end, as
        for printed output) that fits, with a marker that says how much is shown (the search
        counts tokens, so it holds for any tokenizer)."""
        longest = self.tokens * _LONGEST_TOKEN
        if len(text) <= longest and self.fits(text):  # a megabyte is not tokenized to find out
            return Rendered(text)

        def marked(n: int) -> str:
            if end:
                return f"[cut to fit: the last {n:,} of {len(text):,} {what} shown] …{text[-n:]}"
            return f"{text[:n]}… [cut to fit: {n:,} of {len(text):,} {what} shown]"

        low, high = 0, min(len(text), longest)
        while low < high:
            middle = (low + high + 1) // 2
            if self.fits(marked(middle)):
                low = middle
            else:
                high = middle - 1
        if not self.fits(marked(low)):
            raise BudgetTooSmall(self.count(marked(0)), self.tokens)
        return Rendered(marked(low), f"{low:,} of {len(text):,} {what}")
