"""Messages -> the exact prompt text and token ids the model's authors intended.

The template is the GGUF's own ``tokenizer.chat_template``, rendered by jinja2 in a sandbox set up
as Hugging Face sets it up. Tokenization is injection-safe: a control token (``[|user|]``,
``[|endofturn|]``...) can only come from the template, never from what a user typed.

How: every control-token string inside the messages (content, tool calls, tool definitions,
any string the template might print) is swapped for a private placeholder before rendering, so
the control strings left in the rendered text are the template's own. The text is split at them
(as llama.cpp splits at special tokens when ``special=True``) and each piece is tokenized: a
piece without placeholders with ``special=True``, exactly as tokenizing the whole prompt would;
a piece with placeholders gets its marker strings back and is tokenized with ``special=False``,
so they become plain text. When no message holds a marker string, the ids equal tokenizing the
whole prompt with ``special=True``.

The placeholders carry a random number chosen per call that occurs nowhere in the messages or
the template, so no text a user can type (not even the private-use characters they are made
of) can be taken for one.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..engine.backend import Tokenizer
from ..errors import ExaoneError
from .families import EXAONE3, FAMILIES, Family, detect_family

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: no tokenizer gives them meaning
# A template may print content through tojson(ensure_ascii=True), which escapes the private-use
# characters; both spellings come back as the marker text. One pattern for every call (the nonce
# is compared in the callback): a per-call pattern would fill ``re``'s 512-entry cache, two
# patterns per prompt, evicting the user's own.
_PLACEHOLDER = re.compile(r"(?:\ue000|\\ue000)(\d{12})\.(\d+)(?:\ue001|\\ue001)")


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: the text a person can read and the ids the engine is fed."""

    text: str
    ids: list[int]

    def __len__(self) -> int:
        """Its size in tokens: what the context budget counts."""
        return len(self.ids)


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTags(jinja2.ext.Extension):
        """Hugging Face's ``{% generation %}`` block (it marks assistant text for training);
        rendering keeps its body as is."""

        tags = {"generation"}  # noqa: RUF012 (jinja2 declares it a plain set)

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body)
            return call.set_lineno(lineno)

        @staticmethod
        def _body(caller):
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        # Hugging Face's filter: unlike jinja2's own, it takes ensure_ascii and keeps Hangul as is.
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTags, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _template_error(err: Exception) -> str:
    """One line naming what went wrong in a template (jinja2 may add the source line)."""
    import jinja2

    if isinstance(err, jinja2.TemplateSyntaxError):
        text = f"{err.message or 'syntax error'} at line {err.lineno}"
    elif isinstance(err, jinja2.TemplateError):
        text = err.message or type(err).__name__
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(str(text).split()).rstrip(".")


