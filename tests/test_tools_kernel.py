"""``%%exaone --tools`` in a real kernel on exaone-4.0-demo: the call shown and confirmed through
the frontend's input box, run, its result folded in the cell and in the exchange the notebook
keeps; a frontend without input, Ctrl-C inside a tool, names that are not tools."""

from __future__ import annotations

import pytest

from checks import one_sentence
from kernel_helpers import answer_of, exchange_of, notes_of, save_notebook, start_kernel

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


def test_a_confirmed_call_runs_and_the_answer_carries_its_result(kernel):
    cell = kernel.run(f"%%exaone --new -t 0 --tools get_weather,add\n{SEOUL}", stdin=["y"])
    assert cell.ok and not cell.error, cell
    assert cell.prompts == ["Run get_weather(city='Seoul')? [y/N] "]
    assert answer_of(cell) == "The weather in Seoul: **10°C, sunny**."
    shown = [d["text/plain"] for d in cell.displays if d.get("text/plain", "").startswith("🔧")]
    assert shown == ["🔧 get_weather(city='Seoul'): result\n10°C, sunny"]
    markdown = [
        d["text/markdown"] for d in cell.displays if "tool call" in d.get("text/markdown", "")
    ]
    assert markdown and markdown[0].startswith("\n\n<details><summary>tool call</summary>")
    assert roles(cell) == ["user", "assistant", "tool", "assistant"]


def test_a_declined_call_goes_back_to_the_model(kernel):
    cell = kernel.run(f"%%exaone --new -t 0 --tools get_weather\n{SEOUL}", stdin=["n"])
    assert cell.ok and not cell.error, cell
    messages = exchange_of(cell)["messages"]
    assert messages[2] == {
        "role": "tool",
        "content": "The user declined to run this call; it did not run.",
        "tool_call_id": messages[1]["tool_calls"][0]["id"],
        "name": "get_weather",
    }


def test_without_input_the_call_waits_for_yes_and_yes_or_config_runs_it(kernel):
    cell = kernel.run(f"%%exaone --new -t 0 --tools get_weather\n{SEOUL}")  # nbclient: no stdin
    said = one_sentence(cell, "cannot answer a confirmation prompt", "--yes")
    assert roles(cell) == ["user", "assistant", "tool"]  # the call is kept, not run
    assert exchange_of(cell)["messages"][2]["content"] == said  # it has its answer all the same
    cell = kernel.run("%%exaone --new -t 0 --tools add --yes\nWhat is 1234 + 5678?")
    assert answer_of(cell) == "1234 + 5678 = **6912**."
    assert kernel.run("%config ExaoneMagics.confirm_tools = False").ok
    try:
        cell = kernel.run(f"%%exaone --new -t 0 --tools get_weather\n{SEOUL}")
        assert answer_of(cell) == "The weather in Seoul: **10°C, sunny**."
    finally:
        kernel.run("%config ExaoneMagics.confirm_tools = True")


def test_ctrl_c_inside_a_tool_keeps_the_call_and_the_kernel(kernel):
    code = (
        "get_weather_real = get_weather\nget_weather = slow_weather\n"
        f"get_ipython().run_cell_magic('exaone', '--new -t 0 --yes --tools get_weather', {SEOUL!r})"
    )
    cell, _ = kernel.run_and_interrupt(
        code,
        lambda m: m.type == "stream" and "checking the sky" in m.content.get("text", ""),
    )
    assert kernel.run("get_weather = get_weather_real").ok
    assert any("Stopped inside the tool" in n for n in notes_of(cell)), cell
    messages = exchange_of(cell)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"].startswith("Interrupted by the user (Ctrl-C)")
    cell = kernel.run("%%exaone --new -t 0 --tools add --yes\nWhat is 1234 + 5678?")
    assert answer_of(cell) == "1234 + 5678 = **6912**."  # the model and kernel live on


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


def test_a_tool_exchange_resumes_after_a_restart_with_hugging_faces_prompt(tmp_path):
    """The cell's output keeps the call and its result; a fresh kernel resumes the saved
    notebook, and its next prompt is Hugging Face's apply_chat_template on the same messages,
    id for id, with the tools listed and without."""
    from transformers import AutoTokenizer

    from shared_fixtures import DATA

    load, source = (
        "%exaone load exaone-4.0-demo",
        f"%%exaone -t 0 --tools get_weather --yes\n{SEOUL}",
    )
    notebook = tmp_path / "tools.ipynb"
    (tmp_path / "one").mkdir()
    first = start_kernel(tmp_path / "one", load_demo=False)
    try:
        loaded = first.run(load)
        defined = first.run(TOOLS)
        asked = first.run(source, cell_id="cell-a")
        assert answer_of(asked) == "The weather in Seoul: **10°C, sunny**."
        save_notebook(
            notebook,
            [("cell-0", load, loaded), ("cell-t", TOOLS, defined), ("cell-a", source, asked)],
        )
    finally:
        first.shutdown()
    (tmp_path / "two").mkdir()
    second = start_kernel(tmp_path / "two", load_demo=False)
    try:
        assert second.run(load).ok and second.run(TOOLS).ok
        assert second.run(f"%exaone resume {notebook}").ok
        second.run(
            "from exaone_jupyter.tools import describe\n"
            "s = exaone_jupyter.get_session()\n"
            "m = s.conversation.to_messages({'role': 'user', 'content': 'What is 1234 + 5678?'})\n"
            "t = [describe(get_weather).spec()]"
        )
        messages, tools = second.eval("m"), second.eval("t")
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
        assert messages[2]["content"] == "10°C, sunny"
        hf = AutoTokenizer.from_pretrained(str(DATA / "exaone-4.0-demo"))
        for variables in ({"tools": tools}, {}):
            ids = second.eval(f"s.render_prompt(m, **{variables!r})[1]")
            want = hf.apply_chat_template(
                messages, tokenize=True, add_generation_prompt=True, return_dict=False, **variables
            )
            assert ids == want
    finally:
        second.shutdown()


def test_ask_with_tools_from_python_shows_in_the_cell_and_says_yes_true_without_input(kernel):
    ask = f"ask_with_tools({SEOUL!r}, [get_weather], new=True, temperature=0"
    assert kernel.run("from exaone_jupyter import ask_with_tools").ok
    cell = kernel.run(ask + ")")  # no input box, as under nbclient
    assert cell.error and cell.error["ename"] == "ExaoneError", cell
    one_sentence(cell.error["evalue"], "cannot answer a confirmation prompt", "pass yes=True")
    assert kernel.eval(ask + ", yes=True).text") == "The weather in Seoul: **10°C, sunny**."
    assert kernel.eval("len(exaone_jupyter.get_session().conversation.messages)") == 4
