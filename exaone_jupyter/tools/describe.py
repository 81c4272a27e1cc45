"""A Python function as a tool: the JSON description a model reads, and a check of its calls.

The description is OpenAI's (and Hugging Face's) shape, ``{"type": "function", "function":
{"name", "description", "parameters"}}``, the form EXAONE 4.0's template lists in its system
turn. The parameters are the JSON Schema pydantic makes of the signature and its type hints
(pydantic models, enums, defaults, ``Optional``, ``Annotated[..., Field(description=...)]``),
so nothing here maps types by hand. A call's arguments are checked against that schema with
``jsonschema`` before anyone is asked to run it; running converts them as pydantic does (a string
becomes the enum member, a dict the model instance).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ExaoneError


@dataclass(frozen=True)
class Tool:
    """One function a model may call: its name, its description, its checked parameters."""

    name: str
    function: Callable[..., Any] = field(repr=False, compare=False)
    description: str
    parameters: dict[str, Any]  # JSON Schema of an object: the arguments by name

    def spec(self) -> dict[str, Any]:
        """What the chat template (and a server's ``tools``) gets."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def check(self, arguments: object) -> dict[str, Any]:
        """The arguments when they fit the parameters, else ExaoneError (one sentence)."""
        import jsonschema

        if not isinstance(arguments, dict):
            raise ExaoneError(
                f"The arguments of {self.name} must be a JSON object of named values, not "
                f"{type(arguments).__name__}; the tool did not run."
            )
        errors = sorted(
            jsonschema.Draft202012Validator(self.parameters).iter_errors(arguments),
            key=jsonschema.exceptions.relevance,
            reverse=True,
        )
        if errors:  # all of them, most relevant first: a model fixes the call in one go
            what = "; ".join(_located(error) for error in errors)
            raise ExaoneError(
                f"The arguments of {self.name} do not match its parameters ({_short(what)}); "
                "the tool did not run."
            )
        return arguments

    def run(self, arguments: dict[str, Any]) -> Any:
        """Call the function; pydantic turns the JSON values into the hinted types first."""
        from pydantic import TypeAdapter

        return TypeAdapter(cast(Any, self.function)).validate_python(arguments)


def _located(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def describe(function: object, name: str | None = None) -> Tool:
    """``function`` as a Tool; ExaoneError naming what cannot be described (one sentence).

    ``name``: what the notebook calls it (a lambda's own name is ``<lambda>``).
    """
    label = name or getattr(function, "__name__", None) or repr(function)
    if not callable(function) or isinstance(function, type):
        raise ExaoneError(
            f"{label} is not a function (it is {_kind(function)}); a tool must be a function "
            "defined in the notebook."
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise ExaoneError(
            f"{label} has no signature Python can read (a built-in?); wrap it in a function "
            "with named, typed parameters."
        ) from None
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
            raise ExaoneError(
                f"{label}'s parameter {parameter.name} cannot be given by name, and a model "
                "passes arguments by name; make it a named parameter."
            )
    tool_name = label if label.isidentifier() else "tool"
    return Tool(
        name=tool_name,
        function=function,
        description=inspect.getdoc(function) or "",
        parameters=_parameters(function, label, signature),
    )


def describe_all(functions: Iterable[tuple[str, object]]) -> list[Tool]:
    """Tools for (name, function) pairs; the same name twice is refused."""
    tools: list[Tool] = []
    for name, function in functions:
        tool = describe(function, name)
        if any(t.name == tool.name for t in tools):
            raise ExaoneError(f"The tool {tool.name} is listed twice; list each tool once.")
        tools.append(tool)
    return tools


def _parameters(function: Callable[..., Any], label: str, signature: inspect.Signature) -> dict:
    """The JSON Schema of the arguments (pydantic's, without the titles it adds to each name)."""
    from pydantic import TypeAdapter
    from pydantic.json_schema import GenerateJsonSchema

    class NoTitles(GenerateJsonSchema):
        def field_title_should_be_set(self, schema) -> bool:
            return False

    try:
        schema = TypeAdapter(cast(Any, function)).json_schema(schema_generator=NoTitles)
    except Exception:
        bad = _undescribable_parameter(signature)
        what = f"the type of its parameter {bad}" if bad else "its parameters"
        raise ExaoneError(
            f"{label} cannot be described to the model: pydantic has no JSON Schema for {what}; "
            "use JSON-like types (str, int, float, bool, list, dict, enums, pydantic models)."
        ) from None
    schema.pop("title", None)
    return schema


def _undescribable_parameter(signature: inspect.Signature) -> str | None:
    """The first parameter whose type hint pydantic cannot describe."""
    from pydantic import TypeAdapter

    for parameter in signature.parameters.values():
        if parameter.annotation is inspect.Parameter.empty:
            continue
        try:
            TypeAdapter(parameter.annotation).json_schema()
        except Exception:
            return parameter.name
    return None


def _kind(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"
