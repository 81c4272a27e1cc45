"""Conversations that follow the notebook: a re-run cell replaces its exchange, each reply's
output carries its exchange, and ``%exaone resume`` rebuilds the conversation from a saved
notebook after a restart. Real kernels, execute requests carrying ``cellId`` as JupyterLab sends
them, the shipped demo model's trained answers.
"""

from __future__ import annotations

import json

import pytest

from checks import one_sentence
from kernel_helpers import (
    EXCHANGE_MIME,
    Cell,
    Kernel,
    Snapshot,
    answer_of,
    exchange_of,
    healthy,
    notes_of,
    save_notebook,
    start_kernel,
)

pytestmark = pytest.mark.kernel  # every test runs real kernels (some start their own)

FRANCE, PARIS = "What is the capital of France?", "The capital of France is Paris."
JAPAN, TOKYO = "And of Japan?", "The capital of Japan is Tokyo."
COLOURS = "List the three primary colours."


@pytest.fixture()
def kernel(tmp_path):
    k = start_kernel(tmp_path)
    try:
        yield k
    finally:
        k.shutdown()


def ask(kernel: Kernel, question: str, cell_id: str | None, options: str = "-t 0") -> Cell:
    cell = kernel.run(f"%%exaone {options}\n{question}", cell_id=cell_id)
    assert cell.ok and not cell.stderr, cell
    return cell


def history(kernel: Kernel) -> list[tuple[str, str, str | None]]:
    messages = kernel.eval("exaone_jupyter.get_session().conversation.messages")
    return [(m["role"], m["content"], m.get("cell")) for m in messages]


def prompt_tokens(kernel: Kernel) -> tuple[int, int]:
    stats = kernel.eval("exaone_jupyter.last_reply().stats.as_dict()")
    return stats["prompt_tokens"], stats["prompt_tokens_evaluated"]


# -- re-running a cell ----------------------------------------------------------------------------
def test_a_rerun_cell_replaces_its_exchange_in_place(kernel):
    assert answer_of(ask(kernel, FRANCE, "cell-a")) == PARIS
    first_prompt = prompt_tokens(kernel)[0]
    assert answer_of(ask(kernel, JAPAN, "cell-b")) == TOKYO
    for _ in range(2):  # fix a typo, change -t: run the last cell again
        assert answer_of(ask(kernel, JAPAN, "cell-b")) == TOKYO
        total, evaluated = prompt_tokens(kernel)
        assert evaluated < total / 2, (total, evaluated)  # the earlier turn stays in the KV cache
    assert history(kernel) == [
        ("user", FRANCE, "cell-a"),
        ("assistant", PARIS, "cell-a"),
        ("user", JAPAN, "cell-b"),
        ("assistant", TOKYO, "cell-b"),
    ]

    # the first cell again: it sees what came before it (nothing), and keeps its place
    assert answer_of(ask(kernel, FRANCE, "cell-a")) == PARIS
    assert prompt_tokens(kernel)[0] == first_prompt
    assert [c for _, _, c in history(kernel)] == ["cell-a", "cell-a", "cell-b", "cell-b"]

    # an edited cell replaces its exchange with the new question
    assert answer_of(ask(kernel, COLOURS, "cell-a")) is not None
    assert history(kernel)[0] == ("user", COLOURS, "cell-a") and len(history(kernel)) == 4

    shown = kernel.run("%exaone history").plain()[0]
    # this harness runs cells without storing history, so they have no In [n]: marked anyway
    assert shown.count("*(a notebook cell)*") == 2, shown


def test_a_cell_rerun_as_a_one_off_gives_up_its_exchange(kernel):
    """The saved notebook keeps no exchange for a one-off reply, so the live conversation
    keeps none either: a resume after a restart would rebuild the same one."""
    ask(kernel, FRANCE, "cell-a")
    ask(kernel, JAPAN, "cell-b")
    assert exchange_of(ask(kernel, FRANCE, "cell-a", "-t 0 --no-history")) is None
    assert history(kernel) == [("user", JAPAN, "cell-b"), ("assistant", TOKYO, "cell-b")]


