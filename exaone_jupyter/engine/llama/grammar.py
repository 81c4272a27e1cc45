"""A reply's JSON Schema as a llama.cpp grammar (GBNF): the local engine's structured output.

A request's ``response_format`` is OpenAI's shape, which a server reads as it is; llama.cpp needs
a grammar that lets the model write only JSON of the schema, made here with llama-cpp-python's
converter, corrected where it lets through what JSON forbids.
"""

from __future__ import annotations

import json
import re

from ...errors import ExaoneError


def grammar_of(response_format: dict) -> str:
    """The grammar for ``{"type": "json_schema", "json_schema": {"schema": ...}}``."""
    schema = response_format.get("json_schema", {}).get("schema")
    if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
        raise ExaoneError(
            "response_format must be {'type': 'json_schema', 'json_schema': {'schema': {...}}}; "
            "pass the schema in that shape."
        )
    try:
        return _json_schema_to_gbnf(schema)
    except Exception as err:
        lines = str(err).strip().splitlines()
        reason = (lines[0] if lines else type(err).__name__).rstrip(".")
        raise ExaoneError(
            f"llama.cpp cannot turn this JSON Schema into a grammar ({reason}); simplify the schema."
        ) from None


# A character inside a JSON string: llama-cpp-python's converter allows any but " and \, so a
# model could write a raw newline that no JSON parser accepts; JSON forbids U+0000-U+001F there
# (llama.cpp's own converter leaves out U+007F too).
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def _json_schema_to_gbnf(schema: dict) -> str:
    """llama-cpp-python's ``json_schema_to_gbnf``, with only the characters JSON allows inside a string."""
    from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

    class Converter(SchemaConverter):
        def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
            return super()._add_primitive(name, BuiltinRule(_JSON_CHAR) if name == "char" else rule)

        def _format_literal(self, literal: str) -> str:
            return _gbnf_literal(literal)

    converter = Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    copy = json.loads(json.dumps(schema))  # resolve_refs rewrites the $refs it follows
    converter.visit(converter.resolve_refs(copy, "stdin"), "")
    return converter.format_grammar()


# json.dumps' escapes: an escaped backslash, a surrogate pair, one code point
_JSON_ESCAPE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}"
)


def _gbnf_literal(text: str) -> str:
    r"""JSON text that ``json.dumps`` wrote (an enum value, a field name) as a GBNF literal that
    matches exactly it. llama-cpp-python's own leaves \ as it is, so a quote in a value broke
    the grammar and a backslash began a GBNF escape (the model had to write C:	emp, a tab). A
    non-ASCII character is itself, not its \uXXXX, so the model writes 이름 as it reads it."""

    def unescape(match: re.Match) -> str:
        char = json.loads(f'"{match.group(0)}"')
        keep = ord(char[0]) < 0x80 or 0xD800 <= ord(char[0]) <= 0xDFFF  # lone surrogate
        return match.group(0) if keep else char

    text = _JSON_ESCAPE.sub(unescape, text)
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\r", "\\r"), ("\n", "\\n")):
        text = text.replace(raw, escaped)
    return f'"{text}"'
