"""``{name}`` interpolation of a %%exaone cell: names only, nothing evaluated, the rest verbatim."""

from __future__ import annotations

import pytest

from exaone_jupyter.ui.interpolate import interpolate

NS = {"topic": "Seoul", "n": 3, "x": 21, "a": "A", "이름": "민수", "_private": "p", "items": [1, 2]}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Tell me about {topic}.", "Tell me about Seoul."),
        ("{n} facts about {topic}", "3 facts about Seoul"),  # str() of any value
        ("{topic}{topic}", "SeoulSeoul"),
        ("{이름} 님에 대해", "민수 님에 대해"),  # Python identifiers are Unicode
        ("{_private}", "p"),
        ("{items}", "[1, 2]"),
        ("line one\n{topic}\nline three", "line one\nSeoul\nline three"),
    ],
)
def test_names_from_the_namespace_are_replaced(text, expected):
    assert interpolate(text, NS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Who is {nobody}?",  # unknown name: left as written
        "{Topic}",  # names are case-sensitive
        "{ topic }",  # spaces: not a name
        "{1abc}",  # not an identifier
        "{}",  # empty braces
        "{",
        "}",
        "{topic",
        "topic}",
    ],
)
def test_anything_else_is_left_as_written(text):
    assert interpolate(text, NS) == text


@pytest.mark.parametrize(
    "text",
    [
        "{a.b}",
        "{a.upper()}",
        "{x*2}",
        "{x + 1}",
        "{items[0]}",
        "{x!r}",
        "{x:>5}",
        "{__import__('os').system('true')}",
        "{NS}",
        "{print(1)}",
    ],
)
def test_nothing_is_evaluated(text):
    class Watch(dict):  # any lookup other than a plain name would show up here
        def __getitem__(self, key):
            assert key.isidentifier(), key
            return super().__getitem__(key)

    assert interpolate(text, Watch(NS)) == text


def test_double_braces_write_a_literal_name():
    assert interpolate("{{topic}}", NS) == "{topic}"
    assert interpolate("{{nobody}}", NS) == "{nobody}"
    assert interpolate("Write {{topic}} for {topic}", NS) == "Write {topic} for Seoul"


@pytest.mark.parametrize(
    "text",
    [
        "set() is not {{}}",
        "{{ topic }}",
        "Hello {{ user.name }}!",  # Jinja-style text
        "}}",
        "{{",
        "{{{{",
    ],
)
def test_other_double_braces_are_text(text):
    assert interpolate(text, NS) == text


def test_dollars_are_untouched():
    # IPython's var_expand would turn "$5" into "5" and "$topic" into "Seoul".
    for text in ("It costs $5.", "$topic", "$$", "${topic}"):
        expected = text.replace("{topic}", "Seoul")
        assert interpolate(text, NS) == expected


def test_json_and_code_braces_are_untouched():
    json_text = '{"name": "EXAONE", "sizes": [2.4, 7.8, 32], "nested": {"a": 1}}'
    assert interpolate(json_text, NS) == json_text
    code = "def f(d):\n    return {k: v for k, v in d.items()}\n"
    assert interpolate(code, NS) == code
    # a stray brace elsewhere does not stop the names that are there (var_expand gives up)
    assert interpolate('Parse {"a": 1} about {topic}', NS) == 'Parse {"a": 1} about Seoul'


def test_values_are_inserted_once_not_expanded_again():
    ns = {"outer": "{inner}", "inner": "NO"}
    assert interpolate("{outer}", ns) == "{inner}"
    assert interpolate("{outer}", {"outer": "{{"}) == "{{"


def test_empty_text_and_empty_namespace():
    assert interpolate("", NS) == ""
    assert interpolate("{topic}", {}) == "{topic}"
