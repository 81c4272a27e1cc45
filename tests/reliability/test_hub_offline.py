"""Hub specs without a network: HF_HUB_OFFLINE=1 in the kernel, an empty temporary HF cache.

Offline, a repository that does not exist cannot be told from one that does: both must end in
the same one sentence (not in the cache, the Hub is offline, what to do). With the Hub merely
unreachable (a closed port as its address) the sentence says to check the network.
"""

from __future__ import annotations

import pytest

from checks import one_sentence
from kernel_helpers import DEMO_ANSWER, DEMO_QUESTION, Snapshot, answer_of, healthy, start_kernel

pytestmark = pytest.mark.kernel  # every test runs a real kernel (one starts its own)


@pytest.mark.parametrize(
    "spec",
    [
        "exaone-3.0-7.8b",  # the catalog default
        "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF:EXAONE-4.0-1.2B-Q4_K_M.gguf",
        "nobody-at-all/no-such-repo-4242:model.gguf",  # does not exist
    ],
)
def test_hub_spec_offline(kernel, before, spec):
    body = one_sentence(
        kernel.run(f"%exaone load {spec}"),
        "not in the Hugging Face cache",
        "offline",
        "%exaone load exaone-demo",
    )
    assert "HF_HUB_OFFLINE" in body
    healthy(kernel, before)


def test_hub_repo_with_file_pattern_offline(kernel, before):
    one_sentence(
        kernel.run("%exaone load nobody-at-all/no-such-repo-4242 --file '*Q4_K_M.gguf'"),
        "nobody-at-all/no-such-repo-4242",
        "offline",
    )
    healthy(kernel, before)


def test_hub_repo_without_file(kernel, before):
    one_sentence(
        kernel.run("%exaone load LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF"),
        "looks like a Hugging Face repository",
        "--file",
    )
    healthy(kernel, before)


def test_first_cell_loads_an_offline_default(tmp_path):
    # No model loaded and the default is on the Hub: the cell says so in one sentence.
    k = start_kernel(tmp_path)
    try:
        assert k.run("%exaone unload").stdout.startswith("Model unloaded")
        cell = k.run(f"%%exaone -t 0\n{DEMO_QUESTION}")
        one_sentence(cell, "not in the Hugging Face cache", "%exaone load exaone-demo")
        assert k.value("len(exaone_jupyter.get_session().conversation.messages)") == 0
        cell = k.run("%exaone load exaone-demo")
        assert answer_of(k.run(f"%%exaone -t 0\n{DEMO_QUESTION}")) == DEMO_ANSWER
    finally:
        k.shutdown()


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory):
    """A kernel whose Hub address is a closed local port, online as far as it knows."""
    k = start_kernel(
        tmp_path_factory.mktemp("unreachable"),
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
    )
    yield k
    k.shutdown()


@pytest.mark.parametrize(
    "spec",
    [
        "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF:EXAONE-4.0-1.2B-Q4_K_M.gguf",
        "nobody-at-all/no-such-repo-4242:model.gguf",
        "nobody-at-all/no-such-repo-4242 --file '*.gguf'",
    ],
)
def test_hub_unreachable(unreachable, spec):
    before = Snapshot(unreachable)
    one_sentence(
        unreachable.run(f"%exaone load {spec}", timeout=60),
        "Cannot reach the Hugging Face Hub",
        "network",
    )
    healthy(unreachable, before)
