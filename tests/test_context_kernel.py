"""The notebook as context and target, in a real kernel with the demo model: ``{name}`` values
rendered by type within their budget, ``%exaone explain``, ``--cells N``, ``--code`` (the
execute_reply's ``set_next_input`` payload), the exchange that keeps the question as the model
saw it, and each bad input in one sentence with the kernel, model and conversation intact."""

from __future__ import annotations

import re

import nbformat
import pytest

from checks import one_sentence
from kernel_helpers import (
    Cell,
    Snapshot,
    answer_of,
    exchange_of,
    healthy,
    notes_of,
    start_kernel,
)

pytestmark = pytest.mark.kernel

BUDGET = 512  # the default 0.25 of the demo model's 2,048-token context
FRAME = (
    "import numpy as np, pandas as pd\n"
    "df = pd.DataFrame(np.random.default_rng(0).normal(size=(100_000, 30)),\n"
    "                  columns=[f'col_{i}' for i in range(30)])\n"
    "df['col_3'] = np.arange(100_000)\n"
    "df['col_5'] = pd.Categorical(['a', 'b'] * 50_000)\n"
    "df.loc[::10, 'col_8'] = np.nan"
)
ADD_QUESTION = "Write a Python function that adds two numbers."
ADD_CODE = "def add(a, b):\n    return a + b"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The demo model loaded; every cell is counted in the history (In/Out), as in a notebook."""
    k = start_kernel(tmp_path_factory.mktemp("context"))
    k.store_history = True
    try:
        yield k
    finally:
        k.shutdown()


def prompt_of(cell: Cell) -> str:
    """The user's turn in a --dry-run's prompt (the demo model's EXAONE 3 template)."""
    [shown] = [
        d["text/markdown"] for d in cell.displays if "**Prompt:" in d.get("text/markdown", "")
    ]
    last = shown.rpartition("[|user|]")[2]  # the history's turns come before it
    return last[: last.rindex("\n[|assistant|]")]


def tokens(kernel, text: str) -> int:
    return kernel.eval(
        f"len(exaone_jupyter.get_session().backend.tokenizer.tokenize({text!r}, special=False))"
    )


def test_explain_with_no_exception_yet_says_so(kernel):
    before = Snapshot(kernel)
    cell = kernel.run("%exaone explain")
    one_sentence(cell, "There is no exception to explain")
    healthy(kernel, before)


def test_a_large_frame_names_every_column_and_dtype_within_its_budget(kernel):
    assert kernel.run(FRAME).ok
    cell = kernel.run("%%exaone --dry-run\nHere is my data:\n{df}\nWhich columns have nulls?")
    assert cell.ok and not cell.stderr, cell
    question = prompt_of(cell)
    rendered = question.removeprefix("Here is my data:\n").removesuffix(
        "\nWhich columns have nulls?"
    )
    assert rendered.startswith("DataFrame: 100,000 rows × 30 columns\nColumns (dtype, nulls):")
    dtypes = kernel.eval("[(c, str(t)) for c, t in df.dtypes.items()]")
    for name, dtype in dtypes:
        assert re.search(rf"^- {name}: {re.escape(dtype)}\b", rendered, re.M), name
    assert "- col_8: float64, 10,000 nulls" in rendered
    assert tokens(kernel, rendered) <= BUDGET
    # cut to fit: the prompt says so, and so does a note under the cell
    assert rendered.endswith("[cut to fit: no sample rows]")
    assert notes_of(cell) == [
        f"{{df}} was cut to fit its {BUDGET}-token budget (no sample rows); %config "
        "ExaoneMagics.context_budget sets the fraction of the context a value gets."
    ]


def test_a_larger_budget_shows_sample_rows(kernel):
    assert kernel.run("%config ExaoneMagics.context_budget = 0.6").ok
    try:
        cell = kernel.run("%%exaone --dry-run\n{df}")
        question = prompt_of(cell)
        assert "Sample (2 of 100,000 rows, the first 12 columns):" in question
        assert "| 99999 |" in question and tokens(kernel, question) <= int(2048 * 0.6)
    finally:
        kernel.run("%config ExaoneMagics.context_budget = 0.25")


def test_other_values_by_type(kernel):
    kernel.run(
        "arr = np.arange(12.0).reshape(3, 4)\nsettings = {'이름': '민수', 'n': [1, 2]}\n"
        "s = pd.Series([1, None, 3], name='x')\nword = 'Seoul'\nn = 7"
    )
    cell = kernel.run("%%exaone --dry-run\n{arr}\n{settings}\n{s}\n{word} {n}")
    question = prompt_of(cell)
    assert question.startswith(
        "ndarray: shape (3, 4), dtype float64\nmin 0, max 11, mean 5.5, std 3.45205\nValues:\n"
        "[[ 0.  1.  2.  3.]"
    )
    assert '\n{"이름": "민수", "n": [1, 2]}\n' in question
    assert "\nSeries 'x': 3 values, dtype float64, 1 null\n" in question
    assert question.endswith("\nSeoul 7")  # strings and numbers exactly as before
    assert not notes_of(cell)


def test_a_long_traceback_keeps_the_users_frames(kernel):
    failing = (
        "def pick(frame, column):\n"
        "    return frame[column]\n"
        "\n"
        "def report(frame):\n"
        "    return pick(frame, 'price')\n"
        "\n"
        "report(df)"
    )
    raised = kernel.run(failing)
    assert raised.error and raised.error["ename"] == "KeyError"
    number = raised.reply["execution_count"]
    cell = kernel.run("%exaone explain --dry-run")
    question = prompt_of(cell)
    assert question.startswith("My notebook code raised an exception. Explain what went wrong")
    assert f"The code of Cell In[{number}]:\n```python\n{failing}\n```" in question
    assert "KeyError: 'price'" in question
    for line in (
        f'  File "Cell In[{number}]", line 7, in <module>',
        f'  File "Cell In[{number}]", line 5, in report',
        f'  File "Cell In[{number}]", line 2, in pick',
        "    return frame[column]",
    ):
        assert line in question, line
    assert re.search(r"  … \d+ library frames \(pandas\)", question)
    assert "site-packages" not in question and "interactiveshell" not in question


def test_explain_asks_and_the_exchange_holds_the_question_as_sent(kernel):
    cell = kernel.run("%%exaone explain -t 0 -n 8\nWhy can pick not find the column?")
    assert cell.ok and not cell.stderr, cell
    asked = exchange_of(cell)["messages"][0]
    assert asked["role"] == "user"
    assert asked["content"].startswith("Why can pick not find the column?\n\nThe code of Cell In[")
    assert "KeyError: 'price'" in asked["content"]


def test_explain_shows_the_cell_of_a_syntax_error(kernel):
    raised = kernel.run("x = 1\ndef f(:\n    pass")
    number = raised.reply["execution_count"]
    question = prompt_of(kernel.run("%exaone explain --dry-run"))
    assert f"The code of Cell In[{number}]:\n```python\nx = 1\ndef f(:\n    pass\n```" in question
    assert f'File "Cell In[{number}]", line 2\n    def f(:' in question
    assert "SyntaxError: invalid syntax" in question


def test_explain_is_listed_with_its_help(kernel):
    assert "Ask about the last exception of this kernel" in kernel.run("%exaone help").text
    usage = kernel.run("%exaone help").text
    assert "[--cells N] [--code]" in usage


def test_cells_come_before_the_question_in_order(kernel):
    first = kernel.run("total = 21").reply["execution_count"]
    second = kernel.run("total * 2").reply["execution_count"]
    kernel.run("%exaone history")  # %exaone cells are the conversation: not counted
    cell = kernel.run("%%exaone --dry-run --cells 2\nWhat did I compute?")
    assert prompt_of(cell) == (
        "The notebook's last executed cells, in order:\n\n"
        f"In [{first}]:\n```python\ntotal = 21\n```\n\n"
        f"In [{second}]:\n```python\ntotal * 2\n```\n\n"
        f"Out [{second}]:\n```text\n42\n```\n\n"
        "What did I compute?"
    )


def test_cells_carry_what_they_printed(kernel):
    shown = kernel.run("print('rows:', 3)\nsales = {'Seoul': 7}\nsales['Seoul']")
    assert shown.stdout == "rows: 3\n"  # the frontend still gets every printed line
    number = shown.reply["execution_count"]
    chatty = kernel.run("for i in range(20_000):\n    print('line', i)")
    assert chatty.stdout.endswith("line 19999\n")
    cell = kernel.run("%%exaone --dry-run --cells 2\nWhat happened?")
    question = prompt_of(cell)
    assert (
        f"In [{number}]:\n```python\nprint('rows:', 3)\nsales = {{'Seoul': 7}}\nsales['Seoul']\n```"
        f"\n\nPrinted by In [{number}]:\n```text\nrows: 3\n```\n\nOut [{number}]:\n```text\n7\n```"
    ) in question
    assert "line 19999\n```" in question  # the long print shortened, its end kept
    assert question.count("\nline ") < 100 and "characters shown] …" in question
    assert tokens(kernel, question) <= BUDGET


def test_stdout_is_the_kernels_own_between_cells(kernel):
    kernel.run(
        "import sys\nbetween = []\n"
        "get_ipython().events.register('post_run_cell', "
        "lambda result: between.append(type(sys.stdout).__name__))"
    )
    kernel.run("print('x')")
    assert kernel.eval("between[-2:]") == ["OutStream", "OutStream"]


def test_unloading_the_extension_gives_stdout_back(kernel):
    assert kernel.run("import sys").ok
    assert kernel.eval("type(sys.stdout).__name__") == "_Tee"  # while a cell runs
    assert kernel.run("%unload_ext exaone_jupyter").ok
    assert kernel.eval("type(sys.stdout).__name__") == "OutStream"
    assert kernel.run("%load_ext exaone_jupyter").ok
    assert kernel.run("%exaone info").ok


def test_the_reply_code_goes_to_the_next_cell(kernel):
    cell = kernel.run(f"%%exaone --code --no-history -t 0\n{ADD_QUESTION}")
    assert cell.ok and not cell.stderr, cell
    assert answer_of(cell).endswith(f"```python\n{ADD_CODE}\n```")
    assert cell.reply["payload"] == [
        {"source": "set_next_input", "text": ADD_CODE, "replace": False}
    ]
    assert "The reply's code is in a new cell below (not run yet)." in notes_of(cell)


def test_a_reply_without_code_says_so_and_adds_no_cell(kernel):
    cell = kernel.run("%%exaone --code --no-history -t 0\nWhat is EXAONE?")
    assert cell.ok and not cell.stderr, cell
    assert cell.reply["payload"] == []
    assert "The reply has no Python code block, so no cell was added." in notes_of(cell)


def test_explain_takes_code_too(kernel):
    cell = kernel.run("%exaone explain --code --no-history -t 0 -n 16")
    assert cell.ok and not cell.stderr, cell
    payload = cell.reply["payload"]
    if payload:
        assert payload[0]["source"] == "set_next_input"
        assert "The reply's code is in a new cell below (not run yet)." in notes_of(cell)
    else:
        assert "The reply has no Python code block, so no cell was added." in notes_of(cell)


def test_resume_rebuilds_the_question_as_the_model_saw_it(kernel, tmp_path):
    kernel.run("city = pd.DataFrame({'name': ['Seoul'], 'people': [9_400_000]})")
    source = "%%exaone --new -t 0 -n 8\nWhat is in {city}?"
    cell = kernel.run(source, cell_id="ctx-cell")
    assert cell.ok and not cell.stderr, cell
    sent = exchange_of(cell)["messages"][0]["content"]
    assert sent.startswith("What is in DataFrame: 1 rows × 2 columns\n") and "| 0 | Seoul |" in sent
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(source, id="ctx-cell")
    code.outputs = [nbformat.from_dict(o) for o in cell.final_outputs()]
    nb.cells.append(code)
    path = tmp_path / "context.ipynb"
    nbformat.write(nb, str(path))
    kernel.run("city = pd.DataFrame({'name': ['Busan'], 'people': [3_300_000]})")  # changed since
    kernel.run("%exaone reset")
    resumed = kernel.run(f"%exaone resume {path}")
    assert "Resumed 1 turn from context.ipynb." in resumed.stdout, resumed
    messages = kernel.eval("exaone_jupyter.get_session().conversation.messages")
    assert messages[0]["content"] == sent  # not re-read: the value as it was asked about


class_broken = (
    "class Broken:\n    def __str__(self):\n        raise RuntimeError('no text')\nb = Broken()"
)


@pytest.mark.parametrize(
    "setup, code, fragments",
    [
        (class_broken, "%%exaone\nWhat is {b}?", ("{b} could not be rendered", "RuntimeError")),
        (
            "%config ExaoneMagics.context_budget = 0.001",
            "%%exaone\nDescribe {df}.",
            ("{df} needs", "over its budget of 2", "ExaoneMagics.context_budget"),
        ),
        ("", "%%exaone --cells 10000\nWhat did I do?", ("--cells 10000 asks for more cells",)),
        ("", "%%exaone --cells 0\nWhat did I do?", ("--cells takes a number of cells of 1",)),
        ("", "%%exaone --cells 1\n  ", ("The message is empty",)),  # cells, no question
    ],
)
def test_each_bad_input_is_one_sentence_and_leaves_all_intact(kernel, setup, code, fragments):
    if setup:
        assert kernel.run(setup).ok
    before = Snapshot(kernel)
    try:
        cell = kernel.run(code)
        one_sentence(cell, *fragments)
        assert cell.reply["payload"] == []
    finally:
        kernel.run("%config ExaoneMagics.context_budget = 0.25")
    healthy(kernel, before)


def test_a_bad_budget_setting_is_refused(kernel):
    cell = kernel.run("%config ExaoneMagics.context_budget = 2")
    assert "context_budget is the fraction of the context a value may take" in cell.stderr
    assert kernel.eval("get_ipython().find_magic('exaone', 'cell').__self__.context_budget") == 0.25
