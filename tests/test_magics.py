"""``%exaone`` and ``%%exaone`` in a real kernel, answering with the shipped ``exaone-demo`` model.

The demo model answers its trained dialogues exactly at temperature 0, so every answer below is
checked character for character against ``demo_dialogues.json``. One kernel serves the module;
each test starts its conversation with ``--new`` (or says why not).
"""

from __future__ import annotations

import json

import pytest

from checks import one_sentence
from exaone_jupyter.chat.exchange import MIME
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from kernel_helpers import DEMO_ANSWER as README_ANSWER
from kernel_helpers import DEMO_QUESTION as README_QUESTION
from kernel_helpers import Kernel, reply_outputs, start_kernel
from shared_fixtures import DIALOGUES


def trained(
    last_user: str, *, system: str | None = LG_SYSTEM_PROMPT, turns: int = 1
) -> list[tuple[str, str]]:
    """The (question, answer) pairs of one trained dialogue."""
    for messages in DIALOGUES:
        first_system = messages[0]["content"] if messages[0]["role"] == "system" else None
        pairs = [
            (q["content"], a["content"])
            for q, a in zip(messages[-2 * turns :: 2], messages[-2 * turns + 1 :: 2], strict=False)
        ]
        if (
            first_system == system
            and len(pairs) == turns
            and pairs[-1][0] == last_user
            and sum(m["role"] == "user" for m in messages) == turns
        ):
            return pairs
    raise AssertionError(f"{last_user!r} is not a trained dialogue")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The extension and the demo model loaded, no conversation yet."""
    with start_kernel(tmp_path_factory.mktemp("cwd")) as k:
        assert k.eval("exaone_jupyter.get_session().model_spec") == "exaone-demo"
        yield k


def ask(kernel: Kernel, question: str, options: str = "-t 0 --new") -> str:
    """Run a ``%%exaone`` cell; return the answer's text/plain after checking the outputs."""
    cell = kernel.run(f"%%exaone {options}\n{question}")
    assert cell.ok and not cell.stderr and not cell.errors, (cell.reply, cell.stderr)
    answer, meter = reply_outputs(cell)
    assert answer["text/markdown"] == answer["text/plain"]  # plain Markdown, no markers added
    assert "tok/s" in meter["text/plain"] and "exaone-demo" in meter["text/plain"]
    return answer["text/plain"]


def history(kernel: Kernel) -> str:
    cell = kernel.run("%exaone history")
    assert cell.ok
    return "".join(cell.plain()) + cell.stdout


# -- answers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "question",
    [
        README_QUESTION,
        "안녕하세요!",
        "1 더하기 1은?",
        "What is the capital of Korea?",
        "Write a Python function that adds two numbers.",
        "Translate '감사합니다' into English.",
    ],
)
def test_trained_answers_come_back_exactly(kernel, question):
    [(_, expected)] = trained(question)
    assert ask(kernel, question) == expected
    assert kernel.eval("exaone_jupyter.last_reply().text") == expected
    assert kernel.eval("exaone_jupyter.last_reply().stats.finish_reason") == "stop"


@pytest.mark.parametrize("follow_up", ["And of Japan?", "제 이름이 뭐라고 했죠?"])
def test_the_next_cell_continues_the_conversation(kernel, follow_up):
    (q1, a1), (q2, a2) = trained(follow_up, turns=2)
    assert ask(kernel, q1) == a1
    assert ask(kernel, q2, "-t 0") == a2  # no --new: the first turn is in the prompt
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 2
    shown = history(kernel)
    assert all(text in shown for text in (q1, a1, q2, a2))


def test_system_prompt_option_and_no_system_prompt(kernel):
    [(q, korean)] = trained("What is your name?", system="Answer in Korean only.")
    [(_, english)] = trained("What is your name?")
    assert ask(kernel, q, '-t 0 --new -s "Answer in Korean only."') == korean
    assert ask(kernel, q) == korean  # the system prompt stays for later cells, --new or not
    try:
        assert kernel.run("%exaone system --clear").stdout == "System prompt cleared.\n"
        [(hi, hello)] = trained("Hi", system=None)
        assert ask(kernel, hi) == hello
        assert ask(kernel, README_QUESTION) == README_ANSWER  # trained with and without
    finally:
        kernel.run(f"%exaone system {LG_SYSTEM_PROMPT}")
    assert ask(kernel, q) == english


