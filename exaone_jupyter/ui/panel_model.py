"""The chat panel's model row: a picker of catalog models (marked as needing a download or not),
GPU layers and context, Load with llama.cpp's own progress, and the loaded model's facts.

``ModelRow`` is a part of ``ChatPanel`` (a mixin) rather than a widget of its own because a load
and a reply share the panel's state: its lock, its busy buttons, its status line. It needs from
the panel: ``session``, ``gpu``, ``interval``, ``last_error``, ``_lock``, ``_generating()``,
``_set_busy()``, ``_set_status()``, ``_sync_system()`` and ``_render_transcript()``.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..engine.backend import DEFAULT_MAX_CTX
from ..engine.offload import GPU_BUILD_HINT, GpuInfo, parse_request
from ..engine.reply import Reply
from ..errors import ExaoneError
from .markup import model_facts_html, status_html

if TYPE_CHECKING:
    from ..session import Session

CONTEXT_CHOICES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
GPU_WORDS = ("auto", "all", "none")


def set_tooltip(widget: widgets.Widget, text: str) -> None:
    """``tooltip`` in ipywidgets 8, ``description_tooltip`` in 7."""
    if widget.has_trait("tooltip"):
        widget.tooltip = text
    elif widget.has_trait("description_tooltip"):
        widget.description_tooltip = text


def one_sentence(err: BaseException) -> str:
    """The first line of an unexpected error, ending as a sentence does."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if text.endswith((".", "?", "!")) else text + "."


