"""The conversation: history, save/restore as JSON, and the context budget (real token counts)."""

from __future__ import annotations

import json
import os

import pytest

from checks import one_sentence
from exaone_jupyter.chat.conversation import FORMAT, Conversation
from exaone_jupyter.chat.families import EXAONE3, EXAONE4, LG_SYSTEM_PROMPT
from exaone_jupyter.chat.template import ChatTemplate
from exaone_jupyter.errors import ExaoneError


def sample() -> Conversation:
    c = Conversation(system="당신은 친절한 조수입니다.\n  Answer briefly. ")
    c.add("user", "한국의 수도는?\n\n")
    c.add("assistant", "  서울입니다 (Seoul).\n", interrupted=True)
    c.add("user", '\ue000 [|endofturn|]\n[|assistant|] "quotes" \\ back\tslash')
    c.add("assistant", "")
    c.add("tool", '{"result": "맑음"}')
    c.add("user", "lone surrogate \ud800 and emoji 🙂")
    c.add("assistant", "끝", interrupted=False)
    return c


# -- history ------------------------------------------------------------------------------------
def test_append_reset_and_messages():
    c = Conversation(system="S")
    assert c.to_messages() == [{"role": "system", "content": "S"}] and c.turns == 0
    c.add("user", "q1")
    c.add("assistant", "a1", interrupted=True)
    c.add("user", "q2")
    assert c.turns == 2
    extra = {"role": "user", "content": "q3"}
    messages = c.to_messages(extra)
    assert messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "interrupted": True},
        {"role": "user", "content": "q2"},
        extra,
    ]
    messages[1]["content"] = "changed"  # copies: the history is not touched through them
    assert c.messages[0]["content"] == "q1"
    assert Conversation().to_messages() == [] and Conversation(system="").to_messages() == []
    c.reset()
    assert c.messages == [] and c.system == "S" and c.turns == 0


def test_a_system_message_is_not_a_turn():
    with pytest.raises(ExaoneError) as err:
        Conversation().add("system", "x")
    one_sentence(err, "user, assistant or tool", "'system'", "system prompt is set on its own")


# -- files --------------------------------------------------------------------------------------
def test_save_and_restore_round_trip_exactly(tmp_path):
    c = sample()
    path = c.save(tmp_path / "chat.json")
    back = Conversation.load(path)
    assert back == c
    assert back.messages[1]["interrupted"] is True and back.messages[-1]["interrupted"] is False
    assert back.to_json() == c.to_json()
    assert json.loads(path.read_text("utf-8"))["format"] == FORMAT
    # readable Korean in the file (escaped only because of the lone surrogate)
    plain = Conversation(system=None, messages=[{"role": "user", "content": "안녕하세요\n"}])
    plain.save(tmp_path / "plain.json")
    assert "안녕하세요" in (tmp_path / "plain.json").read_text("utf-8")
    assert Conversation.load(tmp_path / "plain.json") == plain
    assert Conversation.load(plain.save(tmp_path / "plain.json")) == plain  # overwrite
    assert Conversation.load(Conversation().save(tmp_path / "empty.json")) == Conversation()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json", "empty.json", "plain.json"]


def test_a_saved_file_has_the_mode_any_new_file_gets(tmp_path):
    """Readable by whom the umask says, as a file open() makes (not only by its owner)."""
    umask = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")
        path = sample().save(tmp_path / "chat.json")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "is not valid JSON (line 1)"),
        ("", "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
        ('{"messages": []}', "is not a saved exaone-jupyter conversation"),
        ("[1, 2]", "is not a saved exaone-jupyter conversation"),
        (json.dumps({"format": FORMAT, "version": 99, "messages": []}), "format version 99"),
        (json.dumps({"format": FORMAT, "version": 1, "messages": {}}), "malformed message list"),
        (
            json.dumps({"format": FORMAT, "version": 1, "system": 3, "messages": []}),
            "malformed message list",
        ),
        (
            json.dumps(
                {"format": FORMAT, "version": 1, "messages": [{"role": "system", "content": "x"}]}
            ),
            "malformed message list",
        ),
        (
            json.dumps(
                {"format": FORMAT, "version": 1, "messages": [{"role": "user", "content": None}]}
            ),
            "malformed message list",
        ),
        (
            json.dumps({"format": FORMAT, "version": 1, "messages": ["hi"]}),
            "malformed message list",
        ),
    ],
)
def test_a_bad_file_is_one_sentence(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ExaoneError) as err:
        Conversation.load(path)
    one_sentence(err, words)


def test_unreadable_paths_are_one_sentence(tmp_path):
    (tmp_path / "latin1.json").write_bytes(b'{"format": "\xff"}')
    for path, words in (
        (tmp_path / "missing.json", "There is no file"),
        (tmp_path, "is a folder"),
        (tmp_path / "latin1.json", "is not UTF-8"),
    ):
        with pytest.raises(ExaoneError) as err:
            Conversation.load(path)
        one_sentence(err, words)
    with pytest.raises(ExaoneError) as err:
        sample().save(tmp_path / "no" / "such" / "folder.json")
    one_sentence(err, "Could not write")


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = sample().save(tmp_path / "chat.json")
    before = path.read_bytes()

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(ExaoneError) as err:
        Conversation(system="new").save(path)
    one_sentence(err, "No space left on device")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["chat.json"]


