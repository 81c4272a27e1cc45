"""The chat panel driven at the kernel level, exactly as a browser drives it.

A real kernel is started with jupyter_client; this test plays the frontend: it reads the widgets
from their ``comm_open`` messages (found by their stable ``exaone-*`` CSS classes), follows their
``update`` messages, and sends what a browser sends: ``{"method": "update", "state": {...}}`` for
a value typed, ``{"method": "custom", "content": {"event": "click"}}`` for a button. The engine is
the real one, on the bundled demo model and on a random-weight model written here.
"""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.engine.offload import GpuInfo
from exaone_jupyter.testing import TinyShape, write_random_gguf
from kernel_helpers import DEMO_ANSWER as ANSWER
from kernel_helpers import DEMO_QUESTION as QUESTION
from kernel_helpers import Kernel
from kernel_helpers import WidgetFrontend as Frontend


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    with Kernel(cwd=tmp_path_factory.mktemp("panel-kernel")) as kernel:
        fe = Frontend(kernel)
        fe.execute(
            "%load_ext exaone_jupyter\nimport exaone_jupyter\n"
            "p = exaone_jupyter.ChatPanel(interval=0.05)\ndisplay(p)"
        )
        assert {
            "exaone-model",
            "exaone-load",
            "exaone-send",
            "exaone-stop",
            "exaone-input",
            "exaone-transcript",
            "exaone-meter",
            "exaone-status",
        } <= set(fe.ids)
        yield fe


def _status(fe: Frontend) -> str:
    return fe.text("exaone-status")


# -- in-process checks of the pieces (no kernel) ---------------------------------------------------
def test_model_text_is_escaped_and_markdown_rendered():
    from exaone_jupyter.ui.markup import markdown_html

    out = markdown_html("<img src=x onerror=alert(1)> **bold** `a<b>`\n```py\nif a < b: pass\n```")
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "<strong>bold</strong>" in out and "a&lt;b&gt;</code>" in out
    assert "<pre" in out and "if a &lt; b: pass" in out


def test_gpu_selector_follows_the_build(tmp_path):
    from exaone_jupyter.session import Session
    from exaone_jupyter.ui.panel import ChatPanel

    cpu = ChatPanel(Session(), gpu=GpuInfo(False))
    assert cpu.gpu_layers.disabled and "CPU-only" in cpu.gpu_note.value
    gpu = ChatPanel(Session(), gpu=GpuInfo(True, "Test GPU", 8 * 2**30))
    assert not gpu.gpu_layers.disabled
    tiny = write_random_gguf(tmp_path / "tiny.gguf")  # TinyShape(): 2 layers
    gpu.model.value = str(tiny)  # a local file: its header gives the layer count (2)
    assert list(gpu.gpu_layers.options) == ["auto", "all", "none", "1"]
    assert "up to 2 layers" in gpu.gpu_note.value


# -- the kernel ------------------------------------------------------------------------------------
def test_bad_path_is_one_sentence(frontend):
    fe = frontend
    fe.set("exaone-model", value="/no/such/model.gguf")
    fe.click("exaone-load")
    status = _status(fe).strip()
    assert status.startswith("✗ "), status
    one_sentence(status[2:], "There is no file at", "/no/such/model.gguf")
    assert fe.get("exaone-load", "disabled") is False  # ready for another try


def test_load_demo_and_chat_share_the_session(frontend):
    fe = frontend
    fe.set("exaone-model", value="exaone-demo")
    fe.click("exaone-load")
    assert "Loaded exaone-demo" in _status(fe), _status(fe)
    facts = fe.text("exaone-model-info")
    assert "layers on GPU" in facts and "llama.cpp" in facts
    if not fe.kernel_json("exaone_jupyter.get_session().gpu_support().supports_offload"):
        assert fe.get("exaone-gpu-layers", "disabled") is True
        assert "CPU-only" in fe.text("exaone-gpu-note")

    fe.set("exaone-temperature", value=0.0)
    fe.set("exaone-input", value=QUESTION)
    fe.submit("exaone-input")  # Enter
    fe.wait_for(lambda: "Done" in _status(fe), "the reply to end")
    transcript = fe.text("exaone-transcript")
    assert QUESTION in transcript and ANSWER in transcript
    assert fe.get("exaone-input") == ""
    assert fe.tokens() > 0 and "tok/s" in fe.text("exaone-meter")
    assert "<svg class='exaone-sparkline'" in fe.get("exaone-meter")

    # the same session as the magics: its history holds the turn, %exaone history shows it
    messages = fe.kernel_json("exaone_jupyter.get_session().conversation.messages")
    assert messages[-2:] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER},
    ]
    assert fe.kernel_json("exaone_jupyter.get_session().model_spec") == "exaone-demo"
    shown = fe.execute("%exaone history")["data"]
    assert any(ANSWER in d.get("text/plain", "") for d in shown)

    fe.click("exaone-reset")
    assert fe.kernel_json("exaone_jupyter.get_session().conversation.messages") == []
    assert ANSWER not in fe.text("exaone-transcript")


