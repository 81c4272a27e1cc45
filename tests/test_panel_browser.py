"""The chat panel in JupyterLab, in a real (headless) Chromium: what a user sees and clicks.

A notebook runs ``%exaone panel``; the test then only uses the page: it types the model into the
picker, presses Load, types the trained question and presses Enter, reads the exact answer from
the transcript, runs a ``%%exaone`` cell and finds its turn in the panel, then loads a
random-weight model by path, asks for a long reply, watches the meter change, and presses Stop.
Screenshots land in ``artifacts/`` (git-ignored).
"""

from __future__ import annotations

import re

import pytest

from browser_helpers import (
    VISIBLE_NOTEBOOK,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_cells_done,
    write_notebook,
)
from exaone_jupyter.testing import TinyShape, write_random_gguf

QUESTION = "한국의 수도는 어디인가요? Answer in one sentence."
ANSWER = "한국의 수도는 서울입니다 (Seoul)."
CELL_QUESTION, CELL_ANSWER = "What is your name?", "My name is EXAONE demo."
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.timeout(420)


def _tokens(meter) -> int:
    match = re.search(r"(\d[\d,]*) tokens", meter.inner_text())
    return int(match.group(1).replace(",", "")) if match else 0


METER = f"{VISIBLE_NOTEBOOK} .exaone-panel .exaone-meter"
TOKENS_AT_LEAST = """([sel, n]) => { const m = document.querySelector(sel);
    const t = m && m.innerText.match(/(\\d[\\d,]*) tokens/);
    return !!t && parseInt(t[1].replace(/,/g, '')) >= n; }"""


def _wait_tokens(page, at_least: int) -> None:
    """Until the panel's meter shows at least ``at_least`` tokens (as the page renders it)."""
    page.wait_for_function(
        TOKENS_AT_LEAST, arg=[METER, at_least], timeout=TIMEOUT_MS, polling="raf"
    )


def _run_cell_below(page, source: str) -> None:
    """Add a cell at the end of the notebook and run it, as a user would."""
    page.evaluate(
        """(source) => {
        const app = window.jupyterapp, nb = app.shell.currentWidget.content;
        nb.activeCellIndex = nb.widgets.length - 1;
        return app.commands.execute('notebook:insert-cell-below').then(() => {
            nb.activeCell.model.sharedModel.setSource(source);
            return app.commands.execute('notebook:run-cell');
        });
    }""",
        source,
    )


def _load(panel, spec: str) -> None:
    model = panel.locator(".exaone-model input")
    model.fill(spec)
    model.press("Tab")  # leave the field, as a user would
    panel.locator("button.exaone-load").click()
    status = panel.locator(".exaone-status")
    status.filter(has_text="Loaded").wait_for(timeout=TIMEOUT_MS)
    assert f"Loaded {spec}" in status.inner_text()


def test_panel_in_jupyterlab(jupyterlab, chromium_browser):
    lab = jupyterlab
    long_model = write_random_gguf(  # a few hundred tokens/s here: a reply long enough to Stop
        lab.root / "long-random.gguf",
        dtype="f16",
        quiet_control_tokens=True,
        shape=TinyShape(n_embd=512, n_head=8, n_head_kv=4, n_ff=1024, n_layer=6, n_ctx=8192),
    )
    write_notebook(lab.root / "panel.ipynb", ["%load_ext exaone_jupyter", "%exaone panel"])

    page = chromium_browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        open_notebook(page, lab, "panel.ipynb")
        run_all_cells(page)
        wait_cells_done(page)
        panel = page.locator(f"{VISIBLE_NOTEBOOK} .exaone-panel")
        panel.wait_for(timeout=TIMEOUT_MS)
        status, transcript = panel.locator(".exaone-status"), panel.locator(".exaone-transcript")
        meter = panel.locator(".exaone-meter")

        # CPU-only llama.cpp here: the GPU selector is disabled and says why
        gpu_input = panel.locator(".exaone-gpu-layers input")
        if "CPU-only" in panel.locator(".exaone-gpu-note").inner_text():
            assert gpu_input.is_disabled()

        # 1. the demo model, a trained question, Enter, the exact answer
        _load(panel, "exaone-demo")
        assert "layers on GPU" in panel.locator(".exaone-model-info").inner_text()
        readout = panel.locator(".exaone-temperature .widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0")
        page.keyboard.press("Enter")
        panel.locator(".exaone-temperature").filter(has_text="0.00").wait_for(timeout=TIMEOUT_MS)
        ask = panel.locator(".exaone-input input")
        ask.fill(QUESTION)
        ask.press("Enter")
        status.filter(has_text="Done").wait_for(timeout=TIMEOUT_MS)
        assert ANSWER in transcript.inner_text()
        assert QUESTION in transcript.inner_text()
        assert ask.input_value() == ""
        panel.scroll_into_view_if_needed()
        screenshot(panel, "panel_answer.png")

        # 2. a %%exaone cell run below the panel: its turn appears in the panel's transcript
        _run_cell_below(page, f"%%exaone -t 0\n{CELL_QUESTION}")
        transcript.filter(has_text=CELL_ANSWER).wait_for(timeout=TIMEOUT_MS)
        assert CELL_QUESTION in transcript.inner_text()
        assert "changed in a cell" not in status.inner_text()  # the panel's own load still shows
        wait_cells_done(page)
        screenshot(page.locator(VISIBLE_NOTEBOOK), "panel_follows_cell.png")

        # 3. a long reply from a random model loaded by path: the meter moves, Stop ends it
        panel.locator(".exaone-n-ctx select").select_option(label="8,192 tokens")
        _load(panel, str(long_model))
        assert "context 8,192 tokens" in panel.locator(".exaone-model-info").inner_text()
        tokens_box = panel.locator(".exaone-max-tokens input")
        tokens_box.fill("6000")
        tokens_box.press("Enter")
        panel.locator(".exaone-temperature .widget-readout").click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.7")
        page.keyboard.press("Enter")
        ask.fill("Tell me a very long story.")
        panel.locator("button.exaone-send").click()

        _wait_tokens(page, 60)  # the reply has started
        first, first_tokens = meter.inner_text(), _tokens(meter)
        assert first_tokens >= 60, f"the reply did not start: {status.inner_text()}"
        _wait_tokens(page, first_tokens + 1)  # the meter is live: it moves while we watch
        second, second_tokens = meter.inner_text(), _tokens(meter)
        assert second != first and second_tokens > first_tokens  # the meter is live
        assert "tok/s" in second
        assert panel.locator(".exaone-meter svg.exaone-sparkline polyline").count() == 1
        assert "Tell me a very long story." in transcript.inner_text()
        screenshot(panel, "panel_midreply.png")

        panel.locator("button.exaone-stop").click()
        status.filter(has_text="Stopped").wait_for(timeout=TIMEOUT_MS)
        final = _tokens(meter)
        assert second_tokens <= final < 6000
        assert "interrupted" in transcript.inner_text()
        assert "interrupted" in meter.inner_text()
        # nothing more arrives after Stop: a cell run now is answered after any message the
        # kernel sent before it (iopub is ordered), so once its output shows, so would they
        _run_cell_below(page, "print('after stop')")
        page.locator(f"{VISIBLE_NOTEBOOK} .jp-OutputArea-output").filter(
            has_text="after stop"
        ).wait_for(timeout=TIMEOUT_MS)
        wait_cells_done(page)
        assert _tokens(meter) == final
        assert not panel.locator("button.exaone-send").is_disabled()
        screenshot(panel, "panel_stopped.png")
    finally:
        page.close()
