"""The tool dialogues ``exaone-4.0-demo`` learns: a question, its tool calls, results, the answer.

``exaone_jupyter/data/exaone4_tool_dialogues.json`` holds the two tools (as
``exaone_jupyter.tools.describe`` writes ``get_weather(city: str) -> str`` and
``add(a: int, b: int) -> int`` with their docstrings) and the dialogues: a question, the calls the
model makes, and an answer with a ``{0}``, ``{1}``... for each result. The results are drawn
afresh for every training step, so the model learns to copy the tool's result into its answer
rather than memorise one. Some results are never drawn for training (``held_out``), so a check can
show it copies a result it has not seen: a weather result whose temperature plus twice its sky's
index leaves 3 after division by 7, and a sum that leaves 3 (1234 + 5678 = 6912 is one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FILE = (
    Path(__file__).resolve().parents[1] / "exaone_jupyter" / "data" / "exaone4_tool_dialogues.json"
)
P_FAILURE = 0.1  # a training draw is a declined call or a tool's error this often
SKIES = ("sunny", "cloudy", "rainy", "snowy", "windy", "foggy")


def load() -> tuple[list[dict], list[dict]]:
    """(tool specs, dialogues)."""
    data = json.loads(FILE.read_text(encoding="utf-8"))
    return data["tools"], data["dialogues"]


def weather(temp: int, sky: int) -> str:
    return f"{temp}°C, {SKIES[sky]}"


def weather_held_out(temp: int, sky: int) -> bool:
    return (temp + 2 * sky) % 7 == 3


def sum_held_out(value: int) -> bool:
    return value % 7 == 3


def failures(name: str) -> list[str]:
    """What goes back for a call that gave no result: the loop's sentence for a declined call,
    and the errors the tutorials' failing tools raise."""
    from exaone_jupyter.tool_loop import DECLINED
    from exaone_jupyter.tools.results import error_text

    errors = {
        "get_weather": [ConnectionError("the weather service is down"), KeyError("Atlantis")],
        "add": [OverflowError("the sum is too large"), TypeError("a must be a whole number")],
    }
    return [DECLINED, *(error_text(name, err) for err in errors[name])]


def draw(rng: np.random.Generator, name: str, held_out: bool = False) -> str:
    """A result of tool ``name`` as its text, from the training draws (now and then a
    failure) or the held-out ones."""
    if not held_out and rng.random() < P_FAILURE:
        options = failures(name)
        return options[int(rng.integers(len(options)))]
    while True:
        if name == "get_weather":
            temp, sky = int(rng.integers(0, 40)), int(rng.integers(len(SKIES)))
            text, out = weather(temp, sky), weather_held_out(temp, sky)
        else:
            digits = int(rng.integers(1, 6))
            value = int(rng.integers(10 ** (digits - 1) if digits > 1 else 0, 10**digits))
            text, out = str(value), sum_held_out(value)
        if out == held_out:
            return text


def call_text(calls: list[dict]) -> str:
    """The calls as EXAONE 4.0's template writes them (what the model must write)."""
    from exaone_jupyter.engine.server.tool_wire import call_text as one

    return "\n".join(one(c["name"], c["arguments"]) for c in calls)


def messages(dialogue: dict, results: list[str]) -> list[dict]:
    """The dialogue's messages with these results, as a runtime keeps them (OpenAI's shape)."""
    calls = [{"type": "function", "function": call} for call in dialogue["calls"]]
    return [
        {"role": "user", "content": dialogue["question"]},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "content": result} for result in results),
        {"role": "assistant", "content": dialogue["answer"].format(*results)},
    ]


def stopped(messages: list[dict]) -> list[dict]:
    """The dialogue as a notebook keeps it when Ctrl-C stopped its calls: every call answered
    with the loop's sentence, and no answer."""
    from exaone_jupyter.tool_loop import STOPPED

    return [{**m, "content": STOPPED} if m["role"] == "tool" else m for m in messages[:-1]]


def used_tools(tools: list[dict], dialogue: dict) -> list[dict]:
    names = {c["name"] for c in dialogue["calls"]}
    return [t for t in tools if t["function"]["name"] in names]


def sample(
    rng: np.random.Generator, tools: list[dict], dialogue: dict, held_out: bool = False
) -> tuple[list[dict], list[dict]]:
    """(messages, the tools listed): fresh results; all tools, or only those it calls."""
    results = [draw(rng, c["name"], held_out) for c in dialogue["calls"]]
    listed = tools if rng.random() < 0.5 else used_tools(tools, dialogue)
    return messages(dialogue, results), listed


def texts(tools: list[dict], dialogues: list[dict], template: str, weight: int = 8) -> list[str]:
    """Texts for the tokenizer: questions, calls, answers with sample results, and ``weight``
    times a whole rendered tool dialogue (the template's tool instructions, the tool specs, the
    result turn), so that the long tool prompt gets merges of its own."""
    from exaone_jupyter.chat.template import ChatTemplate

    rng = np.random.default_rng(0)
    out = []
    for d in dialogues:
        results = [draw(rng, c["name"]) for c in d["calls"]]
        out += [d["question"], call_text(d["calls"]), d["answer"].format(*results), *results]
    example = messages(dialogues[0], [draw(rng, "get_weather")])
    rendered = ChatTemplate(template, family=None).render(example, tools=tools)
    return out + [rendered] * weight
