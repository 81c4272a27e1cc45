"""The session end to end on real models: the shipped demo model answers its trained dialogues
exactly through the session's template, history and engine; budgets, notices and errors."""

from __future__ import annotations

import platform

import llama_cpp
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from checks import one_sentence
from exaone_jupyter import session as session_module
from exaone_jupyter.chat.conversation import Conversation
from exaone_jupyter.chat.families import (
    EXAONE3_TEMPLATE,
    EXAONE4_TEMPLATE,
    EXAONE_DEEP_TEMPLATE,
    LG_SYSTEM_PROMPT,
)
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.session import Session
from exaone_jupyter.testing import EOS_ID, write_random_gguf
from shared_fixtures import DIALOGUES, find_dialogue, text_of

GREEDY = Sampling(temperature=0)
SHORT = Sampling(temperature=0, max_tokens=32)  # for the 512-token random models


@pytest.fixture(scope="module")
def demo():
    s = Session()
    notices = s.load("exaone-demo")
    assert not any("template" in n for n in notices), notices
    yield s
    s.unload()


def answer(s: Session, question: str, **options) -> tuple[str, object]:
    reply = s.ask(question, GREEDY, **options).consume()
    return reply.text, reply.stats


# -- trained answers ----------------------------------------------------------------------------
SINGLE = [  # (question, system; None: no system prompt)
    ("한국의 수도는 어디인가요? Answer in one sentence.", LG_SYSTEM_PROMPT),
    ("What is EXAONE?", LG_SYSTEM_PROMPT),
    ("안녕하세요!", LG_SYSTEM_PROMPT),
    ("1 더하기 1은?", LG_SYSTEM_PROMPT),
    ("Translate '감사합니다' into English.", LG_SYSTEM_PROMPT),
    ("Write a Python function that adds two numbers.", LG_SYSTEM_PROMPT),
    ("가을에 대한 짧은 시를 써 주세요.", LG_SYSTEM_PROMPT),
    ("What does 사랑 mean?", LG_SYSTEM_PROMPT),
    ("How do I run EXAONE in Jupyter? Give me the steps.", LG_SYSTEM_PROMPT),
    ("What is your name?", "Answer in Korean only."),
    ("Hi", None),
    ("안녕?", None),
    ("한국의 수도는 어디인가요? Answer in one sentence.", None),
]


def test_the_demo_model_loads_with_its_own_template_and_lgs_system_prompt(demo):
    assert demo.template.family.name == "exaone3" and demo.template.notice is None
    assert demo.template.source == EXAONE3_TEMPLATE
    assert Session().conversation.system is None
    fresh = Session()
    fresh.load("exaone-demo")
    try:
        assert fresh.conversation.system == LG_SYSTEM_PROMPT  # the 3.x family's default
        text, stats = answer(fresh, "What is your name?")
        assert text == "My name is EXAONE demo." and stats.finish_reason == "stop"
    finally:
        fresh.unload()


def _label(question: str, system: str | None) -> str:
    kind = "lg" if system == LG_SYSTEM_PROMPT else ("sys" if system else "nosys")
    return f"{kind}-{question[:20]}"


@pytest.mark.parametrize("question, system", SINGLE, ids=[_label(q, s) for q, s in SINGLE])
def test_trained_prompts_come_back_exactly(demo, question, system):
    expected = find_dialogue(question, system=system)[-1]["content"]
    text, stats = answer(demo, question, new=True, system=system or "")
    assert text == expected
    assert stats.finish_reason == "stop"
    assert demo.conversation.messages == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": expected},
    ]


