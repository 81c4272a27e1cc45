"""A real Jupyter kernel for tests and benchmarks, and the iopub messages of each cell it runs.

``Kernel()`` starts the venv's ``python3`` kernelspec through ``jupyter_client`` (what JupyterLab
and nbclient do), ``kernel.run(code)`` executes one cell and returns a :class:`Cell` with every
iopub message whose parent is that cell, in order, plus the ``execute_reply``. The tests read the
messages the way a frontend would; ``reply_outputs`` knows the layout ``%%exaone`` leaves.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

KERNEL_NAME = "python3"


def ensure_kernelspec() -> None:
    """Install the ``python3`` kernelspec into this venv when it is missing (as the Makefile does)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                        "--name", KERNEL_NAME], check=True, capture_output=True)


@dataclass
class Message:
    type: str
    content: dict
    time: float  # seconds, from the kernel's own header timestamp (no transport jitter)
    received: float  # time.perf_counter() when the client got it


@dataclass
class Cell:
    code: str
    messages: list[Message] = field(default_factory=list)
    reply: dict = field(default_factory=dict)  # execute_reply content (status, payload...)

    # -- views a test reads ---------------------------------------------------------------------
    def of_type(self, *types: str) -> list[Message]:
        return [m for m in self.messages if m.type in types]

    @property
    def outputs(self) -> list[Message]:
        """What a frontend appends to the cell (updates change earlier outputs in place)."""
        return self.of_type("stream", "display_data", "execute_result", "error")

    @property
    def updates(self) -> list[Message]:
        return self.of_type("update_display_data")

    def stream_text(self, name: str) -> str:
        return "".join(m.content["text"] for m in self.of_type("stream")
                       if m.content["name"] == name)

    @property
    def stdout(self) -> str:
        return self.stream_text("stdout")

    @property
    def stderr(self) -> str:
        return self.stream_text("stderr")

    @property
    def errors(self) -> list[dict]:
        return [m.content for m in self.of_type("error")]

    @property
    def displays(self) -> list[dict]:
        """``data`` of each display_data / execute_result, in order."""
        return [m.content["data"] for m in self.of_type("display_data", "execute_result")]

    def plain(self) -> list[str]:
        return [d.get("text/plain", "") for d in self.displays]

    @property
    def page(self) -> str:
        """Text the pager got (``magic?`` help goes to the execute_reply payload, not iopub)."""
        return "".join(p.get("data", {}).get("text/plain", "")
                       for p in self.reply.get("payload", []) if p.get("source") == "page")

    def final_outputs(self) -> list[dict]:
        """The cell's outputs as a frontend (or nbclient) ends up holding them: updates applied."""
        final: list[dict] = []
        by_id: dict[str, list[int]] = {}
        for m in self.messages:
            if m.type in ("display_data", "execute_result", "stream", "error"):
                out = {"output_type": m.type, **{k: v for k, v in m.content.items()
                                                   if k != "transient"}}
                final.append(out)
                display_id = m.content.get("transient", {}).get("display_id")
                if display_id:
                    by_id.setdefault(display_id, []).append(len(final) - 1)
            elif m.type == "update_display_data":
                for i in by_id.get(m.content["transient"]["display_id"], []):
                    final[i] = {**final[i], "data": m.content["data"],
                                "metadata": m.content["metadata"]}
            elif m.type == "clear_output":
                final, by_id = [], {}
        return final

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"


class Kernel:
    """One kernel process and a blocking client; ``run`` executes a cell, collects its messages."""

    def __init__(self, *, cwd: str | None = None, env: dict[str, str] | None = None,
                 startup_timeout: float = 60) -> None:
        from jupyter_client.manager import start_new_kernel

        ensure_kernelspec()
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                    **(env or {})}
        full_env.pop("EXAONE_JUPYTER_MODEL", None)  # the tests name their models
        self.km, self.kc = start_new_kernel(kernel_name=KERNEL_NAME, cwd=cwd, env=full_env,
                                            startup_timeout=startup_timeout)

    def run(self, code: str, *, timeout: float = 60,
            during: Callable[[Message], bool] | None = None) -> Cell:
        """Execute ``code``; ``during(message)`` sees each message as it arrives (return True to
        stop calling it), e.g. to interrupt the kernel once the reply is streaming."""
        cell = Cell(code)
        msg_id = self.kc.execute(code, store_history=True)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish in {timeout} s: {code[:60]!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
                continue
            if kind == "execute_input":
                continue
            message = Message(kind, msg["content"], msg["header"]["date"].timestamp(),
                              time.perf_counter())
            cell.messages.append(message)
            if during is not None and during(message):
                during = None
        while True:
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
            if reply["parent_header"].get("msg_id") == msg_id:
                cell.reply = reply["content"]
                return cell

    def interrupt(self) -> None:
        """What the ■ button does: SIGINT to the kernel, KeyboardInterrupt in the running cell."""
        self.km.interrupt_kernel()

    def eval(self, expression: str) -> Any:
        """The value of ``expression`` in the kernel (via ``repr`` and ``ast.literal_eval``)."""
        import ast

        cell = self.run(f"print(repr({expression}))")
        if not cell.ok:
            raise RuntimeError(f"{expression!r} failed in the kernel: {cell.reply.get('evalue')}")
        return ast.literal_eval(cell.stdout.strip())

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def reply_outputs(cell: Cell) -> tuple[dict, dict]:
    """``(answer, meter)``: the ``data`` of the two outputs a ``%%exaone`` cell ends with.

    The renderer's layout: [notes], the live output (display id; empty at first and at the end),
    then the answer (``text/markdown`` + ``text/plain``, and the exchange record, which is left
    out here: ``exchange_of`` reads it) and the meter (``text/plain`` + ``text/html``), each
    displayed once with its final content.
    """
    finals = [m.content["data"] for m in cell.of_type("display_data")
              if not m.content.get("transient", {}).get("display_id")]
    assert len(finals) >= 2, f"no reply in this cell: {cell.messages}"
    answer = {k: v for k, v in finals[-2].items() if k != EXCHANGE_MIME}
    return answer, finals[-1]


EXCHANGE_MIME = "application/vnd.exaone-jupyter.exchange+json"


def exchange_of(cell: Cell) -> dict | None:
    """The exchange record a ``%%exaone`` cell's answer carries (None for a one-off question)."""
    for m in cell.of_type("display_data"):
        if EXCHANGE_MIME in m.content["data"]:
            return m.content["data"][EXCHANGE_MIME]
    return None
