"""Values rendered for the model (``exaone_jupyter.context``), counted by the demo model's real
tokenizer: each type's form, the budget kept, what was cut said, and each failure in a sentence.
The kernel-side wiring (``{name}``, explain, --cells, --code) is in test_context_kernel.py."""

from __future__ import annotations

import importlib.util
import json
import linecache
import sys

import numpy as np
import pandas as pd
import pytest

from exaone_jupyter.context import (
    Budget,
    BudgetTooSmall,
    CellRecord,
    estimate_tokens,
    explain_question,
    render_cells,
    render_exception,
    render_named,
    render_value,
)
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.ui.interpolate import interpolate, unknown_names
from exaone_jupyter.ui.next_cell import python_code


@pytest.fixture(scope="module")
def count(demo_backend):
    return lambda text: len(demo_backend.tokenize(text, special=False))


def big_frame() -> pd.DataFrame:
    """100,000 rows, 30 columns of five dtypes, some nulls, long text cells."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(100_000, 30)), columns=[f"col_{i}" for i in range(30)])
    frame["col_3"] = np.arange(100_000)
    frame["col_4"] = frame["col_4"] > 0
    frame["col_5"] = pd.Categorical(["a", "b"] * 50_000)
    frame["col_6"] = "a long description | with a pipe " * 4
    frame["col_7"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(100_000), "s")
    frame.loc[::10, "col_8"] = np.nan
    return frame


@pytest.mark.parametrize("tokens", [4096, 1024, 512])
def test_a_large_frame_names_every_column_and_dtype_within_its_budget(count, tokens):
    frame = big_frame()
    rendered = render_value(frame, Budget(tokens, count))
    assert count(rendered.text) <= tokens
    assert rendered.text.startswith("DataFrame: 100,000 rows × 30 columns")
    for name, dtype in frame.dtypes.items():
        assert f"- {name}: {dtype}" in rendered.text, name
    assert "- col_8: float64, 10,000 nulls" in rendered.text
    if rendered.cut:  # the model is told what is missing, and so is the user (the note)
        assert f"[cut to fit: {rendered.cut}]" in rendered.text


def test_a_frame_sample_is_a_markdown_table_of_head_and_tail(count):
    frame = pd.DataFrame({"city": ["Seoul", "Busan", "Incheon"] * 10, "n": range(30)})
    text = render_value(frame, Budget(2048, count)).text
    assert "Sample (10 of 30 rows):" in text
    assert "|  | city | n |" in text and "| 0 | Seoul | 0 |" in text
    assert "| 29 | Incheon | 29 |" in text and "| … | … | … |" in text
    assert "| 12 |" not in text
    small = render_value(frame.head(3), Budget(2048, count))
    assert small.cut == "" and "Sample (3 of 3 rows):" in small.text and "…" not in small.text


def test_frames_without_rows_or_columns(count):
    empty = render_value(pd.DataFrame(), Budget(100, count)).text
    assert empty == "DataFrame: 0 rows × 0 columns\n(no rows)"
    assert render_value(pd.DataFrame({"a": []}), Budget(100, count)).text == (
        "DataFrame: 0 rows × 1 columns\nColumns (dtype, nulls):\n- a: float64\n(no rows)"
    )
    assert render_value(pd.DataFrame(index=range(3)), Budget(100, count)).text == (
        "DataFrame: 3 rows × 0 columns\n(no columns)"
    )


def test_long_cells_are_shortened_and_pipes_escaped(count):
    frame = pd.DataFrame({"text": ["x | y " * 50]})
    text = render_value(frame, Budget(2048, count)).text
    row = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    assert "x \\| y" in row and row.endswith("… |") and len(row) < 60


def test_a_frame_whose_summary_cannot_fit_is_refused_in_a_sentence(count):
    with pytest.raises(ExaoneError) as err:
        render_named("df", big_frame(), Budget(5, count))
    assert str(err.value).startswith("{df} needs ")
    assert "raise %config ExaoneMagics.context_budget" in str(err.value)
    assert str(err.value).count(". ") == 0


def test_a_series(count):
    series = pd.Series([1.5, None, 3.0] * 100, name="price")
    text = render_value(series, Budget(1024, count)).text
    assert text.startswith("Series 'price': 300 values, dtype float64, 100 nulls")
    assert "|  | value |" in text and "| 299 | 3.0 |" in text


def test_an_array_shows_shape_dtype_summary_and_edge_values(count):
    array = np.arange(100_000, dtype="float64").reshape(1000, 100)
    array[0, 0] = np.nan
    text = render_value(array, Budget(1024, count)).text
    assert text.startswith("ndarray: shape (1000, 100), dtype float64\n")
    assert "min 1, max 99999, mean 50000, std 28867.2, 1 NaN" in text
    assert "..." in text and "99999" in text
    assert count(text) <= 1024
    tight = render_value(array, Budget(80, count))
    assert tight.cut and count(tight.text) <= 80
    assert render_value(np.array(["a", "b"]), Budget(100, count)).text.startswith(
        "ndarray: shape (2,), dtype <U1\nValues:\n['a' 'b']"
    )
    assert "all 2 values are NaN" in render_value(np.full(2, np.nan), Budget(100, count)).text


def test_dicts_and_lists_are_json_cut_to_the_budget(count):
    value = {"이름": "민수", "scores": list(range(50_000))}
    rendered = render_value(value, Budget(200, count))
    assert rendered.text.startswith('{"이름": "민수", "scores": [0, 1, 2,')
    assert count(rendered.text) <= 200
    total = len(json.dumps(value, ensure_ascii=False))
    assert rendered.text.endswith(f" of {total:,} characters shown]")
    assert render_value([1, "a", None], Budget(200, count)).text == '[1, "a", null]'
    assert render_value({(1, 2): 3}, Budget(200, count)).text == "{(1, 2): 3}"  # no JSON form
    loop: list = []
    loop.append(loop)
    assert render_value(loop, Budget(200, count)).text == "[[...]]"


@pytest.mark.parametrize("value", ["a long text " * 2000, 42, 3.5, True, None, np.float32(1.5)])
def test_strings_and_numbers_stay_exactly_as_str_gives_them(count, value):
    rendered = render_value(value, Budget(10, count))
    assert rendered.text == str(value) and rendered.cut == ""


def test_an_object_opts_in_with_repr_llm_and_markdown_is_used_where_present(count):
    class Report:
        def _repr_llm_(self):
            return "Quarterly report: revenue up 3%."

        def _repr_markdown_(self):
            return "**not this**"

    class Card:
        def _repr_markdown_(self):
            return ("# Card", {"metadata": 1})

    class Plain:
        def __str__(self):
            return "plain object"

    assert render_value(Report(), Budget(100, count)).text == "Quarterly report: revenue up 3%."
    assert render_value(Card(), Budget(100, count)).text == "# Card"
    assert render_value(Plain(), Budget(100, count)).text == "plain object"


class Broken:
    def __str__(self):
        raise RuntimeError("no text today")


class BadHook:
    def _repr_llm_(self):
        return 42


@pytest.mark.parametrize(
    "value, reason",
    [(Broken(), "(RuntimeError: no text today)"), (BadHook(), "_repr_llm_() returned int")],
)
def test_a_value_whose_rendering_raises_is_named_in_one_sentence(count, value, reason):
    with pytest.raises(ExaoneError) as err:
        render_named("thing", value, Budget(100, count))
    message = str(err.value)
    assert message.startswith("{thing} could not be rendered for the model") and reason in message
    assert message.endswith(".") and message.count(". ") == 0


def write_module(tmp_path, name: str, code: str):
    path = tmp_path / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


USER_CODE = """
import json