@pytest.mark.parametrize(
    "first, second, system",
    [
        ("What is the capital of France?", "And of Japan?", LG_SYSTEM_PROMPT),
        ("제 이름은 민수예요.", "제 이름이 뭐라고 했죠?", LG_SYSTEM_PROMPT),
        ("Pick a number between 1 and 10.", "Why that one?", None),
    ],
    ids=["en-lg", "ko-lg", "en-nosys"],
)
def test_a_two_turn_dialogue_through_the_history(demo, first, second, system):
    dialogue = find_dialogue(second, system=system, turns=2)
    text1, stats1 = answer(demo, first, new=True, system=system or "")
    text2, stats2 = answer(demo, second)
    assert [text1, text2] == [m["content"] for m in dialogue if m["role"] == "assistant"]
    assert stats1.finish_reason == stats2.finish_reason == "stop"
    assert demo.conversation.to_messages() == dialogue
    # prefix reuse: the whole first prompt (at least) stays in the KV cache
    assert stats2.prompt_tokens_evaluated < stats2.prompt_tokens
    assert stats2.prompt_tokens_evaluated <= stats2.prompt_tokens - stats1.prompt_tokens


def test_render_prompt_is_the_reference_for_every_trained_dialogue(demo, monkeypatch):
    import exaone_jupyter

    reference = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        EXAONE3_TEMPLATE
    )
    checked = 0
    for messages in DIALOGUES:
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            history = messages[:k]
            text, ids = demo.render_prompt(history)
            want = reference.render(
                messages=history,
                add_generation_prompt=True,
                bos_token="[BOS]",
                eos_token="[|endofturn|]",
            )
            assert text == want
            assert ids == demo.backend.tokenize(want, special=True)
            assert text_of(demo.backend, ids) == want
            checked += 1
    assert checked >= 66
    monkeypatch.setattr(session_module, "_session", demo)  # the package-level function
    assert exaone_jupyter.render_prompt(DIALOGUES[0][:2]) == demo.render_prompt(DIALOGUES[0][:2])


def test_an_interrupted_reply_is_kept_marked_and_survives_save_and_restore(demo, tmp_path):
    question = "How do I run EXAONE in Jupyter? Give me the steps."
    full = find_dialogue(question)[-1]["content"]
    reply = demo.ask(question, GREEDY, new=True, system=LG_SYSTEM_PROMPT)
    for n, _ in enumerate(reply):
        if n == 5:
            reply.stop()
    assert reply.stats.finish_reason == "interrupted"
    assert reply.text and full.startswith(reply.text) and reply.text != full
    assert demo.conversation.messages[-1] == {
        "role": "assistant",
        "content": reply.text,
        "interrupted": True,
    }
    saved = Conversation(demo.conversation.system, [dict(m) for m in demo.conversation.messages])
    path = demo.conversation.save(tmp_path / "chat.json")
    demo.reset()
    assert demo.restore(str(path)) == saved and demo.conversation == saved
    # a bad file changes nothing
    (tmp_path / "bad.json").write_text("{oops", encoding="utf-8")
    before = demo.conversation
    with pytest.raises(ExaoneError) as err:
        demo.restore(str(tmp_path / "bad.json"))
    one_sentence(err, "bad.json", "not valid JSON", "%exaone save")
    assert demo.conversation is before and before == saved
    with pytest.raises(ExaoneError):
        demo.restore(str(tmp_path / "missing.json"))
    assert demo.conversation is before


def test_a_plain_function_can_watch_the_session():
    """Bound methods are held weakly; a function (a builtin too) as it is."""
    seen: list[str] = []
    s = Session()
    s.watch(print)
    s.watch(seen.append)
    s.set_system("x")
    assert seen == ["conversation"]


def test_think_on_a_model_without_reasoning_says_so(demo):
    turn = demo.prepare("Hello!", GREEDY, new=True, system=LG_SYSTEM_PROMPT, think=True)
    assert any("no reasoning mode" in n for n in turn.notes)
    assert turn.prompt.text.endswith("[|user|]Hello!\n[|assistant|]")


