"""A conversation's past turns are tokenized once (chat/token_memo.py): later questions reuse
their ids, and the prompt is the one the model's own tokenizer makes. The shipped demo model."""

from __future__ import annotations

import pytest

from exaone_jupyter.chat.token_memo import TokenMemo
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.session import Session

LONG = "데이터 분석 결과입니다. The numbers are 1, 2, 3. " * 2000  # ~90,000 characters


@pytest.fixture(scope="module")
def demo():
    s = Session()
    s.load("exaone-demo", n_ctx=2048)
    yield s
    s.unload()


def test_past_turns_are_tokenized_once_and_the_prompt_is_unchanged(demo):
    demo.reset()
    demo.conversation.messages += [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "It lists numbers."},
    ]
    memo = demo.tokenizer
    assert isinstance(memo, TokenMemo)
    turns, tokenized = [], []
    for question in ("What is it?", "And the second number?", "Thanks!"):
        before = memo.tokenized_chars
        turns.append(demo.prepare(question, Sampling(temperature=0, max_tokens=8)))
        tokenized.append(memo.tokenized_chars - before)
    assert tokenized[0] >= len(LONG)  # the first question tokenizes the history...
    assert max(tokenized[1:]) < 1000  # ...the next ones only what is new
    for turn in turns:
        assert turn.prompt.ids == demo.template.prompt(turn.messages, demo.backend.tokenizer).ids


def test_the_memo_keeps_to_its_budget(demo):
    memo = TokenMemo(demo.backend.tokenizer, budget_chars=3 * len(LONG))
    texts = [f"{i}: {LONG}" for i in range(5)]
    for text in texts:
        assert memo.tokenize(text, special=False) == demo.backend.tokenizer.tokenize(
            text, special=False
        )
    before = memo.tokenized_chars
    memo.tokenize(texts[-1], special=False)  # recent: remembered
    assert memo.tokenized_chars == before
    memo.tokenize(texts[0], special=False)  # the oldest went first
    assert memo.tokenized_chars == before + len(texts[0])