class ModelRow:
    """Pick, load and describe the model (see the module's docstring for what it needs)."""

    # What the panel provides (declared for readers and the type checker).
    session: Session
    gpu: GpuInfo
    interval: float
    last_error: BaseException | None
    status: widgets.HTML
    _lock: threading.RLock

    if TYPE_CHECKING:

        def _generating(self) -> bool: ...
        def _set_busy(self, *, loading: bool = False, generating: bool = False) -> None: ...
        def _set_status(self, kind: str, text: str) -> None: ...
        def _sync_system(self, force: bool = False) -> None: ...
        def _render_transcript(self, live: Reply | None = None) -> None: ...

    def _build_model_row(self) -> None:
        self._labels: dict[str, str] = {}
        wide = {"description_width": "initial"}
        self.model = widgets.Combobox(
            description="Model",
            options=self._model_options(),
            ensure_option=False,
            placeholder="catalog alias, path to a .gguf, or REPO:FILE",
            style=wide,
            layout=widgets.Layout(flex="1 1 auto", min_width="260px"),
        )
        self.model.value = self._label_for(self.session.model_spec or self.session.default_spec())
        set_tooltip(
            self.model,
            "A catalog alias (marked cached or not), a path to a .gguf file, "
            "or REPO:FILE on the Hugging Face Hub.",
        )
        self.gpu_layers = widgets.Combobox(
            description="GPU layers",
            value="auto",
            options=list(GPU_WORDS),
            ensure_option=False,
            style=wide,
            layout=widgets.Layout(width="190px"),
        )
        self.gpu_note = widgets.HTML(layout=widgets.Layout(margin="0 0 0 8px"))
        self.n_ctx = widgets.Dropdown(
            description="Context",
            style=wide,
            layout=widgets.Layout(width="210px"),
            options=[(f"default (≤{DEFAULT_MAX_CTX})", 0)]
            + [(f"{n:,} tokens", n) for n in CONTEXT_CHOICES],
            value=0,
        )
        self.load_button = widgets.Button(
            description="Load",
            button_style="primary",
            icon="download",
            layout=widgets.Layout(width="90px"),
        )
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="160px", display="none")
        )
        self.model_info = widgets.HTML()
        self.model.observe(self._on_model_change, names="value")

    def _model_row(self) -> list[widgets.Widget]:
        """The row's widgets, laid out: picker and Load, then the facts line."""
        return [
            widgets.HBox(
                [self.model, self.gpu_layers, self.n_ctx, self.load_button],
                layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
            ),
            widgets.HBox(
                [self.model_info, self.gpu_note],
                layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
            ),
        ]

    def _model_options(self) -> list[str]:
        options = []
        for entry, state in self.session.catalog():
            label = f"{entry.alias} ({state})"
            self._labels[label] = entry.alias
            options.append(label)
        return options

    def _label_for(self, spec: str) -> str:
        for label, alias in self._labels.items():
            if alias == spec:
                return label
        return spec

    def _spec(self) -> str:
        """The model spec in the picker: a label's alias, else the text as typed."""
        text = self.model.value.strip()
        return self._labels.get(text, text)

    def _on_model_change(self, change: dict) -> None:
        gguf = self.session.peek(self._spec())  # the layer count, when the file is here
        self._show_gpu_support(gguf.n_layers if gguf else None)

    def _show_gpu_support(self, n_layers: int | None) -> None:
        if not self.gpu.supports_offload:
            self.gpu_layers.value = "auto"
            self.gpu_layers.disabled = True
            reason = (
                f"This llama-cpp-python build runs on the CPU only; to use a GPU, {GPU_BUILD_HINT}."
            )
            set_tooltip(self.gpu_layers, reason)
            self.gpu_note.value = (
                f"<span title='{html.escape(reason, quote=True)}' "
                "style='font-size:12px;opacity:0.75'>GPU offload unavailable: "
                "CPU-only llama.cpp build</span>"
            )
            return
        self.gpu_layers.disabled = False
        numbers = [str(i) for i in range(1, n_layers)] if n_layers else []
        self.gpu_layers.options = list(GPU_WORDS) + numbers
        where = self.gpu.name or "GPU"
        free = f", {self.gpu.free_bytes / 2**30:.1f} GiB free" if self.gpu.free_bytes else ""
        upto = f"; up to {n_layers} layers" if n_layers else ""
        set_tooltip(
            self.gpu_layers,
            "auto: all layers if they fit, else as many as fit; all; "
            f"none; or a number of layers{upto}.",
        )
        self.gpu_note.value = (
            f"<span style='font-size:12px;opacity:0.75'>{html.escape(where)}{free}{upto}</span>"
        )

    # -- loading -----------------------------------------------------------------------------------
    def _on_load(self, _button: Any = None) -> None:
        if self._generating():
            self._set_status("error", "A reply is still being written; press Stop before loading.")
            return
        spec = self._spec()
        if not spec:
            self._set_status(
                "error", "No model given: pick a catalog alias, or type a .gguf path or REPO:FILE."
            )
            return
        try:
            gpu_layers = parse_request(self.gpu_layers.value or "auto")
        except ExaoneError as err:
            self._set_status("error", str(err))
            return
        self._set_busy(loading=True)
        self._set_status("busy", f"Loading {spec}…")
        self.progress.bar_style = "info"
        self.progress.value = 0.0
        self.progress.layout.display = None
        notices, error = [], None
        started = time.perf_counter()
        try:
            notices = self.session.load(
                spec,
                gpu_layers=gpu_layers,
                n_ctx=self.n_ctx.value or None,
                on_progress=self._load_progress(spec, started),
            )
        except ExaoneError as err:  # an interrupted load says so, and what is loaded now
            error = str(err)
        except KeyboardInterrupt:  # landed outside llama.cpp's loading (e.g. a Hub download)
            error = f"Loading {spec} was interrupted; press Load to try again."
        except Exception as err:  # a bug, not the user's doing: one sentence, traceback kept
            self.last_error = err
            error = f"Could not load {spec}: {one_sentence(err)}"
        self._after_load(spec, notices, error, time.perf_counter() - started)

    def _load_progress(self, spec: str, started: float) -> Callable[[float], None]:
        """llama.cpp's load progress moves the bar (this runs in the Load handler's thread)."""
        shown = [0.0]

        def on_progress(fraction: float) -> None:
            now = time.perf_counter()
            if now - shown[0] < self.interval and fraction < 1.0:
                return
            shown[0] = now
            self.progress.value = fraction
            self._set_status(
                "busy", f"Loading {spec}… {fraction * 100:.0f}% ({now - started:.1f} s)"
            )

        return on_progress

    def _after_load(
        self, spec: str, notices: list[str], error: str | None, elapsed: float | None = None
    ) -> None:
        """Show how a load went; ``elapsed`` None: the panel opened over a model loaded before."""
        with self._lock:
            self.progress.value = 1.0
            self.progress.layout.display = "none"  # the status line says how it went
            self._set_busy(loading=False)
            self._show_model_info()
            if error:  # one sentence; the model line below says what is loaded now
                self._set_status("error", error)
                return
            loaded = f"Loaded {spec} in {elapsed:.2f} s." if elapsed is not None else None
            lines = [status_html("ok", loaded or f"{spec} is loaded.")]
            lines += [status_html("info", n) for n in notices]
            self.status.value = "".join(lines)
            local = self.session.backend.info.local if self.session.backend else None
            self._show_gpu_support(local.gguf.n_layers if local else None)
            self._sync_system(force=True)
            self._render_transcript()

    def _show_model_info(self) -> None:
        backend = self.session.backend
        self.model_info.value = model_facts_html(backend.info if backend else None)
