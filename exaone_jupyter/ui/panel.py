"""``ChatPanel``: the conversation of ``%%exaone`` as a widget panel, with Stop and a live meter.

Core ipywidgets only (7.7+ and 8), so it works offline in JupyterLab, Notebook 7, VS Code and
Colab. The panel is a view over the kernel's one session: the same model and the same
conversation as the ``%%exaone`` cells, whose changes it follows (``Session.watch``).

Threads, and why:

- A reply is written by a worker thread. A widget click is a message the kernel handles only
  when no cell runs, so a reply generated in the click handler could never see its Stop click.
  The worker owns the Reply: it pulls the pieces, updates widgets at most every ``interval``
  seconds (never prints: a thread's print lands in whichever cell ran last) and always sends the
  final state. Stop calls ``reply.stop()``, which the engine honours between tokens.
- Loading runs in the Load click handler, on the kernel's main thread, with a ticker thread that
  moves the progress bar and the elapsed time. The session has no lock of its own: a cell that
  ran during a background load could find no model and start loading the default one beside it.
  Blocking the kernel for the load keeps one load at a time and lets the kernel's interrupt
  button cancel a slow Hub download; the page itself stays responsive.
- The engine's non-blocking lock is the guard between the panel and cells: a ``%%exaone`` cell
  run while the panel writes gets ``ModelBusyError`` (one sentence), and the reply in progress
  is untouched.
"""

from __future__ import annotations

import html
import os
import re
import threading
import time
from typing import Any

import ipywidgets as widgets

from ..engine.backend import Sampling
from ..engine.offload import GPU_BUILD_HINT, GpuInfo, parse_request
from ..engine.reply import Reply, Stats
from ..errors import ExaoneError
from ..model import catalog
from ..session import Session, get_session
from .render import meter_text

CONTEXT_CHOICES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
GPU_WORDS = ("auto", "all", "none")
SPARK_POINTS = 120  # the sparkline keeps at most this many samples (older ones are merged)
LOAD_BYTES_PER_S = 800e6  # for the load progress estimate only: ~ a fast disk through mmap


# -- Markdown to safe HTML ------------------------------------------------------------------------
# A model's text is untrusted: it is escaped first, then a few Markdown forms are turned into tags,
# so no HTML the model writes can reach the page. (The ``markdown`` package may be missing, and
# neither it nor mistune's default renderer escapes raw HTML.)
_FENCE = re.compile(r"```[^\n`]*\n(?P<code>.*?)(?:\n```[^\n]*|\Z)", re.S)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_HEADING = re.compile(r"^#{1,6} +(.+)$", re.M)
_CODE_STYLE = "background:rgba(127,127,127,0.15);border-radius:3px;padding:0 3px"
_PRE_STYLE = ("background:rgba(127,127,127,0.12);border-radius:4px;padding:6px 8px;margin:4px 0;"
              "white-space:pre-wrap;font-size:0.92em")


def markdown_html(text: str) -> str:
    """A small, safe Markdown renderer: fenced and inline code, bold, italic, headings, breaks."""
    parts, pos = [], 0
    for match in _FENCE.finditer(text):
        parts.append(_inline_html(text[pos:match.start()]))
        code = html.escape(match.group("code"))
        parts.append(f"<pre style='{_PRE_STYLE}'><code>{code}</code></pre>")
        pos = match.end()
    parts.append(_inline_html(text[pos:]))
    return "".join(parts)


def _inline_html(text: str) -> str:
    out = []
    for i, chunk in enumerate(_CODE_SPAN.split(text)):
        if i % 2:  # inside backticks: literal text
            out.append(f"<code style='{_CODE_STYLE}'>{html.escape(chunk)}</code>")
            continue
        chunk = html.escape(chunk)
        chunk = _HEADING.sub(r"<strong>\1</strong>", chunk)
        chunk = _BOLD.sub(r"<strong>\1</strong>", chunk)
        chunk = _ITALIC.sub(r"<em>\1</em>", chunk)
        out.append(chunk.replace("\n", "<br>"))
    return "".join(out)


