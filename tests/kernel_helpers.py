"""The one kernel harness of the tests and benchmarks: a real Jupyter kernel, the iopub messages of
each cell it runs, and the checks the reliability cases make.

``Kernel()`` starts the venv's ``python3`` kernelspec through ``jupyter_client`` (what JupyterLab
and nbclient do); ``kernel.run(code)`` executes one cell and returns a :class:`Cell` with two views
of what the cell produced:

* the raw view: every iopub message whose parent is that cell, in order, with the kernel's own
  timestamp (``cell.messages``, ``cell.updates``, ``cell.final_outputs()``), plus the
  ``execute_reply`` (``cell.reply``, ``cell.ok``);
* the user's view: ``cell.stdout``, ``cell.stderr``, ``cell.displays`` (the ``data`` of each
  display), ``cell.text`` and ``cell.error`` (an uncaught exception), which is what the reliability
  tests read: errors reach a user as stderr lines and display outputs.

Synchronisation is by observed events only: ``run(code, during=...)`` hands each message to a
callback as it arrives, so a test interrupts the kernel *when* it sees the first token
(:func:`is_reply_text`) or the "evaluating the prompt…" notice (:func:`is_evaluating_prompt`),
never after a fixed delay. Times given here are generous timeouts, nothing waits for them.

``start_kernel`` gives a kernel with the extension and the demo model loaded, offline;
``healthy`` checks that a kernel lives, its conversation is unchanged and the model still answers;
:class:`WidgetFrontend` plays a browser for the chat panel's widgets.
"""

from __future__ import annotations

import ast
import html
import json
import os
import queue
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiers

KERNEL_NAME = "python3"
DEMO_QUESTION = "한국의 수도는 어디인가요? Answer in one sentence."
DEMO_ANSWER = "한국의 수도는 서울입니다 (Seoul)."
EVALUATING_PROMPT = "evaluating the prompt…"
SUMMARY: list[str] = []  # lines for the terminal summary (fuzz counts, soak figures)


def ensure_kernelspec() -> None:
    """Install the ``python3`` kernelspec into this venv when it is missing (as the Makefile does)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME],
            check=True,
            capture_output=True,
        )


@dataclass
class Message:
    type: str
    content: dict
    time: float  # seconds, from the kernel's own header timestamp (no transport jitter)
    received: float  # time.perf_counter() when the client got it


# -- events a test can wait for -------------------------------------------------------------------
def live_text(message: Message) -> str | None:
    """The text/plain of a live-output update, else None."""
    if message.type != "update_display_data":
        return None
    return message.content.get("data", {}).get("text/plain")


def is_evaluating_prompt(message: Message) -> bool:
    """The live output's notice that the prompt is being evaluated (no token has come yet)."""
    return live_text(message) == EVALUATING_PROMPT


def is_reply_text(message: Message) -> bool:
    """A live update that carries reply text and the meter: the first token has come."""
    text = live_text(message)
    return bool(text) and text != EVALUATING_PROMPT and "tok/s" in text


