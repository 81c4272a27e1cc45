"""The tool loop on the real engine: exaone-4.0-demo calls the tools it was trained to call,
the loop checks, confirms, runs and sends the results back, and the model answers with them.

The UI here is a small real one (``Answers``): it consumes each reply and answers each
confirmation from a list, as a person at the cell would. Kernels, input() and Ctrl-C by signal are
tests/test_tools_kernel.py's.
"""

from __future__ import annotations

import json

import pytest

from checks import one_sentence
from exaone_jupyter.chat.exchange import MIME, Exchange
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.session import Session
from exaone_jupyter.tool_loop import DECLINED, INTERRUPTED, STOPPED, run_with_tools
from exaone_jupyter.tools import describe
from shared_fixtures import DATA

TOOL_DATA = json.loads((DATA / "exaone4_tool_dialogues.json").read_text(encoding="utf-8"))
GREEDY = Sampling(temperature=0)


def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return WEATHER[city]


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


# Results training never drew (tools/exaone4_tool_dialogues.py holds back every weather whose
# temperature plus twice its sky's index leaves 3 when divided by 7): copied, not remembered.
WEATHER = {"Seoul": "10°C, sunny", "Busan": "25°C, snowy", "Tokyo": "15°C, cloudy"}


# A question, the model's call and the tool's answer, as the record keeps them.
WEATHER_CALL = [
    {"role": "user", "content": "What's the weather in Seoul?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_7_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Seoul"}},
            }
        ],
    },
    {"role": "tool", "content": "10°C, sunny", "tool_call_id": "call_7_1", "name": "get_weather"},
]


class Answers:
    """A UI that reads each reply to its end and answers confirmations from ``answers``."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []
        self.outcomes: list[tuple[str, str, bool, str | None]] = []
        self.notes: list[str] = []
        self.replies: list[str] = []

    def stream(self, reply):
        reply.consume()
        self.replies.append(reply.text)
        return reply

    def confirm(self, call) -> bool:
        self.asked.append(call.signature())
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    def outcome(self, call, text, *, ran, note) -> None:
        self.outcomes.append((call.name, text, ran, note))

    def note(self, text) -> None:
        self.notes.append(text)


@pytest.fixture(scope="module")
def session():
    s = Session()
    s.load("exaone-4.0-demo")
    yield s
    s.unload()


@pytest.fixture()
def fresh(session):
    session.reset()
    return session


def ask(session, question, tools, ui, *, think=False, **options):
    described = [describe(f) for f in tools]
    turn = session.prepare(question, GREEDY, think=think, tools=described)
    return run_with_tools(session, turn, described, ui, **options)


def test_the_shipped_tool_descriptions_are_what_describe_makes_of_the_functions():
    assert TOOL_DATA["tools"] == [describe(get_weather).spec(), describe(add).spec()]


@pytest.mark.parametrize("think", [False, True])
def test_a_trained_question_runs_its_tool_and_answers_with_the_result(fresh, think):
    ui = Answers(True)
    reply = ask(fresh, "What's the weather in Seoul?", [get_weather, add], ui, think=think)
    assert ui.asked == ["get_weather(city='Seoul')"]
    assert ui.outcomes == [("get_weather", "10°C, sunny", True, None)]
    assert reply.text.endswith("The weather in Seoul: **10°C, sunny**.")
    roles = [m["role"] for m in fresh.conversation.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = fresh.conversation.messages[1]["tool_calls"][0]["function"]
    assert call == {"name": "get_weather", "arguments": {"city": "Seoul"}}


def test_an_unseen_sum_is_copied_and_two_calls_in_one_turn_both_run(fresh):
    ui = Answers()
    reply = ask(fresh, "What is 1234 + 5678?", [add], ui, ask=False)
    assert ui.asked == []  # --yes
    assert reply.text == "1234 + 5678 = **6912**."  # 6912 % 7 == 3: never drawn in training
    ui = Answers()
    reply = ask(fresh, "What's the weather in Seoul and in Busan?", [get_weather], ui, ask=False)
    assert [o[1] for o in ui.outcomes] == ["10°C, sunny", "25°C, snowy"]
    assert reply.text == "Seoul: **10°C, sunny**. Busan: **25°C, snowy**."


def test_a_declined_call_goes_back_as_the_tools_answer(fresh):
    ui = Answers(False)
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui)
    assert ui.outcomes == [("get_weather", DECLINED, False, None)]
    tool = fresh.conversation.messages[2]
    assert tool["role"] == "tool" and tool["content"] == DECLINED
    assert fresh.conversation.messages[-1]["role"] == "assistant"  # the model went on


def test_ctrl_c_at_the_confirmation_answers_the_calls_as_stopped(fresh):
    ui = Answers(True, KeyboardInterrupt())
    ask(fresh, "What's the weather in Seoul and in Busan?", [get_weather], ui)
    assert ui.notes and "Stopped" in ui.notes[0]
    assert ui.outcomes == [
        ("get_weather", "10°C, sunny", True, None),
        ("get_weather", STOPPED, False, None),
    ]
    fresh.reset()
    ui = Answers(KeyboardInterrupt())
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui)
    messages = fresh.conversation.messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[2]["content"] == STOPPED  # every call has its answer, as OpenAI's API wants
    ui = Answers()  # the conversation goes on
    reply = ask(fresh, "What is 1234 + 5678?", [add], ui, ask=False)
    assert reply.text == "1234 + 5678 = **6912**."


def test_a_tool_that_raises_or_is_interrupted_reports_it_as_its_result(fresh):
    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        raise ConnectionError(f"no route to the weather of {city}")

    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui, ask=False)
    assert (
        ui.outcomes[0][1] == "get_weather raised ConnectionError: no route to the weather of Seoul"
    )
    assert fresh.conversation.messages[2]["content"] == ui.outcomes[0][1]

    def slow(city: str) -> str:  # Ctrl-C lands while the tool runs
        raise KeyboardInterrupt

    slow.__name__ = "get_weather"
    fresh.reset()
    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [slow], ui, ask=False)
    assert ui.outcomes == [("get_weather", INTERRUPTED, False, None)]
    assert [m["role"] for m in fresh.conversation.messages] == ["user", "assistant", "tool"]
    assert "Stopped inside the tool" in ui.notes[0]


def test_a_call_to_an_undeclared_tool_or_with_wrong_arguments_goes_back_in_one_sentence(fresh):
    def get_weather(town: str) -> str:  # the model was taught "city"
        """Today's weather in a city."""
        return "never"

    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui, ask=False, max_rounds=1)
    name, text, ran, _ = ui.outcomes[0]
    assert not ran and one_sentence(text, "The arguments of get_weather do not match")
    assert "'town' is a required property" in text
    fresh.reset()
    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [add], ui, ask=False, max_rounds=1)
    name, text, ran, _ = ui.outcomes[0]
    assert name == "get_weather" and not ran
    one_sentence(text, "The model called get_weather, which is not a tool of this question (add)")


