"""One sequence's generation: the token loop that a single reply and every row of a batch share.

After each ``llama_decode`` a sequence has logits at some output ``i`` of the batch.
``Generation.advance(i)`` picks the next token with the sequence's sampler, ends the sequence at
an end of turn or at max_tokens, turns the token into text through an incremental UTF-8 decoder
(constant work a token: a Korean syllable split over byte tokens comes out whole) and counts.
Where the sequence's next token is decoded (the conversation's context, or a row's slot in a
batch) is the caller's business.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Protocol

Pick = Callable[[int], int]  # the token picked from output i of the last decode, accepted


class Vocabulary(Protocol):
    """What a generation needs of the model: which tokens end a turn, and each token's bytes."""

    def ends_turn(self, token: int) -> bool: ...

    def piece(self, token: int) -> bytes: ...


class Generation:
    """The state of one sequence's reply: its picker, stop rules, text decoder and counters.

    ``finish_reason`` is None while it runs, then ``stop`` (end of turn), ``length`` (max_tokens,
    or the caller's full context) or ``interrupted``. ``release`` frees the picker's resources
    (a llama.cpp chain) once, when the generation finishes.
    """

    def __init__(
        self,
        pick: Pick,
        vocabulary: Vocabulary,
        *,
        max_tokens: int,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._pick = pick
        self._vocabulary = vocabulary
        self._release = release
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.max_tokens = max_tokens
        self.completion_tokens = 0
        self.last_token: int | None = None  # the token to decode next, while not finished
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def advance(self, output: int) -> str:
        """Pick the token after ``output`` of the last decode; the text it completes ("" while a
        character is incomplete). At an end of turn or max_tokens the generation finishes, and
        the text includes what the decoder held back."""
        token = self._pick(output)
        if self._vocabulary.ends_turn(token):
            return self.finish("stop")
        self.completion_tokens += 1
        self.last_token = token
        text = self._utf8.decode(self._vocabulary.piece(token))
        if self.completion_tokens >= self.max_tokens:
            text += self.finish("length")
        return text

    def finish(self, reason: str) -> str:
        """End the generation (the first reason given stays); the text the decoder held back (a
        character cut in half becomes one replacement character)."""
        if self.finish_reason is not None:
            return ""
        self.finish_reason = reason
        release, self._release = self._release, None
        if release is not None:
            release()
        return self._utf8.decode(b"", final=True)
