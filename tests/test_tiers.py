"""The test tiers (``tests/tiers.py``): a test's markers come from the fixtures it uses, and a
test that starts a kernel, a server or a browser without its marker fails before starting it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiers
from browser_helpers import JupyterLab
from kernel_helpers import Kernel
from server_helpers import Server, VllmServer


def test_fixtures_imply_their_markers_through_other_fixtures():
    # `before` uses `kernel`: a test's fixture names are the whole closure, as pytest gives them
    assert tiers.markers_of(["before", "kernel", "tmp_path"]) == {"kernel"}
    assert tiers.markers_of(["remote", "served", "server"]) == {"server"}
    assert tiers.markers_of(["page", "jupyterlab", "chromium_browser"]) == {"browser"}
    assert tiers.markers_of(["tiny_backend", "tiny_gguf", "ipython_shell"]) == set()


def test_a_vllm_test_is_a_server_test_however_it_is_marked():
    assert tiers.markers_of(["on_vllm", "vllm_server"]) == {"vllm", "server"}
    assert tiers.markers_of(["remote", "served", "server"], {"vllm"}) == {"vllm", "server"}
    assert tiers.markers_of(["tmp_path"], {"vllm", "timeout"}) == {"vllm", "server", "timeout"}


def test_this_test_is_in_the_fast_tier(request):
    assert not [m.name for m in request.node.iter_markers() if m.name in tiers.MARKERS]


@pytest.mark.parametrize(
    "start, marker",
    [
        (lambda tmp: Kernel(cwd=tmp), "kernel"),
        (lambda tmp: Server(tmp / "never.gguf"), "server"),
        (lambda tmp: VllmServer(tmp, "never"), "vllm"),
        (lambda tmp: JupyterLab(tmp, tmp), "browser"),
    ],
    ids=["kernel", "server", "vllm", "browser"],
)
def test_starting_one_unmarked_fails_before_it_starts(tmp_path: Path, start, marker):
    with pytest.raises(pytest.fail.Exception, match=f"is not marked `{marker}`"):
        start(tmp_path)