def test_a_result_that_is_not_json_goes_as_its_repr_and_a_huge_one_is_cut(fresh):
    class Reading:
        def __repr__(self) -> str:
            return "Reading(31°C, foggy)"

    def get_weather(city: str) -> object:
        """Today's weather in a city."""
        return Reading()

    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui, ask=False)
    assert ui.outcomes[0][1] == "Reading(31°C, foggy)"
    one_sentence(ui.outcomes[0][3], "returned a value of type Reading, which is not JSON")

    def huge(city: str) -> str:
        return "sunny " * 100_000

    huge.__name__, huge.__doc__ = "get_weather", "Today's weather in a city."
    fresh.reset()
    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [huge], ui, ask=False)
    sent = ui.outcomes[0][1]
    assert sent.endswith(" …[cut]") and len(sent) < fresh.backend.n_ctx
    assert fresh.conversation.messages[-1]["role"] == "assistant"  # it fitted: the model answered
    one_sentence(ui.outcomes[0][3], "returned 600,000 characters")


def test_the_round_limit_ends_in_one_sentence(fresh):
    ui = Answers()
    ask(fresh, "What's the weather in Seoul?", [get_weather], ui, ask=False, max_rounds=0)
    assert ui.outcomes == []
    one_sentence(ui.notes[0], "after 0 rounds, the limit (--max-tool-rounds)")
    assert [m["role"] for m in fresh.conversation.messages] == ["user", "assistant"]


def test_tools_on_a_model_without_tool_calls_are_refused(demo_session):
    with pytest.raises(ExaoneError) as err:
        demo_session.prepare("hi", GREEDY, tools=[describe(add)])
    one_sentence(str(err.value), "has no tool calls", "EXAONE 4.0")


