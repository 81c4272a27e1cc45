"""How a ``%%exaone`` reply reaches a notebook: live updates, the saved outputs, interrupting.

A real kernel (``jupyter_client``) runs the cells and these tests read the iopub messages as a
frontend would. Long replies come from random-weight GGUFs (``quiet_control_tokens``: they never
stop on their own); exact answers from the shipped ``exaone-demo`` model.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import exaone_jupyter
from exaone_jupyter.testing import TinyShape, write_random_gguf
from exaone_jupyter.ui.meter import meter_line_html, meter_text
from exaone_jupyter.ui.render import close_fences, reply_markdown
from kernel_helpers import (
    EXCHANGE_MIME,
    Cell,
    Kernel,
    exchange_of,
    is_reply_text,
    live_updates,
    reply_outputs,
    start_kernel,
)

LONG_QUESTION = "How do I run EXAONE in Jupyter? Give me the steps."
LONG_ANSWER = next(
    d["messages"][-1]["content"]
    for d in json.loads(
        (Path(exaone_jupyter.__file__).parent / "data" / "demo_dialogues.json").read_text("utf-8")
    )
    if d["messages"][-2]["content"] == LONG_QUESTION
)
INTERVAL = 0.05
# 3,500 tokens of the random model: about 1.5 s and 25 live updates on 2 cores, so even a machine
# several times faster sends the live updates the throttle tests require
LONG_STORY = "%%exaone -t 0 -n 3500 --new\nTell me a long story."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "random": write_random_gguf(folder / "random.gguf", shape=TinyShape(n_ctx=4096)),
        # room for a reply that would take half a minute, to interrupt it
        "endless": write_random_gguf(folder / "endless.gguf", shape=TinyShape(n_ctx=131072)),
    }


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The extension loaded with live updates every INTERVAL seconds, no model yet."""
    with start_kernel(tmp_path_factory.mktemp("cwd"), load_demo=False) as k:
        assert k.run(f"%config ExaoneMagics.update_interval = {INTERVAL}").ok
        yield k


def load(kernel: Kernel, spec: str, *options: str) -> None:
    cell = kernel.run(f"%exaone load {spec} {' '.join(options)}")
    assert cell.ok and cell.stdout.startswith("Loaded"), cell.stderr


def check_live_updates(cell: Cell, interval: float) -> list[dict]:
    """The throttle's contract, read from the kernel's own timestamps: live updates came (a reply
    this long must show progress), each holds the reply so far (growing, a prefix of the final
    answer) and the live meter, and none came closer to the previous one than ``interval``."""
    assert cell.ok and not cell.stderr, cell
    shown = live_updates(cell)
    assert len(shown) >= 3, f"only {len(shown)} live updates with reply text: {cell.updates}"
    answer, _ = reply_outputs(cell)
    texts, counts = [], []
    for data in shown:
        text, _, meter = data["text/plain"].rpartition("\n\n")
        assert text and answer["text/plain"].startswith(text), (
            text[:80],
            answer["text/plain"][:80],
        )
        assert meter.startswith("… tok/s · ") or " tok/s · " in meter, meter
        assert "▌" in data["text/markdown"] and "⚡" in data["text/markdown"]
        assert data["text/markdown"].endswith(meter_line_html(meter))  # styled as the final one
        texts.append(text)
        counts.append(int(re.search(r"(\d[\d,]*) tokens?", meter).group(1).replace(",", "")))
    # the reply grows from one update to the next, and so does the meter's token count
    assert all(len(b) > len(a) and b.startswith(a) for a, b in itertools.pairwise(texts)), texts
    assert all(b > a for a, b in itertools.pairwise(counts)), counts
    # no more than one update per interval (the last update empties the output at the end)
    stamps = [m.time for m in cell.updates][:-1]
    assert all(b - a >= interval * 0.9 for a, b in itertools.pairwise(stamps)), stamps
    outputs = [m for m in cell.messages if m.type != "stream"]
    elapsed = outputs[-1].time - outputs[0].time  # the kernel's clock, first to last output
    assert len(cell.updates) <= elapsed / interval + 2, (len(cell.updates), elapsed)
    return shown


