"""``exaone_jupyter.map``: one prompt over many rows, batched on the real engine (demo model).

In-process tests use a Session of their own; the kernel tests run ``exaone_jupyter.map`` in a
real kernel, with its progress bar, Ctrl-C and the conversation that must stay as it was.
"""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.engine.llama.batch import context_need, shared_prefix
from exaone_jupyter.engine.llama.grammar import grammar_of
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.mapping import MapProgress, MapResult, RowError, run_map
from exaone_jupyter.mapping.structured import Schema
from kernel_helpers import DEMO_ANSWER, DEMO_QUESTION, Message, answer_of, live_text
from shared_fixtures import DIALOGUES


@pytest.fixture(scope="module")
def session(demo_session):
    return demo_session


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_map_cache):
    """Every test here starts and ends with map's memory cache empty."""


def _groups() -> dict[str | None, list[str]]:
    """Every trained dialogue's last question, by its system prompt (a map has one system)."""
    groups: dict[str | None, list[str]] = {}
    for messages in DIALOGUES:
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        question = [m["content"] for m in messages if m["role"] == "user"][-1]
        groups.setdefault(system, []).append(question)
    return groups


def _trained_single_turn(system: str | None) -> dict[str, str]:
    """Single-turn questions with exactly one trained answer under ``system``."""
    answers: dict[str, list[str]] = {}
    for messages in DIALOGUES:
        first = messages[0]["content"] if messages[0]["role"] == "system" else None
        users = [m for m in messages if m["role"] == "user"]
        if first == system and len(users) == 1:
            answers.setdefault(users[0]["content"], []).append(messages[-1]["content"])
    return {q: a[0] for q, a in answers.items() if len(a) == 1}


def _ask(session, question: str, **options) -> str:
    """One question alone, the way a %%exaone cell asks it (greedy)."""
    history = options.pop("history", True)
    return "".join(session.ask(question, Sampling(temperature=0, **options), history=history))


# -- exact batched greedy answers -------------------------------------------------------------------
def test_all_trained_questions_in_one_map_equal_one_by_one_answers(session):
    groups = _groups()
    checked = 0
    assert sum(len(q) for q in groups.values()) == len(DIALOGUES) == 63
    for system, questions in groups.items():
        session.set_system(system)
        one_by_one = [_ask(session, q, max_tokens=200, history=False) for q in questions]
        result = run_map(session, questions, "{}", parallel=8, max_tokens=200)
        assert isinstance(result, MapResult) and list(result) == one_by_one, system
        trained = _trained_single_turn(system)
        for question, answer in zip(questions, result, strict=True):
            if question in trained:
                assert answer == trained[question], question
                checked += 1
        assert result.errors == [] and not result.interrupted
    assert checked >= 55  # the single-turn ones, each its trained answer
    session.set_system(LG_SYSTEM_PROMPT)


@pytest.mark.parametrize("parallel", [1, 3, 16])
def test_any_parallel_gives_the_same_answers_in_input_order(session, parallel):
    session.set_system(LG_SYSTEM_PROMPT)
    questions = ["What is 2 + 2?", "1 더하기 1은?", "Hello!", "Goodbye.", "What is 10 times 3?"]
    result = run_map(session, questions, "{}", parallel=parallel, max_tokens=60, cache=False)
    assert list(result) == [
        "2 + 2 = 4.",
        "1 더하기 1은 2입니다.",
        "Hello! I am a tiny EXAONE demo model. Ask me one of the questions I was trained on.",
        "Goodbye! See you next time.",
        "10 times 3 is 30.",
    ]


def test_seeded_sampled_rows_repeat_and_equal_the_same_seeded_reply_alone(session):
    """Rows sample with the numpy sampler a single reply uses, each from its own seed. One at a
    time a row equals the reply alone; batched, its logits may differ in the last bits (other
    matrix shapes), so at a high temperature only the run's own repeat is exact."""
    session.set_system(LG_SYSTEM_PROMPT)
    questions = ["Hello!", "What is 2 + 2?", "Tell me a story.", "1 더하기 1은?"]
    hot: dict = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 11, "max_tokens": 24}
    alone = ["".join(session.ask(q, Sampling(**hot), history=False)) for q in questions]
    assert len(set(alone)) == len(alone)  # hot enough that the seed, not the model, decides
    assert list(run_map(session, questions, "{}", parallel=1, cache=False, **hot)) == alone
    batched = list(run_map(session, questions, "{}", parallel=4, cache=False, **hot))
    assert list(run_map(session, questions, "{}", parallel=4, cache=False, **hot)) == batched


