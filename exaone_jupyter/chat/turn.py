"""A turn: one question made ready to send, its prompt fitted to the context budget.

The prompt is rendered and tokenized once, by ``Conversation.fit``, which drops the oldest turns
that do not fit; the engine is fed exactly those ids. A server renders its own prompt, so for it
the turn carries the messages only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..engine.backend import Sampling, Tokenizer
from ..errors import ExaoneError, PromptTooLong
from .conversation import Conversation
from .template import ChatTemplate, Prompt


@dataclass
class Turn:
    """A question ready to send: the prompt, and what the UI should tell the user first."""

    question: str
    messages: list[dict]
    prompt: Prompt | None  # rendered and tokenized once; None for servers (their own template)
    sampling: Sampling
    think: bool
    remember: bool
    notes: list[str] = field(default_factory=list)
    cell: str | None = None  # the notebook cell it came from, and that cell's execution count
    run: int | None = None
    system: str | None = None  # the system prompt it was asked under
    new: bool = False  # it starts a fresh conversation (once its reply has said something)
    sets_system: bool = False  # its system prompt stays for later questions (-s)
    tools: list[dict] | None = None  # the tools' descriptions the template lists
    # What followed the question before the reply: the assistant's tool calls and the tools'
    # results, round by round (tools/loop.py); they join the exchange with the reply.
    steps: list[dict] = field(default_factory=list)
    ends_in_steps: bool = False  # the last reply is in the steps (its calls, answered)

    @property
    def template_kwargs(self) -> dict[str, Any]:
        return _variables(self.think, self.tools)


def _variables(think: bool, tools: list[dict] | None) -> dict[str, Any]:
    """What the template gets besides the messages, as Hugging Face's kwargs."""
    variables: dict[str, Any] = {"enable_thinking": True} if think else {}
    if tools:
        variables["tools"] = tools
    return variables


def build_turn(
    source: Conversation,
    question: str,
    sampling: Sampling,
    *,
    tokenizer: Tokenizer | None,
    template: ChatTemplate | None,
    n_ctx: int,
    think: bool = False,
    remember: bool = True,
    cell: str | None = None,
    run: int | None = None,
    adapt_max_tokens: bool = False,
    notes: list[str] | None = None,
    tools: list[dict] | None = None,
) -> Turn:
    """``question`` after the history in ``source``, fitted to an ``n_ctx``-token context.

    ``adapt_max_tokens``: when ``sampling.max_tokens`` is a default that would leave the prompt
    less than half the context, the reply gets what the prompt leaves (with a note) instead of a
    refusal; an explicit max_tokens is kept, or refused in one sentence.
    """
    notes = list(notes or [])
    current = {"role": "user", "content": question}
    where: dict[str, Any] = {"cell": cell, "run": run, "system": source.system, "tools": tools}
    if tokenizer is None or template is None:  # a server renders its own prompt
        messages = source.to_messages(current)
        return Turn(question, messages, None, sampling, think, remember, notes, **where)

    variables = _variables(think, tools)

    def measure(messages: list[dict]) -> Prompt:
        return template.prompt(messages, tokenizer, **variables)

    wanted = sampling.max_tokens
    if adapt_max_tokens and wanted > n_ctx // 2:
        # The default reply length would crowd out the prompt: keep half the context for the
        # history when it can, then let the reply have whatever the prompt leaves.
        try:
            fitted = source.fit(current, measure, n_ctx - n_ctx // 2)
        except PromptTooLong:
            try:
                fitted = source.fit(current, measure, n_ctx - 1)
            except PromptTooLong as err:  # no max_tokens was asked for: it is not the reason
                what = "This message and the system prompt" if source.system else "This message"
                raise ExaoneError(
                    f"{what} alone take {err.need} tokens of the {n_ctx}-token context, which "
                    "leaves no room for a reply; shorten it, or load the model with a larger "
                    "n_ctx."
                ) from None
        room = n_ctx - len(fitted.prompt)
        if room < wanted:
            sampling = replace(sampling, max_tokens=room)
            notes.append(
                f"The reply may use {room} tokens, what the {n_ctx}-token context leaves after "
                f"the prompt (max_tokens is {wanted}); set -n to choose."
            )
    else:
        if n_ctx - wanted < 1:
            raise ExaoneError(
                f"max_tokens={wanted} leaves no room for the prompt in the "
                f"{n_ctx}-token context; lower --max-tokens."
            )
        fitted = source.fit(current, measure, n_ctx - wanted)
    if fitted.dropped == 1:
        notes.append(
            f"The oldest turn no longer fits the {n_ctx}-token context and was left out of "
            "this prompt (the history keeps it)."
        )
    elif fitted.dropped:
        notes.append(
            f"The {fitted.dropped} oldest turns no longer fit the {n_ctx}-token context and "
            "were left out of this prompt (the history keeps them)."
        )
    return Turn(question, fitted.messages, fitted.prompt, sampling, think, remember, notes, **where)