def test_a_long_reply_streams_with_throttled_updates(kernel, models):
    load(kernel, models["random"])
    cell = kernel.run(LONG_STORY, timeout=120)
    stats = kernel.eval("exaone_jupyter.last_reply().stats.as_dict()")
    assert stats["completion_tokens"] == 3500 and stats["finish_reason"] == "length"
    check_live_updates(cell, INTERVAL)


def test_the_interval_has_a_floor_of_20_updates_a_second(kernel, models):
    load(kernel, models["random"])
    try:
        assert kernel.run("%config ExaoneMagics.update_interval = 0.001").ok
        cell = kernel.run(LONG_STORY, timeout=120)
    finally:
        kernel.run(f"%config ExaoneMagics.update_interval = {INTERVAL}")
    check_live_updates(cell, 0.05)  # 1 ms asked, 50 ms kept


def test_final_outputs_hold_the_whole_reply_and_first_displays_equal_them(kernel):
    load(kernel, "exaone-demo")
    cell = kernel.run(f"%%exaone -t 0 --new\n{LONG_QUESTION}")
    assert cell.ok and not cell.stderr
    answer, meter = reply_outputs(cell)
    assert answer == {"text/markdown": LONG_ANSWER, "text/plain": LONG_ANSWER}
    assert set(meter) == {"text/plain", "text/html"}
    assert meter["text/plain"] in meter["text/html"].replace("&#x27;", "'")
    assert kernel.eval("exaone_jupyter.last_reply().stats.completion_tokens") > 150

    # What a notebook keeps (updates applied) is what each output's first display showed: the
    # property nbval needs, since it compares first displays and ignores updates.
    first = [{k: v for k, v in m.content.items() if k != "transient"} for m in cell.outputs]
    final = cell.final_outputs()
    assert [o["data"] for o in final] == [o["data"] for o in first]
    record = {EXCHANGE_MIME: exchange_of(cell)}
    assert [o["data"] for o in final] == [{"text/plain": ""}, {**answer, **record}, meter]