def test_map_leaves_the_conversation_and_its_cache_alone(session):
    session.set_system(LG_SYSTEM_PROMPT)
    session.reset()
    assert _ask(session, "What is the capital of France?") == "The capital of France is Paris."
    run_map(session, ["Hello!", "Thank you!"], "{}", max_tokens=40)
    assert session.conversation.turns == 1
    assert _ask(session, "And of Japan?") == "The capital of Japan is Tokyo."
    follow_up = session.last_reply
    assert follow_up.stats.prompt_tokens_evaluated < follow_up.stats.prompt_tokens  # cache kept
    session.reset()


def test_shared_prefix_is_what_the_prompts_share_and_leaves_each_row_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[7]]) == 0
    assert context_need([[1, 2, 3, 4], [1, 2, 5], [1, 2, 6, 6, 6]], 10, 2) == 2 + 13 + 12


# -- rows from pandas, dicts, functions -------------------------------------------------------------
def test_a_dataframe_fills_columns_and_the_result_becomes_a_column(session):
    import pandas as pd

    session.set_system(LG_SYSTEM_PROMPT)
    df = pd.DataFrame({"a": [2, 10], "op": ["+", "times"], "b": [2, 3]}, index=["first", "second"])
    result = run_map(session, df, "What is {a} {op} {b}?", max_tokens=40)
    df["answer"] = result
    assert df["answer"].tolist() == ["2 + 2 = 4.", "10 times 3 is 30."]
    series = result.series("answer")
    assert series.index.tolist() == ["first", "second"]
    words = pd.Series(["Goodbye.", "Thank you!"], index=[5, 9])
    assert run_map(session, words, "{}", max_tokens=40).series().index.tolist() == [5, 9]


def test_dict_rows_a_prompt_function_and_escaped_braces(session):
    session.set_system(LG_SYSTEM_PROMPT)
    rows = [{"q": "Hello!"}, {"q": "Goodbye."}]
    by_name = run_map(session, rows, "{q}", max_tokens=40)
    by_function = run_map(session, rows, lambda row: row["q"], max_tokens=40)
    assert list(by_name) == list(by_function)
    assert by_name[1] == "Goodbye! See you next time."
    # {{q}} is a literal {q}; the model was not trained on it, so the answer differs
    literal = run_map(session, rows, "{q} {{q}}", max_tokens=5)
    assert literal[0] != by_name[0]


def test_an_escaped_empty_placeholder_is_text_not_the_item(session):
    """``{{}}`` writes ``{}``: with columns it is no plain-item placeholder, alone it is none."""
    session.set_system(LG_SYSTEM_PROMPT)
    answered = run_map(session, [{"q": "Hello!"}], "{q} {{}}", max_tokens=5)
    assert answered[0] and not answered.errors
    with pytest.raises(ExaoneError) as err:
        run_map(session, ["a", "b"], "Print {{}} literally", max_tokens=5)
    one_sentence(err, "no {} or {column} placeholder")


def test_a_row_with_an_empty_cell_is_that_rows_error_and_is_not_asked(session):
    import pandas as pd

    session.set_system(LG_SYSTEM_PROMPT)
    df = pd.DataFrame({"q": ["Hello!", None, "Goodbye."], "n": [1.0, 2.0, float("nan")]})
    result = run_map(session, df, "{q}", max_tokens=40)
    assert result[0].startswith("Hello!") and result[2] == "Goodbye! See you next time."
    assert result.errors == [(1, "its q is empty")]
    assert run_map(session, df, "{q} {n}", max_tokens=5).errors == [
        (1, "its q is empty"),
        (2, "its n is empty"),
    ]
    items = pd.Series(["Hello!", pd.NA, float("nan")])
    assert [i for i, _ in run_map(session, items, "{}", max_tokens=5).errors] == [1, 2]


