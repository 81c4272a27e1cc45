"""What every engine offers the layers above: sampling settings in, a streaming Reply out.

The local llama.cpp engine and the remote OpenAI-compatible one both implement ``Backend``; the
session and the UI never know which one they talk to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, Sequence

from ..errors import ExaoneError
from .reply import Reply


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. Temperature 0 is greedy and reproducible; ``seed=None`` is random."""

    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0  # LG: EXAONE wants no repetition penalty above 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = (
            ("temperature", self.temperature, lambda v: v >= 0, "0 or more (0 is greedy)"),
            ("max_tokens", self.max_tokens, lambda v: v >= 1, "a whole number of 1 or more"),
            ("top_p", self.top_p, lambda v: 0 < v <= 1, "above 0 and at most 1"),
            ("top_k", self.top_k, lambda v: v >= 0, "0 (off) or more"),
            ("repeat_penalty", self.repeat_penalty, lambda v: v > 0, "above 0 (1.0 is off)"),
        )
        for name, value, ok, want in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or (isinstance(value, float) and math.isnan(value)) or not ok(value):
                raise ExaoneError(f"{name} must be {want}, not {value!r}.")
        if not isinstance(self.max_tokens, int):
            raise ExaoneError(f"max_tokens must be a whole number, not {self.max_tokens!r}.")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ExaoneError(f"seed must be a whole number of 0 or more, not {self.seed!r}.")

    @classmethod
    def from_options(cls, base: "Sampling | None" = None, **options: Any) -> "Sampling":
        """``base`` with the given options replaced; a misspelled option is an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ExaoneError(f"Unknown sampling option {unknown[0]!r}; the options are "
                              f"{', '.join(sorted(known))}.")
        given = {k: v for k, v in options.items() if v is not None}
        return replace(base or cls(), **given)


@dataclass(frozen=True)
class Request:
    """One generation: local engines read the exact token ids, servers the messages."""

    sampling: Sampling
    prompt_ids: Sequence[int] | None = None
    messages: Sequence[dict] | None = None
    template_kwargs: dict = field(default_factory=dict)  # e.g. {"enable_thinking": True}


class Backend(Protocol):
    """An engine that turns a request into a streaming Reply."""

    name: str  # shown in the meter: "llama.cpp", "server http://..."
    n_ctx: int
    renders_template: bool  # True when the engine is fed our token ids (local)

    def stream(self, request: Request) -> Reply: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