def load(text, depth):
    if depth:
        return load(text, depth - 1)
    return json.loads(text)
"""


def raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_a_traceback_keeps_the_users_frames_and_folds_the_librarys(tmp_path, count):
    mine = write_module(tmp_path, "mine", USER_CODE)
    exc = raised(lambda: mine.load("{broken", 3))
    rendered = render_exception(exc, Budget(1024, count))
    text = rendered.text
    assert rendered.cut == ""
    assert text.startswith(
        "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes"
    )
    assert text.count(f'File "{tmp_path / "mine.py"}"') == 4  # load, three times recursing
    assert "return json.loads(text)" in text
    assert "library frames (json)" in text and "decoder.py" not in text


def test_a_long_traceback_is_cut_to_its_last_user_frames(tmp_path, count):
    mine = write_module(tmp_path, "deep", USER_CODE)
    exc = raised(lambda: mine.load("{broken", 300))
    rendered = render_exception(exc, Budget(500, count))
    assert count(rendered.text) <= 500
    assert rendered.cut == "the traceback cut to its last 3 frames"
    assert "  … 300 earlier frames left out to fit\n" in rendered.text  # 2 of the test, 298 of load
    assert "return json.loads(text)" in rendered.text
    assert rendered.text.endswith("[cut to fit: the traceback cut to its last 3 frames]")


def test_an_exception_whose_message_alone_is_over_the_budget_is_cut(count):
    def fail():
        raise ValueError("the reason " * 1000)

    rendered = render_exception(raised(fail), Budget(120, count))
    assert rendered.text.startswith("ValueError: the reason") and count(rendered.text) <= 120
    assert rendered.cut == "the traceback left out, the message cut"


def test_a_chained_exception_names_its_cause(count):
    def fail():
        try:
            {}["key"]
        except KeyError as err:
            raise ValueError("no config") from err

    text = render_exception(raised(fail), Budget(500, count)).text
    assert (
        text.startswith("ValueError: no config")
        and "Raised while handling: KeyError: 'key'" in text
    )


def cell_exception(source: str, filename: str) -> BaseException:
    """What a kernel's cell raises: its code cached in linecache (as IPython caches a cell's),
    the traceback starting at the cell (IPython's own frame before it is installed code)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exc = raised(lambda: exec(compile(source, filename, "exec"), {}))
    exc.__traceback__ = exc.__traceback__.tb_next.tb_next  # raised() and its lambda
    return exc


def test_the_explain_question_holds_the_cell_source_and_the_exception(count):
    exc = cell_exception("def run():\n    return 1 / 0\n\nrun()\n", "/tmp/ipykernel_1/77.py")
    question, cut = explain_question(exc, Budget(1000, count), extra="Why?")
    assert cut == ""
    assert question.startswith("Why?\n\nThe code of the cell:\n```python\ndef run():")
    assert "ZeroDivisionError: division by zero" in question
    named, _ = explain_question(exc, Budget(1000, count), cell_name=lambda f: "In [7]")
    assert named.startswith("My notebook code raised an exception.")
    assert "The code of In [7]:" in named and 'File "In [7]", line 2, in run' in named


def test_a_long_cell_is_cut_in_the_explain_question(count):
    source = "x = 1\n" * 2000 + "1 / 0\n"
    exc = cell_exception(source, "/tmp/ipykernel_1/78.py")
    question, cut = explain_question(exc, Budget(400, count))
    assert cut.startswith("the cell's code cut to ") and count(question) <= 450
    assert "ZeroDivisionError" in question


def test_cells_in_order_with_their_results_and_cut_to_fit(count):
    cells = [
        CellRecord(1, "import pandas as pd"),
        CellRecord(2, "df = pd.DataFrame({'a': [1, 2]})\ndf", pd.DataFrame({"a": [1, 2]})),
        CellRecord(4, "len(df)", 2),
    ]
    rendered = render_cells(cells, Budget(1000, count))
    text = rendered.text
    assert rendered.cut == ""
    assert text.index("In [1]:") < text.index("In [2]:") < text.index("In [4]:")
    assert "Out [2]:\n```text\nDataFrame: 2 rows × 1 columns" in text
    assert "Out [4]:\n```text\n2\n```" in text and "Out [1]" not in text
    tight = render_cells(cells, Budget(90, count))
    assert tight.cut.startswith("only the last") and count(tight.text) <= 90
    with pytest.raises(BudgetTooSmall):
        render_cells(cells, Budget(3, count))


def test_cell_outputs_shortened_to_fit_are_said_and_fences_hold(count):
    source = 'note = """\n```python\nx = 1\n```\n"""'
    cells = [CellRecord(5, source, printed="line\n" * 400)]
    rendered = render_cells(cells, Budget(400, count))
    assert "In [5]:\n````python\n" + source + "\n````" in rendered.text  # the fence outruns ```
    assert "Printed by In [5]:\n```text\n[cut to fit: the last " in rendered.text
    assert rendered.cut == "the cells' outputs shortened"
    assert rendered.text.endswith("line\n```\n[cut to fit: the cells' outputs shortened]")


def test_the_fallback_count_without_a_tokenizer():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("한국") == 2  # three UTF-8 bytes a syllable
    rendered = render_value(list(range(10_000)), Budget(50))
    assert estimate_tokens(rendered.text) <= 50 and rendered.cut


def test_interpolation_renders_values_and_names_the_unknown():
    namespace = {"df": pd.DataFrame({"a": [1]}), "n": 3}
    text = interpolate(
        "{n} rows of {df}, not {nobody} nor {{df}}", namespace, lambda k, v: k.upper()
    )
    assert text == "N rows of DF, not {nobody} nor {df}"
    assert unknown_names("{a} {nobody} {{x}} {nobody} {n}", namespace) == ["a", "nobody"]


@pytest.mark.parametrize(
    "reply, code",
    [
        (
            "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```",
            "def add(a, b):\n    return a + b",
        ),
        ("```py\nx = 1\n```\n\ntext\n\n```\ny = 2\n```", "x = 1\n\ny = 2"),
        ("```bash\nls\n```\n```json\n{}\n```", ""),
        ("Use `print`:\n\n    print(1)", ""),  # indented code is not a fenced block
        ("- step\n\n  ```python\n  z = 3\n  ```", "z = 3"),
        ("```python\nunclosed = 1", "unclosed = 1"),
        ("No code here.", ""),
    ],
)
def test_the_python_code_of_a_reply(reply, code):
    assert python_code(reply) == code


def test_on_a_server_the_budget_is_a_fraction_of_its_context_estimated(server):
    """A server tokenizes on its side: the budget counts with the documented estimate."""
    from exaone_jupyter.session import Session
    from exaone_jupyter.ui.notebook_context import budget_of

    session = Session()
    session.connect(server.url)
    try:
        budget = budget_of(session, 0.25)
        assert budget.count is estimate_tokens
        assert session.require_backend().n_ctx == 0  # llama-cpp-python's server does not say
        assert budget.tokens == 4096 // 4  # so a context of 4,096 tokens is assumed
        rendered = render_value(big_frame(), budget)
        assert (
            estimate_tokens(rendered.text) <= budget.tokens and "- col_29: float64" in rendered.text
        )
    finally:
        session.disconnect()