def test_history_shows_each_message_as_a_reply_is_shown(kernel):
    """``$``, tags and an open code fence in a question: the history's Markdown shows them as
    written (escaped, the fence closed before the next message); its text/plain is exact."""
    question = "It costs $5 and $10; is <b>bold</b> ok?\n```python\nx = 1"
    assert kernel.run(f"%%exaone -t 0 -n 3 --new\n{question}").ok
    [shown] = kernel.run("%exaone history").displays
    markdown = shown["text/markdown"]
    assert r"It costs \$5 and \$10; is \<b>bold\</b> ok?" in markdown
    assert "```python\nx = 1\n```\n\n</div>\n\n**assistant**" in markdown
    assert f"**user**: {question}\n\n**assistant**: " in shown["text/plain"]


def test_quoted_option_values_lose_their_quotes(kernel):
    """The system prompt is the text inside the quotes, and -o "reply" makes ``reply``."""
    [(q, korean)] = trained("What is your name?", system="Answer in Korean only.")
    try:
        assert ask(kernel, q, '-t 0 --new -s "Answer in Korean only." -o "reply"') == korean
        assert kernel.run("%exaone system").stdout == "Answer in Korean only.\n"
        assert kernel.eval("reply") == korean
    finally:
        kernel.run(f"%exaone system {LG_SYSTEM_PROMPT}")


# -- options ------------------------------------------------------------------------------------
def test_out_stores_the_reply_text(kernel):
    ask(kernel, README_QUESTION, "-t 0 --new -o answer")
    assert kernel.eval("answer") == README_ANSWER


def test_no_history_is_not_remembered(kernel):
    [(q, a)] = trained("What is 2 + 2?")
    assert ask(kernel, README_QUESTION) == README_ANSWER
    assert ask(kernel, q, "-t 0 --no-history") == a  # asked as if alone
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 1
    assert q not in history(kernel) and README_ANSWER in history(kernel)


def test_new_starts_a_fresh_conversation(kernel):
    ask(kernel, README_QUESTION)
    ask(kernel, "Hello!", "-t 0")
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 2
    [(q, a)] = trained("Tell me a joke.")
    assert ask(kernel, q, "-t 0 --new") == a
    shown = history(kernel)
    assert q in shown and "Hello!" not in shown and README_QUESTION not in shown


def test_dry_run_shows_the_prompt_and_its_token_count(kernel):
    ask(kernel, README_QUESTION)
    before = kernel.eval("exaone_jupyter.last_reply().stats.completion_tokens")
    cell = kernel.run("%%exaone --dry-run\nHello!")
    assert cell.ok and not cell.stderr
    [shown] = cell.of_type("display_data")
    text = shown.content["data"]["text/plain"]
    messages = [
        {"role": "system", "content": LG_SYSTEM_PROMPT},
        {"role": "user", "content": README_QUESTION},
        {"role": "assistant", "content": README_ANSWER},
        {"role": "user", "content": "Hello!"},
    ]
    prompt_text, ids = kernel.eval(f"exaone_jupyter.render_prompt({messages!r})")
    assert f"**Prompt: {len(ids)} tokens** (nothing generated)" in text
    assert prompt_text in text and "[|user|]Hello!\n[|assistant|]" in text
    # nothing was generated or remembered
    assert not [m for m in cell.of_type("display_data") if "tok/s" in json.dumps(m.content)]
    assert kernel.eval("exaone_jupyter.last_reply().stats.completion_tokens") == before
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 1
    # nor changed: a dry run of --new and -s leaves the conversation and its system prompt
    assert kernel.run("%%exaone --dry-run --new -s 'Be brief.'\nHello!").ok
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 1
    assert kernel.eval("exaone_jupyter.get_session().conversation.system") == LG_SYSTEM_PROMPT