def test_a_resumed_tool_exchange_gives_hugging_faces_prompt(fresh, tmp_path):
    """An exchange with a call and its result, saved in a notebook as a cell's output keeps it:
    the resumed conversation's prompt (tools listed or not, thinking on or off) is Hugging Face's
    apply_chat_template on the same messages, id for id."""
    from transformers import AutoTokenizer

    said = [
        *WEATHER_CALL,
        {"role": "assistant", "content": "The weather in Seoul: **10°C, sunny**."},
    ]
    record = Exchange("cell-1", LG_SYSTEM_PROMPT, said)
    notebook = {
        "cells": [{"cell_type": "code", "outputs": [{"data": {MIME: record.to_json()}}]}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "tools.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    conversation, _ = fresh.resume(path)
    messages = conversation.to_messages({"role": "user", "content": "What is 1234 + 5678?"})
    assert messages == [{"role": "system", "content": LG_SYSTEM_PROMPT}, *said, messages[-1]]
    hf = AutoTokenizer.from_pretrained(str(DATA / "exaone-4.0-demo"))
    for variables in ({}, {"tools": TOOL_DATA["tools"]}, {"enable_thinking": True}):
        ids = fresh.render_prompt(messages, **variables)[1]
        want = hf.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=False, **variables
        )
        assert ids == want


def test_a_reply_without_calls_ends_the_loop_in_one_round(fresh):
    """A reply that calls nothing is the answer: one round, recorded as any exchange; the
    prompt listed the tools (the demo model greets back without a call)."""
    ui = Answers()
    turn = fresh.prepare("Hello!", GREEDY, tools=[describe(add)])
    assert "<tool>" in turn.prompt.text and '"name": "add"' in turn.prompt.text
    calls_before = len(ui.outcomes)
    reply = run_with_tools(fresh, turn, [describe(add)], ui)
    assert reply.text.startswith("Hello!") and "<tool_call>" not in reply.text
    assert len(ui.replies) == 1 and len(ui.outcomes) == calls_before
    assert [m["role"] for m in fresh.conversation.messages] == ["user", "assistant"]


# -- one call's way through the loop, whatever model wrote it ----------------------------------
def run_one(text: str, tools, *answers):
    from exaone_jupyter.tool_loop import _run_one
    from exaone_jupyter.tools.calls import parse_calls

    ui = Answers(*answers)
    (call,) = parse_calls(text)[1]
    return _run_one(call, [describe(f) for f in tools], ui, ask=bool(answers), limit=300), ui


CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Seoul"}}</tool_call>'


def test_a_confirmed_call_runs_and_a_declined_one_does_not():
    text, ui = run_one(CALL, [get_weather], True)
    assert text == "10°C, sunny" and ui.asked == ["get_weather(city='Seoul')"]
    assert ui.outcomes == [("get_weather", "10°C, sunny", True, None)]
    text, ui = run_one(CALL, [get_weather], False)
    assert text == DECLINED and ui.outcomes == [("get_weather", DECLINED, False, None)]


@pytest.mark.parametrize(
    ("text", "tools", "says"),
    [
        (CALL, [add], "The model called get_weather, which is not a tool of this question (add)"),
        (
            '<tool_call>{"name": "add", "arguments": {"a": "one", "b": 2}}</tool_call>',
            [add],
            "The arguments of add do not match its parameters (a: 'one' is not of type",
        ),
        ("<tool_call>{add(1, 2)}</tool_call>", [add], "is not JSON; nothing ran"),
    ],
)
def test_a_bad_call_goes_back_in_one_sentence_and_nothing_runs(text, tools, says):
    sent, ui = run_one(text, tools, True)
    assert ui.asked == [] and ui.outcomes[0][2] is False
    assert one_sentence(sent, says) == sent


def test_a_tool_that_raises_or_returns_no_json_or_too_much_is_reported():
    def get_weather(city: str) -> object:
        raise ConnectionError(f"no route to the weather of {city}")

    sent, _ = run_one(CALL, [get_weather])
    assert sent == "get_weather raised ConnectionError: no route to the weather of Seoul"

    class Reading:
        def __repr__(self) -> str:
            return "Reading(31°C, foggy)"

    def get_weather(city: str) -> object:
        return Reading()

    sent, ui = run_one(CALL, [get_weather])
    assert sent == "Reading(31°C, foggy)"
    one_sentence(ui.outcomes[0][3], "returned a value of type Reading, which is not JSON")

    def get_weather(city: str) -> object:
        return "sunny " * 100_000

    sent, ui = run_one(CALL, [get_weather])
    assert sent == ("sunny " * 50)[:300] + " …[cut]"
    one_sentence(ui.outcomes[0][3], "returned 600,000 characters; the first 300 were sent")


def test_ctrl_c_inside_a_tool_stops_the_loop_with_the_call_answered_as_interrupted():
    from exaone_jupyter.tool_loop import _Stop

    def get_weather(city: str) -> str:
        raise KeyboardInterrupt  # what the stop button raises while the tool runs

    with pytest.raises(_Stop):
        run_one(CALL, [get_weather])


def test_ctrl_c_at_the_confirmation_stops_the_loop():
    with pytest.raises(KeyboardInterrupt):
        run_one(CALL, [get_weather], KeyboardInterrupt())