class ChatTemplate:
    """One model's chat template, compiled once; immutable (``with_special_tokens`` copies)."""

    def __init__(
        self,
        source: str,
        *,
        family: Family | None,
        bos_token: str = "",
        eos_token: str = "",
        notice: str | None = None,
        _compiled: Any = None,
    ) -> None:
        self.source = source
        self.family = family
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.notice = notice  # shown once at load, e.g. when the GGUF had no template
        if _compiled is not None:
            self._compiled = _compiled
            return
        try:
            self._compiled = _environment().from_string(source)
        except Exception as err:  # TemplateSyntaxError, and anything else the parser raises
            raise ExaoneError(
                f"The model's chat template does not compile "
                f"({_template_error(err)}); load the model with a corrected "
                "template."
            ) from None

    def with_special_tokens(self, bos_token: str, eos_token: str) -> ChatTemplate:
        """This template (compiled once) with the model's BOS and EOS texts, which are known only
        once llama.cpp has loaded the vocabulary; the template itself is checked before that."""
        return ChatTemplate(
            self.source,
            family=self.family,
            bos_token=bos_token,
            eos_token=eos_token,
            notice=self.notice,
            _compiled=self._compiled,
        )

    @classmethod
    def for_model(
        cls,
        template: str | None,
        *,
        family_hint: str | None = None,
        bos_token: str = "",
        eos_token: str = "",
        model_name: str = "the model",
        is_exaone: bool = True,
    ) -> ChatTemplate:
        """The GGUF's own template, or its family's official one with a notice when it has none.

        A model that is not EXAONE and has no template gets EXAONE 3's format only as a stand-in,
        without a family: nothing EXAONE's (LG's system prompt) is said to a model of another kind.
        """
        if template:
            return cls(
                template, family=detect_family(template), bos_token=bos_token, eos_token=eos_token
            )
        if not is_exaone:
            notice = (
                f"{model_name} is not an EXAONE model and carries no chat template, so its "
                f"prompt format is unknown and the {EXAONE3.name} template stands in; for "
                "replies in its own format, load a GGUF that carries its template."
            )
            return cls(
                EXAONE3.template,
                family=None,
                bos_token=bos_token,
                eos_token=eos_token,
                notice=notice,
            )
        family = FAMILIES.get(family_hint or "", EXAONE3)
        notice = (
            f"{model_name} carries no chat template, so the official {family.name} template "
            "is used (llama-cpp-python would fall back to Llama-2's [INST] format)."
        )
        return cls(
            family.template, family=family, bos_token=bos_token, eos_token=eos_token, notice=notice
        )

    @property
    def default_system(self) -> str | None:
        return self.family.default_system if self.family else None

    # -- rendering ------------------------------------------------------------------------------
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **variables: Any,
    ) -> str:
        """The prompt text, exactly as Hugging Face's ``apply_chat_template`` renders it.

        ``variables`` reach the template as Hugging Face's extra kwargs do (``enable_thinking``,
        ``tools``...); ``bos_token``/``eos_token`` among them override the model's own.
        ``tools`` and ``documents`` are ``None`` unless given, as Hugging Face always passes them
        (a template's ``tools is not none`` must branch as it does there).
        """
        context = {
            "tools": None,
            "documents": None,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **variables,
        }
        try:
            return self._compiled.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except Exception as err:  # raise_exception(), undefined names, errors inside the template
            raise ExaoneError(
                f"The chat template failed to render ({_template_error(err)}); check "
                "the messages (roles user, assistant, system, tool) or the template."
            ) from None

    def prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenizer: Tokenizer,
        *,
        add_generation_prompt: bool = True,
        **variables: Any,
    ) -> Prompt:
        """Text and ids; control tokens come only from the template, never from the messages."""
        markers = sorted(set(filter(None, tokenizer.control_token_texts())), key=len, reverse=True)
        if not markers:
            text = self.render(messages, add_generation_prompt=add_generation_prompt, **variables)
            return Prompt(text, tokenizer.tokenize(text, special=True) if text else [])
        masks = _Masks(markers, self.source, (list(messages), variables))
        rendered = self.render(
            masks.hide(list(messages)),
            add_generation_prompt=add_generation_prompt,
            **masks.hide(variables),
        )
        ids: list[int] = []
        pieces: list[str] = []
        for i, part in enumerate(masks.marker_re.split(rendered)):
            if i % 2:  # one of the template's own markers
                ids.extend(tokenizer.tokenize(part, special=True))
                pieces.append(part)
            elif part:
                plain = masks.reveal(part)
                # Marker strings from the messages are text; elsewhere parse as llama.cpp would.
                ids.extend(tokenizer.tokenize(plain, special=plain == part))
                pieces.append(plain)
        return Prompt("".join(pieces), ids)

    def split_reasoning(self, text: str, *, opened: bool = False) -> tuple[str, str]:
        """(reasoning, answer) of a reply; ``opened`` when the prompt itself opened the reasoning
        (EXAONE Deep always, EXAONE 4.0 with ``enable_thinking``).

        While a reasoning reply streams, everything before the closing tag is reasoning.
        """
        tags = self.family.reasoning_tags if self.family else None
        if not tags:
            return "", text
        opening, closing = tags
        body = text
        if text.lstrip().startswith(opening):  # the model opened it itself
            body, opened = text.lstrip()[len(opening) :], True
        if closing in body:
            reasoning, answer = body.split(closing, 1)
            return reasoning.strip(), answer.lstrip()
        return (body.strip(), "") if opened else ("", text)


class _Masks:
    """Swaps marker strings inside messages for placeholders, and back."""

    def __init__(self, markers: Sequence[str], template: str, inputs: Any) -> None:
        self.marker_re = re.compile("(" + "|".join(map(re.escape, markers)) + ")")
        seen = "\n".join(_strings(inputs)) + template
        while True:  # a number that occurs nowhere, so no input can forge a placeholder
            nonce = f"{secrets.randbelow(10**12):012d}"
            if nonce not in seen:
                break
        self._nonce = nonce
        self.hidden: list[str] = []

    def hide(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.marker_re.sub(self._swap, value)
        if isinstance(value, Mapping):
            return {self.hide(k): self.hide(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.hide(v) for v in value)
        return value

    def _swap(self, match: re.Match) -> str:
        self.hidden.append(match.group(0))
        return f"{_OPEN}{self._nonce}.{len(self.hidden) - 1}{_CLOSE}"

    def reveal(self, text: str) -> str:
        def back(match: re.Match) -> str:
            nonce, index = match.group(1), int(match.group(2))
            if nonce == self._nonce and index < len(self.hidden):
                return self.hidden[index]
            return match.group(0)

        return _PLACEHOLDER.sub(back, text)


def _strings(value: Any):
    """Every string inside nested dicts, lists and tuples (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