@dataclass
class Cell:
    code: str
    messages: list[Message] = field(default_factory=list)
    reply: dict = field(default_factory=dict)  # execute_reply content (status, payload...)
    prompts: list[str] = field(default_factory=list)  # input() prompts answered (run's stdin)

    # -- the raw view -----------------------------------------------------------------------------
    def of_type(self, *types: str) -> list[Message]:
        return [m for m in self.messages if m.type in types]

    @property
    def outputs(self) -> list[Message]:
        """What a frontend appends to the cell (updates change earlier outputs in place)."""
        return self.of_type("stream", "display_data", "execute_result", "error")

    @property
    def updates(self) -> list[Message]:
        return self.of_type("update_display_data")

    def final_outputs(self) -> list[dict]:
        """The cell's outputs as a frontend (or nbclient) ends up holding them: updates applied."""
        final: list[dict] = []
        by_id: dict[str, list[int]] = {}
        for m in self.messages:
            if m.type in ("display_data", "execute_result", "stream", "error"):
                out = {
                    "output_type": m.type,
                    **{k: v for k, v in m.content.items() if k != "transient"},
                }
                final.append(out)
                display_id = m.content.get("transient", {}).get("display_id")
                if display_id:
                    by_id.setdefault(display_id, []).append(len(final) - 1)
            elif m.type == "update_display_data":
                for i in by_id.get(m.content["transient"]["display_id"], []):
                    final[i] = {
                        **final[i],
                        "data": m.content["data"],
                        "metadata": m.content["metadata"],
                    }
            elif m.type == "clear_output":
                final, by_id = [], {}
        return final

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"

    @property
    def page(self) -> str:
        """Text the pager got (``magic?`` help goes to the execute_reply payload, not iopub)."""
        return "".join(
            p.get("data", {}).get("text/plain", "")
            for p in self.reply.get("payload", [])
            if p.get("source") == "page"
        )

    # -- the user's view --------------------------------------------------------------------------
    def stream_text(self, name: str) -> str:
        return "".join(
            m.content["text"] for m in self.of_type("stream") if m.content["name"] == name
        )

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
    def error(self) -> dict | None:
        """``{"ename", "evalue"}`` of an uncaught exception (a traceback message), else None."""
        errors = self.errors
        return {"ename": errors[0]["ename"], "evalue": errors[0]["evalue"]} if errors else None

    @property
    def displays(self) -> list[dict]:
        """``data`` of each display_data / execute_result, in order (first displays)."""
        return [m.content["data"] for m in self.of_type("display_data", "execute_result")]

    def plain(self) -> list[str]:
        return [d.get("text/plain", "") for d in self.displays]

    @property
    def text(self) -> str:
        """Every text/plain output, one per line."""
        return "\n".join(self.plain())

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("✗ ")]

    def __repr__(self) -> str:
        return (
            f"Cell({self.code[:60]!r}, status={self.reply.get('status')!r}, "
            f"stdout={self.stdout[-500:]!r}, stderr={self.stderr[-1000:]!r}, "
            f"error={self.error!r}, displays={self.plain()[-4:]!r})"
        )


class Kernel:
    """One kernel process and a blocking client; ``run`` executes a cell, collects its messages.

    ``env`` is added to this process's environment (``HF_HUB_OFFLINE=1`` always; the default
    model is unset: tests name their models). ``store_history`` is what each ``run`` passes.
    """

    def __init__(
        self,
        *,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 120,
        store_history: bool = True,
    ) -> None:
        from jupyter_client.manager import start_new_kernel

        tiers.require("kernel", "a Jupyter kernel")
        ensure_kernelspec()
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        full_env.pop("EXAONE_JUPYTER_MODEL", None)
        full_env.update(env or {})
        self.store_history = store_history
        self.km, self.kc = start_new_kernel(
            kernel_name=KERNEL_NAME,
            cwd=str(cwd) if cwd else None,
            env=full_env,
            startup_timeout=startup_timeout,
        )

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid

    def alive(self) -> bool:
        return self.km.is_alive()

    def run(
        self,
        code: str,
        timeout: float = 120,
        *,
        during: Callable[[Message], bool] | None = None,
        cell_id: str | None = None,
        stdin: list[str] | None = None,
    ) -> Cell:
        """Execute ``code``; ``during(message)`` sees each message as it arrives (return True to
        stop calling it), e.g. to interrupt the kernel once the reply is streaming. ``cell_id``
        goes in the request's metadata as ``cellId``, as JupyterLab, Notebook 7 and VS Code send
        it (nbclient and jupyter_client's ``execute`` send none). ``stdin``: the request allows
        input, and each ``input()`` prompt is answered with the next of these (the prompts are
        kept in ``cell.prompts``); without it, as nbclient, the kernel may not ask."""
        cell = Cell(code)
        answers = None if stdin is None else list(stdin)
        if cell_id is None:
            msg_id = self.kc.execute(
                code, store_history=self.store_history, allow_stdin=answers is not None
            )
        else:
            content = {
                "code": code,
                "silent": False,
                "store_history": self.store_history,
                "user_expressions": {},
                "allow_stdin": answers is not None,
                "stop_on_error": True,
            }
            request = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.kc.shell_channel.send(request)
            msg_id = request["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish in {timeout} s: {code[:80]!r}")
            if answers is not None:
                self._answer_input(cell, answers)
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 0.2 if answers is not None else 1.0))
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError(f"the kernel died running {code[:80]!r}") from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
                continue
            if kind == "execute_input":
                continue
            message = Message(
                kind, msg["content"], msg["header"]["date"].timestamp(), time.perf_counter()
            )
            cell.messages.append(message)
            if during is not None and during(message):
                during = None
        while True:  # the execute_reply, so the shell channel stays in step
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 5))
            if reply["parent_header"].get("msg_id") == msg_id:
                cell.reply = reply["content"]
                return cell

    def _answer_input(self, cell: Cell, answers: list[str]) -> None:
        while self.kc.stdin_channel.msg_ready():
            request = self.kc.get_stdin_msg(timeout=1)
            if request["msg_type"] == "input_request":
                cell.prompts.append(request["content"]["prompt"])
                self.kc.input(answers.pop(0) if answers else "")

    def run_and_interrupt(
        self, code: str, when: Callable[[Message], bool], *, timeout: float = 180
    ) -> tuple[Cell, Message]:
        """Run ``code`` and press Ctrl-C once at the first message ``when`` accepts; returns the
        cell and that message. Fails if the event never came (the cell ran to its end)."""
        seen: list[Message] = []

        def interrupt_once(message: Message) -> bool:
            if when(message):
                self.interrupt()
                seen.append(message)
                return True
            return False

        cell = self.run(code, timeout=timeout, during=interrupt_once)
        assert seen, f"the event to interrupt at never came: {cell!r}"
        return cell, seen[0]

    def interrupt(self) -> None:
        """What the ■ button does: SIGINT to the kernel, KeyboardInterrupt in the running cell."""
        self.km.interrupt_kernel()

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """The value of ``expression`` in the kernel (via ``repr`` and ``ast.literal_eval``)."""
        cell = self.run(f"print(repr({expression}))", timeout=timeout)
        if not cell.ok or cell.error:
            raise RuntimeError(f"{expression!r} failed in the kernel: {cell!r}")
        return ast.literal_eval(cell.stdout.strip())

    value = eval

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# -- %%exaone's outputs ----------------------------------------------------------------------------
def reply_outputs(cell: Cell) -> tuple[dict, dict]:
    """``(answer, meter)``: the ``data`` of the two outputs a ``%%exaone`` cell ends with.

    The renderer's layout: [notes], the live output (display id; empty at first and at the end),
    then the answer (``text/markdown`` + ``text/plain``, and the exchange record, which is left
    out here: ``exchange_of`` reads it) and the meter (``text/plain`` + ``text/html``), each
    displayed once with its final content.
    """
    finals = [
        m.content["data"]
        for m in cell.of_type("display_data")
        if not m.content.get("transient", {}).get("display_id")
    ]
    assert len(finals) >= 2, f"no reply in this cell: {cell!r}"
    answer = {k: v for k, v in finals[-2].items() if k != EXCHANGE_MIME}
    return answer, finals[-1]


