"""JupyterLab in a real browser for tests: a token-less server on a free loopback port, and
Debian's Chromium driven by Playwright for Python.

Playwright's own browser download cannot run here, so it launches ``/usr/bin/chromium``
(``tools/ensure_chromium.sh`` installs it; ``make test`` runs that). Without Chromium the
``chromium_browser`` fixture (``shared_fixtures``) fails with the reason: a browser test never
skips. Screenshots go to ``artifacts/`` (git-ignored).

The server is started as a user would, with ``python -m jupyterlab`` from this venv (so the
notebook's ``python3`` kernel is this venv's), in an isolated runtime, config and workspace
folder: no restored tabs, no news prompt, no update check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tiers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
# JupyterLab keeps hidden tabs in the DOM: scope every selector to the visible notebook
VISIBLE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"


# -- Chromium --------------------------------------------------------------------------------------
def chromium_works() -> bool:
    if not os.access(CHROMIUM, os.X_OK):
        return False
    try:
        done = subprocess.run([CHROMIUM, "--version"], capture_output=True, timeout=60)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_chromium() -> str | None:
    """None when Chromium runs (installing it first if missing), else why it cannot."""
    if chromium_works():
        return None
    script = REPO / "tools" / "ensure_chromium.sh"
    if script.exists() and shutil.which("bash"):
        subprocess.run(["bash", str(script)], timeout=900)
    if chromium_works():
        return None
    return (
        f"Chromium is not at {CHROMIUM} and could not be installed "
        "(run tools/ensure_chromium.sh as root on Debian: apt-get install chromium)"
    )


# -- JupyterLab ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The frontends the tests open: the module to run and its own options.
FRONTENDS = {
    "lab": [
        "jupyterlab",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ],
    "notebook7": ["notebook", "--JupyterNotebookApp.expose_app_in_browser=True"],
}


class JupyterLab:
    """``jupyter lab`` (or, with ``app="notebook7"``, Notebook 7) without a token on
    127.0.0.1:PORT, serving ``root``; ``stop()`` ends it."""

    def __init__(self, root: Path, home: Path, *, timeout: float = 120, app: str = "lab") -> None:
        tiers.require("browser", f"a Jupyter server ({app}) for the browser")
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "jupyterlab.log"
        config = home / "config"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
            )
        )
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "HF_HUB_OFFLINE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        module, *app_options = FRONTENDS[app]
        command = [
            sys.executable,
            "-m",
            module,
            "--no-browser",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.allow_root=True",
            "--ServerApp.ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={root}",
            *app_options,
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down, then exits; SIGKILL the group if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook with these code cells, on the ``python3`` kernel."""
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1), "utf-8")
    return path


# -- Playwright ------------------------------------------------------------------------------------
def open_notebook(page, lab: JupyterLab, name: str, *, timeout_ms: float = 120_000) -> None:
    """Open ``name`` and wait until its kernel is ready."""
    page.goto(f"{lab.url}/lab/tree/{name}", timeout=timeout_ms)
    page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell").first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        " return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
        timeout=timeout_ms,
        polling=250,
    )


def run_all_cells(page) -> None:
    """Start every cell and return at once (``wait_cells_done`` waits): the command's promise
    settles only when the last cell has run, which would hide what streams meanwhile."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_cells_done(page, *, timeout_ms: float = 120_000) -> None:
    """Every cell's prompt shows ``[n]:``, not ``[*]:`` (more reliable than the kernel status)."""
    page.wait_for_function(
        "(sel) => { const ps = [...document.querySelectorAll(sel + ' .jp-InputPrompt')];"
        " return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }",
        arg=VISIBLE_NOTEBOOK,
        timeout=timeout_ms,
        polling=250,
    )


def screenshot(locator, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    locator.screenshot(path=str(path))
    return path