def test_new_and_system_take_effect_only_when_the_reply_comes(demo):
    """A refused question or one never sent (a dry run) leaves the conversation as it was."""
    demo.set_system(LG_SYSTEM_PROMPT)
    demo.ask("Hi", GREEDY, new=True).consume()
    kept = Conversation(LG_SYSTEM_PROMPT, [dict(m) for m in demo.conversation.messages])
    with pytest.raises(ExaoneError):
        demo.prepare("word " * 3000, GREEDY, new=True, system="Be brief.")
    turn = demo.prepare("Hello!", GREEDY, new=True, system="Be brief.")
    assert turn.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
    ]
    assert demo.conversation == kept
    demo.send(turn).consume()
    assert demo.conversation.system == "Be brief." and demo.conversation.turns == 1
    assert demo.conversation.messages[0] == {"role": "user", "content": "Hello!"}


# -- the context budget -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eos_session(tmp_path_factory):
    """A random model that ends every reply at once (greedy), 256-token context."""
    path = write_random_gguf(tmp_path_factory.mktemp("eos") / "eos.gguf", favour_token=EOS_ID)
    s = Session()
    s.load(str(path), n_ctx=256)
    yield s
    s.unload()


def test_a_question_too_long_for_the_context_names_no_option_that_was_not_given(eos_session):
    """Without -n the reply's length adapts, so lowering max_tokens cannot help."""
    with pytest.raises(ExaoneError) as err:
        eos_session.prepare("단어 " * 400, Sampling(), adapt_max_tokens=True)
    one_sentence(err, "alone take", "of the 256-token context", "no room for a reply")
    assert "max-tokens" not in str(err.value) and "max_tokens" not in str(err.value)


def test_old_turns_leave_the_prompt_when_the_context_is_full(eos_session):
    s = eos_session
    s.set_system("시스템 프롬프트는 남아야 합니다.")
    s.conversation.reset()
    for i in range(5):
        s.conversation.add("user", f"질문 {i} " + "abc " * 6)
        s.conversation.add("assistant", f"답 {i} " + "xyz " * 6)
    history = [dict(m) for m in s.conversation.messages]
    sampling = Sampling(temperature=0, max_tokens=64)
    turn = s.prepare("마지막 질문", sampling)
    full = len(
        s.render_prompt(s.conversation.to_messages({"role": "user", "content": "마지막 질문"}))[1]
    )
    assert full + 64 > 256  # it would not fit whole
    dropped = (len(history) - (len(turn.messages) - 2)) // 2
    assert dropped >= 1
    if dropped == 1:
        expected = "The oldest turn no longer fits the 256-token context and was left out of "
        expected += "this prompt (the history keeps it)."
    else:
        expected = f"The {dropped} oldest turns no longer fit the 256-token context and were "
        expected += "left out of this prompt (the history keeps them)."
    assert turn.notes == [expected]
    assert turn.messages[0] == {"role": "system", "content": "시스템 프롬프트는 남아야 합니다."}
    assert turn.messages[1:-1] == history[2 * dropped :]
    assert turn.messages[-1] == {"role": "user", "content": "마지막 질문"}
    assert len(turn.prompt.ids) + 64 <= 256
    one_more = s.conversation.to_messages()[:1] + history[2 * (dropped - 1) :] + turn.messages[-1:]
    assert len(s.render_prompt(one_more)[1]) + 64 > 256  # as few as needed left out
    reply = s.send(turn).consume()
    assert reply.stats.finish_reason == "stop" and reply.text == ""
    assert s.conversation.messages == history + [
        {"role": "user", "content": "마지막 질문"},
        {"role": "assistant", "content": ""},
    ]


def test_a_message_longer_than_the_context_is_one_sentence(eos_session):
    s = eos_session
    s.set_system(None)
    s.conversation.reset()
    s.conversation.add("user", "q")
    s.conversation.add("assistant", "a")
    before = [dict(m) for m in s.conversation.messages]
    for question, sampling, words in (
        ("긴 질문 " * 200, Sampling(max_tokens=16), "This message needs "),
        ("q", Sampling(max_tokens=256), "max_tokens=256 leaves no room"),
    ):
        with pytest.raises(ExaoneError) as err:
            s.ask(question, sampling)
        one_sentence(err, words)
        assert s.conversation.messages == before


