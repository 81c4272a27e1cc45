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
- Loading runs in the Load click handler, on the kernel's main thread; llama.cpp's own progress
  callback moves the bar. The session has no lock of its own: a cell that ran during a
  background load could find no model and start loading the default one beside it. Blocking
  the kernel for the load keeps one load at a time and lets the kernel's interrupt button cancel
  a slow Hub download or the load itself (the model loaded before comes back); the page itself
  stays responsive.
- The engine's non-blocking lock is the guard between the panel and cells: a ``%%exaone`` cell
  run while the panel writes gets ``ModelBusyError`` (one sentence), and the reply in progress
  is untouched.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, TypeVar

import ipywidgets as widgets

from ..engine.backend import Sampling
from ..engine.offload import GpuInfo
from ..engine.reply import Reply
from ..errors import ExaoneError
from ..session import Session, get_session
from .markup import reply_html, status_html, turn_html
from .meter import live_rate, meter_html
from .panel_model import ModelRow, one_sentence, set_tooltip
from .render import DEFAULT_INTERVAL
from .settings import SETTINGS

SPARK_POINTS = 120  # the sparkline keeps at most this many samples (older ones are merged)
_Field = TypeVar("_Field", bound=widgets.ValueWidget)


class ChatPanel(ModelRow, widgets.VBox):
    """Chat with the loaded EXAONE model: pick and load a model, ask, Stop, watch the meter.

    ``session``: the session to use (default: the kernel's one, shared with ``%%exaone``).
    ``sampling``: the starting temperature and max tokens, and the top-p, top-k and repeat
    penalty every reply uses (``%exaone panel`` passes the ``%config ExaoneMagics`` settings).
    ``interval``: seconds between live updates (at most 10 per second by default).
    ``gpu``: what the llama.cpp build can offload to (default: probed once).
    """

    def __init__(
        self,
        session: Session | None = None,
        *,
        sampling: Sampling | None = None,
        interval: float = DEFAULT_INTERVAL,
        gpu: GpuInfo | None = None,
        **kwargs: Any,
    ) -> None:
        self.session = session or get_session()
        self.sampling = sampling or Sampling()
        self.interval = interval
        self.gpu = gpu if gpu is not None else self.session.gpu_support()
        self.last_error: BaseException | None = None  # the last unexpected exception, for bugs
        self._reply: Reply | None = None
        self._question = ""
        self._rates: list[float] = []
        self._worker: threading.Thread | None = None
        self._active = False  # a reply is being written (set by Send, cleared by the worker's end)
        self._acting = False  # one of the panel's own handlers runs (it refreshes what it changes)
        self._lock = threading.RLock()  # orders the worker's final update against Stop clicks
        self._system_shown: str | None = None
        self._notes: list[str] = []
        self._html_cache: dict[tuple[str, str], str] = {}

        self._build_model_row()
        self._build_conversation_widgets()
        self._mark_widgets()
        self._show_gpu_support(None)
        self.load_button.on_click(self._guard(self._on_load))
        self.send_button.on_click(self._guard(self._on_send))
        self.stop_button.on_click(self._guard(self._on_stop))
        self.reset_button.on_click(self._guard(self._on_reset))
        self.input.on_msg(self._on_input_msg)  # Enter: the "submit" event of ipywidgets 7 and 8
        kwargs.setdefault(
            "layout",
            widgets.Layout(
                width="100%",
                max_width="980px",
                border="1px solid rgba(127,127,127,0.3)",
                padding="6px",
            ),
        )
        super().__init__(children=self._rows(), **kwargs)
        self.add_class("exaone-panel")
        if self.session.backend is not None:
            self._after_load(self.session.model_spec or "", [], None)
        self._render_transcript()
        self.session.watch(self._on_session_change)

    def _build_conversation_widgets(self) -> None:
        """The status and notes lines, the system prompt, the sampling fields, the transcript,
        the meter, the input and its buttons (the model row is ``ModelRow``'s)."""
        full = widgets.Layout(width="100%")
        self.status = widgets.HTML(value=status_html("info", "Pick a model and press Load."))
        # The turn's notes (history left out, no reasoning mode...) and the reply's: a line of
        # their own, which the status line's "Writing…" and "Done" leave alone.
        self.notes = widgets.HTML()
        self.system = widgets.Textarea(
            description="System",
            placeholder="system prompt (empty: none)",
            style={"description_width": "initial"},
            rows=2,
            layout=full,
        )
        # The sampling a reply may change (the rest is self.sampling's): label, starting value
        # and tooltip come from Sampling's fields (ui/settings.py).
        self._sampling_fields: dict[str, widgets.ValueWidget] = {}
        self.temperature = self._sampling_field(
            widgets.FloatSlider,
            "temperature",
            min=0.0,
            max=2.0,
            step=0.05,
            readout_format=".2f",
            layout=widgets.Layout(width="340px"),
        )
        self.max_tokens = self._sampling_field(
            widgets.BoundedIntText,
            "max_tokens",
            min=1,
            max=131072,
            layout=widgets.Layout(width="190px"),
        )
        self.transcript = widgets.HTML(layout=full)
        self.meter = widgets.HTML(value=meter_html(None, []))
        self.input = widgets.Text(
            placeholder="Ask EXAONE… (Enter sends)", layout=widgets.Layout(flex="1 1 auto")
        )
        button = widgets.Layout(width="90px")
        self.send_button = widgets.Button(
            description="Send", button_style="success", icon="paper-plane", layout=button
        )
        self.stop_button = widgets.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True, layout=button
        )
        self.reset_button = widgets.Button(description="Reset", icon="eraser", layout=button)
        set_tooltip(self.reset_button, "Forget the conversation (the system prompt stays).")

    def _mark_widgets(self) -> None:
        """Stable CSS classes: what the browser test and the kernel-level test find widgets by."""
        for name in (
            "model",
            "gpu_layers",
            "gpu_note",
            "n_ctx",
            "load_button",
            "progress",
            "status",
            "notes",
            "model_info",
            "system",
            "temperature",
            "max_tokens",
            "transcript",
            "meter",
            "input",
            "send_button",
            "stop_button",
            "reset_button",
        ):
            getattr(self, name).add_class("exaone-" + name.replace("_button", "").replace("_", "-"))

    def _rows(self) -> list[widgets.Widget]:
        """The panel from top to bottom."""
        model_row, facts_row = self._model_row()
        return [
            model_row,
            widgets.HBox([self.progress, self.status], layout=widgets.Layout(align_items="center")),
            self.notes,
            facts_row,
            self.system,
            widgets.HBox(
                [self.temperature, self.max_tokens], layout=widgets.Layout(flex_flow="row wrap")
            ),
            self.transcript,
            self.meter,
            widgets.HBox(
                [self.input, self.send_button, self.stop_button, self.reset_button],
                layout=widgets.Layout(align_items="center"),
            ),
        ]

    def _sampling_field(self, kind: type[_Field], name: str, **options: Any) -> _Field:
        """A field for the sampling setting ``name``, starting at ``self.sampling``'s value."""
        setting = SETTINGS[name]
        widget = kind(
            description=setting.label,
            value=getattr(self.sampling, name),
            style={"description_width": "initial"},
            **options,
        )
        set_tooltip(widget, setting.sentence)
        self._sampling_fields[name] = widget
        return widget

    # -- asking ------------------------------------------------------------------------------------
    def _on_input_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if content.get("event") == "submit":
            self._guard(self._on_send)()

    def _on_send(self, _button: Any = None) -> None:
        question = self.input.value.strip()
        with self._lock:
            if self._generating():
                self._set_status(
                    "error",
                    "A reply is still being written; press Stop first, or wait for it to end.",
                )
                return
            if self.session.backend is None:
                self._set_status(
                    "error",
                    "No model is loaded; pick one and press Load (exaone-demo works offline).",
                )
                return
            if not question:
                self._set_status("error", "The message is empty; type a question first.")
                return
            try:
                sampling = Sampling.from_options(
                    self.sampling, **{name: w.value for name, w in self._sampling_fields.items()}
                )
                turn = self.session.prepare(question, sampling, system=self._edited_system())
                self._system_shown = self.session.conversation.system or ""
                reply = self.session.send(turn)
            except ExaoneError as err:
                self._set_status("error", str(err))
                return
            self.input.value = ""
            self._reply, self._question, self._rates = reply, question, []
            self._show_notes(turn.notes)
            self._set_status(
                "busy", f"Evaluating the prompt ({reply.stats.prompt_tokens:,} tokens)…"
            )
            self._active = True
            self._set_busy(generating=True)
            self.meter.value = meter_html(
                reply.stats, [], live=True, phase="evaluating the prompt…"
            )
            self._render_transcript()
            self._worker = threading.Thread(
                target=self._write, args=(reply,), name="exaone-panel-reply", daemon=True
            )
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
                        rate = live_rate(reply)
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
            error = f"The reply failed: {one_sentence(err)}"
        finally:
            try:
                self._finish(reply, error)
            except Exception as err:  # never let a worker's exception print into a cell
                self.last_error = err

    def _add_rate(self, rate: float) -> None:
        self._rates.append(rate)
        if len(self._rates) > SPARK_POINTS:  # merge pairs: the whole reply stays in view
            self._rates = [
                sum(self._rates[i : i + 2]) / len(self._rates[i : i + 2])
                for i in range(0, len(self._rates), 2)
            ]

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
            if reply.note:
                self._show_notes([*self._notes, reply.note])
            n = stats.completion_tokens
            if error:
                self._set_status("error", error)
            elif stats.finish_reason == "interrupted":
                self._set_status(
                    "stopped",
                    f"Stopped: the partial reply ({n:,} tokens) is kept, marked as interrupted.",
                )
            elif stats.finish_reason == "length":
                self._set_status("info", f"The reply reached max tokens ({n:,}).")
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
                self._set_status(
                    "error", "A reply is still being written; press Stop before resetting."
                )
                return
            self.session.reset()
            self._reply, self._rates = None, []
            self._show_notes([])
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

    def _set_status(self, kind: str, text: str) -> None:
        self.status.value = status_html(kind, in_panel_terms(text))

    def _show_notes(self, notes: list[str]) -> None:
        self._notes = list(notes)
        self.notes.value = "".join(status_html("info", in_panel_terms(n)) for n in notes)

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
                self._set_status("error", f"Something went wrong: {one_sentence(err)}")
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
                        how = "loaded" if self.session.backend.info.kind == "local" else "connected"
                        self._set_status("ok", f"Now {how}: {spec} (changed in a cell).")
                self._sync_system()
                self._render_transcript()
        except Exception as err:  # never let a refresh break the cell that changed the session
            self.last_error = err

    # -- the transcript ----------------------------------------------------------------------------
    def _render_transcript(self, live: Reply | None = None) -> None:
        conversation = self.session.conversation
        blocks = [
            self._turn_html(
                m["role"], m["content"], interrupted=bool(m.get("interrupted")), where=_where(m)
            )
            for m in conversation.messages
        ]
        if live is not None:
            reasoning, answer = self.session.split_reasoning(live)
            blocks.append(self._turn_html("user", self._question))
            blocks.append(self._turn_html("assistant", answer, reasoning=reasoning, live=True))
        elif self._active and self._reply is not None and not self._reply.done:
            blocks.append(self._turn_html("user", self._question))
            blocks.append(self._turn_html("assistant", "", live=True))
        if not blocks:
            blocks = [
                "<div style='opacity:0.6;font-style:italic;padding:4px'>No messages yet. "
                "Load a model, then ask something.</div>"
            ]
        system = conversation.system
        head = (
            f"<div style='font-size:11px;opacity:0.6;padding:0 4px 4px'>system: "
            f"{html.escape(system)}</div>"
            if system
            else ""
        )
        self.transcript.value = (
            # Long words and URLs wrap; a typesetting frontend leaves all but the math alone.
            "<div class='exaone-transcript-body mathjax_ignore tex2jax_ignore' style='max-height:"
            "360px;overflow-y:auto;overflow-wrap:anywhere;display:flex;flex-direction:"
            "column-reverse;border:1px solid rgba(127,127,127,0.25);border-radius:4px;"
            "padding:6px'><div style='min-width:0'>" + head + "".join(blocks) + "</div></div>"
        )

    def _turn_html(
        self,
        role: str,
        text: str,
        *,
        reasoning: str = "",
        interrupted: bool = False,
        live: bool = False,
        where: str = "",
    ) -> str:
        key = (role, text)
        body = None if live or reasoning else self._html_cache.get(key)
        if body is None:
            if role == "assistant" and not live and self.session.template is not None:
                reasoning, text = self.session.template.split_reasoning(text)
            body = reply_html(text, reasoning)
            if not live and len(self._html_cache) < 2000:
                self._html_cache[key] = body
        return turn_html(role, body, live=live, interrupted=interrupted, where=where)


# The session's sentences name the %%exaone options; the panel has fields for them instead.
PANEL_TERMS = (
    ("lower --max-tokens", "lower Max tokens"),
    ("set -n to choose", "set Max tokens to choose"),
    ("a larger n_ctx", "a larger Context"),
)


def in_panel_terms(text: str) -> str:
    """``text`` with a cell option it names replaced by the panel field that does the same."""
    for option, field in PANEL_TERMS:
        text = text.replace(option, field)
    return text


def _where(message: dict) -> str:
    """Which notebook cell asked a question (its In [n] when known), for the transcript."""
    if message.get("role") != "user" or not message.get("cell"):
        return ""
    return f"cell In [{message['run']}]" if message.get("run") else "a notebook cell"


__all__ = ["ChatPanel"]