@pytest.mark.kernel  # nbclient's kernel, then nbval's
def test_nbclient_saves_the_full_reply_and_nbval_passes(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    nb.cells = [
        nbformat.v4.new_code_cell(source)
        for source in (
            "%load_ext exaone_jupyter",
            "%exaone load exaone-demo",
            "%config ExaoneMagics.update_interval = 0.05",
            f"%%exaone -t 0\n{LONG_QUESTION}",
            "%%exaone -t 0 --new\n한국의 수도는 어디인가요? Answer in one sentence.",
        )
    ]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)

    saved = nbformat.read(path, as_version=4)
    outputs = saved.cells[3].outputs
    assert [o.output_type for o in outputs] == ["display_data"] * 3
    assert outputs[0].data == {"text/plain": ""}
    record = outputs[1].data.pop(EXCHANGE_MIME)  # saved as JSON: what `%exaone resume` reads
    assert outputs[1].data == {"text/markdown": LONG_ANSWER, "text/plain": LONG_ANSWER}
    assert record["messages"][-1] == {"role": "assistant", "content": LONG_ANSWER}
    assert "tok/s" in outputs[2].data["text/plain"]
    assert saved.cells[4].outputs[1].data["text/plain"] == "한국의 수도는 서울입니다 (Seoul)."

    # nbval re-runs the saved notebook in a fresh kernel and compares: only the meter's figures
    # may differ, which a sanitizer file is for. (The fresh kernel restores the prompts' saved
    # KV states, so the meter's "(N new)" differs too.)
    (tmp_path / "sanitize.cfg").write_text(
        "[meter]\nregex: \\d+(\\.\\d+)? (tok/s|ms)\nreplace: N\n"
        "[restored]\nregex: tok \\(\\d+ new\\)\nreplace: tok\n",
        "utf-8",
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n", "utf-8")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            "--nbval-sanitize-with",
            "sanitize.cfg",
            "executed.ipynb",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "5 passed" in run.stdout


def test_interrupt_keeps_the_partial_reply_and_the_kernel_goes_on(kernel, models):
    load(kernel, models["endless"], "--n-ctx 131072")
    cell, first = kernel.run_and_interrupt(
        "%%exaone -t 0 -n 100000 --new\nTell me a story that never ends.", is_reply_text
    )
    # the cell ends normally: no traceback, no KeyboardInterrupt, the reply shown as interrupted
    assert cell.ok and not cell.errors and not cell.stderr, (cell.reply, cell.stderr)
    answer, meter = reply_outputs(cell)
    assert answer["text/plain"] and answer["text/markdown"].endswith("*⏹ interrupted*")
    assert meter["text/plain"].endswith("· interrupted")
    stats = kernel.eval("exaone_jupyter.last_reply().stats.as_dict()")
    assert stats["finish_reason"] == "interrupted"
    assert 0 < stats["completion_tokens"] < 100000
    assert kernel.eval("exaone_jupyter.last_reply().text") == answer["text/plain"]
    # what had streamed when the interrupt was sent is kept
    assert answer["text/plain"].startswith(
        first.content["data"]["text/plain"].rpartition("\n\n")[0]
    )
    # no live update came after the final state
    answer_at = cell.messages.index(cell.of_type("display_data")[-2])
    assert cell.messages.index(cell.updates[-1]) < answer_at

    shown = kernel.run("%exaone history").plain()[0]
    assert "**assistant** *(interrupted)*: " in shown
    assert shown.endswith(answer["text/plain"])
    assert (
        kernel.eval("exaone_jupyter.get_session().conversation.messages[-1]['content']")
        == answer["text/plain"]
    )

    # the next cells work: the same model, then the demo model with a trained answer
    cell = kernel.run("%%exaone -t 0 -n 5\nAnd then?")
    assert cell.ok and not cell.stderr
    assert reply_outputs(cell)[1]["text/plain"].endswith("stopped at max tokens")
    load(kernel, "exaone-demo")
    cell = kernel.run("%%exaone -t 0 --new\n한국의 수도는 어디인가요? Answer in one sentence.")
    assert reply_outputs(cell)[0]["text/plain"] == "한국의 수도는 서울입니다 (Seoul)."


# -- the Markdown a live update shows (no kernel needed) ----------------------------------------
@pytest.mark.parametrize(
    "text, live",
    [
        ("Here it is:", "Here it is:▌"),
        (
            "Here it is:\n\n```python\ndef add(a, b):",
            "Here it is:\n\n```python\ndef add(a, b):▌\n```",
        ),
        ("```python", "```python\n▌\n```"),  # the cursor never joins a fence line
        ("```python\nx = 1\n```", "```python\nx = 1\n```\n▌"),  # closed: nothing added
        ("~~~~\n```\nstill code", "~~~~\n```\nstill code▌\n~~~~"),  # only its own kind closes it
        ("  ```\ncode\n  ```", "  ```\ncode\n  ```\n▌"),  # indented fences count too
        # in a list item: closed at the item's indentation, so the list item keeps it
        ("1. Run:\n\n    ```sh\n    echo $HOME", "1. Run:\n\n    ```sh\n    echo $HOME▌\n    ```"),
        ("Run:\n\n    ```\n    x", "Run:\n\n    ```\n    x▌"),  # indented code, not a fence
    ],
)
def test_live_markdown_closes_open_code_fences(text, live):
    assert close_fences(text, cursor=True) == live
    assert close_fences(text) == live.replace("\n▌", "").replace("▌", "")


def test_final_markdown_keeps_the_note_outside_an_open_code_block():
    markdown = reply_markdown("```python\nwhile True:", finish_reason="interrupted")
    assert markdown == "```python\nwhile True:\n```\n\n*⏹ interrupted*"
    assert reply_markdown(LONG_ANSWER, finish_reason="stop") == LONG_ANSWER


def test_meter_text():
    from exaone_jupyter.engine.reply import Stats

    stats = Stats(
        prompt_tokens=28,
        prompt_tokens_evaluated=3,
        completion_tokens=1,
        ttft_s=0.0042,
        prompt_tok_s=700.0,
        decode_tok_s=None,
        n_ctx=2048,
        finish_reason="length",
    )
    assert meter_text(stats, model="exaone-demo", gpu="GPU 0/4 layers") == (
        "1 token · first token 4 ms · prompt 28 tok (3 new) at 700 tok/s · context 29/2048 · "
        "exaone-demo · GPU 0/4 layers · stopped at max tokens"
    )
    assert meter_text(stats, live=True).startswith("… tok/s · 1 token ·")
