"""Every fixture the tests share, and the data helpers that go with them (``tests/conftest.py``
imports this module, so the fixtures are available in every test file without an import).

Tests run the real llama.cpp engine on models they make (``exaone_jupyter.testing``) or on the
shipped ``exaone-demo`` model, never a fake backend.

* engine: ``tiny_gguf``, ``tiny_backend``, ``prompt_ids`` (session-wide; loads in milliseconds),
  ``vocab102k_gguf`` (the same with EXAONE's 102,400-token vocabulary) and ``in_graph`` (the
  engine on it, sampling in llama.cpp's graph as it does on a GPU; one per module);
* chat: ``demo_backend``, ``random_backend`` and ``backend`` (each of the two in turn);
* server: ``server`` (llama-cpp-python's OpenAI-compatible server on loopback, serving the demo
  model; one per module) and ``vllm_server`` (vLLM's, serving exaone-4.0-demo's Hugging Face
  twin; one per run), see ``server_helpers``;
* kernel: ``kernel`` (one real kernel per module, the demo model loaded, one turn of
  conversation), ``before`` (its conversation as a test found it), ``models`` (a folder per module);
* browser: ``chromium_browser`` (Debian's Chromium under Playwright) and ``jupyterlab`` (a
  token-less server on a free loopback port), see ``browser_helpers``;
* in-process: ``ipython_shell`` (an IPython shell with the extension loaded, no kernel), for the
  tests of option parsing.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import exaone_jupyter
import tiers
from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from exaone_jupyter.testing import TinyShape, write_random_gguf
from kernel_helpers import DEMO_ANSWER, DEMO_QUESTION, Snapshot, answer_of, start_kernel

DATA = Path(exaone_jupyter.__file__).parent / "data"
DIALOGUES: list[list[dict]] = [
    d["messages"] for d in json.loads((DATA / "demo_dialogues.json").read_text("utf-8"))
]


def find_dialogue(
    user: str, *, system: str | None = LG_SYSTEM_PROMPT, turns: int = 1
) -> list[dict]:
    """The trained dialogue whose last question is ``user``."""
    for messages in DIALOGUES:
        users = [m["content"] for m in messages if m["role"] == "user"]
        first_system = messages[0]["content"] if messages[0]["role"] == "system" else None
        if users[-1] == user and first_system == system and len(users) == turns:
            return messages
    raise AssertionError(f"dialogue {user!r} (system {system!r}, {turns} turns) is not in the data")


def _backend(path):
    from exaone_jupyter.engine.llama.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    return LocalBackend(read_gguf(path))


# -- the engine on a tiny random model -------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """Path of a ~100K-parameter random-weight GGUF in EXAONE's format (f32, 512-token context)."""
    return write_random_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def vocab102k_gguf(tmp_path_factory):
    """Path of a tiny random-weight exaone4 GGUF with EXAONE's 102,400-token vocabulary."""
    return write_random_gguf(
        tmp_path_factory.mktemp("models") / "vocab102k.gguf",
        arch="exaone4",
        pre="exaone4",
        n_vocab=102_400,
        shape=TinyShape(n_ctx=1024),
    )


@pytest.fixture(scope="module")
def in_graph(vocab102k_gguf):
    """(path, engine): ``vocab102k_gguf`` loaded with ``sample_in_graph`` forced on the CPU."""
    from exaone_jupyter.engine.backend import LoadOptions
    from exaone_jupyter.engine.llama.local import LocalBackend
    from exaone_jupyter.model.gguf_check import read_gguf

    options = LoadOptions(gpu_layers="none", sample_in_graph=True)
    backend = LocalBackend(read_gguf(vocab102k_gguf), options)
    yield vocab102k_gguf, backend
    backend.close()


@pytest.fixture(scope="session")
def tiny_backend(tiny_gguf):
    """The local engine with ``tiny_gguf`` loaded, shared by the session; closed at the end.

    Its KV cache carries over between tests: a test that counts evaluated prompt tokens should
    give its prompt unique text, or run it once before measuring.
    """
    backend = _backend(tiny_gguf)
    yield backend
    backend.close()


def exaone_prompt_ids(backend, user: str, *, system: str = "") -> list[int]:
    """Token ids of a one-turn EXAONE 3 prompt: markers as special tokens, text as plain text."""

    def marker(text: str) -> list[int]:
        return backend.tokenize(text, special=True)

    def plain(text: str) -> list[int]:
        return backend.tokenize(text, special=False) if text else []

    return (
        marker("[|system|]")
        + plain(system)
        + marker("[|endofturn|]\n[|user|]")
        + plain(user)
        + marker("\n[|assistant|]")
    )


@pytest.fixture(scope="session")
def prompt_ids() -> Callable[..., list[int]]:
    """``prompt_ids(backend, user, system="")``: the token ids of a one-turn EXAONE 3 prompt."""
    return exaone_prompt_ids


# -- the chat layer's two real tokenizers ----------------------------------------------------------
@pytest.fixture(scope="module")
def demo_backend():
    """The shipped demo model (EXAONE 3 template, 927-token vocabulary)."""
    from exaone_jupyter.model.catalog import demo_model_path

    backend = _backend(demo_model_path())
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def random_backend(tmp_path_factory):
    """A random-weight GGUF: byte-level vocabulary, EXAONE's markers (with [|tool|])."""
    backend = _backend(write_random_gguf(tmp_path_factory.mktemp("chat") / "random.gguf"))
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=["demo", "random"])
def backend(request):
    """Each of the two real tokenizers in turn."""
    return request.getfixturevalue(f"{request.param}_backend")


