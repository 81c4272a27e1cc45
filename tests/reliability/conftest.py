"""Fixtures of the reliability suite: one real kernel per module, and the checks every case makes.

Every failure a user can cause must end in one clear sentence that says what to do, and after it
the kernel lives, the loaded model still answers and the conversation is unchanged. ``healthy``
checks the last three; ``one_sentence`` the first.

The ``soak`` marker (the 200-mutation fuzz and the 200-turn soaks) is left out of a plain
``pytest`` run; ``make soak`` runs it with ``-m soak``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kernel_harness import (DEMO_ANSWER, DEMO_QUESTION, SUMMARY, Snapshot,  # noqa: E402
                            answer_of, start_kernel)


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long runs (200-mutation fuzz, 200-turn soak); "
                                       "`make soak` runs them")


def pytest_collection_modifyitems(config, items):
    if "soak" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak` (pytest -m soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("reliability figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel per test module, with the demo model loaded and one turn of conversation."""
    tmp = tmp_path_factory.mktemp("kernel")
    k = start_kernel(tmp)
    cell = k.run(f"%%exaone -t 0\n{DEMO_QUESTION}")
    assert answer_of(cell) == DEMO_ANSWER, cell
    yield k
    k.shutdown()


@pytest.fixture
def before(kernel):
    """The conversation as the test found it."""
    return Snapshot(kernel)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Directory for the GGUF files a module writes."""
    return tmp_path_factory.mktemp("models")
