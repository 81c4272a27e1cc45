"""Tools: a function's description, the check of a call's arguments, the calls a model writes,
what a result becomes. Plain Python, no model."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import pytest
from pydantic import BaseModel, Field

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
