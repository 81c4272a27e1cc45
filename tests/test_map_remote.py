"""``map`` over a server: llama-cpp-python's own OpenAI-compatible server on loopback, serving the
shipped demo model (the ``server`` fixture), and vLLM's, serving exaone-4.0-demo (``vllm_server``),
each against the same model loaded in this process.

The server applies the GGUF's template itself, so greedy answers equal to the local engine's
mean that every row's messages, sampling and schema crossed the wire as the local engine uses
them. The server's own ways are met for real: it refuses OpenAI's ``json_schema`` spelling of
``response_format`` (500) and reads ``json_object`` with a schema, and by default it cuts the
reply it streams short when another request arrives. vLLM takes ``json_schema`` and batches
concurrent requests, keeping every reply.
"""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.mapping import RowError, run_map
from exaone_jupyter.model.catalog import demo_model_path
from exaone_jupyter.session import Session
from server_helpers import Server

pytestmark = pytest.mark.server  # every test talks to a server (some start their own)

QUESTIONS = [
    "What is 2 + 2?",
    "How do I run EXAONE in Jupyter? Give me the steps.",  # long: the others arrive meanwhile
    "1 더하기 1은?",
    "Hello!",
    "Goodbye.",
    "What is 10 times 3?",
]
SENTIMENT = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative"]}, "sure": {"type": "boolean"}},
    "required": ["label", "sure"],
}
CUT_SHORT_NOTE = "The server cut replies short when it was sent several at once"


@pytest.fixture(scope="module")
def local(demo_session):
    return demo_session


@pytest.fixture
def remote(server):
    session = Session()
    session.connect(server.url)
    yield session
    session.disconnect()


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_map_cache):
    """Every test here starts and ends with map's memory cache empty."""


def _one_by_one(session: Session, questions: list[str], max_tokens: int) -> list[str]:
    sampling = Sampling(temperature=0, max_tokens=max_tokens)
    return ["".join(session.ask(q, sampling, history=False)) for q in questions]


# -- structured output ------------------------------------------------------------------------------
def test_a_schema_over_a_server_gives_the_local_engines_parsed_objects(local, remote):
    items = ["I love it", "나쁘다", "meh", "great!"]
    here = run_map(local, items, "Classify: {}", schema=SENTIMENT, max_tokens=60)
    there = run_map(remote, items, "Classify: {}", schema=SENTIMENT, max_tokens=60)
    assert there.errors == [] and list(there) == list(here)
    assert all(set(v) == {"label", "sure"} for v in there)
    # It refused OpenAI's json_schema (500) and took json_object with the schema; the next
    # requests go straight to the spelling it reads.
    assert remote.backend.response_formats == ["json_object"]
    assert not [n for n in there.notes if "response_format" in n]


def test_a_pydantic_class_over_a_server_gives_instances(local, remote):
    from typing import Literal

    from pydantic import BaseModel

    class Verdict(BaseModel):
        label: Literal["ko", "en"]
        ok: bool

    items = ["안녕", "hello"]
    here = run_map(local, items, "Language of: {}", schema=Verdict, max_tokens=60)
    there = run_map(remote, items, "Language of: {}", schema=Verdict, max_tokens=60)
    assert all(isinstance(v, Verdict) for v in there) and list(there) == list(here)


def test_a_server_that_reads_no_response_format_gives_row_errors_not_an_exception(remote):
    # This server refuses the json_schema spelling; with no other spelling left to try, the
    # requests go out without one, as to a server that reads neither.
    remote.backend.response_formats = ["json_schema"]
    result = run_map(remote, QUESTIONS[:1] + QUESTIONS[3:], "{}", schema="answer", max_tokens=60)
    assert remote.backend.response_formats == []
    assert all(isinstance(v, RowError) for v in result)
    # the demo model, unconstrained, answers in words: each row says why it is not JSON
    assert [m for _, m in result.errors] == [
        "the reply is not complete JSON (Extra data, character 2)",  # "2 + 2 = 4."
        "the reply is not complete JSON (Expecting value, character 0)",  # "Hello! ..."
        "the reply is not complete JSON (Expecting value, character 0)",  # "Goodbye! ..."
        "the reply is not complete JSON (Extra data, character 3)",  # "10 times 3 is 30."
    ]
    refused = [n for n in result.notes if "refused every form of response_format" in n]
    assert len(refused) == 1
    one_sentence(refused[0], "not held to the schema", "still parsed and checked")
    assert refused[0] in result.summary().splitlines()


# -- concurrency ------------------------------------------------------------------------------------
def test_parallel_requests_give_one_by_one_answers_in_input_order(remote):
    remote.set_system(LG_SYSTEM_PROMPT)
    expected = _one_by_one(remote, QUESTIONS, 200)
    result = run_map(remote, QUESTIONS, "{}", parallel=4, max_tokens=200)
    assert list(result) == expected and result.errors == []
    # llama-cpp-python's server ended the reply it streamed when the next request came: those
    # rows were asked again, one at a time from then on, and the summary says so once
    assert [n for n in result.notes if n.startswith(CUT_SHORT_NOTE)] == result.notes
    one_sentence(result.notes[0], "--interrupt_requests False", "one at a time")
    assert remote.conversation.turns == 0  # rows are one-off questions