def test_dry_run_prompt_stays_in_its_code_block(kernel):
    """A question with a code fence in it: the prompt's fence outruns it, the text is exact."""
    question = "Fix this:\n```python\nprint('$5 <b>')\n```\nand ````this````."
    cell = kernel.run(f"%%exaone --dry-run --new\n{question}")
    assert cell.ok and not cell.stderr
    [shown] = cell.of_type("display_data")
    messages = [
        {"role": "system", "content": LG_SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    prompt_text, _ = kernel.eval(f"exaone_jupyter.render_prompt({messages!r})")
    assert f"`````text\n{prompt_text}\n`````\n\nids: `[" in shown.content["data"]["text/markdown"]


def test_names_in_the_cell_come_from_the_notebook(kernel):
    kernel.run("country = 'Korea'\nprice = 5")
    [(_q, a)] = trained("What is the capital of Korea?")
    assert ask(kernel, "What is the capital of {country}?") == a
    cell = kernel.run(
        "%%exaone --dry-run --new\n{country} {unknown} {{country}} {price*2} $price "
        '{"json": {"a": 1}}'
    )
    note, text = cell.plain()  # the unknown name is sent as written, and said so
    assert note.startswith("ℹ {unknown} is not a variable of this notebook, so it was sent")
    assert 'Korea {unknown} {country} {price*2} $price {"json": {"a": 1}}' in text


def test_config_round_trip_and_listing(kernel):
    listing = kernel.run("%config ExaoneMagics").stdout
    for trait in (
        "temperature",
        "max_tokens",
        "update_interval",
        "model",
        "gpu_layers",
        "show_meter",
        "system",
    ):
        assert f"ExaoneMagics.{trait}=" in listing
    magics = "get_ipython().magics_manager.registry['ExaoneMagics']"
    assert kernel.eval(f"{magics}.temperature") == 0.7
    try:
        assert kernel.run("%config ExaoneMagics.temperature = 0").ok
        assert kernel.eval(f"{magics}.temperature") == 0.0
        assert "Current: 0.0" in kernel.run("%config ExaoneMagics").stdout
        # the setting is what a cell without -t uses: greedy, so the trained answer
        assert ask(kernel, README_QUESTION, "--new") == README_ANSWER
        assert kernel.run("%config ExaoneMagics.max_tokens = 3").ok
        cell = kernel.run(f"%%exaone --new\n{README_QUESTION}")
        assert kernel.eval("exaone_jupyter.last_reply().stats.completion_tokens") == 3
        assert "stopped at max tokens" in reply_outputs(cell)[1]["text/plain"]
    finally:
        kernel.run("%config ExaoneMagics.temperature = 0.7\n%config ExaoneMagics.max_tokens = 512")


def test_configured_system_prompt_and_meter(kernel):
    [(q, korean)] = trained("What is your name?", system="Answer in Korean only.")
    try:
        assert kernel.run("%config ExaoneMagics.system = 'Answer in Korean only.'").ok
        assert ask(kernel, q) == korean
        kernel.run("%exaone load exaone-demo")  # a load keeps the configured prompt
        assert ask(kernel, q) == korean
        assert kernel.run("%config ExaoneMagics.show_meter = False").ok
        cell = kernel.run(f"%%exaone -t 0 --new\n{q}")
        assert cell.ok and not cell.stderr
        finals = [m.content["data"] for m in cell.of_type("display_data")]
        exchange = finals[-1].pop(MIME)  # the record the saved notebook keeps
        assert finals == [{"text/plain": ""}, {"text/markdown": korean, "text/plain": korean}]
        assert exchange["system"] == "Answer in Korean only."
        assert exchange["messages"][-1] == {"role": "assistant", "content": korean}
        assert not any("tok/s" in json.dumps(m.content) for m in cell.updates)
    finally:
        kernel.run(
            "%config ExaoneMagics.show_meter = True\n%config ExaoneMagics.system = None\n"
            f"%exaone system {LG_SYSTEM_PROMPT}"
        )


def test_a_prompt_set_later_outlives_the_configured_one_and_none_restores_the_default(kernel):
    def system() -> str:
        return kernel.run("%exaone system").stdout.strip()

    try:
        kernel.run("%config ExaoneMagics.system = 'Answer in Korean only.'")
        kernel.run("%exaone system Be brief.")
        kernel.run("%exaone load exaone-demo")  # the load used to put the configured one back
        assert system() == "Be brief."
        kernel.run("%reload_ext exaone_jupyter")  # and so did a reload
        assert system() == "Be brief."
        kernel.run("%config ExaoneMagics.system = None")  # the family's default, at once
        assert system() == LG_SYSTEM_PROMPT
        assert kernel.eval("exaone_jupyter.get_session().system_chosen") is False  # loads follow
        kernel.run("%exaone load exaone-demo")
        assert system() == LG_SYSTEM_PROMPT
    finally:
        kernel.run(f"%config ExaoneMagics.system = None\n%exaone system {LG_SYSTEM_PROMPT}")


# -- help and errors ----------------------------------------------------------------------------
def test_help(kernel):
    page = kernel.run("%%exaone?").page
    assert "%%exaone [-s SYSTEM] [-t TEMPERATURE]" in page  # the magic's name, not the method's
    for option in ("--no-history", "--dry-run", "-o VAR, --out VAR", "--new", "{name}"):
        assert option in page
    for code in ("%exaone help", "%exaone"):
        cell = kernel.run(code)
        [text] = cell.plain()
        for usage in (
            "load [--file GLOB] [--gpu-layers N]",
            "info`",
            "history`",
            "reset`",
            "save PATH`",
            "restore PATH`",
            "stats`",
            "panel`",
            "connect [--model NAME]",
        ):
            assert f"`%exaone {usage}" in text
        assert "%%exaone [-s SYSTEM]" in text
    page = kernel.run("%exaone?").page  # the line magic's help: every subcommand's options
    assert "usage: %exaone load" in page and "--api-key-env VAR" in page


# (Option parsing and usage errors: tests/test_arguments.py, in-process.)


def test_a_user_error_is_one_sentence_and_the_model_still_answers(kernel):
    ask(kernel, README_QUESTION)
    cell = kernel.run("%exaone load /no/such.gguf")
    assert cell.ok and not cell.displays
    one_sentence(cell, "/no/such.gguf")
    assert kernel.eval("exaone_jupyter.get_session().model_spec") == "exaone-demo"
    [(q, a)] = trained("Hello!")
    assert ask(kernel, q, "-t 0") != ""  # the conversation goes on
    assert kernel.eval("exaone_jupyter.get_session().conversation.turns") == 2
    assert ask(kernel, q) == a
    cell = kernel.run("%%exaone -t 0 --new\n   \n")
    assert cell.ok
    one_sentence(cell, "empty")


def test_unload_ext_removes_both_magics(kernel):
    assert kernel.run("%unload_ext exaone_jupyter").ok
    cell = kernel.run("%%exaone\nHi")
    assert "Cell magic `%%exaone` not found" in cell.stderr
    assert "Line magic function `%exaone` not found" in kernel.run("%exaone help").stderr
    assert "ExaoneMagics" not in kernel.run("%config").stdout
    # loading again brings both back, with the model and the conversation kept
    assert kernel.run("%load_ext exaone_jupyter").ok
    assert ask(kernel, README_QUESTION) == README_ANSWER


# -- terminal IPython ---------------------------------------------------------------------------
def test_terminal_ipython_prints_the_reply_once(ipython_shell):
    """Outside a notebook kernel the reply is printed as it comes (display updates would
    re-print the whole text each time), then the meter."""
    cell = ipython_shell.run("%exaone load exaone-demo")
    assert not cell.stderr and cell.error is None, cell
    cell = ipython_shell.run(f"%%exaone -t 0 --new\n{README_QUESTION}")
    assert not cell.stderr and cell.error is None, cell
    answer, _, meter = cell.stdout.rpartition("\n\n")
    assert answer == README_ANSWER and "tok/s" in meter and "exaone-demo" in meter


def test_the_load_progress_bar_follows_the_load_and_leaves_no_trace(kernel):
    """The bar's display protocol in a real kernel. llama.cpp reports a small file's whole load
    within a millisecond (no bar is drawn then: checked by the loads above, whose cells hold only
    their "Loaded" line), so a slow load is played here as a sequence of llama.cpp fractions."""
    cell = kernel.run(
        "from exaone_jupyter.ui.progress import LoadProgress\n"
        "import time\n"
        "with LoadProgress('big.gguf', notebook=True, interval=0.05) as bar:\n"
        "    for fraction in (0.0, 0.25, 0.5, 1.0):\n"
        "        started = time.perf_counter()\n"
        "        while time.perf_counter() - started < 0.06: pass  # llama.cpp reading\n"
        "        bar(fraction)\n"
    )
    assert cell.ok, cell.stderr
    assert list(cell.displays) == [{"text/plain": ""}]  # the state a saved notebook keeps
    shown = [m.content["data"] for m in cell.updates]
    # the first report starts the clock; 3 more fractions drawn, then emptied
    assert len(shown) == 4 and shown[-1] == {"text/plain": ""}, shown
    for data, percent in zip(shown, ("25%", "50%", "100%"), strict=False):
        assert data["text/plain"].startswith(f"Loading big.gguf… {percent} (")
        assert "exaone-load-progress" in data["text/html"]
    assert cell.final_outputs() == [
        {"output_type": "display_data", "data": {"text/plain": ""}, "metadata": {}}
    ]
    load = kernel.run("%exaone load exaone-demo --n-ctx 1024")  # a real, fast load
    assert load.ok and not load.displays and load.stdout.startswith("Loaded exaone-demo")
    assert kernel.run("%exaone load exaone-demo").stdout.startswith("Loaded exaone-demo")
