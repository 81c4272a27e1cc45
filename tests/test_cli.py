"""``python -m exaone_jupyter``: one turn in a terminal, on the bundled models."""

from __future__ import annotations

import pytest

from exaone_jupyter.__main__ import main


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_question_is_answered_with_its_figures(capsys):
    assert main(["--model", "exaone-4.0-demo", "-t", "0", "What is 17 + 25?"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("17 + 25 = 42.") and "<think>" not in out
    assert "finish: stop]" in out and "model: exaone-4.0-demo" in err


def test_think_shows_the_reasoning_before_the_answer(capsys):
    assert main(["--model", "exaone-4.0-demo", "-t", "0", "--think", "What is 17 + 25?"]) == 0
    out, _ = capsys.readouterr()
    reasoning, answer = out.split("</think>")
    assert "17 + 20 = 37" in reasoning and answer.strip().startswith("17 + 25 = 42.")


def test_think_on_a_model_without_reasoning_says_so(capsys):
    assert main(["--model", "exaone-demo", "-t", "0", "--think", "What is 2 + 2?"]) == 0
    _, err = capsys.readouterr()
    assert "note: This model has no reasoning mode, so --think changes nothing." in err


def test_bad_input_is_one_sentence(capsys):
    assert main(["--model", "exaone-4.0-demo", "-t", "-1", "hi"]) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 2 and err.splitlines()[-1].startswith("error: ")
