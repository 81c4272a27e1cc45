"""EXAONE's template families: the official chat templates and the defaults that go with them.

A GGUF normally carries its own template; these texts are the fallback for one that does not, and
the reference the tests compare against. Recognising the family tells the conversation which
default system prompt to use and how the model marks its reasoning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

LG_SYSTEM_PROMPT = "You are EXAONE model from LG AI Research, a helpful assistant."

# EXAONE 3.0 and 3.5 share this template (LG's EXAONE-Deep README, "as that of EXAONE 3.5").
EXAONE3_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '[|system|][|endofturn|]\\n' }}{% endif %}"
    "{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)

# EXAONE Deep (LG's README, llama-cli example): starts the answer with <thought> and strips
# earlier reasoning from the history.
EXAONE_DEEP_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '[|system|][|endofturn|]\\n' }}{% endif %}{% set content = message['content'] %}"
    "{% if '</thought>' in content %}{% set content = content.split('</thought>')[-1].lstrip('\\n') %}"
    "{% endif %}{{ '[|' + message['role'] + '|]' + content }}"
    "{% if not message['role'] == 'user' %}{{ '[|endofturn|]' }}{% endif %}"
    "{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n[|assistant|]<thought>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """What the rest of the package needs to know about one EXAONE generation."""

    name: str  # "exaone3", "exaone-deep", "exaone4"
    template: str
    default_system: str | None
    # The tags around reasoning text, or None when the family does not reason.
    reasoning_tags: tuple[str, str] | None


# EXAONE 4.0's chat_template.jinja as LG ships it (tools, <think> reasoning, {%- continue %}).
EXAONE4_TEMPLATE = (resources.files(__package__) / "templates" / "exaone4.jinja").read_text("utf-8")

EXAONE3 = Family("exaone3", EXAONE3_TEMPLATE, LG_SYSTEM_PROMPT, None)
# LG advises no system prompt for Deep; 4.0 works without one.
EXAONE_DEEP = Family("exaone-deep", EXAONE_DEEP_TEMPLATE, None, ("<thought>", "</thought>"))
EXAONE4 = Family("exaone4", EXAONE4_TEMPLATE, None, ("<think>", "</think>"))
FAMILIES = {f.name: f for f in (EXAONE3, EXAONE_DEEP, EXAONE4)}


def detect_family(template: str | None) -> Family | None:
    """The family whose markers a template uses, or None when it is not an EXAONE template."""
    if not template or "[|endofturn|]" not in template:
        return None
    if "<thought>" in template:
        return EXAONE_DEEP
    if "[|tool|]" in template or "enable_thinking" in template:
        return EXAONE4
    return EXAONE3


def family_of_architecture(architecture: str) -> str | None:
    """The family a GGUF's architecture names, where it names one (``exaone4``)."""
    return {"exaone4": "exaone4"}.get(architecture)


def family_of_model_name(name: str) -> Family | None:
    """The family a served model's name suggests ("LGAI-EXAONE/EXAONE-4.0-32B" -> EXAONE4)."""
    lowered = name.lower()
    if "exaone" not in lowered:
        return None
    if "deep" in lowered:
        return EXAONE_DEEP
    return EXAONE4 if re.search(r"exaone[-_ ]?4", lowered) else EXAONE3