def test_a_server_that_keeps_concurrent_replies_answers_them_all_at_once(local):
    patient = Server(demo_model_path(), "--interrupt_requests", "False").wait()
    try:
        session = Session()
        session.connect(patient.url)
        result = run_map(session, QUESTIONS * 2, "{}", parallel=4, max_tokens=200)
        assert list(result) == _one_by_one(local, QUESTIONS, 200) * 2
        assert result.notes == [] and result.summary() == "12 rows: 12 answered."
    finally:
        patient.stop()


def test_an_unreachable_server_is_one_sentence_and_the_session_stays_usable(server):
    doomed = Server(demo_model_path()).wait()
    session = Session()
    session.connect(doomed.url)
    doomed.stop()
    with pytest.raises(ExaoneError) as err:
        run_map(session, QUESTIONS, "{}", parallel=4)
    one_sentence(err, "Could not connect to", "connection refused", "check that the server")
    session.connect(server.url)  # the same session, another server
    assert run_map(session, ["Hello!"], "{}", max_tokens=60)[0].startswith("Hello!")


def test_a_server_killed_mid_map_keeps_the_answered_rows(local):
    doomed = Server(demo_model_path()).wait()
    try:
        session = Session()
        session.connect(doomed.url)
        questions = QUESTIONS[:1] + QUESTIONS[2:] + ["Thank you!"] * 6

        def kill_after_two(progress) -> None:
            if progress.done >= 2 and doomed.proc.poll() is None:
                doomed.kill()

        result = run_map(
            session, questions, "{}", parallel=2, max_tokens=200, on_progress=kill_after_two
        )
    finally:
        doomed.stop()
    expected = _one_by_one(local, questions, 200)
    answered = [i for i, v in enumerate(result) if not isinstance(v, RowError)]
    assert len(answered) >= 2 and all(result[i] == expected[i] for i in answered)
    assert len(result.errors) >= len(questions) - 4  # two in flight at most when it died
    assert any("connection refused" in m for _, m in result.errors)
    lines = result.summary().splitlines()
    assert lines[0] == f"{len(questions)} rows: {len(answered)} answered, " + (
        f"{len(result.errors)} without an answer."
    )
    assert len(lines) < len(result.errors) + 1  # the rows not sent share one line


def test_ctrl_c_keeps_the_answered_rows_and_stops_the_requests_in_flight(local, remote):
    """Ctrl-C lands in the main thread, which is where the rows end (``on_progress`` runs there:
    raising KeyboardInterrupt in it is what the kernel's interrupt does at that moment)."""
    questions = ["Hello!", "Goodbye.", "Tell me about the weather on Mars."] * 3

    def interrupt_after_two(progress) -> None:
        if progress.done >= 2 and not progress.finished:
            raise KeyboardInterrupt

    result = run_map(
        remote, questions, "{}", parallel=2, max_tokens=400, on_progress=interrupt_after_two
    )
    assert result.interrupted and result.summary().splitlines()[0].endswith("; interrupted.")
    expected = _one_by_one(local, questions, 400)
    answered = [i for i, v in enumerate(result) if not isinstance(v, RowError)]
    assert len(answered) == 2 and all(result[i] == expected[i] for i in answered)
    assert all(v.interrupted for v in result if isinstance(v, RowError))
    # the server and the session go on at once
    assert run_map(remote, ["Goodbye."], "{}", max_tokens=60, cache=False)[0] == expected[1]


# -- vLLM -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local4():
    """exaone-4.0-demo's GGUF twin, loaded here: the judge of what vLLM answers."""
    session = Session()
    session.load("exaone-4.0-demo")
    session.set_system(LG_SYSTEM_PROMPT)
    yield session
    session.unload()


@pytest.fixture
def on_vllm(vllm_server):
    session = Session()
    session.connect(vllm_server.url)
    session.set_system(LG_SYSTEM_PROMPT)
    yield session
    session.disconnect()


def test_vllm_answers_eight_rows_at_once_exactly_and_in_order(local4, on_vllm):
    questions = [*QUESTIONS, "What is the capital of France?", "Thank you!"] * 2
    expected = _one_by_one(local4, questions, 200)
    result = run_map(on_vllm, questions, "{}", parallel=8, max_tokens=200)
    assert list(result) == expected and result.errors == []
    # vLLM keeps every concurrent reply: nothing was asked again
    assert (
        result.notes == []
        and result.summary() == f"{len(questions)} rows: {len(questions)} answered."
    )
    assert on_vllm.conversation.turns == 0


def test_vllm_takes_openais_json_schema_and_holds_every_row_to_it(on_vllm):
    """The objects are valid, and the same at once as one at a time; they need not equal the local
    engine's: xgrammar (served without free whitespace) and llama.cpp's grammar allow different
    spacing, so a model not trained on JSON takes different greedy paths under them."""
    items = ["I love it", "나쁘다", "meh", "great!"]
    there = run_map(on_vllm, items, "Classify: {}", schema=SENTIMENT, parallel=8, max_tokens=60)
    assert there.errors == [] and there.notes == []
    assert all(
        v["label"] in ("positive", "negative") and isinstance(v["sure"], bool) for v in there
    )
    assert on_vllm.backend.response_formats == ["json_schema", "json_object"]  # none refused
    alone = run_map(
        on_vllm, items, "Classify: {}", schema=SENTIMENT, parallel=1, max_tokens=60, cache=False
    )
    assert list(alone) == list(there)
