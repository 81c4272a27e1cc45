"""``--code`` in JupyterLab, in a real (headless) Chromium: the reply's Python code appears in a
new cell below the asking one, not run. Screenshots land in ``artifacts/`` (git-ignored)."""

from __future__ import annotations

import pytest

from browser_helpers import (
    VISIBLE_NOTEBOOK,
    open_notebook,
    run_all_cells,
    screenshot,
    write_notebook,
)

TIMEOUT_MS = 120_000
ADD_QUESTION = "Write a Python function that adds two numbers."
ADD_CODE = "def add(a, b):\n    return a + b"

pytestmark = pytest.mark.timeout(300)

CELLS = """() => {
    const nb = window.jupyterapp.shell.currentWidget.content;
    return nb.widgets.map(cell => ({
        source: cell.model.sharedModel.getSource(),
        count: cell.model.executionCount ?? null,
        outputs: cell.model.outputs ? cell.model.outputs.length : 0,
    }));
}"""


def test_the_reply_code_appears_in_a_new_cell_below(jupyterlab, chromium_browser):
    lab = jupyterlab
    write_notebook(
        lab.root / "code.ipynb",
        [
            "%load_ext exaone_jupyter\n%exaone load exaone-demo",
            f"%%exaone --code --no-history -t 0\n{ADD_QUESTION}",
        ],
    )
    page = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        open_notebook(page, lab, "code.ipynb")
        run_all_cells(page)
        page.wait_for_function(
            f"() => {{ const cells = ({CELLS})();"
            " return cells.length === 3 && cells[1].count !== null; }",
            timeout=TIMEOUT_MS,
            polling=250,
        )
        asking, added = page.evaluate(CELLS)[1:]
        assert asking["outputs"] > 0
        assert added == {"source": ADD_CODE, "count": None, "outputs": 0}  # there, not run
        page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell").nth(2).filter(
            has_text="return a + b"
        ).wait_for(timeout=TIMEOUT_MS)
        screenshot(page.locator(VISIBLE_NOTEBOOK), "code_next_cell.png")
    finally:
        page.close()
