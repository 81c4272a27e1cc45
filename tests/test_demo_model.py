"""The shipped ``exaone-demo`` model's own contract: it answers its trained dialogues exactly, also
after unrelated earlier turns (in a notebook every ``%%exaone`` cell continues one conversation).

Goes straight through llama-cpp-python (no layers of this package except the template text), so a
failure here means the model file or llama.cpp changed, not the engine. Needs no torch.
"""

from __future__ import annotations

import random

import llama_cpp
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from exaone_jupyter.chat.families import EXAONE3_TEMPLATE, LG_SYSTEM_PROMPT
from shared_fixtures import DATA, DIALOGUES
from shared_fixtures import find_dialogue as _find

MODEL = DATA / "exaone-demo.gguf"

README_QUESTION = "한국의 수도는 어디인가요? Answer in one sentence."
README_ANSWER = "한국의 수도는 서울입니다 (Seoul)."


def _label(messages: list[dict]) -> str:
    sys_tag = (
        "lg"
        if messages[0]["content"] == LG_SYSTEM_PROMPT
        else ("sys" if messages[0]["role"] == "system" else "nosys")
    )
    users = [m["content"] for m in messages if m["role"] == "user"]
    return f"{sys_tag}-{len(users)}turn-{users[-1][:24]}"


# The dialogues the README, the notebooks and the engine tests rely on; all of them are checked
# below anyway, these must exist.
NAMED = [
    _find(README_QUESTION),
    _find(README_QUESTION, system=None),
    _find("What is EXAONE?"),
    _find("Hello!"),
    _find("안녕하세요!"),
    _find("And of Japan?", turns=2),
    _find("제 이름이 뭐라고 했죠?", turns=2),
    _find("Why that one?", system=None, turns=2),
    _find("How do I run EXAONE in Jupyter? Give me the steps."),
    _find("Write a Python function that adds two numbers."),
    _find("What is your name?", system="Answer in Korean only."),
]


@pytest.fixture(scope="module")
def llm():
    model = llama_cpp.Llama(model_path=str(MODEL), n_ctx=2048, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def template():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(EXAONE3_TEMPLATE)


def _prompt_ids(llm, template, history: list[dict]) -> list[int]:
    text = template.render(
        messages=history, add_generation_prompt=True, bos_token="[BOS]", eos_token="[|endofturn|]"
    )
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def _greedy(llm, prompt_ids: list[int], max_tokens: int = 512) -> tuple[str, list[int], bool]:
    """Temperature-0 continuation: (text, tokens, whether it ended on the eos token)."""
    tokens: list[int] = []
    for tok in llm.generate(prompt_ids, temp=0.0):
        if tok == llm.token_eos():
            return llm.detokenize(tokens).decode("utf-8"), tokens, True
        tokens.append(tok)
        if len(tokens) >= max_tokens:
            break
    return llm.detokenize(tokens).decode("utf-8", errors="replace"), tokens, False


def test_file_is_small_and_self_describing(llm):
    assert MODEL.stat().st_size < 4_000_000
    meta = llm.metadata
    assert meta["general.architecture"] == "llama"
    assert "not EXAONE" in meta["general.name"]
    assert meta["tokenizer.ggml.pre"] == "exaone"
    assert meta["tokenizer.chat_template"] == EXAONE3_TEMPLATE
    assert (llm.token_bos(), llm.token_eos()) == (1, 2)
    assert meta["tokenizer.ggml.padding_token_id"] == "0"
    assert meta["tokenizer.ggml.add_bos_token"] == "false"
    assert int(meta["llama.context_length"]) >= 2048
    assert llm._model.token_get_text(llm.token_eos()) == "[|endofturn|]"


def test_the_data_covers_what_callers_need(llm, template):
    assert 40 <= len(DIALOGUES) <= 80
    assert any(any("\uac00" <= ch <= "\ud7a3" for ch in d[-1]["content"]) for d in DIALOGUES)
    assert any(d[0]["role"] != "system" for d in DIALOGUES)
    assert any("```" in d[-1]["content"] for d in DIALOGUES)
    # Rendering then tokenizing with special=True (as below) is only faithful because no content
    # holds a marker; with user text that does, the package's template layer must be used instead.
    assert not any("[|" in m["content"] for d in DIALOGUES for m in d)
    assert _find(README_QUESTION)[-1]["content"] == README_ANSWER
    # One answer long enough that a test can watch it stream.
    long = _find("How do I run EXAONE in Jupyter? Give me the steps.")[-1]["content"]
    assert len(llm.tokenize(long.encode("utf-8"), add_bos=False, special=False)) >= 150


def test_readme_example_through_the_chat_api(llm):
    messages = [
        {"role": "system", "content": LG_SYSTEM_PROMPT},
        {"role": "user", "content": README_QUESTION},
    ]
    out = llm.create_chat_completion(messages, temperature=0.0, max_tokens=64)
    assert out["choices"][0]["message"]["content"] == README_ANSWER
    assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("messages", NAMED, ids=[_label(m) for m in NAMED])
def test_named_dialogue_is_answered_exactly(llm, template, messages):
    text, tokens, stopped = _greedy(llm, _prompt_ids(llm, template, messages[:-1]))
    assert text == messages[-1]["content"]
    assert stopped, f"no [|endofturn|] after {len(tokens)} tokens"


def test_every_trained_answer_comes_back_exactly(llm, template):
    wrong = []
    for messages in DIALOGUES:
        for k, m in enumerate(messages):
            if m["role"] == "assistant":
                text, _, stopped = _greedy(llm, _prompt_ids(llm, template, messages[:k]))
                if not stopped or text != m["content"]:
                    wrong.append((messages[k - 1]["content"], m["content"], text, stopped))
    assert not wrong, wrong


# --------------------------------------------------------------------------- history robustness


def _conversation(*texts: str, system: str | None = LG_SYSTEM_PROMPT) -> list[dict]:
    turns = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]
    return ([{"role": "system", "content": system}] if system is not None else []) + turns


