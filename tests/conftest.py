"""The test suite's configuration: its fixtures (all in ``shared_fixtures``), its tiers, and three
rules.

Tiers (``tiers.py``): a marker for each slow thing a test starts, applied from the fixtures it
uses (``tiers.FIXTURES``), a module's ``pytestmark`` or a mark on the test:

=========  ===========================================  ===================================
marker     the test                                     run by
=========  ===========================================  ===================================
(none)     runs in this process (real engine, models)   ``make check``: under 2 minutes
kernel     starts a real Jupyter kernel                 ``make test``
browser    drives JupyterLab in Chromium (Playwright)   ``make test``
server     starts llama-cpp-python's or vLLM's server   ``make test``
vllm       starts vLLM's server (also ``server``)       ``make test``
slow       computes for minutes (sampling statistics)   ``make test``
soak       200-mutation fuzz, 200-turn soaks            ``make soak``
=========  ===========================================  ===================================

``-m`` picks tiers (``pytest -m "not browser"``). A test that starts a kernel, a server or a
browser without its marker fails, saying which one it lacks (``tiers.require``, called by the
helpers that start them), so it cannot slow ``make check`` unnoticed.

* The ``soak`` marker is *deselected* in a plain ``pytest`` run; ``make soak``
  (``pytest -m soak tests/reliability``) runs it.
* With ``CI=true`` in the environment, a skipped test fails the run: on CI every test must run
  (the browser tests need Chromium, ``make test`` installs it; the remote tests need the test
  extras). The summary lists what was skipped and why.
* The reliability figures (fuzz counts, soak memory) are printed at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import tiers
from exaone_jupyter.paths import CACHE_ENV
from kernel_helpers import SUMMARY
from shared_fixtures import *  # noqa: F403  (every shared fixture, available everywhere)


def pytest_configure(config):
    for marker, meaning in tiers.MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {meaning}")
    # What the extension keeps across kernels (saved KV states, map's disk rows) goes to a
    # folder of this run's, for this process and every kernel or server it starts.
    _cache_root.append(tempfile.mkdtemp(prefix="exaone-tests-cache-"))
    os.environ[CACHE_ENV] = _cache_root[0]


def pytest_unconfigure(config):
    if _cache_root:
        shutil.rmtree(_cache_root.pop(), ignore_errors=True)


_cache_root: list[str] = []


@pytest.hookimpl(tryfirst=True)  # before -m deselects by them
def pytest_collection_modifyitems(config, items):
    for item in items:  # the markers the test's fixtures imply (tiers.FIXTURES)
        own = {mark.name for mark in item.iter_markers()}
        for marker in sorted(tiers.markers_of(item.fixturenames, own) - own):
            item.add_marker(marker)
    if "soak" in (config.option.markexpr or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    tiers.running = item  # what tiers.require checks
    try:
        return (yield)
    finally:
        tiers.running = None


# -- CI=true: a skip fails the run -----------------------------------------------------------------
SKIPPED: list[tuple[str, str]] = []  # (node id, reason) of each skip in this run


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2])
    return str(longrepr)


def pytest_collectreport(report):
    if report.skipped:
        _record(report)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _record(report)


def _record(report) -> None:
    SKIPPED.append((report.nodeid, _reason(report)))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    if (
        _on_ci()
        and SKIPPED
        and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if SUMMARY:
        terminalreporter.section("reliability figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)
    skipped = SKIPPED
    if _on_ci() and skipped:
        terminalreporter.section("skipped tests fail the run (CI=true)", red=True)
        for nodeid, reason in skipped:
            terminalreporter.write_line(f"SKIPPED {nodeid or '(collection)'}: {reason}", red=True)
        terminalreporter.write_line(
            f"{len(skipped)} skipped with CI=true: every test must run on CI; install what the "
            "reasons name (make test installs Chromium and the test extras).",
            red=True,
        )
