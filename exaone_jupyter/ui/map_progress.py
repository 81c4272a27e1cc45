"""The progress bar under ``exaone_jupyter.map``: rows done, rows/s, tokens/s, ETA, cache hits.

Drawn the way ``LoadProgress`` draws a load: one display handle, empty at first, updates at most
every ``interval`` seconds, emptied at the end; then the run's summary (rows answered, from the
cache, one line per failed row) is displayed once as an output of its own. It has no timings, so
a saved notebook's outputs do not depend on the machine's speed, and each output's first display
is its final state (what nbval compares). In a terminal only that summary is printed, and only when a row
failed, the run was interrupted or has a note (a disk cache left out, a server's way).
"""

from __future__ import annotations

import html
import time
import uuid
from typing import Any

from .render import DEFAULT_INTERVAL, MIN_INTERVAL, in_notebook, publish


def map_with_progress(
    session: Any,
    items: Any,
    prompt: Any,
    *,
    shell: Any = None,
    progress: bool = True,
    interval: float = DEFAULT_INTERVAL,
    **options: Any,
) -> Any:
    """``run_map`` with the bar under the cell (in a notebook) and the summary after it: what
    ``exaone_jupyter.map`` and ``%exaone map`` both run."""
    from ..mapping import run_map

    bar = MapBar(notebook=in_notebook(shell), interval=interval) if progress else None
    try:
        result = run_map(session, items, prompt, on_progress=bar, **options)
    except BaseException:
        if bar is not None:
            bar.clear()
        raise
    if bar is not None:
        bar.finish(result)
    return result


class MapBar:
    """``on_progress`` for ``run_map``; ``finish(result)`` shows the summary."""

    def __init__(self, *, notebook: bool, interval: float = DEFAULT_INTERVAL) -> None:
        self.notebook = notebook
        self.interval = max(float(interval), MIN_INTERVAL)
        self.updates = 0
        self._display_id = uuid.uuid4().hex
        self._last_sent = 0.0
        self._shown = False

    def __call__(self, progress: Any) -> None:
        if not self.notebook or progress.finished:
            return
        now = time.perf_counter()
        if not self._shown:  # the output's first state: empty, as a saved notebook keeps it
            publish({"text/plain": ""}, display_id=self._display_id)
            self._shown = True
        if now - self._last_sent < self.interval:
            return
        self._last_sent = now
        self.updates += 1
        publish(bar_data(progress), display_id=self._display_id, update=True)

    def finish(self, result: Any) -> None:
        summary = result.summary()
        if not self.notebook:
            if result.errors or result.interrupted or result.notes:
                print(summary)
            return
        text = {"text/plain": summary}
        text["text/html"] = (
            "<pre class='exaone-map-summary' style='font-size:0.9em;margin:0'>"
            f"{html.escape(summary)}</pre>"
        )
        self.clear()
        publish(text)

    def clear(self) -> None:
        """The bar's output goes back to its first, empty state (also when the run failed)."""
        if self._shown:
            publish({"text/plain": ""}, display_id=self._display_id, update=True)
            self._shown = False


def bar_data(progress: Any) -> dict[str, str]:
    """The bar as HTML and as text, with the same figures."""
    fraction = progress.done / progress.total if progress.total else 1.0
    parts = [f"{progress.done}/{progress.total} rows"]
    if progress.from_cache:
        parts.append(f"{progress.from_cache} from cache")
    if progress.rows_per_s is not None:
        parts.append(f"{progress.rows_per_s:.1f} rows/s")
    if progress.tokens_per_s is not None:
        parts.append(f"{progress.tokens_per_s:.0f} tok/s")
    if progress.eta_s is not None:
        parts.append(f"ETA {progress.eta_s:.0f} s")
    if progress.errors:
        parts.append(f"{progress.errors} errors")
    text = "map: " + ", ".join(parts)
    bar = (
        "<span style='display:inline-block;width:200px;height:10px;margin-right:8px;"
        "vertical-align:middle;background:rgba(127,127,127,0.2);border-radius:5px'>"
        f"<span style='display:block;width:{fraction * 100:.1f}%;height:10px;"
        "border-radius:5px;background:#1f77b4'></span></span>"
    )
    return {
        "text/plain": text,
        "text/html": f"<div class='exaone-map-progress' data-done='{progress.done}' "
        f"style='font-size:0.9em'>{bar}{html.escape(text)}</div>",
    }