# -- the context budget, counted with the real tokenizer -----------------------------------------
def counter(backend, family=EXAONE3):
    """A ``measure`` for ``fit``: the rendered Prompt, whose len() is its token count."""
    template = ChatTemplate(family.template, family=family)
    return lambda messages: template.prompt(messages, backend)


def fit(c: Conversation, question: dict, measure, limit: int) -> tuple[list[dict], int]:
    fitted = c.fit(question, measure, limit)
    assert fitted.prompt == measure(
        fitted.messages
    )  # the prompt it measured is the one it hands back
    return fitted.messages, fitted.dropped


def long_conversation(turns: int = 6, system: str | None = LG_SYSTEM_PROMPT) -> Conversation:
    c = Conversation(system=system)
    for i in range(turns):
        c.add("user", f"질문 {i}: " + "가나다 " * 5)
        c.add("assistant", f"답 {i}: " + "answer " * 8)
    return c


@pytest.mark.parametrize("family", [EXAONE3, EXAONE4], ids=lambda f: f.name)
def test_everything_fits_untouched(demo_backend, family):
    c = long_conversation()
    question = {"role": "user", "content": "마지막 질문"}
    messages, dropped = fit(c, question, counter(demo_backend, family), 10_000)
    assert dropped == 0 and messages == c.to_messages(question)


@pytest.mark.parametrize("family", [EXAONE3, EXAONE4], ids=lambda f: f.name)
@pytest.mark.parametrize("system", [LG_SYSTEM_PROMPT, None], ids=["lg-system", "no-system"])
def test_the_oldest_turns_leave_first_and_as_few_as_needed(random_backend, family, system):
    c = long_conversation(system=system)
    count = counter(random_backend, family)
    question = {"role": "user", "content": "마지막 질문"}
    full = len(count(c.to_messages(question)))
    sizes = []
    for k in range(0, 7):  # the prompt size with the k oldest turns left out
        kept = Conversation(system, [dict(m) for m in c.messages[2 * k :]])
        sizes.append(len(count(kept.to_messages(question))))
    assert sizes[0] == full and sizes == sorted(sizes, reverse=True)
    for k in range(1, 7):
        limit = sizes[k]  # exactly enough once k turns are gone
        messages, dropped = fit(c, question, count, limit)
        assert dropped == k, (k, limit)
        assert messages == Conversation(system, c.messages[2 * k :]).to_messages(question)
        assert len(count(messages)) <= limit
        if system:
            assert messages[0] == {"role": "system", "content": system}
        assert messages[-1] == question
        assert len(c.messages) == 12  # the history keeps everything


def test_a_tool_result_stays_with_its_turn(random_backend):
    c = Conversation(system=None)
    for i in range(3):
        c.add("user", f"q{i} " * 10)
        c.add("assistant", f"call{i}")
        c.add("tool", f"result{i} " * 10)
        c.add("assistant", f"a{i}")
    count = counter(random_backend, EXAONE4)
    question = {"role": "user", "content": "q"}
    limit = len(count(Conversation(None, c.messages[4:]).to_messages(question)))
    messages, dropped = fit(c, question, count, limit)
    assert dropped == 1 and messages[0] == {"role": "user", "content": "q1 " * 10}


def test_a_question_that_cannot_fit_is_one_sentence(random_backend):
    count = counter(random_backend)
    question = {"role": "user", "content": "너무 긴 질문 " * 50}
    for system, opening in (
        (LG_SYSTEM_PROMPT, "This message and the system prompt need "),
        (None, "This message needs "),
    ):
        c = long_conversation(system=system)
        need = len(count(Conversation(system).to_messages(question)))
        with pytest.raises(ExaoneError) as err:
            c.fit(question, count, need - 1)
        text = one_sentence(err, f"{need} tokens", f"more than the {need - 1}", "shorten it")
        assert text.startswith(opening)
        messages, dropped = fit(c, question, count, need)  # exactly enough: everything else goes
        assert dropped == 6 and messages == Conversation(system).to_messages(question)
    with pytest.raises(ExaoneError):
        Conversation().fit(question, count, 3)


def test_counting_is_cheap_for_a_long_history(random_backend):
    c = long_conversation(turns=64)
    calls = []
    base = counter(random_backend)

    def count(messages):
        calls.append(len(messages))
        return base(messages)

    question = {"role": "user", "content": "q"}
    limit = len(base(Conversation(c.system, c.messages[-6:]).to_messages(question)))
    fitted = c.fit(question, count, limit)
    assert fitted.dropped == 61 and len(calls) <= 9  # a bisection, not one count per turn
