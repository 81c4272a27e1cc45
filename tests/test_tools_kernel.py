"""``%%exaone --tools`` in a real kernel on exaone-4.0-demo: the call shown and confirmed through
the frontend's input box, run, its result folded in the cell and in the exchange the notebook
keeps; a frontend without input, Ctrl-C inside a tool, names that are not tools."""

from __future__ import annotations

import pytest

from checks import one_sentence
from kernel_helpers import exchange_of, start_kernel

pytestmark = pytest.mark.kernel

TOOLS = '''
import time
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return {"Seoul": "10°C, sunny", "Busan": "25°C, snowy"}[city]

def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b

def slow_weather(city: str) -> str:
    print("checking the sky...", flush=True)
    time.sleep(60)
    return "never"

not_a_function = 42
'''
SEOUL = "What's the weather in Seoul?"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = start_kernel(tmp_path_factory.mktemp("tools"), load_demo=False)
    try:
        assert k.run("%exaone load exaone-4.0-demo").ok
        assert k.run(TOOLS).ok
        yield k
    finally:
        k.shutdown()


def roles(cell) -> list[str]:
    return [m["role"] for m in exchange_of(cell)["messages"]]


CONFIRM = (
    "from exaone_jupyter.ui.tool_cell import CellToolUI\n"
    "from exaone_jupyter.tools.calls import parse_calls\n"
    'call = parse_calls(\'<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\')[1][0]\n'
    "print(CellToolUI(None).confirm(call))"
)


def test_the_cell_asks_in_the_input_box_and_without_one_says_to_use_yes(kernel):
    said_yes = kernel.run(CONFIRM, stdin=["y"])
    assert said_yes.prompts == ["Run add(a=1)? [y/N] "] and said_yes.stdout.strip() == "True"
    assert kernel.run(CONFIRM, stdin=["no"]).stdout.strip() == "False"
    cell = kernel.run(CONFIRM)  # as nbclient and nbval run it: no input allowed
    assert cell.error and cell.error["ename"] == "ExaoneError", cell
    one_sentence(cell.error["evalue"], "cannot answer a confirmation prompt", "add --yes")


@pytest.mark.parametrize(
    ("tools", "says"),
    [
        ("get_wether", "--tools names get_wether, which this notebook does not define"),
        ("not_a_function", "not_a_function is not a function (it is an int)"),
        ("add --max-tool-rounds -1", "--max-tool-rounds is a number of rounds, 0 or more"),
    ],
)
def test_names_that_are_not_tools_get_one_sentence(kernel, tools, says):
    cell = kernel.run(f"%%exaone -t 0 --tools {tools}\n{SEOUL}")
    one_sentence(cell, says)


def test_a_model_without_tool_calls_says_so(tmp_path):
    k = start_kernel(tmp_path)  # exaone-demo: EXAONE 3.5's template
    try:
        assert k.run("def add(a: int, b: int) -> int:\n    return a + b").ok
        cell = k.run("%%exaone -t 0 --tools add\nWhat is 1 + 2?")
        one_sentence(cell, "has no tool calls", "load an EXAONE 4.0 model")
    finally:
        k.shutdown()
