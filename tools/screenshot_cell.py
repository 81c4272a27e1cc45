"""Screenshots of ``%%exaone`` streaming into a cell of a real JupyterLab, in Chromium.

Starts JupyterLab on a free loopback port (no token, a temporary root folder), writes a notebook
that loads the shipped demo model and asks it the long question, then a ~100M-parameter random
model that streams for a few seconds, runs it in Debian's Chromium driven by Playwright, and
saves PNGs mid-stream and after each reply:

    .venv/bin/python tools/screenshot_cell.py [OUT_DIR]        # default: artifacts/

Needs ``pip install jupyterlab playwright`` (the ``test`` extra) and ``/usr/bin/chromium``
(``tools/ensure_chromium.sh``); Playwright's own browser download is not used. The server and the
browser are started as the browser tests start them (tests/browser_helpers.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_helpers import (  # noqa: E402 (the tests folder is on the path only now)
    CHROMIUM,
    CHROMIUM_ARGS,
    JupyterLab,
    ensure_chromium,
    open_notebook,
    run_all_cells,
    write_notebook,
)

LONG_QUESTION = "How do I run EXAONE in Jupyter? Give me the steps."
STREAM_TOKENS = 240
NOTEBOOK = "exaone-streaming.ipynb"


def write_model(folder: Path) -> Path:
    """A ~100M-parameter f16 model (slow enough on a CPU to watch it stream) that writes
    'Jupyter ' over and over instead of noise."""
    from exaone_jupyter.testing import TinyShape, write_random_gguf

    shape = TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=4096)
    return write_random_gguf(
        folder / "random-100m.gguf",
        shape=shape,
        dtype="f16",
        favour_text="Jupyter ",
        name="random 100M test model (not EXAONE)",
    )


def write_streaming_notebook(folder: Path, model: Path) -> Path:
    return write_notebook(
        folder / NOTEBOOK,
        [
            "%load_ext exaone_jupyter\n%config ExaoneMagics.update_interval = 0.1",
            "%exaone load exaone-demo",
            "%%exaone -t 0\n한국의 수도는 어디인가요? Answer in one sentence.",
            f"%%exaone -t 0 --new\n{LONG_QUESTION}",
            f"%exaone load {model.name}",
            f"%%exaone -t 0 -n {STREAM_TOKENS} --new\nTell me about Jupyter.",
        ],
    )


def kernel_idle(page) -> bool:
    return page.evaluate("""() => {
        const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session
                  && w.sessionContext.session.kernel;
        return !!k && k.status === 'idle';
    }""")


def wait_for(condition, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(step)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def shoot(page, cell, path: Path) -> Path:
    cell.scroll_into_view_if_needed()
    cell.screenshot(path=str(path))
    print(f"saved {path}", flush=True)
    return path


def run(out: Path, *, keep_log: bool = False) -> list[Path]:
    """Start JupyterLab and Chromium, run the notebook, save the PNGs; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="exaone-lab-") as tmp:
        root, home = Path(tmp) / "root", Path(tmp) / "home"
        root.mkdir()
        home.mkdir()
        write_streaming_notebook(root, write_model(root))
        lab = JupyterLab(root, home)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                try:
                    return drive(page, lab, out)
                except Exception:
                    page.screenshot(path=str(out / "failure.png"), full_page=True)
                    print(f"saved {out / 'failure.png'} (what the page showed)", file=sys.stderr)
                    raise
                finally:
                    browser.close()
        finally:
            lab.stop()
            if keep_log:
                (out / "jupyterlab.log").write_text(lab.log_path.read_text("utf-8", "replace"))


def drive(page, lab: JupyterLab, out: Path) -> list[Path]:
    """Open the notebook, run all cells, and take the shots as the replies come."""
    shots: list[Path] = []
    open_notebook(page, lab, NOTEBOOK)
    run_all_cells(page)
    cells = page.locator(".jp-Notebook .jp-Cell")

    def output_text(i: int) -> str:
        return cells.nth(i).locator(".jp-Cell-outputArea").inner_text()

    # The demo model is fast: its replies are there almost at once.
    wait_for(lambda: "tokens" in output_text(3), 90, "the demo model's reply")
    shots.append(shoot(page, cells.nth(2), out / "01-korean-answer.png"))
    shots.append(shoot(page, cells.nth(3), out / "02-long-answer.png"))

    # The 100M model streams for a few seconds: catch it in the middle.
    def streaming() -> bool:
        text = output_text(5)
        return "▌" in text and "tok/s" in text and text.count("Jupyter") >= 10

    wait_for(streaming, 240, "the stream", step=0.05)
    shots.append(shoot(page, cells.nth(5), out / "03-mid-stream.png"))
    if "▌" not in output_text(5):
        print("warning: the stream may have ended while the mid-stream shot was taken")
    wait_for(lambda: "stopped at max tokens" in output_text(5), 300, "the end of the stream")
    wait_for(lambda: kernel_idle(page), 60, "the kernel to go idle")
    shots.append(shoot(page, cells.nth(5), out / "04-after-stream.png"))
    page.screenshot(path=str(out / "05-notebook.png"), full_page=True)
    print(f"saved {out / '05-notebook.png'}")
    shots.append(out / "05-notebook.png")
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="artifacts", help="folder for the PNGs")
    parser.add_argument("--keep-log", action="store_true", help="copy JupyterLab's log there too")
    args = parser.parse_args()
    why = ensure_chromium()
    if why:
        print(why, file=sys.stderr)
        return 2
    run(Path(args.out), keep_log=args.keep_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
