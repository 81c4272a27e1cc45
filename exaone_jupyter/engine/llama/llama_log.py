"""Capture llama.cpp's log instead of printing it, so a failed load can say why.

llama-cpp-python prints through a callback whose level map is stale (warnings shown, errors
hidden), and with ``verbose=False`` a failed load only says "Failed to load model". We install our
own process-wide callback that keeps recent messages, and read the last error after a failure.
"""

from __future__ import annotations

import collections
import ctypes
import threading

_DEBUG, _INFO, _WARN, _ERROR, _CONT = 1, 2, 3, 4, 5
_LEVEL_NAMES = {_DEBUG: "debug", _INFO: "info", _WARN: "warn", _ERROR: "error"}

_lock = threading.Lock()
_lines: collections.deque[list] = collections.deque(maxlen=400)  # [sequence, level, text]
_count = 0
_callback = None  # the ctypes callback must stay referenced while llama.cpp holds it
# Debug messages are not kept: one load of a 32-layer model logs ~2,000 of them (graph
# reservation), which would push the "offloaded N/M layers" line out of the buffer.
_in_debug = False


def install() -> None:
    """Route llama.cpp's log into our buffer (idempotent)."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _collect(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        global _count, _in_debug
        message = text.decode("utf-8", "replace")
        with _lock:
            if level == _CONT:
                if _lines and not _in_debug:
                    _lines[-1][2] += message
            elif level == _DEBUG:
                _in_debug = True
            else:
                _in_debug = False
                _count += 1
                _lines.append([_count, level, message])

    _callback = _collect
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def mark() -> int:
    """A position in the log; pass it to ``since`` to read what came after."""
    with _lock:
        return _count


def since(position: int, min_level: int = _WARN) -> list[str]:
    with _lock:
        items = [tuple(line) for line in _lines if line[0] > position]
    return [text.strip() for _, level, text in items if level >= min_level and text.strip()]


def last_error(position: int) -> str | None:
    """The most telling error logged after ``position``, without llama.cpp's function prefix."""
    errors = since(position, _ERROR)
    if not errors:
        return None
    # llama.cpp logs "llama_model_load: error loading model: <reason>"; keep the reason.
    detailed = [e for e in errors if "error loading model" in e] or errors
    return detailed[0].split("error loading model:", 1)[-1].strip()