EXCHANGE_MIME = "application/vnd.exaone-jupyter.exchange+json"


def exchange_of(cell: Cell) -> dict | None:
    """The exchange record a ``%%exaone`` cell's answer carries (None for a one-off question)."""
    for m in cell.of_type("display_data"):
        if EXCHANGE_MIME in m.content["data"]:
            return m.content["data"][EXCHANGE_MIME]
    return None


def live_updates(cell: Cell) -> list[dict]:
    """The ``data`` of the live updates that showed reply text (not the prompt notice, not the
    final emptying)."""
    return [m.content["data"] for m in cell.updates if is_reply_text(m)]


def answer_of(cell: Cell) -> str | None:
    """The final reply of a ``%%exaone`` cell (the output that carries Markdown)."""
    replies = [
        d["text/markdown"]
        for d in cell.displays
        if "text/markdown" in d and not d["text/markdown"].startswith("*ℹ")
    ]
    return replies[-1] if replies else None


def notes_of(cell: Cell) -> list[str]:
    """The ℹ notices of a cell: printed by ``%exaone``, displayed by ``%%exaone``."""
    printed = [line[2:] for line in cell.stdout.splitlines() if line.startswith("ℹ ")]
    shown = [d["text/plain"][2:] for d in cell.displays if d.get("text/plain", "").startswith("ℹ ")]
    return printed + shown


# -- a kernel with the demo model, and the checks after a failure ----------------------------------
def start_kernel(tmp: Path, *, load_demo: bool = True, **env: str) -> Kernel:
    """A kernel with the extension (and the demo model) loaded, in ``tmp``, with an empty Hugging
    Face cache and cache folder (saved KV states) there; it never touches the network."""
    base = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf-home"),
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "EXAONE_JUPYTER_CACHE": str(tmp / "cache"),
        "PYTHONWARNINGS": "ignore",
    }
    base.update(env)
    kernel = Kernel(env=base, cwd=tmp, store_history=False)
    codes = ["%load_ext exaone_jupyter", "import exaone_jupyter"]
    if load_demo:
        codes.append("%exaone load exaone-demo")
    for code in codes:
        cell = kernel.run(code)
        assert cell.ok and not cell.stderr and not cell.error, (code, cell)
    return kernel