def test_a_rerun_new_cell_keeps_the_exchanges_after_it_as_a_resume_does(kernel, tmp_path):
    """--new leaves what came before the cell; the cells after it, whose outputs still show
    their exchanges, stay in the conversation, as a resume of the saved notebook has them."""
    colours = ask(kernel, COLOURS, "cell-0")
    ask(kernel, FRANCE, "cell-a", "-t 0 --new")
    japan = ask(kernel, JAPAN, "cell-b")
    france = ask(kernel, FRANCE, "cell-a", "-t 0 --new")  # a typo fixed, run again
    expected = [
        ("user", FRANCE, "cell-a"),
        ("assistant", PARIS, "cell-a"),
        ("user", JAPAN, "cell-b"),
        ("assistant", TOKYO, "cell-b"),
    ]
    assert history(kernel) == expected
    notebook = tmp_path / "chat.ipynb"
    save_notebook(
        notebook, [("cell-0", "", colours), ("cell-a", "", france), ("cell-b", "", japan)]
    )
    assert kernel.run(f"%exaone resume {notebook}").ok
    assert history(kernel) == expected


@pytest.mark.parametrize(
    "options",
    ["-t 0 --dry-run", "-t 0 -n 99999999", "-t 0 --no-such-option", "-t 0 -o 1x"],
)
def test_a_rerun_that_gives_no_reply_keeps_the_cells_exchange_in_its_output(
    kernel, tmp_path, options
):
    """The conversation keeps the cell's exchange, so its output carries it on, and a resume of
    the saved notebook rebuilds the same conversation."""
    france = ask(kernel, FRANCE, "cell-a")
    ask(kernel, JAPAN, "cell-b")
    record = exchange_of(france)
    expected = history(kernel)
    rerun = kernel.run(f"%%exaone {options}\n{FRANCE}", cell_id="cell-a")
    assert exchange_of(rerun) == record
    assert history(kernel) == expected
    japan = kernel.run(f"%%exaone {options}\n{JAPAN}", cell_id="cell-b")
    notebook = tmp_path / "chat.ipynb"
    save_notebook(notebook, [("cell-a", "", rerun), ("cell-b", "", japan)])
    assert kernel.run("%exaone reset").ok
    assert kernel.run(f"%exaone resume {notebook}").ok
    assert history(kernel) == expected


def test_cells_without_an_id_append_as_before(kernel):
    ask(kernel, FRANCE, None)
    ask(kernel, FRANCE, None)
    assert [m for m, _, _ in history(kernel)] == ["user", "assistant"] * 2


def test_each_reply_carries_its_exchange_and_a_one_off_none(kernel):
    cell = ask(kernel, FRANCE, "cell-a")
    record = exchange_of(cell)
    assert record["format"] == "exaone-jupyter/exchange" and record["version"] == 1
    assert record["cell"] == "cell-a" and record["model"] == "exaone-demo"
    assert record["messages"] == [
        {"role": "user", "content": FRANCE},
        {"role": "assistant", "content": PARIS},
    ]
    assert record["sampling"]["temperature"] == 0 and record["stats"]["finish_reason"] == "stop"
    assert "ttft_s" not in record["stats"]  # timings change every run; the meter shows them
    assert exchange_of(ask(kernel, FRANCE, "cell-b", "-t 0 --no-history")) is None


# -- resuming after a restart ----------------------------------------------------------------------
def test_restart_then_resume_answers_with_the_earlier_context(tmp_path):
    notebook = tmp_path / "chat.ipynb"
    (tmp_path / "one").mkdir()
    first = start_kernel(tmp_path / "one")
    try:
        colours = ask(first, COLOURS, "cell-0")  # before a --new: not part of the conversation
        france = ask(first, FRANCE, "cell-a", "-t 0 --new")
        save_notebook(
            notebook,
            [
                ("cell-0", f"%%exaone -t 0\n{COLOURS}", colours),
                ("cell-a", f"%%exaone -t 0 --new\n{FRANCE}", france),
            ],
        )
    finally:
        first.shutdown()

    (tmp_path / "two").mkdir()
    second = start_kernel(tmp_path / "two", JPY_SESSION_NAME=str(notebook))
    try:
        resumed = second.run("%exaone resume")  # the notebook this kernel serves
        assert resumed.ok and "Resumed 1 turn from chat.ipynb." in resumed.stdout, resumed
        assert history(second) == [("user", FRANCE, "cell-a"), ("assistant", PARIS, "cell-a")]
        assert answer_of(ask(second, JAPAN, "cell-b")) == TOKYO  # with the earlier context
        total, _ = prompt_tokens(second)
        assert total > 20
        ask(second, FRANCE, "cell-a")  # the resumed cell, re-run: replaced, not appended
        assert [c for _, _, c in history(second)] == ["cell-a", "cell-a", "cell-b", "cell-b"]
    finally:
        second.shutdown()


