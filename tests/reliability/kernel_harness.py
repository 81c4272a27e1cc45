"""A real IPython kernel for the reliability tests, a helper that runs one cell in it, and the
checks every case makes.

Each test module starts one kernel (jupyter_client), loads the extension and the demo model, and
runs cells through it exactly as a notebook would: errors reach the user as stderr lines and
display outputs, so that is what the tests read. ``one_sentence`` checks the error a user sees;
``healthy`` that the kernel lives, the conversation is unchanged and the model still answers.
"""

from __future__ import annotations

import os
import queue
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

DEMO_QUESTION = "한국의 수도는 어디인가요? Answer in one sentence."
DEMO_ANSWER = "한국의 수도는 서울입니다 (Seoul)."
SUMMARY: list[str] = []  # lines for the terminal summary (fuzz counts, soak figures)


@dataclass
class Cell:
    """What one executed cell produced."""

    stdout: str = ""
    stderr: str = ""
    outputs: list[dict] = field(default_factory=list)  # display_data / execute_result data
    error: dict | None = None  # {"ename", "evalue"} of an uncaught exception

    @property
    def text(self) -> str:
        """Every text/plain output, one per line."""
        return "\n".join(o.get("text/plain", "") for o in self.outputs)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("✗ ")]


class Kernel:
    """One ipykernel process; ``run(code)`` executes a cell and returns a :class:`Cell`."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        kernel_env = dict(os.environ)
        kernel_env.update(env or {})
        # the kernel is sys.executable (jupyter_client maps the spec's "python" to it)
        self.km.start_kernel(env=kernel_env, cwd=str(cwd) if cwd else None)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid

    def alive(self) -> bool:
        return self.km.is_alive()

    def run(self, code: str, timeout: float = 120, *, interrupt_after: float | None = None) -> Cell:
        """Execute ``code``; with ``interrupt_after`` seconds, press Ctrl-C once that long in."""
        msg_id = self.kc.execute(code, store_history=False)
        cell = Cell()
        deadline = time.monotonic() + timeout
        interrupt_at = time.monotonic() + interrupt_after if interrupt_after is not None else None
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"cell did not finish in {timeout} s: {code[:80]!r}")
            wait = min(deadline - now, 0.05 if interrupt_at else 1.0)
            if interrupt_at is not None and now >= interrupt_at:
                self.km.interrupt_kernel()
                interrupt_at = None
            try:
                msg = self.kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError(f"the kernel died running {code[:80]!r}") from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    cell.stdout += content["text"]
                else:
                    cell.stderr += content["text"]
            elif kind in ("display_data", "execute_result"):
                cell.outputs.append(content["data"])
            elif kind == "error":
                cell.error = {"ename": content["ename"], "evalue": content["evalue"]}
            elif kind == "status" and content["execution_state"] == "idle":
                break
        self.kc.get_shell_msg(timeout=timeout)  # the execute_reply, so the shell stays in step
        return cell

    def value(self, expr: str, timeout: float = 60):
        """The Python value of ``expr`` in the kernel (through repr and literal_eval)."""
        import ast
        cell = self.run(f"print(repr({expr}))", timeout=timeout)
        if cell.error:
            raise RuntimeError(f"{expr}: {cell.error}")
        return ast.literal_eval(cell.stdout.strip())

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


# -- starting a kernel and checking a case -----------------------------------------------------
def start_kernel(tmp: Path, **env: str) -> Kernel:
    """A kernel with the extension and the demo model loaded; never touches the network."""
    base = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf-home"),
            "HF_HUB_CACHE": str(tmp / "hf-cache"), "EXAONE_JUPYTER_MODEL": "",
            "PYTHONWARNINGS": "ignore"}
    base.update(env)
    kernel = Kernel(env=base, cwd=tmp)
    for code in ("%load_ext exaone_jupyter", "import exaone_jupyter",
                 "%exaone load exaone-demo"):
        cell = kernel.run(code)
        assert not cell.stderr and not cell.error, (code, cell)
    return kernel


def answer_of(cell: Cell) -> str | None:
    """The final reply of a ``%%exaone`` cell (the output that carries Markdown)."""
    replies = [o["text/markdown"] for o in cell.outputs
               if "text/markdown" in o and not o["text/markdown"].startswith("*ℹ")]
    return replies[-1] if replies else None


def notes_of(cell: Cell) -> list[str]:
    """The ℹ notices of a cell: printed by ``%exaone``, displayed by ``%%exaone``."""
    printed = [line[2:] for line in cell.stdout.splitlines() if line.startswith("ℹ ")]
    shown = [o["text/plain"][2:] for o in cell.outputs
             if o.get("text/plain", "").startswith("ℹ ")]
    return printed + shown


class Snapshot:
    """The conversation as it stood (its JSON and length), to compare after a failure."""

    def __init__(self, kernel: Kernel):
        self.json = conversation_json(kernel)
        self.length = message_count(kernel)


def conversation_json(kernel: Kernel) -> str:
    return kernel.value("exaone_jupyter.get_session().conversation.to_json()")


def message_count(kernel: Kernel) -> int:
    return kernel.value("len(exaone_jupyter.get_session().conversation.messages)")


def one_sentence(cell: Cell, *fragments: str, prefix: str = "✗ ") -> str:
    """The cell failed with exactly one line on stderr, one sentence holding ``fragments``."""
    assert cell.error is None, f"uncaught exception: {cell.error}"
    assert "Traceback" not in cell.stderr, cell.stderr
    lines = [line for line in cell.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    line = lines[0]
    assert line.startswith(prefix), line
    body = line[len(prefix):]
    assert body.endswith("."), f"not a finished sentence: {body!r}"
    # One sentence: no sentence end followed by a new capitalised sentence inside it.
    assert not re.search(r"[.!?] [A-Z][a-z]", body.replace("e.g. ", "")), \
        f"more than one sentence: {body!r}"
    for fragment in fragments:
        assert fragment in body, f"{fragment!r} not in {body!r}"
    return body


def ask_demo(kernel: Kernel) -> Cell:
    """The demo question as a one-off turn (the conversation is not touched)."""
    return kernel.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")


def healthy(kernel: Kernel, before: Snapshot | None, *, reload_demo: bool = False) -> None:
    """The kernel lives, the conversation is as ``before`` and the demo model still answers."""
    assert kernel.alive(), "the kernel died"
    if reload_demo:  # after a case that loaded another model (whose family sets the system prompt)
        cell = kernel.run("%exaone load exaone-demo")
        assert not cell.stderr and not cell.error, cell
    if before is not None:
        assert message_count(kernel) == before.length
        assert conversation_json(kernel) == before.json
    cell = ask_demo(kernel)
    assert not cell.stderr and not cell.error, cell
    assert answer_of(cell) == DEMO_ANSWER, cell
    if before is not None:
        assert message_count(kernel) == before.length  # --no-history remembers nothing