def test_what_cells_do_shows_in_the_panel(frontend):
    """The panel follows the session: a cell's turn, system prompt, reset, unload and load."""
    fe = frontend
    fe.execute("%exaone load exaone-demo\n%exaone reset")
    fe.execute(f"%%exaone -t 0\n{QUESTION}")
    fe.wait_for(lambda: ANSWER in fe.text("exaone-transcript"), "the cell's turn in the panel")
    assert QUESTION in fe.text("exaone-transcript")

    fe.execute("%exaone system Answer in one sentence.")
    fe.wait_for(
        lambda: fe.get("exaone-system") == "Answer in one sentence.",
        "the cell's system prompt in the panel",
    )
    fe.execute("%exaone reset")
    fe.wait_for(lambda: ANSWER not in fe.text("exaone-transcript"), "the reset in the panel")

    fe.execute("%exaone unload")
    fe.wait_for(lambda: "unloaded in a cell" in _status(fe), "the unload in the panel")
    assert "No model loaded" in fe.text("exaone-model-info")
    fe.execute("%exaone load exaone-demo")
    fe.wait_for(
        lambda: "Now loaded: exaone-demo (changed in a cell)" in _status(fe),
        "the load in the panel",
    )
    assert "layers on GPU" in fe.text("exaone-model-info")
    assert fe.get("exaone-model").startswith("exaone-demo")


def test_stop_mid_reply_and_a_busy_cell(frontend, tmp_path):
    fe = frontend
    model = write_random_gguf(  # ~30 MB, a few hundred tokens/s here: long enough to stop
        tmp_path / "long.gguf",
        dtype="f16",
        quiet_control_tokens=True,
        shape=TinyShape(n_embd=512, n_head=8, n_head_kv=4, n_ff=1024, n_layer=6, n_ctx=8192),
    )
    fe.set("exaone-model", value=str(model))
    fe.set("exaone-n-ctx", index=5)  # 8,192 tokens: the options are default, 512, 1,024, ...
    fe.click("exaone-load")
    assert f"Loaded {model}" in _status(fe), _status(fe)
    assert "context 8,192 tokens" in fe.text("exaone-model-info")
    before = fe.kernel_json("exaone_jupyter.get_session().conversation.messages")

    fe.set("exaone-max-tokens", value=6000)
    fe.set("exaone-temperature", value=0.7)
    fe.set("exaone-input", value="Tell me a very long story.")
    fe.click("exaone-send")
    assert fe.get("exaone-stop", "disabled") is False and fe.get("exaone-send", "disabled") is True
    fe.wait_for(lambda: fe.tokens() >= 20, "the reply to start")

    # a %%exaone cell while the panel writes: one clear sentence, nothing else changes
    cell = fe.execute("%%exaone -n 5\nAre you there?")
    assert "busy" in cell["stderr"] and "Traceback" not in cell["stderr"]
    seen = fe.tokens()
    fe.wait_for(lambda: fe.tokens() > seen, "the panel's reply to go on after the busy cell")
    assert "Done" not in _status(fe) and "Stopped" not in _status(fe)

    fe.click("exaone-stop")
    fe.wait_for(lambda: "Stopped" in _status(fe), "the reply to stop")
    assert fe.get("exaone-stop", "disabled") is True and fe.get("exaone-send", "disabled") is False
    assert "interrupted" in fe.text("exaone-transcript")
    assert "interrupted" in fe.text("exaone-meter")

    messages = fe.kernel_json("exaone_jupyter.get_session().conversation.messages")
    assert len(messages) == len(before) + 2  # the panel's turn only; the busy cell added nothing
    question, answer = messages[-2:]
    assert question == {"role": "user", "content": "Tell me a very long story."}
    assert answer["role"] == "assistant" and answer.get("interrupted") is True
    assert answer["content"]  # the partial text is kept
    tokens = fe.tokens()
    assert 20 <= tokens < 6000

    # the model is still usable from a cell once the panel is done
    out = fe.execute("%%exaone -n 3 -t 0\nhello")
    assert "busy" not in out["stderr"] and "✗" not in out["stderr"], out["stderr"]