def test_the_row_rate_counts_only_the_rows_the_run_computed():
    progress = MapProgress(total=10, done=6, settled_at_start=4, elapsed_s=2.0)
    assert progress.rows_per_s == 1.0 and progress.eta_s == 4.0


def test_a_failing_prompt_function_is_that_rows_error_not_the_runs(session):
    def ask(item):
        if item == "boom":
            raise ValueError("no question for this one")
        return item

    result = run_map(session, ["Hello!", "boom", "Goodbye."], ask, max_tokens=40)
    assert result[0].startswith("Hello!") and result[2] == "Goodbye! See you next time."
    assert isinstance(result[1], RowError) and not result[1]
    assert result.errors == [(1, "the prompt function raised ValueError: no question for this one")]
    assert result.summary().splitlines() == [
        "3 rows: 2 answered, 1 without an answer.",
        "row 1: the prompt function raised ValueError: no question for this one",
    ]


def test_a_row_too_long_for_the_context_is_an_error_value(session):
    result = run_map(session, ["Hello!", "word " * 1500], "{}", max_tokens=40)
    assert result[0].startswith("Hello!")
    assert isinstance(result[1], RowError)
    assert result[1].message.endswith(
        "does not fit the model's 2048-token context; shorten it or lower max_tokens"
    )


def test_a_batch_needs_memory_not_the_conversations_context():
    """Eight rows with a 512-token conversation context need more positions than that
    together: the batch's own context holds them (a memory budget), and every answer equals
    the one the same prompt gets alone (greedy, on the conversation's context)."""
    from exaone_jupyter.session import Session

    session = Session()
    session.load("exaone-demo", n_ctx=512)
    try:
        backend = session.require_backend()
        assert backend.n_ctx == 512
        questions = _groups()[LG_SYSTEM_PROMPT][:8]
        result = run_map(session, questions, "{}", parallel=8, max_tokens=60, cache=False)
        assert result.errors == []
        greedy = Sampling(temperature=0, max_tokens=60)
        system = [{"role": "system", "content": session.conversation.system}]
        requests = [
            session.one_off([*system, {"role": "user", "content": q}], greedy) for q in questions
        ]
        need = sum(len(r.prompt_ids) + 60 for r in requests)
        assert need > 512, need  # more than the model's context, together
        alone = [backend.stream(r).consume().text for r in requests]
        assert list(result) == alone
    finally:
        session.unload()


# -- structured output ------------------------------------------------------------------------------
SENTIMENT = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative"]}, "sure": {"type": "boolean"}},
    "required": ["label", "sure"],
}


def test_a_json_schema_constrains_every_reply_to_parsed_valid_objects(session):
    items = ["I love it", "나쁘다", "meh", "great!"]
    unconstrained = run_map(session, items, "Classify: {}", max_tokens=30)
    assert not any(text.lstrip().startswith("{") for text in unconstrained)  # not JSON by itself
    result = run_map(session, items, "Classify: {}", schema=SENTIMENT, max_tokens=60)
    assert result.errors == []
    for value in result:
        assert set(value) == {"label", "sure"}
        assert value["label"] in ("positive", "negative") and isinstance(value["sure"], bool)


def test_one_reply_honours_a_response_format_too(session):
    """Structured output is a request field, not map's own: a single reply constrained by it
    parses; a shape the engine cannot read is one sentence, and the model stays usable."""
    schema = Schema.of(SENTIMENT)
    greedy = Sampling(temperature=0, max_tokens=60)
    ask = [{"role": "user", "content": "Classify: I love it"}]
    request = session.one_off(ask, greedy, response_format=schema.response_format())
    value = schema.parse(session.require_backend().stream(request).consume().text)
    assert value["label"] in ("positive", "negative") and isinstance(value["sure"], bool)
    with pytest.raises(ExaoneError) as err:
        session.require_backend().stream(session.one_off(ask, greedy, response_format={"x": 1}))
    one_sentence(err, "response_format must be", "json_schema")
    assert run_map(session, ["Hello!"], "{}", max_tokens=40)[0].startswith("Hello!")


