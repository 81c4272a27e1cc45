"""A progress bar under ``%exaone load`` that follows llama.cpp's own loading.

Shown the way a streaming reply is: the first display is empty (what the saved notebook keeps,
and what nbval compares), updates draw the bar at most every ``interval`` seconds, and the end
empties it again, so the notebook records only the "Loaded ..." line that follows. The clock
starts at llama.cpp's first report: a model that loads within one ``interval`` (the demo model,
in a millisecond) shows no bar at all, so a saved notebook's outputs do not depend on the
machine's speed. A download
from the Hub draws huggingface_hub's own bar before this one. In a terminal it prints nothing.
"""

from __future__ import annotations

import html
import time
import uuid
from types import TracebackType

from .render import DEFAULT_INTERVAL, MIN_INTERVAL, publish


class LoadProgress:
    """``with LoadProgress("exaone-demo", notebook=True) as progress: load(on_progress=progress)``."""

    def __init__(self, label: str, *, notebook: bool, interval: float = DEFAULT_INTERVAL) -> None:
        self.label = label
        self.notebook = notebook
        self.interval = max(float(interval), MIN_INTERVAL)
        self.updates = 0
        self.last_fraction = 0.0
        self._display_id = uuid.uuid4().hex
        self._started: float | None = None  # llama.cpp's first report
        self._last_sent = 0.0

    def __enter__(self) -> LoadProgress:
        return self

    def __call__(self, fraction: float) -> None:
        """llama.cpp's progress (0 to 1); draws the bar when ``interval`` has passed."""
        self.last_fraction = fraction
        now = time.perf_counter()
        if self._started is None:
            self._started = self._last_sent = now
        if not self.notebook or now - self._last_sent < self.interval:
            return
        self._last_sent = now
        if not self.updates:  # the output's first state, the one the saved notebook keeps
            publish({"text/plain": ""}, display_id=self._display_id)
        self.updates += 1
        publish(
            progress_data(self.label, fraction, now - self._started),
            display_id=self._display_id,
            update=True,
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.notebook and self.updates:
            publish({"text/plain": ""}, display_id=self._display_id, update=True)


def progress_data(label: str, fraction: float, elapsed_s: float) -> dict[str, str]:
    """The bar as HTML (a frontend draws it) and as text (the same figures, readable anywhere)."""
    percent = f"{fraction * 100:.0f}%"
    text = f"Loading {label}… {percent} ({elapsed_s:.1f} s)"
    bar = (
        f"<span style='display:inline-block;width:200px;height:10px;margin-right:8px;"
        f"vertical-align:middle;background:rgba(127,127,127,0.2);border-radius:5px'>"
        f"<span style='display:block;width:{fraction * 100:.1f}%;height:10px;"
        f"border-radius:5px;background:#1f77b4'></span></span>"
    )
    return {
        "text/plain": text,
        "text/html": f"<div class='exaone-load-progress' data-fraction='{fraction:.3f}' "
        f"style='font-size:0.9em'>{bar}{html.escape(text)}</div>",
    }
