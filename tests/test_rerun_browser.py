"""A re-run cell and a restarted kernel in JupyterLab, in a real (headless) Chromium.

JupyterLab sends each cell's id with its execute request; running a ``%%exaone`` cell again must
replace its exchange, not add one. Then the notebook is saved, the kernel restarted, and
``%exaone resume`` (no path: jupyter_server tells the kernel its notebook) brings the
conversation back from the saved replies. Screenshots land in ``artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json

import pytest

from browser_helpers import (
    VISIBLE_NOTEBOOK,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_cells_done,
    write_notebook,
)

TIMEOUT_MS = 60_000
FRANCE, PARIS = "What is the capital of France?", "The capital of France is Paris."
JAPAN, TOKYO = "And of Japan?", "The capital of Japan is Tokyo."

pytestmark = pytest.mark.timeout(300)

RUN_CELL = """([index, source]) => {
    const app = window.jupyterapp, nb = app.shell.currentWidget.content;
    nb.activeCellIndex = index;
    if (source !== null) { nb.activeCell.model.sharedModel.setSource(source); }
    return app.commands.execute('notebook:run-cell');
}"""

ADD_AND_RUN = """(source) => {
    const app = window.jupyterapp, nb = app.shell.currentWidget.content;
    nb.activeCellIndex = nb.widgets.length - 1;
    return app.commands.execute('notebook:insert-cell-below').then(() => {
        nb.activeCell.model.sharedModel.setSource(source);
        return app.commands.execute('notebook:run-cell');
    });
}"""

LAST_OUTPUT = """() => {
    const nb = window.jupyterapp.shell.currentWidget.content;
    const cell = nb.widgets[nb.widgets.length - 1];
    return cell.model.outputs.length ? cell.node.querySelector('.jp-OutputArea').innerText : null;
}"""


def _last_output(page) -> str:
    page.wait_for_function(f"({LAST_OUTPUT})() !== null", timeout=TIMEOUT_MS)
    wait_cells_done(page)
    return page.evaluate(LAST_OUTPUT)


def _conversation(page) -> list[list]:
    page.evaluate(
        ADD_AND_RUN,
        "import exaone_jupyter, json\n"
        "print(json.dumps([[m['role'], m['content'], m.get('cell')]\n"
        "                  for m in exaone_jupyter.get_session().conversation.messages]))",
    )
    return json.loads(_last_output(page).strip().splitlines()[-1])


def test_a_rerun_replaces_and_a_restart_resumes(jupyterlab, chromium_browser):
    lab = jupyterlab
    write_notebook(
        lab.root / "rerun.ipynb",
        [
            "%load_ext exaone_jupyter\n%exaone load exaone-demo",
            f"%%exaone -t 0\n{FRANCE}",
            f"%%exaone -t 0\n{JAPAN}",
        ],
    )
    page = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        open_notebook(page, lab, "rerun.ipynb")
        run_all_cells(page)
        wait_cells_done(page)
        for _ in range(2):  # the last cell again, twice (a user fixing a typo)
            page.evaluate(RUN_CELL, [2, None])
            wait_cells_done(page)
        assert _conversation(page) == [
            ["user", FRANCE, "cell1"],
            ["assistant", PARIS, "cell1"],
            ["user", JAPAN, "cell2"],
            ["assistant", TOKYO, "cell2"],
        ]
        page.evaluate(ADD_AND_RUN, "%exaone history")
        history = _last_output(page)
        # In [1] loaded, [2] France, [3] Japan, re-run as [4] and [5]: the history says so
        assert history.count(JAPAN) == 1, history
        assert f"user (cell In [2]):\n\n{FRANCE}" in history, history
        assert f"user (cell In [5]):\n\n{JAPAN}" in history, history
        screenshot(page.locator(VISIBLE_NOTEBOOK), "rerun_history.png")
        page.evaluate(ADD_AND_RUN, "%exaone panel")  # the panel marks each question's cell too
        transcript = page.locator(f"{VISIBLE_NOTEBOOK} .exaone-panel .exaone-transcript")
        transcript.filter(has_text=TOKYO).wait_for(timeout=TIMEOUT_MS)
        shown = transcript.inner_text()
        assert "cell In [2]" in shown and "cell In [5]" in shown and shown.count(JAPAN) == 1
        screenshot(page.locator(f"{VISIBLE_NOTEBOOK} .exaone-panel"), "rerun_panel.png")

        # save, restart the kernel, resume from the saved replies
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
        )
        page.evaluate(
            ADD_AND_RUN, "%load_ext exaone_jupyter\n%exaone load exaone-demo\n%exaone resume"
        )
        resumed = _last_output(page)
        assert "Resumed 2 turns from rerun.ipynb." in resumed, resumed
        assert _conversation(page)[:4] == [
            ["user", FRANCE, "cell1"],
            ["assistant", PARIS, "cell1"],
            ["user", JAPAN, "cell2"],
            ["assistant", TOKYO, "cell2"],
        ]
        screenshot(page.locator(VISIBLE_NOTEBOOK), "rerun_resumed.png")
    finally:
        page.close()
