"""Let a throwaway process read a GGUF first, so that a file llama.cpp would crash on cannot kill
the kernel.

``read_gguf`` catches what a user's file usually has wrong (cut short, not a GGUF, a corrupt
table), but llama.cpp also stops the whole process with ``abort()`` on files that parse yet break
its own assertions: a vocabulary that lists a token twice (``GGML_ASSERT(id_to_token.size() ==
token_to_id.size())``), hyperparameters out of range. No Python code can catch that, so before a
file is loaded into the kernel for the first time, a child Python loads its metadata and
vocabulary (``vocab_only``) and reports. The child reads no tensor data: it costs about a third of
a second whatever the model's size, once per file and process; a crash costs the child only.

What it does not cover: the tensors (llama.cpp checks their shapes and bounds with errors, not
aborts, and ``read_gguf`` has already checked that every tensor lies inside the file) and the
first decode. See docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import ExaoneError

TIMEOUT_S = 120.0
_REDOWNLOAD = "delete it and download or convert it again"

# The child: load metadata and vocabulary only, report llama.cpp's errors, exit 0 when it loads.
_CHILD = r"""
import ctypes, sys
import llama_cpp
errors = []
@llama_cpp.llama_log_callback
def log(level, text, user_data):
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        errors.append(text.decode("utf-8", "replace").strip())
llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
params = llama_cpp.llama_model_default_params()
params.vocab_only = True
params.n_gpu_layers = 0
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode("utf-8"), params)
if not model:
    sys.stderr.write("\n".join(errors) + "\n")
    sys.exit(3)
llama_cpp.llama_model_free(model)
"""

_lock = threading.Lock()
_passed: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of files that loaded


def _identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def probe(path: str | os.PathLike, *, timeout: float = TIMEOUT_S) -> None:
    """Return when llama.cpp can read ``path``'s metadata and vocabulary without crashing;
    raise ExaoneError with one sentence otherwise. A file that passed once (same path, size and
    modification time) is not probed again in this process."""
    path = Path(path)
    key = _identity(path)
    with _lock:
        if key in _passed:
            return
    env = dict(os.environ)
    env.update(
        GGML_NO_BACKTRACE="1",  # ggml_abort would otherwise attach gdb to print a trace
        CUDA_VISIBLE_DEVICES="",
        HIP_VISIBLE_DEVICES="",
    )  # no GPU needed, none touched
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ExaoneError(
            f"llama.cpp took more than {timeout:.0f} s to read the vocabulary of "
            f"{path.name}, so it was not loaded; check that the file is a complete "
            "GGUF on a readable disk."
        ) from None
    except OSError:
        return  # no child process possible here: load in-process as before
    detail = _detail(child.stderr.decode("utf-8", "replace"))
    if child.returncode == 0:
        with _lock:
            _passed.add(key)
        return
    if child.returncode == 3:
        raise ExaoneError(
            f"llama.cpp cannot load {path.name}"
            f"{': ' + detail.rstrip('.') if detail else ''}; check that the file is a "
            "complete GGUF of a supported model, or download or convert it again."
        )
    if child.returncode < 0:
        how = _signal_name(-child.returncode)
        raise ExaoneError(
            f"{path.name} makes llama.cpp crash ({how}"
            f"{': ' + detail if detail else ''}), so it was not loaded into this "
            f"kernel; the file is corrupt or from an incompatible converter: "
            f"{_REDOWNLOAD}."
        )
    # Any other exit: the child's Python itself failed (e.g. llama_cpp would not import); the
    # in-process load will report that better than we can.


def _detail(stderr: str) -> str:
    """The telling line of llama.cpp's output: a failed assertion, or its error."""
    assertion = re.search(r"GGML_ASSERT\((.*)\) failed", stderr)
    if assertion:
        return f"assertion {assertion.group(1)} failed"
    thrown = re.search(r"what\(\):\s*(.+)", stderr)
    if thrown:
        return thrown.group(1).strip()[:120]
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    loading = [
        line.split("error loading model:", 1)[1].strip()
        for line in lines
        if "error loading model:" in line
    ]
    text = (loading or lines or [""])[0]
    return text[:160]


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return {
        "SIGABRT": "it aborted",
        "SIGSEGV": "a segmentation fault",
        "SIGBUS": "a bus error",
        "SIGFPE": "an arithmetic fault",
        "SIGKILL": "it was killed, perhaps out of memory",
    }.get(name, name)
