"""llama-cpp-python's own OpenAI-compatible server on a free loopback port, for the remote tests.

``Server(model, *args)`` starts ``python -m llama_cpp.server`` (extra ``args`` go to its command
line); ``.wait()`` returns it once ``/v1/models`` answers. The log goes to a file: a pipe nobody
reads fills up and then blocks the server.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m llama_cpp.server`` on a free loopback port, ready when /v1/models answers."""

    def __init__(self, model: Path, *args: str, api_key: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = api_key
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            *args,
        ]
        if api_key:
            command += ["--api_key", api_key]
        # The log goes to a file: a pipe nobody reads fills up and then blocks the server.
        self.log = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def wait(self, timeout: float = 60.0) -> Server:
        request = urllib.request.Request(
            f"{self.url}/models",
            headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("llama_cpp.server did not start within the timeout")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