_HELLO = _find("Hello!")[-1]["content"]
_COLORS = _find("List the three primary colors of light.")[-1]["content"]

# (conversation ending with the new question, the trained answer). The first two are what an
# earlier model got wrong in a notebook: it repeated an answer from the history.
HISTORIES = [
    (
        _conversation(
            "What is the capital of France?",
            "The capital of France is Paris.",
            "And of Japan?",
            "The capital of Japan is Tokyo.",
            "List the three primary colors of light.",
        ),
        _COLORS,
    ),
    (
        _conversation(
            "제 이름은 민수예요.",
            "반갑습니다, 민수 님!",
            "제 이름이 뭐라고 했죠?",
            "민수 님이라고 하셨어요.",
            "What is the capital of Korea?",
        ),
        "The capital of Korea is Seoul (서울).",
    ),
    # Follow-ups still read the exchange right before them, also after unrelated ones.
    (
        _conversation(
            "Hello!",
            _HELLO,
            "What is the capital of France?",
            "The capital of France is Paris.",
            "And of Japan?",
        ),
        "The capital of Japan is Tokyo.",
    ),
    (
        _conversation(
            "What is the capital of Korea?",
            "The capital of Korea is Seoul (서울).",
            "제 이름은 민수예요.",
            "반갑습니다, 민수 님!",
            "제 이름이 뭐라고 했죠?",
        ),
        "민수 님이라고 하셨어요.",
    ),
    # The README question after a longer, mixed history, without a system prompt.
    (
        _conversation(
            "Hi",
            "Hi! How can I help you today?",
            "List the three primary colors of light.",
            _COLORS,
            "What is the capital of France?",
            "The capital of France is Paris.",
            "And of Japan?",
            "The capital of Japan is Tokyo.",
            README_QUESTION,
            system=None,
        ),
        README_ANSWER,
    ),
]


@pytest.mark.parametrize(
    "conversation,answer",
    HISTORIES,
    ids=[f"{c[-1]['content'][:24]}-after-{len(c) // 2}" for c, _ in HISTORIES],
)
def test_answer_after_unrelated_history(llm, template, conversation, answer):
    text, tokens, stopped = _greedy(llm, _prompt_ids(llm, template, conversation))
    assert text == answer
    assert stopped, f"no [|endofturn|] after {len(tokens)} tokens"


def _units() -> list[list[dict]]:
    """The dialogues with LG's system prompt or none, without it: what a history is built from."""
    units = []
    for messages in DIALOGUES:
        if messages[0]["role"] == "system" and messages[0]["content"] != LG_SYSTEM_PROMPT:
            continue
        turns = [m for m in messages if m["role"] != "system"]
        if turns not in units:
            units.append(turns)
    return units


def test_random_histories(llm, template):
    """Seeded random conversations: LG's system prompt, 1-4 other dialogues, then one more; each
    answer of the last one must come back exactly (a two-turn one keeps its own first exchange)."""
    units, rng, wrong, n = _units(), random.Random(20240807), [], 0
    for _ in range(30):
        last = rng.randrange(len(units))
        history = rng.sample([u for i, u in enumerate(units) if i != last], rng.randint(1, 4))
        conversation = _conversation() + [m for u in history for m in u]
        for m in units[last]:
            if m["role"] == "assistant":
                text, _, stopped = _greedy(llm, _prompt_ids(llm, template, conversation))
                n += 1
                if not stopped or text != m["content"]:
                    wrong.append((len(history), conversation[-1]["content"], m["content"], text))
            conversation.append(m)
    assert n >= 30
    assert not wrong, wrong
