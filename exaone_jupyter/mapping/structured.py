"""A schema for structured replies: a JSON Schema dict, a pydantic model class, or a field list.

The engine constrains the reply with its ``response_format`` (a server reads it; the local
engine turns it into a llama.cpp grammar, ``engine/llama/grammar.py``), and ``parse`` turns the
reply text into the value: a dict or list for a JSON Schema, a model instance for a pydantic
class. A reply that still does not parse
or validate raises ``ReplyParseError`` (one sentence), which ``map`` turns into that row's error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ExaoneError

# "name, age int, tags list" -> JSON Schema types
_SHORT_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
}
_FIELD = re.compile(r"^([^\W\d]\w*)(?:\s+(\w+))?$")


class ReplyParseError(ValueError):
    """A reply that is not the JSON the schema asks for; ``str()`` is one sentence."""


@dataclass(frozen=True)
class Schema:
    """The JSON Schema, and the pydantic class whose instances ``parse`` returns (if any)."""

    json_schema: dict
    model: Any = None  # a pydantic BaseModel subclass

    @classmethod
    def of(cls, schema: Any) -> Schema:
        """A Schema from a JSON Schema dict, a pydantic model class or a field list string."""
        if isinstance(schema, Schema):
            return schema
        if isinstance(schema, str):
            return cls(_shorthand(schema))
        if isinstance(schema, dict):
            _check_json_schema(schema)
            return cls(schema)
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            name = schema.__name__
            try:
                made = schema.model_json_schema()
            except Exception as err:
                raise ExaoneError(
                    f"The pydantic class {name} cannot become a JSON Schema "
                    f"({_first_line(err)}); use plain field types (str, int, float, bool, lists "
                    "and nested models)."
                ) from None
            return cls(made, model=schema)
        raise ExaoneError(
            f"schema must be a JSON Schema dict, a pydantic model class or a field list such as "
            f"'name, age int', not {type(schema).__name__}."
        )

    @property
    def key(self) -> str:
        """The schema as canonical JSON: part of a cached result's key."""
        return json.dumps(self.json_schema, sort_keys=True, ensure_ascii=False)

    def response_format(self) -> dict:
        """What an OpenAI-compatible server is sent to constrain the reply."""
        name = self.model.__name__ if self.model is not None else "row"
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": self.json_schema, "strict": True},
        }

    def parse(self, text: str) -> Any:
        """The reply as the schema's value; ``ReplyParseError`` when it is not."""
        try:
            value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
        except json.JSONDecodeError as err:
            raise ReplyParseError(
                f"the reply is not complete JSON ({err.msg.removesuffix(' at')}, character {err.pos})"
            ) from None
        except ValueError as err:
            raise ReplyParseError(f"the reply is not usable JSON ({err})") from None
        if self.model is not None:
            try:
                return self.model.model_validate(value)
            except Exception as err:
                raise ReplyParseError(
                    f"the reply does not fit {self.model.__name__} ({_first_line(err)})"
                ) from None
        problem = _validation_problem(self.json_schema, value)
        if problem:
            raise ReplyParseError(f"the reply does not fit the schema ({problem})")
        return value


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (``1e999``) would be ``inf``, which
    passes any minimum and fits no column."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def _no_constant(text: str) -> float:
    """``NaN`` and ``Infinity`` are not JSON, though Python's reader takes them."""
    raise ValueError(f"{text} is not a JSON number")


def _shorthand(text: str) -> dict:
    """'name, age int, ok bool' -> an object schema whose fields are all required."""
    properties: dict[str, dict] = {}
    for part in (p.strip() for p in text.split(",")):
        match = _FIELD.match(part)
        kind = (match.group(2) or "str").lower() if match else None
        if match is None or kind not in _SHORT_TYPES:
            raise ExaoneError(
                f"The field {part!r} in schema {text!r} is not 'name' or 'name TYPE' with TYPE one "
                f"of str, int, float, bool, list; write it like 'name, age int'."
            )
        json_type = _SHORT_TYPES[kind]
        field: dict = {"type": json_type}
        if json_type == "array":
            field["items"] = {"type": "string"}
        properties[match.group(1)] = field
    return {"type": "object", "properties": properties, "required": list(properties)}


def _check_json_schema(schema: dict) -> None:
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as err:
        where = "/".join(str(p) for p in err.path) or "the top level"
        raise ExaoneError(
            f"The schema is not valid JSON Schema ({_first_line(err.message)} at {where}); fix it."
        ) from None


def _validation_problem(schema: dict, value: Any) -> str | None:
    from jsonschema import validators

    error = next(iter(validators.validator_for(schema)(schema).iter_errors(value)), None)
    return None if error is None else _first_line(error.message)


def _first_line(err: object) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__).rstrip(".")