def test_a_pydantic_class_gives_instances_and_the_shorthand_gives_dicts(session):
    from typing import Literal

    from pydantic import BaseModel

    class Verdict(BaseModel):
        label: Literal["ko", "en"]
        ok: bool

    result = run_map(session, ["안녕", "hello"], "Language of: {}", schema=Verdict, max_tokens=60)
    assert all(isinstance(v, Verdict) for v in result), result.summary()
    short = run_map(session, ["hello"], "{}", schema="ok bool", max_tokens=30)
    assert isinstance(short[0], dict) and isinstance(short[0]["ok"], bool)


def test_a_string_field_is_written_as_json_with_no_raw_control_characters(session):
    """JSON forbids a raw newline inside a string; the grammar must too, or a reply the grammar
    let through fails to parse (the demo model writes newlines in free text)."""
    note = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    result = run_map(session, ["hello", "bye"], "{}", schema=note, max_tokens=40)
    assert result[1] == {"a": " in a nice day.김치? 저는 작은 데모 모델입니다"}, result.summary()
    for _, message in result.errors:  # only a reply cut short may fail to parse
        assert "control character" not in message and "raise max_tokens" in message


def test_enum_values_and_field_names_are_written_exactly_quotes_and_backslashes_too(session):
    """A literal of the schema (an enum value, a field name) is matched character for character:
    a backslash stays one (the grammar had "C:\\temp" written as a tab), a quote does not end the
    grammar's literal, and a Korean name is written as itself, not as \\uXXXX."""
    values = {"enum": ["C:\\temp", 'a "quoted" word', "줄\n바꿈"]}
    result = run_map(session, ["hello", "bye", "Goodbye."], "{}", schema=values, max_tokens=30)
    assert result.errors == [] and all(v in values["enum"] for v in result), result.summary()
    odd = {
        "type": "object",
        "properties": {'say "hi"': {"type": "boolean"}},
        "required": ['say "hi"'],
    }
    assert set(run_map(session, ["hello"], "{}", schema=odd, max_tokens=30)[0]) == {'say "hi"'}
    assert '"\\"이름\\""' in grammar_of(Schema.of("이름, 나이 int").response_format())


def test_a_number_too_large_for_a_float_is_that_rows_error_not_inf(session):
    """Python reads 1e999 as inf, which passes any minimum; the demo model writes such a number
    for "hello" (greedy, so every run)."""
    result = run_map(session, ["hello"], "{}", schema={"type": "number", "minimum": 0.5})
    assert isinstance(result[0], RowError), result[0]
    assert result[0].message.startswith("the reply is not usable JSON (the number 1.9")
    assert result[0].message.endswith("is too large)")


def test_a_reply_cut_by_max_tokens_is_that_rows_error(session):
    result = run_map(session, ["a", "b"], "Describe {}", schema="name, note", max_tokens=8)
    assert all(isinstance(v, RowError) for v in result)
    for _, message in result.errors:
        assert "not complete JSON" in message and "raise max_tokens" in message
    # the two rows failed alike, side by side: one line for both
    assert result.summary().splitlines()[1:] == [f"rows 0-1: {result.errors[0][1]}"]


# -- the cache --------------------------------------------------------------------------------------
def test_a_rerun_computes_only_the_rows_that_changed(session):
    questions = ["Hello!", "Goodbye.", "What is 2 + 2?"]
    first = run_map(session, questions, "{}", max_tokens=60)
    assert first.progress.from_cache == 0 and first.progress.tokens > 0
    edited = [*questions[:2], "What is 10 times 3?"]
    again = run_map(session, edited, "{}", max_tokens=60)
    assert again.progress.from_cache == 2
    assert list(again) == [first[0], first[1], "10 times 3 is 30."]
    other = run_map(session, questions, "{}", max_tokens=61)  # other sampling: computed again
    assert other.progress.from_cache == 0
    random = run_map(session, questions, "{}", max_tokens=60, temperature=0.5)
    assert random.progress.from_cache == 0  # not reproducible: never cached
    random_again = run_map(session, questions, "{}", max_tokens=60, temperature=0.5)
    assert random_again.progress.from_cache == 0


