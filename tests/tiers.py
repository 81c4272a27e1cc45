"""The test tiers: a marker for each slow thing a test starts, so that ``make check`` (the fast
tier: none of these markers) can leave those tests out, and ``make test`` runs them all.

=========  ====================================================================================
kernel     a real Jupyter kernel (``kernel_helpers.Kernel``, nbclient, nbval in a subprocess)
browser    JupyterLab or Notebook 7 driven in Chromium under Playwright
server     an OpenAI-compatible server process: llama-cpp-python's or vLLM's (``server_helpers``);
           a stub HTTP server on a thread of the test itself is not one (it costs milliseconds)
vllm       vLLM's server, from the environment ``make vllm`` installs
           (``EXAONE_JUPYTER_VLLM_PYTHON``); a ``vllm`` test is a ``server`` test too
slow       nothing, but computes for minutes (test_speed's sampling statistics): by hand,
           as a module's ``pytestmark``
soak       the long reliability runs; deselected unless ``-m soak`` (``make soak``)
=========  ====================================================================================

How a test gets its markers (``conftest.pytest_collection_modifyitems``):

* from the fixtures it uses, directly or through other fixtures: :data:`FIXTURES` (the shared
  ones, and the module fixtures that start something);
* from its module's ``pytestmark``, a ``@pytest.mark.kernel`` (or other) on the test, or a
  ``pytest.param(..., marks=...)`` of a parametrized fixture.

What makes a forgotten marker fail instead of slowing ``make check``: the helpers that start these
things call :func:`require` (``Kernel``, ``Server``, ``VllmServer``, ``JupyterLab``, the
``chromium_browser`` fixture), which fails the running test if it lacks the marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MARKERS = {
    "kernel": "starts a real Jupyter kernel (make check leaves it out)",
    "browser": "drives JupyterLab in Chromium under Playwright (make check leaves it out)",
    "server": "starts an OpenAI-compatible server process (make check leaves it out)",
    "vllm": "starts vLLM's server, from EXAONE_JUPYTER_VLLM_PYTHON's environment (implies server)",
    "slow": "minutes of computing in this process (sampling statistics; make check leaves it out)",
    "soak": "long runs (200-mutation fuzz, 200-turn soak); `make soak` runs them with -m soak",
}

# Fixture name -> the markers of every test that uses it (through any fixture in between).
FIXTURES: dict[str, tuple[str, ...]] = {
    # shared_fixtures
    "kernel": ("kernel",),  # also each module's own `kernel` fixture
    "server": ("server",),
    "vllm_server": ("vllm",),
    "chromium_browser": ("browser",),
    "jupyterlab": ("browser",),
    # a module's own, where the module also has tests that start nothing
    "frontend": ("kernel",),  # test_panel_kernel
    "served": ("server",),  # test_remote: llama-cpp-python's, or vLLM's (that param marks vllm)
    "keyed_server": ("server",),  # test_remote
}

# The test being run (set by conftest around each test's setup, call and teardown); None outside
# a pytest run, where the helpers start what they are asked to (the benchmarks use them too).
running: Any = None


def markers_of(fixturenames: Iterable[str], marked: Iterable[str] = ()) -> set[str]:
    """The markers of a test whose fixture closure is ``fixturenames`` and that is ``marked``
    (module, class, test, parameter): those, the ones its fixtures imply, and ``server`` for a
    ``vllm`` test."""
    found = set(marked) | {marker for name in fixturenames for marker in FIXTURES.get(name, ())}
    if "vllm" in found:
        found.add("server")
    return found


def require(marker: str, what: str) -> None:
    """Fail the running test, unless it carries ``marker``, before it starts ``what``."""
    item = running
    if item is None or item.get_closest_marker(marker) is not None:
        return
    import pytest

    pytest.fail(
        f"{item.nodeid} starts {what} but is not marked `{marker}`: use a fixture that implies "
        f"it (tests/tiers.py FIXTURES) or add @pytest.mark.{marker} (module: pytestmark), so "
        "that `make check` leaves it out",
        pytrace=False,
    )