def save_notebook(path: Path, cells: list[tuple[str, str, Cell]]) -> None:
    """A notebook as a frontend saves it: each cell's id, source and final outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    for cell_id, source, ran in cells:
        code = nbformat.v4.new_code_cell(source, id=cell_id)
        code.outputs = [nbformat.from_dict(o) for o in ran.final_outputs()]
        nb.cells.append(code)
    nbformat.write(nb, str(path))


def conversation_json(kernel: Kernel) -> str:
    return kernel.eval("exaone_jupyter.get_session().conversation.to_json()")


def message_count(kernel: Kernel) -> int:
    return kernel.eval("len(exaone_jupyter.get_session().conversation.messages)")


class Snapshot:
    """The conversation as it stood (its JSON and length), to compare after a failure."""

    def __init__(self, kernel: Kernel):
        self.json = conversation_json(kernel)
        self.length = message_count(kernel)


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


# -- the chat panel's widgets, driven as a browser drives them -------------------------------------
class WidgetFrontend:
    """The kernel side of a browser: widget state from iopub, comm messages on shell.

    It reads the widgets from their ``comm_open`` messages (found by their stable ``exaone-*`` CSS
    classes), follows their ``update`` messages, and sends what a browser sends:
    ``{"method": "update", "state": {...}}`` for a value typed,
    ``{"method": "custom", "content": {"event": "click"}}`` for a button.
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel, self.kc = kernel, kernel.kc
        self.state: dict[str, dict] = {}  # comm id -> the widget's latest state
        self.ids: dict[str, str] = {}  # css class (exaone-send, ...) -> comm id

    def _handle(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        opened = kind == "comm_open" and content.get("target_name") == "jupyter.widget"
        updated = kind == "comm_msg" and content["data"].get("method") in ("update", "echo_update")
        if opened or updated:
            state = content["data"]["state"]
        else:
            return
        self.state.setdefault(content["comm_id"], {}).update(state)
        for cls in state.get("_dom_classes", ()):  # add_class() may come as an update
            self.ids[cls] = content["comm_id"]

    def pump(self, timeout: float = 0.5) -> dict | None:
        """Handle the next iopub message (None if none came within ``timeout``)."""
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        self._handle(msg)
        return msg

    def _until_idle(self, msg_id: str, timeout: float) -> dict:
        out: dict = {"stdout": "", "stderr": "", "data": []}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.pump()
            if msg is None:
                assert self.kernel.alive(), "the kernel died"
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("display_data", "execute_result"):
                out["data"].append(content["data"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return out
        raise AssertionError(f"no idle within {timeout} s")

    def execute(self, code: str, timeout: float = 60) -> dict:
        return self._until_idle(self.kc.execute(code), timeout)

    def _comm(self, cls: str, data: dict, timeout: float) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.ids[cls], "data": data})
        self.kc.shell_channel.send(msg)
        self._until_idle(msg["header"]["msg_id"], timeout)  # the handler has run

    def set(self, cls: str, timeout: float = 30, **state) -> None:
        self._comm(cls, {"method": "update", "state": state, "buffer_paths": []}, timeout)
        self.state[self.ids[cls]].update(state)

    def click(self, cls: str, timeout: float = 60) -> None:
        self._comm(cls, {"method": "custom", "content": {"event": "click"}}, timeout)

    def submit(self, cls: str, timeout: float = 30) -> None:  # Enter in a Text widget
        self._comm(cls, {"method": "custom", "content": {"event": "submit"}}, timeout)

    def get(self, cls: str, key: str = "value"):
        return self.state[self.ids[cls]].get(key)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Handle iopub messages until ``predicate()`` holds (checked after each one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            self.pump()
        raise AssertionError(f"timed out waiting for {what}; status: {self.text('exaone-status')}")

    def text(self, cls: str) -> str:
        """A widget's HTML value as text (tags dropped, entities kept simple)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.get(cls) or ""))

    def tokens(self) -> int:
        match = re.search(r"data-tokens='(\d+)'", self.get("exaone-meter") or "")
        return int(match.group(1)) if match else 0

    def kernel_json(self, expr: str):
        out = self.execute(f"import json as _j; print(_j.dumps({expr}, ensure_ascii=False))")
        return json.loads(out["stdout"])