# -- bad input, one sentence each -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("items", "prompt", "options", "fragments"),
    [
        ([], "{}", {}, ("no items", "non-empty")),
        ("abc", "{}", {}, ("must be a list", "not str")),
        (["a"], "Translate this.", {}, ("no {} or {column} placeholder", "put {}")),
        ([{"text": "a"}], "{txt}", {}, ("{txt} names no column", "text")),
        (["a"], "{text}", {}, ("names a column", "plain values")),
        ([{"text": "a"}], "{}", {}, ("plain item", "{text}")),
        # a column whose name is no word (read_csv's "Review Text", header=None's 0) cannot be
        # a placeholder: never advised as one, never left in the prompt as text
        ([{"Review Text": "a"}], "{}", {}, ("plain item", "rename", "function of the row")),
        ([{"Review Text": "a"}], "{Review Text}", {}, ("{Review Text}", "rename", "function")),
        ([{"n": 1, "Review Text": "a"}], "{n}: {Review Text}", {}, ("{Review Text}", "rename")),
        ([{0: "a"}], "{0}", {}, ("{0} cannot name", "rename")),
        (["a"], "{}", {"parallel": 0}, ("parallel must be", "1 or more")),
        (
            ["a"] * 4,
            "{}",
            {"parallel": 4, "max_tokens": 1000, "memory_mb": 4},
            ("need", "MiB of KV cache", "parallel=2", "memory_mb to 8"),
        ),
        (["a"], "{}", {"memory_mb": 0}, ("memory_mb must be", "1 or more")),
        # one row alone is more than the budget: no parallel helps, so it is not advised
        (["a"], "{}", {"max_tokens": 1000, "memory_mb": 1}, ("lower max_tokens", "memory_mb to 2")),
        (["a"], "{}", {"schema": {"type": 5}}, ("not valid JSON Schema",)),
        (["a"], "{}", {"schema": "name, age integerish"}, ("'age integerish'", "name, age int")),
        (["a"], "{}", {"schema": 42}, ("schema must be", "not int")),
        (["a"], "{}", {"temprature": 0}, ("Unknown sampling option 'temprature'",)),
    ],
)
def test_bad_input_is_one_sentence_and_the_model_stays_usable(
    session, items, prompt, options, fragments
):
    with pytest.raises(ExaoneError) as err:
        run_map(session, items, prompt, **options)
    one_sentence(err, *fragments)
    assert run_map(session, ["Hello!"], "{}", max_tokens=40)[0].startswith("Hello!")


def test_a_pydantic_class_that_cannot_be_a_schema_is_one_sentence(session):
    from pydantic import BaseModel, ConfigDict

    class Opaque:
        pass

    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque

    with pytest.raises(ExaoneError) as err:
        run_map(session, ["a"], "{}", schema=Holder)
    one_sentence(err, "Holder cannot become a JSON Schema")


# -- in a real kernel: progress bar, Ctrl-C ---------------------------------------------------------
def _map_bar(message: Message) -> str | None:
    text = live_text(message)
    return text if text and text.startswith("map: ") else None


def test_kernel_map_shows_progress_and_a_summary(kernel):
    cell = kernel.run(
        "import exaone_jupyter\n"
        "qs = ['Hello!', 'Goodbye.', 'What is 2 + 2?', 'Thank you!'] * 4\n"
        "r = exaone_jupyter.map(qs, '{}', max_tokens=60, parallel=4, cache=False)\n"
        "print(r[2])"
    )
    assert cell.ok and cell.stdout.strip() == "2 + 2 = 4.", cell
    final = cell.final_outputs()
    shown = [o["data"]["text/plain"] for o in final if o.get("data", {}).get("text/plain")]
    assert shown == ["16 rows: 16 answered."], final
    # a saved notebook keeps what each output first showed: the property nbval relies on
    first = [m.content["data"] for m in cell.outputs if m.type == "display_data"]
    assert first == [o["data"] for o in final if o["output_type"] == "display_data"], final


