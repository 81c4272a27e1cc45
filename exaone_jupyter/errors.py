"""The one exception type a user ever sees.

Every failure a user can cause (a bad path, a truncated file, a typo in an option, no network) is
raised as an :class:`ExaoneError` whose message is one sentence that says what to do. The UI layer
shows that sentence and nothing else; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ExaoneError(Exception):
    """A failure the user can fix; ``str(err)`` is one sentence that says how."""


class ModelBusyError(ExaoneError):
    """Another generation holds the model (the panel's worker, another cell, a map)."""

    def __init__(
        self,
        message: str = "The model is busy with another reply; wait for it to finish or press Stop.",
    ) -> None:
        super().__init__(message)


class PromptTooLong(ExaoneError):
    """Even the system prompt and the question alone take more than a prompt may: ``need``
    tokens (the caller words the advice: what left the prompt too little room)."""

    def __init__(self, message: str, need: int) -> None:
        super().__init__(message)
        self.need = need