# -- templates: missing, raising, not compiling -------------------------------------------------
def test_a_gguf_without_a_template_gets_the_family_template_with_a_notice(tmp_path):
    path = write_random_gguf(tmp_path / "no-template.gguf", template=None, favour_token=EOS_ID)
    # what llama-cpp-python itself would do with this file: Llama-2's [INST] format
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    assert "tokenizer.chat_template" not in llm.metadata and llm.chat_format == "llama-2"
    llm.close()
    s = Session()
    notices = s.load(str(path))
    try:
        [notice] = [n for n in notices if "template" in n]
        one_sentence(
            notice,
            "no-template.gguf carries no chat template",
            "exaone3 template",
            "Llama-2's [INST] format",
        )
        assert s.info().template_notice == notices[-1]
        assert s.conversation.system == LG_SYSTEM_PROMPT
        text, _ids = s.render_prompt([{"role": "user", "content": "Hi"}])
        assert text == "[|system|][|endofturn|]\n[|user|]Hi\n[|assistant|]" and "[INST]" not in text
        turn = s.prepare("Hi", SHORT)
        assert turn.prompt.text.startswith(f"[|system|]{LG_SYSTEM_PROMPT}[|endofturn|]\n")
        assert s.send(turn).consume().stats.finish_reason == "stop"
    finally:
        s.unload()


def test_a_model_that_is_not_exaone_and_has_no_template_says_its_format_is_unknown(tmp_path):
    """EXAONE 3's format stands in, with one notice, and LG's system prompt is not used."""
    path = write_random_gguf(
        tmp_path / "tiny-llama.gguf", name="Tiny llama", template=None, favour_token=EOS_ID
    )
    s = Session()
    notices = s.load(str(path))
    try:
        [notice] = notices
        one_sentence(
            notice,
            "tiny-llama.gguf is not an EXAONE model and carries no chat template",
            "prompt format is unknown",
            "exaone3 template stands in",
        )
        assert s.conversation.system is None
        text, _ids = s.render_prompt([{"role": "user", "content": "Hi"}])
        assert text == "[|system|][|endofturn|]\n[|user|]Hi\n[|assistant|]"  # no LG prompt
        assert s.send(s.prepare("Hi", SHORT)).consume().stats.finish_reason == "stop"
    finally:
        s.unload()


def test_a_template_that_raises_ends_in_one_sentence_and_the_model_stays(tmp_path):
    path = write_random_gguf(
        tmp_path / "raises.gguf",
        favour_token=EOS_ID,
        template=(
            "{% for m in messages %}{% if m.role == 'system' %}"
            "{{ raise_exception('System role not supported') }}{% endif %}"
            "{{ '[|' + m.role + '|]' + m.content }}{% endfor %}"
        ),
    )
    s = Session()
    s.load(str(path))
    try:
        s.set_system("a system prompt")
        for call in (
            lambda: s.ask("Hi", SHORT),
            lambda: s.render_prompt(s.conversation.to_messages({"role": "user", "content": "Hi"})),
        ):
            with pytest.raises(ExaoneError) as err:
                call()
            one_sentence(
                err,
                "chat template failed to render (System role not supported)",
                "check the messages",
                "or the template",
            )
        assert s.conversation.messages == [] and s.backend is not None
        s.set_system(None)  # without the system prompt the same model works
        assert s.ask("Hi", SHORT).consume().stats.finish_reason == "stop"
    finally:
        s.unload()