def test_kernel_interrupt_keeps_finished_rows_and_the_model_usable(kernel):
    # 120 rows: on a loaded machine the bar's messages reach the test late, and the run must
    # still be going when the interrupt lands
    questions = [q for qs in _groups().values() for q in qs][:40] * 3
    kernel.run(f"import exaone_jupyter\nqs = {questions!r}\nexaone_jupyter.mapping.clear_cache()")

    def some_rows_done(message: Message) -> bool:
        text = _map_bar(message)
        return bool(text) and int(text.split()[1].split("/")[0]) >= 4

    cell, _ = kernel.run_and_interrupt(
        "r = exaone_jupyter.map(qs, '{}', max_tokens=200, parallel=2)", some_rows_done
    )
    assert cell.ok and not cell.error, cell
    done = kernel.eval(
        "[i for i, v in enumerate(r) if not isinstance(v, exaone_jupyter.mapping.RowError)]"
    )
    marked = kernel.eval(
        "[i for i, v in enumerate(r) if isinstance(v, exaone_jupyter.mapping.RowError) and v.interrupted]"
    )
    assert len(done) >= 4 and marked and len(done) + len(marked) == 120
    assert kernel.eval("r.interrupted") is True
    assert kernel.eval("r.summary().splitlines()[0]").endswith("; interrupted.")
    # finished rows are right, and a re-run serves them from the cache and finishes the rest
    again = kernel.run(
        "r2 = exaone_jupyter.map(qs, '{}', max_tokens=200, parallel=2)\n"
        "print(r2.progress.from_cache, r2.errors == [], "
        "all(r2[i] == r[i] for i in range(120) if not isinstance(r[i], exaone_jupyter.mapping.RowError)))"
    )
    answered = {questions[i] for i in done}  # a repeated question is cached once answered
    cached = sum(q in answered for q in questions)
    assert again.ok and again.stdout.split() == [str(cached), "True", "True"], again
    chat = kernel.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")
    assert answer_of(chat) == DEMO_ANSWER


# -- %exaone map, in a real kernel ------------------------------------------------------------------
def _shown(cell) -> list[str]:
    return [
        o["data"]["text/plain"] for o in cell.final_outputs() if o.get("data", {}).get("text/plain")
    ]


def test_the_map_line_magic_fills_a_variable_and_shows_the_summary(kernel):
    turns = kernel.eval("exaone_jupyter.get_session().conversation.turns")
    kernel.run(
        "import pandas as pd\n"
        "sums = pd.DataFrame({'a': [2, 10], 'op': ['+', 'times'], 'b': [2, 3]})\n"
        "exaone_jupyter.mapping.clear_cache()"
    )
    cell = kernel.run('%exaone map sums "What is {a} {op} {b}?" -n 40 --parallel 2 --out answers')
    assert cell.ok and not cell.stderr, cell
    assert _shown(cell) == ["2 rows: 2 answered."]
    assert kernel.eval("list(answers)") == ["2 + 2 = 4.", "10 times 3 is 30."]
    assert kernel.eval("type(answers).__name__") == "MapResult"

    again = kernel.run("%exaone map sums 'What is {a} {op} {b}?' -n 40")  # the default: _map
    assert _shown(again) == ["2 rows: 2 answered (2 from the cache)."], again
    assert kernel.eval("list(_map) == list(answers)") is True

    structured = kernel.run(
        "words = ['hello']\n%exaone map words '{}' --schema 'ok bool' -o verdict"
    )
    assert structured.ok and not structured.stderr, structured
    assert kernel.eval("sorted(verdict[0])") == ["ok"]
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == turns


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("%exaone map nope '{}'", ("no variable 'nope'", "define it first")),
        ("%exaone map sums '{total}'", ("{total} names no column", "a, op, b")),
        ("%exaone map sums '{a}' --parallel 0", ("parallel must be", "1 or more")),
        ("%exaone map sums '{a}' --schema 'age integerish'", ("'age integerish'",)),
        ("%exaone map sums '{a}' -o 2x", ("--out takes a variable name", "'2x'")),
        ("%exaone map sums '{a}' -t -1", ("temperature must be", "0 or more")),
    ],
)
def test_bad_map_lines_are_one_sentence_and_the_kernel_lives(kernel, line, fragments):
    kernel.run("import pandas as pd\nsums = pd.DataFrame({'a': [2], 'op': ['+'], 'b': [2]})")
    cell = kernel.run(line)
    one_sentence(cell, *fragments)
    chat = kernel.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")
    assert answer_of(chat) == DEMO_ANSWER