# -- the meter ------------------------------------------------------------------------------------
def sparkline_svg(values: list[float], *, width: int = 150, height: int = 30) -> str:
    """An inline SVG line of ``values`` (tokens/s samples), scaled to its own peak."""
    if not values:
        return (f"<svg class='exaone-sparkline' width='{width}' height='{height}' "
                f"viewBox='0 0 {width} {height}'></svg>")
    peak = max(max(values), 1e-9)
    if len(values) == 1:
        values = values * 2
    step = (width - 2) / (len(values) - 1)
    points = " ".join(f"{1 + i * step:.1f},{height - 2 - (v / peak) * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f"<svg class='exaone-sparkline' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' style='vertical-align:middle'>"
            f"<title>tokens/s over the reply, peak {peak:.1f}</title>"
            f"<rect x='0' y='0' width='{width}' height='{height}' rx='3' "
            f"fill='rgba(127,127,127,0.08)'/>"
            f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{points}'/></svg>")


def meter_html(stats: Stats | None, rates: list[float], *, live: bool = False,
               phase: str = "") -> str:
    """The live meter: tokens/s, time to first token, context used, and the tokens/s sparkline."""
    cell = "display:inline-block;margin-right:14px;vertical-align:middle"
    if stats is None:
        return (f"<div class='exaone-meter-body' data-tokens='0' style='font-family:monospace;"
                f"font-size:12px;opacity:0.6'><span style='{cell}'>⚡ no reply yet</span>"
                f"{sparkline_svg([])}</div>")
    rate = stats.decode_tok_s if not live else (rates[-1] if rates else None)
    rate_text = f"{rate:,.1f}" if rate else "…"
    ttft = f"{stats.ttft_s * 1000:,.0f} ms" if stats.ttft_s is not None else "…"
    used, n_ctx = stats.context_used, stats.n_ctx
    share = min(used / n_ctx, 1.0) if n_ctx else 0.0
    bar = (f"<span style='display:inline-block;width:80px;height:8px;margin-left:6px;"
           f"background:rgba(127,127,127,0.2);border-radius:4px;vertical-align:middle'>"
           f"<span style='display:block;width:{share * 100:.1f}%;height:8px;border-radius:4px;"
           f"background:{'#d62728' if share > 0.9 else '#2ca02c'}'></span></span>")
    state = phase or ("writing…" if live else _finish_words(stats.finish_reason))
    plain = html.escape(meter_text(stats, live=live), quote=True)
    return (f"<div class='exaone-meter-body' data-tokens='{stats.completion_tokens}' "
            f"title='{plain}' style='font-family:monospace;font-size:12px;line-height:2'>"
            f"<span style='{cell}'>⚡ <b style='font-size:15px'>{rate_text}</b> tok/s</span>"
            f"<span style='{cell}'>{stats.completion_tokens} tokens</span>"
            f"<span style='{cell}'>first token {ttft}</span>"
            f"<span style='{cell}'>context {used:,}/{n_ctx:,}{bar}</span>"
            f"<span style='{cell}'>{sparkline_svg(rates)}</span>"
            f"<span style='{cell};opacity:0.7'>{html.escape(state)}</span></div>")


def _finish_words(reason: str | None) -> str:
    return {"stop": "done", "length": "stopped at max tokens", "interrupted": "■ interrupted",
            "error": "ended by an error", None: ""}.get(reason, reason or "")


def _live_rate(reply: Reply) -> float | None:
    """Tokens after the first over the time since it came (llama.cpp's figure comes at the end)."""
    stats = reply.stats
    if stats.completion_tokens > 1 and stats.ttft_s is not None:
        since_first = reply.elapsed_s - stats.ttft_s
        if since_first > 0:
            return (stats.completion_tokens - 1) / since_first
    return None


# -- the panel ------------------------------------------------------------------------------------
def _set_tooltip(widget: widgets.Widget, text: str) -> None:
    """``tooltip`` in ipywidgets 8, ``description_tooltip`` in 7."""
    if widget.has_trait("tooltip"):
        widget.tooltip = text
    elif widget.has_trait("description_tooltip"):
        widget.description_tooltip = text


def _probe_gpu() -> GpuInfo:
    try:
        from ..engine.local import probe_gpu
        return probe_gpu()
    except Exception:  # llama_cpp missing or broken: the load will say so in one sentence
        return GpuInfo(False)


def _one_sentence(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if text.endswith((".", "?", "!")) else text + "."


class ChatPanel(widgets.VBox):
    """Chat with the loaded EXAONE model: pick and load a model, ask, Stop, watch the meter.

    ``session``: the session to use (default: the kernel's one, shared with ``%%exaone``).
    ``interval``: seconds between live updates (at most 10 per second by default).
    ``gpu``: what the llama.cpp build can offload to (default: probed once).
    """

    def __init__(self, session: Session | None = None, *, interval: float = 0.1,
                 gpu: GpuInfo | None = None, **kwargs: Any) -> None:
        self.session = session or get_session()
        self.interval = interval
        self.gpu = gpu if gpu is not None else _probe_gpu()
        self.last_error: BaseException | None = None  # the last unexpected exception, for bugs
        self._reply: Reply | None = None
        self._question = ""
        self._rates: list[float] = []
        self._worker: threading.Thread | None = None
        self._active = False  # a reply is being written (set by Send, cleared by the worker's end)
        self._acting = False  # one of the panel's own handlers runs (it refreshes what it changes)
        self._lock = threading.RLock()  # orders the worker's final update against Stop clicks
        self._system_shown: str | None = None
        self._labels: dict[str, str] = {}
        self._html_cache: dict[tuple[str, str], str] = {}

        full = widgets.Layout(width="100%")
        wide = {"description_width": "initial"}
        self.model = widgets.Combobox(
            description="Model", options=self._model_options(), ensure_option=False,
            placeholder="catalog alias, path to a .gguf, or REPO:FILE", style=wide,
            layout=widgets.Layout(flex="1 1 auto", min_width="260px"))
        self.model.value = self._label_for(self.session.model_spec or self.session.default_spec())
        _set_tooltip(self.model, "A catalog alias (marked cached or not), a path to a .gguf file, "
                                 "or REPO:FILE on the Hugging Face Hub.")
        self.gpu_layers = widgets.Combobox(
            description="GPU layers", value="auto", options=list(GPU_WORDS), ensure_option=False,
            style=wide, layout=widgets.Layout(width="190px"))
        self.gpu_note = widgets.HTML(layout=widgets.Layout(margin="0 0 0 8px"))
        self.n_ctx = widgets.Dropdown(
            description="Context", style=wide, layout=widgets.Layout(width="210px"),
            options=[("default (≤4096)", 0)] + [(f"{n:,} tokens", n) for n in CONTEXT_CHOICES],
            value=0)
        self.load_button = widgets.Button(description="Load", button_style="primary",
                                          icon="download", layout=widgets.Layout(width="90px"))
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              layout=widgets.Layout(width="160px", display="none"))
        self.status = widgets.HTML(value=self._status_html("info", "Pick a model and press Load."))
        self.model_info = widgets.HTML()
        self.system = widgets.Textarea(
            description="System", placeholder="system prompt (empty: none)", style=wide,
            rows=2, layout=full)
        self.temperature = widgets.FloatSlider(
            description="Temperature", value=0.7, min=0.0, max=2.0, step=0.05, style=wide,
            readout_format=".2f", layout=widgets.Layout(width="340px"))
        _set_tooltip(self.temperature, "0 is greedy and reproducible.")
        self.max_tokens = widgets.BoundedIntText(
            description="Max tokens", value=512, min=1, max=131072, style=wide,
            layout=widgets.Layout(width="190px"))
        self.transcript = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.meter = widgets.HTML(value=meter_html(None, []))
        self.input = widgets.Text(placeholder="Ask EXAONE… (Enter sends)",
                                  layout=widgets.Layout(flex="1 1 auto"))
        self.send_button = widgets.Button(description="Send", button_style="success",
                                          icon="paper-plane", layout=widgets.Layout(width="90px"))
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          disabled=True, layout=widgets.Layout(width="90px"))
        self.reset_button = widgets.Button(description="Reset", icon="eraser",
                                           layout=widgets.Layout(width="90px"))
        _set_tooltip(self.reset_button, "Forget the conversation (the system prompt stays).")

        # Stable CSS classes: what the browser test and the kernel-level test find widgets by.
        for name in ("model", "gpu_layers", "gpu_note", "n_ctx", "load_button", "progress",
                     "status", "model_info", "system", "temperature", "max_tokens", "transcript",
                     "meter", "input", "send_button", "stop_button", "reset_button"):
            getattr(self, name).add_class("exaone-" + name.replace("_button", "").replace("_", "-"))

        self._show_gpu_support(None)
        self.model.observe(self._on_model_change, names="value")
        self.load_button.on_click(self._guard(self._on_load))
        self.send_button.on_click(self._guard(self._on_send))
        self.stop_button.on_click(self._guard(self._on_stop))
        self.reset_button.on_click(self._guard(self._on_reset))
        self.input.on_msg(self._on_input_msg)  # Enter: the "submit" event of ipywidgets 7 and 8

        rows = [
            widgets.HBox([self.model, self.gpu_layers, self.n_ctx, self.load_button],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            widgets.HBox([self.progress, self.status], layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.model_info, self.gpu_note],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.system,
            widgets.HBox([self.temperature, self.max_tokens],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.transcript,
            self.meter,
            widgets.HBox([self.input, self.send_button, self.stop_button, self.reset_button],
                         layout=widgets.Layout(align_items="center")),
        ]
        kwargs.setdefault("layout", widgets.Layout(width="100%", max_width="980px",
                                                   border="1px solid rgba(127,127,127,0.3)",
                                                   padding="6px"))
        super().__init__(children=rows, **kwargs)
        self.add_class("exaone-panel")
        if self.session.backend is not None:
            self._after_load(self.session.model_spec or "", [], None)
        self._render_transcript()
        self.session.watch(self._on_session_change)

    # -- the model row -----------------------------------------------------------------------------
    def _model_options(self) -> list[str]:
        from ..model.resolve import cached_path

        options = []
        for entry in catalog.CATALOG.values():
            try:
                state = "bundled" if not entry.repo else (
                    "cached" if cached_path(entry) else f"download {entry.size_gb:.2f} GB")
            except Exception:  # a broken cache or a missing demo file: still offer the name
                state = "not cached"
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
        self._show_gpu_support(self._local_layer_count(self._spec()))

    def _local_layer_count(self, spec: str) -> int | None:
        """The layer count from the GGUF header, when the file is already on this machine."""
        try:
            from pathlib import Path

            from ..model.gguf_check import read_gguf
            from ..model.resolve import cached_path
            entry = catalog.lookup(spec)
            path = cached_path(entry) if entry is not None else Path(spec).expanduser()
            if path is None or not path.is_file():
                return None
            return read_gguf(path).n_layers
        except Exception:  # not readable yet: Load will say why in one sentence
            return None

    def _show_gpu_support(self, n_layers: int | None) -> None:
        if not self.gpu.supports_offload:
            self.gpu_layers.value = "auto"
            self.gpu_layers.disabled = True
            reason = ("This llama-cpp-python build runs on the CPU only; to use a GPU, "
                      f"{GPU_BUILD_HINT}.")
            _set_tooltip(self.gpu_layers, reason)
            self.gpu_note.value = (f"<span title='{html.escape(reason, quote=True)}' "
                                   "style='font-size:12px;opacity:0.75'>GPU offload unavailable: "
                                   "CPU-only llama.cpp build</span>")
            return
        self.gpu_layers.disabled = False
        numbers = [str(i) for i in range(1, n_layers)] if n_layers else []
        self.gpu_layers.options = list(GPU_WORDS) + numbers
        where = self.gpu.name or "GPU"
        free = f", {self.gpu.free_bytes / 2**30:.1f} GiB free" if self.gpu.free_bytes else ""
        upto = f"; up to {n_layers} layers" if n_layers else ""
        _set_tooltip(self.gpu_layers, "auto: all layers if they fit, else as many as fit; all; "
                                      f"none; or a number of layers{upto}.")
        self.gpu_note.value = (f"<span style='font-size:12px;opacity:0.75'>{html.escape(where)}"
                               f"{free}{upto}</span>")

    # -- loading -----------------------------------------------------------------------------------
    def _on_load(self, _button: Any = None) -> None:
        if self._generating():
            self._set_status("error", "A reply is still being written; press Stop before loading.")
            return
        spec = self._spec()
        if not spec:
            self._set_status("error", "No model given: pick a catalog alias, or type a .gguf path "
                                      "or REPO:FILE.")
            return
        try:
            gpu_layers = parse_request(self.gpu_layers.value or "auto")
        except ExaoneError as err:
            self._set_status("error", str(err))
            return
        self._set_busy(loading=True)
        self._set_status("busy", f"Loading {spec}…")
        ticker = self._start_ticker(spec)
        notices, error = [], None
        started = time.perf_counter()
        try:
            notices = self.session.load(spec, gpu_layers=gpu_layers, n_ctx=self.n_ctx.value or None)
        except ExaoneError as err:
            error = str(err)
        except KeyboardInterrupt:
            error = f"Loading {spec} was interrupted; press Load to try again."
        except Exception as err:  # a bug, not the user's doing: one sentence, traceback kept
            self.last_error = err
            error = f"Could not load {spec}: {_one_sentence(err)}"
        finally:
            ticker.set()
        self._after_load(spec, notices, error, time.perf_counter() - started)

    def _start_ticker(self, spec: str) -> threading.Event:
        """Move the progress bar and the elapsed time while the main thread loads."""
        done = threading.Event()
        size = None
        try:
            entry = catalog.lookup(spec)
            size = entry.size_gb * 1e9 if entry else os.path.getsize(spec)
        except Exception:
            pass
        expected = 0.5 + (size or 2e9) / LOAD_BYTES_PER_S
        self.progress.bar_style = "info"
        self.progress.value = 0.0
        self.progress.layout.display = None
        started = time.perf_counter()

        def tick() -> None:
            while not done.wait(0.25):
                elapsed = time.perf_counter() - started
                with self._lock:
                    if done.is_set():
                        return
                    self.progress.value = min(0.95, elapsed / expected)
                    self._set_status("busy", f"Loading {spec}… {elapsed:.0f} s")

        threading.Thread(target=tick, name="exaone-panel-load-ticker", daemon=True).start()
        return done

    def _after_load(self, spec: str, notices: list[str], error: str | None,
                    elapsed: float | None = None) -> None:
        with self._lock:
            self.progress.value = 1.0
            self.progress.layout.display = "none"  # the status line says how it went
            self._set_busy(loading=False)
            self._show_model_info()
            if error:  # one sentence; the model line below says what is loaded now
                self._set_status("error", error)
                return
            took = f" in {elapsed:.2f} s" if elapsed is not None else ""
            lines = [self._status_html("ok", f"Loaded {spec}{took}.")]
            lines += [self._status_html("info", n) for n in notices]
            self.status.value = "".join(lines)
            facts = self._facts()
            self._show_gpu_support(facts.get("layers"))
            self._sync_system(force=True)
            self._render_transcript()

    def _facts(self) -> dict:
        try:
            return self.session.info() if self.session.backend is not None else {}
        except Exception:
            return {}

    def _show_model_info(self) -> None:
        facts = self._facts()
        if not facts:
            self.model_info.value = ("<div style='font-size:12px;opacity:0.7'>No model loaded. "
                                     "<code>exaone-demo</code> works offline.</div>")
            return
        parts = [f"<b>{html.escape(str(facts.get('model') or facts.get('spec')))}</b>"]
        if "layers" in facts:
            gpu = f"{facts['gpu_layers']}/{facts['layers']} layers on GPU"
            if not facts.get("gpu_support"):
                gpu += " (CPU-only build)"
            elif facts.get("gpu"):
                gpu += f" ({facts['gpu']})"
            if facts.get("gpu_layers_llama") is not None:
                gpu += f", llama.cpp offloaded {facts['gpu_layers_llama']}"
            parts.append(html.escape(gpu))
        parts.append(html.escape(str(facts.get("backend", ""))))
        if facts.get("context"):
            parts.append(f"context {facts['context']:,} tokens")
        if facts.get("quantization"):
            parts.append(html.escape(str(facts["quantization"])))
        reason = html.escape(str(facts.get("gpu_layers_reason") or ""), quote=True)
        self.model_info.value = (f"<div class='exaone-model-facts' title='{reason}' "
                                 f"style='font-size:12px'>{' · '.join(parts)}</div>")

    # -- asking ------------------------------------------------------------------------------------
    def _on_input_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if content.get("event") == "submit":
            self._guard(self._on_send)()

    def _on_send(self, _button: Any = None) -> None:
        question = self.input.value.strip()
        with self._lock:
            if self._generating():
                self._set_status("error", "A reply is still being written; press Stop first, "
                                          "or wait for it to end.")
                return
            if self.session.backend is None:
                self._set_status("error", "No model is loaded; pick one and press Load "
                                          "(exaone-demo works offline).")
                return
            if not question:
                self._set_status("error", "The message is empty; type a question first.")
                return
            try:
                sampling = Sampling(temperature=float(self.temperature.value),
                                    max_tokens=int(self.max_tokens.value))
                turn = self.session.prepare(question, sampling, system=self._edited_system())
                self._system_shown = self.session.conversation.system or ""
                reply = self.session.send(turn)
            except ExaoneError as err:
                self._set_status("error", str(err))
                return
            self.input.value = ""
            self._reply, self._question, self._rates = reply, question, []
            for note in turn.notes:
                self._set_status("info", note)
            if not turn.notes:
                self._set_status("busy", f"Evaluating the prompt ({reply.stats.prompt_tokens:,} "
                                         "tokens)…")
            self._active = True
            self._set_busy(generating=True)
            self.meter.value = meter_html(reply.stats, [], live=True,
                                          phase="evaluating the prompt…")
            self._render_transcript()
            self._worker = threading.Thread(target=self._write, args=(reply,),
                                            name="exaone-panel-reply", daemon=True)
            self._worker.start()

    def _write(self, reply: Reply) -> None:
        """The worker: pull the reply's pieces, refresh the widgets now and then, then once more."""
        error = None
        last = sample_at = time.perf_counter()
        sample_tokens = 0
        writing = False
        try:
            for _ in reply:
                if not writing:  # the prompt is done: the status line says so at once
                    writing = True
                    with self._lock:
                        if reply is self._reply:
                            self._set_status("busy", "Writing… (Stop ends it between two tokens)")
                now = time.perf_counter()
                if now - last < self.interval:
                    continue
                tokens = reply.stats.completion_tokens
                if tokens > 1 and now > sample_at:
                    if sample_tokens == 0:  # the first sample starts at the first token
                        rate = _live_rate(reply)
                    else:
                        rate = (tokens - sample_tokens) / (now - sample_at)
                    if rate:
                        self._add_rate(rate)
                    sample_at, sample_tokens = now, tokens
                with self._lock:
                    if reply is self._reply:
                        self.meter.value = meter_html(reply.stats, self._rates, live=True)
                        self._render_transcript(live=reply)
                last = now
        except ExaoneError as err:  # busy, prompt too long, decode failure: one sentence
            error = str(err)
        except Exception as err:  # a bug: one sentence here, the traceback in .last_error
            self.last_error = err
            error = f"The reply failed: {_one_sentence(err)}"
        finally:
            try:
                self._finish(reply, error)
            except Exception as err:  # never let a worker's exception print into a cell
                self.last_error = err

    def _add_rate(self, rate: float) -> None:
        self._rates.append(rate)
        if len(self._rates) > SPARK_POINTS:  # merge pairs: the whole reply stays in view
            self._rates = [sum(self._rates[i:i + 2]) / len(self._rates[i:i + 2])
                           for i in range(0, len(self._rates), 2)]

    def _finish(self, reply: Reply, error: str | None) -> None:
        with self._lock:
            stats = reply.stats
            if stats.decode_tok_s and (not self._rates or stats.completion_tokens < 3):
                self._add_rate(stats.decode_tok_s)
            self.meter.value = meter_html(stats, self._rates)
            said = bool(reply.text)
            if error and not said:
                self.input.value = self.input.value or self._question  # give the question back
            self._active = False
            self._render_transcript()
            self._set_busy(generating=False)
            self._show_model_info()
            n = stats.completion_tokens
            if error:
                self._set_status("error", error)
            elif stats.finish_reason == "interrupted":
                self._set_status("stopped", f"Stopped: the partial reply ({n:,} tokens) is kept, "
                                            "marked as interrupted.")
            elif stats.finish_reason == "length":
                self._set_status("info", reply.note or f"The reply reached max tokens ({n:,}).")
            else:
                rate = f" at {stats.decode_tok_s:,.1f} tok/s" if stats.decode_tok_s else ""
                self._set_status("ok", f"Done: {n:,} tokens{rate}.")

    def _on_stop(self, _button: Any = None) -> None:
        with self._lock:
            reply = self._reply
            if reply is None or reply.done or not self._generating():
                self._set_status("info", "Nothing to stop.")
                return
            reply.stop()
            self._set_status("busy", "Stopping after the current token…")

    def _on_reset(self, _button: Any = None) -> None:
        with self._lock:
            if self._generating():
                self._set_status("error", "A reply is still being written; press Stop before "
                                          "resetting.")
                return
            self.session.reset()
            self._reply, self._rates = None, []
            self.meter.value = meter_html(None, [])
            self._render_transcript()
            self._set_status("ok", "Conversation cleared (the system prompt stays).")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reply in progress to end (for scripts); True when none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not (worker is not None and worker.is_alive())

    # -- state -------------------------------------------------------------------------------------
    def _generating(self) -> bool:
        return self._active

    def _set_busy(self, *, loading: bool = False, generating: bool = False) -> None:
        busy = loading or generating
        self.load_button.disabled = busy
        self.send_button.disabled = busy
        self.reset_button.disabled = busy
        self.stop_button.disabled = not generating
        self.model.disabled = busy
        self.n_ctx.disabled = busy

    def _edited_system(self) -> str | None:
        """The system prompt typed into the panel, or None when it still shows the session's."""
        if self._system_shown is None or self.system.value == self._system_shown:
            self._sync_system()
            return None
        return self.system.value

    def _sync_system(self, force: bool = False) -> None:
        current = self.session.conversation.system or ""
        if force or self._system_shown is None or self.system.value == self._system_shown:
            self.system.value = current
            self._system_shown = current

    @staticmethod
    def _status_html(kind: str, text: str) -> str:
        icon, colour = {"ok": ("✓", "#2ca02c"), "error": ("✗", "#d62728"),
                        "busy": ("⋯", "inherit"), "stopped": ("■", "#ff7f0e"),
                        "info": ("ℹ", "inherit")}[kind]
        return (f"<div class='exaone-status-{kind}' style='font-size:13px'>"
                f"<span style='color:{colour}'>{icon}</span> {html.escape(text)}</div>")

    def _set_status(self, kind: str, text: str) -> None:
        self.status.value = self._status_html(kind, text)

    def _guard(self, handler):
        """Run a click handler so that no exception ever reaches the cell as a traceback."""
        def run(*args: Any) -> None:
            self._acting = True
            try:
                handler(*args)
            except ExaoneError as err:
                self._set_status("error", str(err))
            except Exception as err:
                self.last_error = err
                self._set_status("error", f"Something went wrong: {_one_sentence(err)}")
            finally:
                self._acting = False
        return run

    # -- changes made in cells -----------------------------------------------------------------------
    def _on_session_change(self, what: str) -> None:
        """A ``%%exaone`` cell answered, or ``%exaone load/unload/reset/restore/system`` ran: show
        it. The panel's own actions (and its reply, while one is written) refresh it themselves."""
        try:
            with self._lock:
                if self._acting or self._active:
                    return
                if what == "model":
                    self._show_model_info()
                    if self.session.backend is None:
                        self._set_status("info", "No model is loaded (unloaded in a cell).")
                    else:
                        spec = self.session.model_spec or ""
                        self.model.value = self._label_for(spec)
                        how = "loaded" if self.session.backend.renders_template else "connected"
                        self._set_status("ok", f"Now {how}: {spec} (changed in a cell).")
                self._sync_system()
                self._render_transcript()
        except Exception as err:  # never let a refresh break the cell that changed the session
            self.last_error = err

    # -- the transcript ----------------------------------------------------------------------------
    def _render_transcript(self, live: Reply | None = None) -> None:
        conversation = self.session.conversation
        blocks = [self._turn_html(m["role"], m["content"], interrupted=bool(m.get("interrupted")))
                  for m in conversation.messages]
        if live is not None:
            reasoning, answer = self.session.split_reasoning(live)
            blocks.append(self._turn_html("user", self._question))
            blocks.append(self._turn_html("assistant", answer, reasoning=reasoning, live=True))
        elif self._active and self._reply is not None and not self._reply.done:
            blocks.append(self._turn_html("user", self._question))
            blocks.append(self._turn_html("assistant", "", live=True))
        if not blocks:
            blocks = ["<div style='opacity:0.6;font-style:italic;padding:4px'>No messages yet. "
                      "Load a model, then ask something.</div>"]
        system = conversation.system
        head = (f"<div style='font-size:11px;opacity:0.6;padding:0 4px 4px'>system: "
                f"{html.escape(system)}</div>" if system else "")
        self.transcript.value = (
            "<div class='exaone-transcript-body' style='max-height:360px;overflow-y:auto;"
            "display:flex;flex-direction:column-reverse;border:1px solid rgba(127,127,127,0.25);"
            "border-radius:4px;padding:6px'><div>" + head + "".join(blocks) + "</div></div>")

    def _turn_html(self, role: str, text: str, *, reasoning: str = "", interrupted: bool = False,
                   live: bool = False) -> str:
        key = (role, text)
        body = None if live or reasoning else self._html_cache.get(key)
        if body is None:
            if role == "assistant" and not live and self.session.template is not None:
                reasoning, text = self.session.template.split_reasoning(text)
            body = markdown_html(text)
            if reasoning:
                body = (f"<details style='opacity:0.75'><summary>reasoning ({len(reasoning):,} "
                        f"characters)</summary>{markdown_html(reasoning)}</details>" + body)
            if not live and len(self._html_cache) < 2000:
                self._html_cache[key] = body
        if live:
            body += "<span style='opacity:0.6'>▌</span>"
        if interrupted:
            body += "<div style='font-size:11px;color:#ff7f0e'>■ interrupted</div>"
        who, tint = {"user": ("You", "rgba(31,119,180,0.08)"),
                     "assistant": ("EXAONE", "rgba(44,160,44,0.08)")}.get(
            role, (role, "rgba(127,127,127,0.08)"))
        return (f"<div class='exaone-turn exaone-{html.escape(role)}' style='background:{tint};"
                f"border-radius:4px;padding:4px 8px;margin:3px 0'><div style='font-size:11px;"
                f"font-weight:bold;opacity:0.7'>{who}</div><div class='exaone-text'>{body}</div>"
                "</div>")


__all__ = ["ChatPanel", "markdown_html", "meter_html", "sparkline_svg"]