def test_a_reasoning_conversation_resumes_and_its_cells_rerun_in_place(tmp_path):
    """EXAONE 4.0 (the bundled 4.0 demo): a --think exchange is saved with its reasoning and
    comes back as it was; a follow-up and a re-run after the restart behave as before it."""
    load = "%exaone load exaone-4.0-demo"
    think, korean = "What is 17 + 25?", "한국의 수도는 어디인가요? Answer in one sentence."
    notebook = tmp_path / "chat.ipynb"
    (tmp_path / "one").mkdir()
    first = start_kernel(tmp_path / "one")
    try:
        loaded = first.run(load)
        reasoned = ask(first, think, "cell-a", "-t 0 --think")
        assert answer_of(reasoned).endswith("</details>\n\n17 + 25 = 42.")
        answered = ask(first, korean, "cell-b")
        save_notebook(
            notebook,
            [
                ("cell-0", load, loaded),
                ("cell-a", f"%%exaone -t 0 --think\n{think}", reasoned),
                ("cell-b", f"%%exaone -t 0\n{korean}", answered),
            ],
        )
        before = history(first)
    finally:
        first.shutdown()
    assert before[1][1].endswith("</think>\n\n17 + 25 = 42.")  # the reasoning is kept

    (tmp_path / "two").mkdir()
    second = start_kernel(tmp_path / "two", JPY_SESSION_NAME=str(notebook))
    try:
        assert second.run(load).ok
        resumed = second.run("%exaone resume")
        assert resumed.ok and "Resumed 2 turns from chat.ipynb." in resumed.stdout, resumed
        assert history(second) == before
        assert answer_of(ask(second, "1 더하기 1은?", "cell-c")) == "1 더하기 1은 2입니다."
        assert answer_of(ask(second, think, "cell-a", "-t 0 --think")) == answer_of(reasoned)
        assert [c for _, _, c in history(second)] == ["cell-a"] * 2 + ["cell-b"] * 2 + [
            "cell-c"
        ] * 2
    finally:
        second.shutdown()


def saved_exchange(record: dict) -> str:
    """A notebook (as JSON text) whose one cell's output holds ``record`` as an exchange."""
    return json.dumps({"cells": [{"outputs": [{"data": {EXCHANGE_MIME: record}}]}]})


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, content, fragments",
    [
        ("missing.ipynb", None, ("There is no notebook at", "check the path")),
        ("notes.txt", "hello", ("notes.txt is not a notebook", ".ipynb")),
        ("broken.ipynb", "{not json", ("broken.ipynb is not a readable notebook",)),
        (
            "foreign.ipynb",
            json.dumps({"cells": [{"cell_type": "code", "outputs": []}]}),
            ("foreign.ipynb holds no %%exaone replies", "the conversation is unchanged"),
        ),
        ("odd.ipynb", json.dumps({"nbformat": 4}), ("odd.ipynb is not a Jupyter notebook",)),
        (
            "damaged.ipynb",
            saved_exchange({"format": "exaone-jupyter/exchange", "version": 1, "messages": "?"}),
            ("Cell 1 of damaged.ipynb holds a damaged exchange",),
        ),
        (
            "newer.ipynb",
            saved_exchange({"format": "exaone-jupyter/exchange", "version": 99, "messages": []}),
            ("saved by a newer exaone-jupyter", "upgrade"),
        ),
    ],
)
def test_a_notebook_that_cannot_be_resumed_is_one_sentence(tmp_path, name, content, fragments):
    kernel = start_kernel(tmp_path)
    try:
        ask(kernel, FRANCE, "cell-a")
        before = Snapshot(kernel)
        path = tmp_path / name if content is None else _write(tmp_path / name, content)
        one_sentence(kernel.run(f"%exaone resume {path}"), *fragments)
        healthy(kernel, before)
    finally:
        kernel.shutdown()


def test_resume_without_a_known_notebook_says_how(kernel):
    before = Snapshot(kernel)
    cell = kernel.run("%exaone resume")
    one_sentence(cell, "does not know which notebook", "%exaone resume NOTEBOOK.ipynb")
    healthy(kernel, before)


# -- max tokens and a small context ----------------------------------------------------------------
def test_the_default_max_tokens_adapt_to_a_small_context(kernel):
    assert kernel.run("%exaone load exaone-demo --n-ctx 512").ok
    cell = ask(kernel, FRANCE, None)
    assert answer_of(cell) == PARIS
    [note] = [n for n in notes_of(cell) if "may use" in n]
    assert "512-token context" in note and "max_tokens is 512" in note and "-n" in note
    before = Snapshot(kernel)
    one_sentence(
        kernel.run(f"%%exaone -t 0 -n 512\n{FRANCE}"),
        "max_tokens=512 leaves no room",
        "lower --max-tokens",
    )
    healthy(kernel, before)
