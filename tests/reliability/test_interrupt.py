"""Ctrl-C (the kernel's interrupt) while a reply is made: during prompt processing and during decoding.

Each interrupt is triggered by what the test sees on iopub, never after a fixed delay: the live
output's "evaluating the prompt…" notice (sent while no token has come) for prompt processing,
the first live update with reply text for decoding. A random GGUF large enough to be slow makes
the prompt take a while. After the interrupt: the kernel lives, the partial reply is kept in the
history marked interrupted, the cell shows it, and the model still answers exactly as before
(the KV cache was not left half-written).
"""

from __future__ import annotations

import pytest

from exaone_jupyter.testing import TinyShape, write_random_gguf
from kernel_helpers import (
    Snapshot,
    answer_of,
    healthy,
    is_evaluating_prompt,
    is_reply_text,
    live_updates,
    message_count,
)

SLOW = TinyShape(n_embd=512, n_head=8, n_head_kv=4, n_ff=1024, n_layer=6, n_ctx=4096)
REFERENCE = "%%exaone -t 0 -n 12 --no-history\nhello there"


@pytest.fixture(scope="module")
def slow_model(kernel, models):
    path = write_random_gguf(models / "slow.gguf", shape=SLOW, dtype="f16")
    cell = kernel.run(f"%exaone load {path} --n-ctx 4096")
    assert not cell.stderr and "Loaded" in cell.stdout, cell
    reference = answer_of(kernel.run(REFERENCE))
    assert reference
    yield reference
    kernel.run("%exaone load exaone-demo")


def _last(kernel, key):
    return kernel.value(f"exaone_jupyter.get_session().conversation.messages[-1].get({key!r})")


def _check_interrupted(kernel, cell, n_before, reference):
    """The checks after an interrupt; returns the partial reply's text and token count."""
    assert kernel.alive()
    assert cell.error is None and "Traceback" not in cell.stderr, cell
    text, tokens, finish = kernel.value(
        "(lambda r: (r.text, r.stats.completion_tokens, "
        "r.stats.finish_reason))(exaone_jupyter.last_reply())"
    )
    assert finish == "interrupted"
    # the cell shows the reply marked interrupted; the history keeps it, flagged
    assert "interrupted" in (answer_of(cell) or ""), cell
    assert message_count(kernel) == n_before + 2
    assert _last(kernel, "interrupted") is True
    assert _last(kernel, "content") == text
    # the model answers the reference question exactly as before the interrupt
    assert answer_of(kernel.run(REFERENCE)) == reference
    return text, tokens


def test_interrupt_during_prompt_processing(kernel, slow_model):
    n = message_count(kernel)
    # ~3,400 tokens: about a second of prompt processing in 512-token batches on 2 cores, far
    # longer than the 0.1 s after which the live output says the prompt is being evaluated.
    prompt = "hello world " * 300
    cell, _seen = kernel.run_and_interrupt(f"%%exaone -t 0 -n 8\n{prompt}", is_evaluating_prompt)
    assert not live_updates(cell), "a token came before the interrupt"
    text, tokens = _check_interrupted(kernel, cell, n, slow_model)
    assert text == "" and tokens == 0  # nothing was generated yet


def test_interrupt_during_decoding(kernel, slow_model):
    kernel.run("%exaone reset")  # the long prompt above would crowd out the 3500-token reply
    cell, first = kernel.run_and_interrupt("%%exaone -t 0 -n 3500\nwrite forever", is_reply_text)
    streamed = first.content["data"]["text/plain"].rpartition("\n\n")[0]
    text, tokens = _check_interrupted(kernel, cell, 0, slow_model)
    assert 0 < tokens < 3500 and text, (tokens, text)
    assert text.startswith(streamed)  # the reply kept all that had streamed before the interrupt


def test_demo_answers_after_interrupts(kernel, slow_model):
    before = Snapshot(kernel)
    healthy(kernel, before, reload_demo=True)