def test_the_panel_the_magic_opens_follows_the_config_settings(frontend):
    """``%exaone panel`` starts from ``%config ExaoneMagics``: its fields show temperature and max
    tokens, its replies use top-p, top-k and repeat penalty, its updates the update interval."""
    fe = frontend
    fe.execute(
        "%exaone load exaone-demo\n%exaone reset\n"
        "%config ExaoneMagics.temperature = 0\n%config ExaoneMagics.max_tokens = 64\n"
        "%config ExaoneMagics.top_k = 7\n%config ExaoneMagics.top_p = 0.5\n"
        "%config ExaoneMagics.repeat_penalty = 1.1\n%config ExaoneMagics.update_interval = 0.2"
    )
    try:
        fe.execute("%exaone panel")  # the widgets found by class are this panel's from now on
        assert fe.get("exaone-temperature") == 0.0 and fe.get("exaone-max-tokens") == 64
        assert _status(fe).strip() == "✓ exaone-demo is loaded."  # not "Loaded": it loaded nothing
        panel = (
            "[w for w in __import__('ipywidgets').Widget.widgets.values()"
            " if isinstance(w, exaone_jupyter.ChatPanel)][-1]"
        )
        assert fe.kernel_json(
            f"[{panel}.sampling.top_k, {panel}.sampling.top_p, {panel}.sampling.repeat_penalty,"
            f" {panel}.interval]"
        ) == [7, 0.5, 1.1, 0.2]
        fe.set("exaone-input", value=QUESTION)
        fe.click("exaone-send")
        fe.wait_for(lambda: "Done" in _status(fe), "the reply to end")
        assert ANSWER in fe.text("exaone-transcript")  # temperature 0: the trained answer
    finally:
        fe.execute(
            "%config ExaoneMagics.temperature = 0.7\n%config ExaoneMagics.max_tokens = 512\n"
            "%config ExaoneMagics.top_k = 40\n%config ExaoneMagics.top_p = 0.95\n"
            "%config ExaoneMagics.repeat_penalty = 1.0\n%config ExaoneMagics.update_interval = 0.1"
        )


def test_notes_stay_in_view_and_errors_name_the_panels_fields(frontend):
    fe = frontend
    fe.execute("%exaone load exaone-demo\n%exaone reset")
    fe.set("exaone-temperature", value=0.0)
    fe.set("exaone-max-tokens", value=4096)
    fe.set("exaone-input", value="Hi")
    fe.click("exaone-send")
    status = _status(fe).strip()
    one_sentence(status[2:], "4096", "lower Max tokens")  # not the cell's --max-tokens
    assert "--max-tokens" not in status

    # a reply allowance that leaves room for the question alone: a note says the history is out
    def ask_hi() -> None:
        fe.set("exaone-input", value="Hi")
        fe.click("exaone-send")
        fe.wait_for(lambda: "Done" in _status(fe), "the reply to end")

    fe.set("exaone-max-tokens", value=64)
    ask_hi()
    alone = fe.kernel_json("exaone_jupyter.last_reply().stats.prompt_tokens")
    n_ctx = fe.kernel_json("exaone_jupyter.get_session().backend.n_ctx")
    fe.set("exaone-max-tokens", value=n_ctx - alone)
    ask_hi()
    assert "no longer fit" in fe.text("exaone-notes")  # "Writing…" and "Done" left it
    fe.click("exaone-reset")
    assert fe.text("exaone-notes") == ""