def test_a_template_that_does_not_compile_leaves_the_loaded_model(tmp_path):
    bad = write_random_gguf(
        tmp_path / "bad.gguf", template="{% for m in messages %}{{ m.content }}"
    )
    s = Session()
    s.load(str(write_random_gguf(tmp_path / "ok.gguf", favour_token=EOS_ID)))
    try:
        old = s.backend
        with pytest.raises(ExaoneError) as err:
            s.load(str(bad))
        one_sentence(err, "chat template does not compile", "Unexpected end of template")
        assert s.backend is old and s.model_spec.endswith("ok.gguf")
        assert s.ask("Hi", SHORT).consume().stats.finish_reason == "stop"
    finally:
        s.unload()


# -- reasoning in the history -------------------------------------------------------------------
@pytest.mark.parametrize(
    "template, think, history_text, rendered",
    [
        (EXAONE_DEEP_TEMPLATE, False, "생각</thought>", "[|assistant|][|endofturn|]\n[|user|]다음"),
        (
            EXAONE4_TEMPLATE,
            True,
            "생각</think>",
            "[|assistant|]\n<think>\n\n</think>\n\n[|endofturn|]\n[|user|]\n다음[|endofturn|]",
        ),
    ],
    ids=["deep", "exaone4-think"],
)
def test_unfinished_reasoning_is_not_replayed_as_an_answer(
    tmp_path, template, think, history_text, rendered
):
    """A reply cut off inside the reasoning that the prompt opened: the history closes it, so the
    template strips it like any earlier reasoning."""
    path = write_random_gguf(tmp_path / "thinker.gguf", template=template, favour_text="생각")
    s = Session()
    s.load(str(path))
    try:
        reply = s.ask("질문", Sampling(temperature=0, max_tokens=6), think=think).consume()
        assert reply.text == "생각" and reply.stats.finish_reason == "length"
        assert reply.thinking_opened and s.split_reasoning(reply) == ("생각", "")
        assert s.conversation.messages[-1]["content"] == history_text
        text = s.prepare("다음", SHORT).prompt.text
        assert rendered in text and "생각" not in text
    finally:
        s.unload()


def test_an_unload_hands_the_heaps_free_pages_back():
    """glibc would keep ~11 MiB of the demo model's freed blocks resident after an unload
    (benchmarks/unload_memory.py); the unload returns them, so a second trim finds little."""
    import psutil

    from exaone_jupyter.engine.llama import heap

    # glibc has malloc_trim, so on Linux (the platform the figures are for) this cannot skip
    if platform.libc_ver()[0] != "glibc":
        pytest.skip(f"{platform.libc_ver()[0] or 'this C library'} is not glibc (no malloc_trim)")
    assert heap.release_free_pages(), "glibc's malloc_trim was not found or did not run"
    s, process = Session(), psutil.Process()
    s.load("exaone-demo")
    assert s.ask("What is your name?", GREEDY).consume().text == "My name is EXAONE demo."
    s.unload()
    left = process.memory_info().rss
    heap.release_free_pages()
    assert left - process.memory_info().rss < 2 * 2**20


def test_watchers_hear_every_change_and_do_not_keep_a_panel_alive():
    import gc

    s, heard = Session(), []

    class View:
        def on_change(self, what):
            heard.append(what)

    view = View()
    s.watch(view.on_change)
    s.watch(lambda what: 1 / 0)  # a broken view warns; the change still happens
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        s.load("exaone-demo")
    assert heard == ["model"]
    try:
        with pytest.warns(RuntimeWarning):
            s.ask("What is your name?", GREEDY).consume()
        with pytest.warns(RuntimeWarning):
            s.set_system("Be brief.")
        with pytest.warns(RuntimeWarning):
            s.reset()
        assert heard == ["model", "conversation", "conversation", "conversation"]
        assert s.conversation.turns == 0 and s.conversation.system == "Be brief."
        del view
        gc.collect()
        with pytest.warns(RuntimeWarning):
            s.reset()
        assert len(heard) == 4 and len(s._watchers) == 1  # the view's method went with it
    finally:
        with pytest.warns(RuntimeWarning):
            s.unload()