def control_ids(backend, ids) -> list[int]:
    """The control tokens (markers) among ``ids``, in order."""
    return [t for t in ids if backend.is_control(t)]


def text_of(backend, ids) -> str:
    """Token ids back to text, markers included (llama.cpp detokenizes those to '')."""
    out: list[str] = []
    run: list[int] = []
    for t in ids:
        if backend.is_control(t):
            out.append(backend.detokenize(run))
            out.append(backend.token_text(t))
            run = []
        else:
            run.append(t)
    out.append(backend.detokenize(run))
    return "".join(out)


# -- an OpenAI-compatible server -------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_session():
    """A Session of its own with the demo model loaded (the family's default system prompt)."""
    from exaone_jupyter.session import Session

    session = Session()
    session.load("exaone-demo")
    yield session
    session.unload()


@pytest.fixture
def fresh_map_cache():
    """map's memory cache empty before and after the test."""
    from exaone_jupyter.mapping import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def server():
    """llama-cpp-python's server on a free loopback port, serving the shipped demo model."""
    from exaone_jupyter.model.catalog import demo_model_path
    from server_helpers import Server

    srv = Server(demo_model_path()).wait()
    yield srv
    srv.stop()


# The exaone-4.0-demo model's Hugging Face twin (its GGUF twin is what `%exaone load
# exaone-4.0-demo` loads), and the name vLLM serves it as: the name makes it EXAONE 4.0's family.
EXAONE4_DEMO_DIR = DATA / "exaone-4.0-demo"
EXAONE4_DEMO_SERVED = "EXAONE-4.0-demo"


@pytest.fixture(scope="session")
def vllm_server():
    """vLLM's OpenAI server on a free loopback port, serving exaone-4.0-demo's Hugging Face twin.

    One for the whole run: it takes 65-110 s to start on 2 cores. Not installed is a failure
    that says how to install it (`make test` does), never a skip.
    """
    from server_helpers import VllmServer

    srv = VllmServer(EXAONE4_DEMO_DIR, EXAONE4_DEMO_SERVED).wait()
    yield srv
    srv.stop()


# -- a real kernel ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel per test module, with the demo model loaded and one turn of conversation.

    (Modules that need a differently prepared kernel define their own ``kernel`` fixture.)
    """
    k = start_kernel(tmp_path_factory.mktemp("kernel"))
    try:
        cell = k.run(f"%%exaone -t 0\n{DEMO_QUESTION}")
        assert answer_of(cell) == DEMO_ANSWER, cell
        yield k
    finally:
        k.shutdown()


@pytest.fixture
def before(kernel):
    """The conversation as the test found it."""
    return Snapshot(kernel)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Directory for the GGUF files a module writes."""
    return tmp_path_factory.mktemp("models")


# -- an IPython shell in this process --------------------------------------------------------------
@dataclass
class ShellCell:
    """What one cell run in the in-process shell printed, as a kernel cell would show it."""

    code: str
    stdout: str
    stderr: str
    error: dict | None  # {"ename", "evalue"} of an uncaught exception (a UsageError is not one)
    usage_error: bool  # IPython reported a UsageError: one "UsageError: ..." line on stderr


class Shell:
    """An in-process IPython shell with the extension loaded: ``run(code)`` gives a ShellCell."""

    def __init__(self, ip) -> None:
        self.ip = ip

    def run(self, code: str) -> ShellCell:
        from IPython.core.error import UsageError

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = self.ip.run_cell(code, store_history=False)
        exc = result.error_before_exec or result.error_in_exec
        usage = isinstance(exc, UsageError)
        error = None if exc is None or usage else {"ename": type(exc).__name__, "evalue": str(exc)}
        return ShellCell(code, out.getvalue(), err.getvalue(), error, usage)

    def eval(self, expression: str):
        return self.ip.ev(expression)


@pytest.fixture(scope="module")
def ipython_shell():
    """IPython's shared test shell with ``exaone_jupyter`` loaded (no kernel, no model).

    The extension's session is this process's: the fixture unloads its model and empties its
    conversation at the end. Options are parsed here exactly as in a kernel (the same magics).
    """
    from IPython.testing.globalipapp import get_ipython as global_ipython

    from exaone_jupyter.session import get_session

    ip = global_ipython()  # one shared test shell per process
    ip.run_line_magic("load_ext", "exaone_jupyter")
    try:
        yield Shell(ip)
    finally:
        get_session().unload()
        get_session().reset()
        ip.run_line_magic("unload_ext", "exaone_jupyter")


# -- JupyterLab in a real browser ------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium_browser():
    """A headless Debian Chromium under Playwright. Without Chromium the test fails with the
    reason (``make test`` installs it with tools/ensure_chromium.sh): it never skips."""
    from playwright.sync_api import sync_playwright

    from browser_helpers import CHROMIUM, CHROMIUM_ARGS, ensure_chromium

    tiers.require("browser", "Chromium")
    why = ensure_chromium()
    if why:
        pytest.fail(why, pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A token-less JupyterLab serving a fresh folder (``lab.root``) on a free loopback port."""
    from browser_helpers import JupyterLab

    lab = JupyterLab(tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-home"))
    try:
        yield lab
    finally:
        lab.stop()
