"""Messages -> the exact prompt text and token ids the model's authors intended.

The template is the GGUF's own ``tokenizer.chat_template``, rendered by jinja2 in a sandbox set up
as Hugging Face sets it up. Tokenization is injection-safe: a control token (``[|user|]``,
``[|endofturn|]``...) can only come from the template, never from what a user typed.

How: every control-token string inside message content is swapped for a private placeholder
before rendering, so the control strings left in the rendered text are the template's own. The
text is split at them (as llama.cpp splits at special tokens when ``special=True``), each piece
is tokenized, and the placeholders go back into their pieces as plain text. When no content
holds a marker string, the ids equal tokenizing the whole prompt with ``special=True``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

from ..errors import ExaoneError
from .families import EXAONE3, FAMILIES, Family, detect_family

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


class Tokenizer(Protocol):
    """The part of an engine the template needs (LocalBackend provides it)."""

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...

    def control_token_texts(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: the text a person can read and the ids the engine is fed."""

    text: str
    ids: list[int]


def _environment():
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        # Hugging Face's filter: unlike jinja2's own, it takes ensure_ascii and keeps Hangul as is.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class ChatTemplate:
    """One model's chat template, compiled once."""

    def __init__(self, source: str, *, family: Family | None, bos_token: str = "",
                 eos_token: str = "", notice: str | None = None) -> None:
        import jinja2

        self.source = source
        self.family = family
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.notice = notice  # shown once at load, e.g. when the GGUF had no template
        try:
            self._compiled = _environment().from_string(source)
        except jinja2.TemplateError as err:
            raise ExaoneError(f"The model's chat template does not compile ({err}); load the "
                              "model with a corrected template.") from None

    @classmethod
    def for_model(cls, template: str | None, *, family_hint: str | None = None,
                  bos_token: str = "", eos_token: str = "", model_name: str = "the model"
                  ) -> "ChatTemplate":
        """The GGUF's own template, or its family's official one with a notice when it has none."""
        if template:
            return cls(template, family=detect_family(template), bos_token=bos_token,
                       eos_token=eos_token)
        family = FAMILIES.get(family_hint or "", EXAONE3)
        notice = (f"{model_name} carries no chat template, so the official {family.name} template "
                  "is used (llama-cpp-python would fall back to Llama-2's [INST] format).")
        return cls(family.template, family=family, bos_token=bos_token, eos_token=eos_token,
                   notice=notice)

    @property
    def default_system(self) -> str | None:
        return self.family.default_system if self.family else None

    # -- rendering ------------------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **variables: Any) -> str:
        """The prompt text, exactly as Hugging Face's ``apply_chat_template`` renders it."""
        import jinja2

        try:
            return self._compiled.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, **variables)
        except jinja2.TemplateError as err:
            raise ExaoneError(f"The chat template failed to render: {err}; check the messages "
                              "(roles user, assistant, system) or the template.") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
            raise ExaoneError(f"The chat template failed to render ({type(err).__name__}: "
                              f"{err}); check the messages or the template.") from None

    def prompt(self, messages: Sequence[Mapping[str, Any]], tokenizer: Tokenizer, *,
               add_generation_prompt: bool = True, **variables: Any) -> Prompt:
        """Text and ids; control tokens come only from the template, never from content."""
        markers = sorted(set(tokenizer.control_token_texts()), key=len, reverse=True)
        hidden: list[str] = []
        marker_re = re.compile("|".join(map(re.escape, markers))) if markers else None

        def hide(text: str) -> str:
            def swap(match: re.Match) -> str:
                hidden.append(match.group(0))
                return f"\ue000{len(hidden) - 1}\ue001"
            return marker_re.sub(swap, text) if marker_re else text

        safe = [{**m, "content": hide(m["content"])} if isinstance(m.get("content"), str) else m
                for m in messages]
        rendered = self.render(safe, add_generation_prompt=add_generation_prompt, **variables)
        reveal = lambda text: _PLACEHOLDER.sub(lambda m: hidden[int(m.group(1))], text)  # noqa: E731

        ids: list[int] = []
        pieces = marker_re.split(rendered) if marker_re else [rendered]
        found = marker_re.findall(rendered) if marker_re else []
        for i, piece in enumerate(pieces):
            ids.extend(_tokenize_piece(piece, hidden, tokenizer))
            if i < len(found):
                ids.extend(tokenizer.tokenize(found[i], special=True))
        return Prompt(reveal(rendered), ids)

    def split_reasoning(self, text: str, *, opened: bool = False) -> tuple[str, str]:
        """(reasoning, answer) of a reply; ``opened`` when the prompt itself opened the reasoning.

        While a reasoning reply streams, everything before the closing tag is reasoning.
        """
        tags = self.family.reasoning_tags if self.family else None
        if not tags:
            return "", text
        opening, closing = tags
        body = text[len(opening):] if text.lstrip().startswith(opening) else text
        if closing in body:
            reasoning, answer = body.split(closing, 1)
            return reasoning.strip(), answer.lstrip("\n")
        return (body.strip(), "") if opened else ("", text)


def _tokenize_piece(piece: str, hidden: list[str], tokenizer: Tokenizer) -> list[int]:
    """Tokens of text between template markers; placeholders come back as plain text."""
    if not piece:
        return []
    ids: list[int] = []
    parts = _PLACEHOLDER.split(piece)  # text, index, text, index, ...
    for i, part in enumerate(parts):
        if i % 2:
            ids.extend(tokenizer.tokenize(hidden[int(part)], special=False))
        elif part:
            ids.extend(tokenizer.tokenize(part, special=True))
    return ids
