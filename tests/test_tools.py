"""Tools: a function's description, the check of a call's arguments, the calls a model writes,
what a result becomes. Plain Python, no model."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import pytest
from pydantic import BaseModel, Field

from checks import one_sentence
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.tools import describe, describe_all


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str = "KR"


def get_weather(
    city: Annotated[str, Field(description="the city's name")],
    unit: Unit = Unit.CELSIUS,
    days: Optional[int] = None,  # noqa: UP045 (the Optional spelling is what is tested)
) -> str:
    """The weather in a city today."""
    return f"{city} {unit.value} {days}"


def test_a_function_is_described_from_its_signature_hints_and_docstring():
    spec = describe(get_weather).spec()
    assert spec["type"] == "function"
    function = spec["function"]
    assert function["name"] == "get_weather"
    assert function["description"] == "The weather in a city today."
    parameters = function["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["city"]
    properties = parameters["properties"]
    assert properties["city"] == {"type": "string", "description": "the city's name"}
    assert properties["unit"]["default"] == "celsius"
    assert parameters["$defs"]["Unit"]["enum"] == ["celsius", "fahrenheit"]
    assert properties["days"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}


def test_running_converts_json_values_to_the_hinted_types():
    tool = describe(get_weather)
    assert tool.run(tool.check({"city": "Seoul", "unit": "fahrenheit"})) == "Seoul fahrenheit None"

    def where(place: Place) -> str:
        return f"{place.city}/{place.country}"

    tool = describe(where)
    assert tool.run(tool.check({"place": {"city": "Busan"}})) == "Busan/KR"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({}, "'city' is a required property"),
        ({"city": 3}, "city: 3 is not of type 'string'"),
        ({"city": "Seoul", "unit": "kelvin"}, "unit: 'kelvin' is not one of"),
        ({"city": "Seoul", "town": "x"}, "('town' was unexpected)"),
        ({"town": "x"}, "('town' was unexpected); 'city' is a required property"),
    ],
)
def test_arguments_that_do_not_match_get_one_sentence(arguments, says):
    with pytest.raises(ExaoneError) as err:
        describe(get_weather).check(arguments)
    text = str(err.value)
    assert text.startswith("The arguments of get_weather do not match its parameters (")
    assert says in text and text.endswith("the tool did not run.")


def test_arguments_that_are_not_an_object_get_one_sentence():
    with pytest.raises(ExaoneError, match=r"must be a JSON object of named values, not list"):
        describe(get_weather).check(["Seoul"])


class Opaque:
    pass


def takes_opaque(city: str, thing: Opaque) -> None:
    pass


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (takes_opaque, "no JSON Schema for the type of its parameter thing;"),
        (len, "len's parameter obj cannot be given by name"),
        (lambda *cities: None, "parameter cities cannot be given by name"),
        (42, "42 is not a function (it is an int)"),
        (Opaque, "is not a function (it is the class Opaque)"),
    ],
)
def test_what_cannot_be_a_tool_gets_one_sentence_naming_why(value, says):
    with pytest.raises(ExaoneError) as err:
        describe(value, None if callable(value) else "42")
    assert says in str(err.value)
    assert str(err.value).count(". ") == 0  # one sentence


def test_a_lambda_takes_the_notebooks_name_and_a_name_twice_is_refused():
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    tools = describe_all([("plus", lambda a, b: a + b), ("add", add)])
    assert [t.name for t in tools] == ["plus", "add"]
    assert tools[0].parameters["required"] == ["a", "b"]
    with pytest.raises(ExaoneError, match="listed twice"):
        describe_all([("add", add), ("add", add)])


# -- the calls a model writes, the results it reads, the record --------------------------------
def test_calls_are_read_from_the_text_a_model_writes():
    from exaone_jupyter.tools.calls import parse_calls

    rest, calls = parse_calls(
        'Let me check.\n<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": "{\\"a\\": 3}"}</tool_call>'
        "<tool_call>{broken</tool_call>"
        '<tool_call>{"name": "add", "arguments": "{3"}</tool_call>'
        '<tool_call>{"arguments": {}}'  # still being written: a call already
    )
    assert rest == "Let me check."
    assert [(c.name, c.arguments, c.error) for c in calls[:2]] == [
        ("add", {"a": 1, "b": 2}, None),
        ("add", {"a": 3}, None),
    ]
    assert calls[0].signature() == "add(a=1, b=2)" and calls[0].id == "call_1"
    assert calls[2].error == "The tool call '{broken' is not JSON; nothing ran."
    assert calls[3].error == "The arguments of add are not JSON ('{3'); the tool did not run."
    assert calls[4].error == "The tool call '{\"arguments\": {}}' names no tool; nothing ran."


def test_results_go_as_text_json_or_repr_and_are_cut_to_the_limit():
    from exaone_jupyter.tools.results import error_text, result_text

    assert result_text("f", "23°C, sunny", 100).text == "23°C, sunny"
    assert result_text("f", 6912, 100).text == "6912"
    assert result_text("f", {"temp": 23, "unit": Unit.CELSIUS}, 100).text == (
        '{"temp":23,"unit":"celsius"}'
    )
    opaque = result_text("f", Opaque(), 100)
    assert opaque.text.startswith("<") and opaque.note == (
        "f returned a value of type Opaque, which is not JSON-serialisable, so its repr was sent."
    )
    cut = result_text("f", "x" * 1000, 100)
    assert cut.text == "x" * 100 + " …[cut]"
    assert cut.note == (
        "f returned 1,000 characters; the first 100 were sent (the context has room for no more)."
    )
    assert error_text("f", ValueError("no\nsuch city")) == "f raised ValueError: no such city"


def test_tool_calls_show_folded_under_the_answer():
    from exaone_jupyter.ui.render import reply_markdown

    text = 'Checking.\n<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
    assert reply_markdown(text) == (
        "Checking.\n\n<details><summary>tool call</summary>\n\n"
        '```json\n{"name": "add", "arguments": {"a": 1}}\n```\n\n</details>'
    )


def test_the_record_keeps_tool_calls_and_refuses_damaged_ones():
    from exaone_jupyter.chat.exchange import Exchange

    messages = [
        {"role": "user", "content": "What is 1 + 2?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {}}}
            ],
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1", "name": "add"},
        {"role": "assistant", "content": "1 + 2 = **3**."},
    ]
    saved = Exchange("cell-1", None, messages).to_json()
    assert Exchange.from_json(saved, "Cell 1").messages == messages
    saved["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{}"
    with pytest.raises(ExaoneError, match="holds a damaged exchange"):
        Exchange.from_json(saved, "Cell 1")


def test_ask_with_tools_refuses_a_misspelled_option_before_anything_runs():
    from exaone_jupyter import ask_with_tools

    with pytest.raises(ExaoneError) as err:
        ask_with_tools("What's the weather in Seoul?", [get_weather], temprature=0)
    assert one_sentence(str(err.value), "Unknown sampling option 'temprature'")


def test_ask_with_tools_names_what_is_not_a_function_by_its_place():
    from exaone_jupyter import ask_with_tools

    with pytest.raises(ExaoneError) as err:
        ask_with_tools("What's the weather in Seoul?", [get_weather, 42])
    said = one_sentence(str(err.value), "tools[1] is not a function (it is an int)")
    assert "--tools" not in said  # a Python caller wrote no magic option
