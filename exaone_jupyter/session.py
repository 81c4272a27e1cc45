"""The one loaded model and the current conversation, shared by the magics and the panel.

Everything a UI does goes through here: load a model, ask a question, read the figures. The UI
layers never touch llama_cpp, and this layer never touches IPython.
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .chat.conversation import Conversation
from .chat.exchange import Exchange
from .chat.families import Family
from .chat.template import ChatTemplate, Prompt
from .engine.backend import Backend, BackendInfo, LoadOptions, Request, Sampling
from .engine.offload import GpuInfo
from .engine.reply import Reply
from .errors import ExaoneError
from .model import catalog
from .model.gguf_check import GGUFInfo

MODEL_ENV = "EXAONE_JUPYTER_MODEL"


@dataclass
class Turn:
    """A question ready to send: the prompt, and what the UI should tell the user first."""

    question: str
    messages: list[dict]
    prompt: Prompt | None  # rendered and tokenized once; None for servers (their own template)
    sampling: Sampling
    think: bool
    remember: bool
    notes: list[str] = field(default_factory=list)
    cell: str | None = None  # the notebook cell it came from, and that cell's execution count
    run: int | None = None
    system: str | None = None  # the system prompt it was asked under

    @property
    def template_kwargs(self) -> dict[str, Any]:
        return {"enable_thinking": True} if self.think else {}


@dataclass(frozen=True)
class SessionInfo:
    """What ``%exaone info`` and the panel show: the backend's facts and the session's own."""

    backend: BackendInfo
    spec: str | None
    template_family: str | None  # "exaone3", "exaone4"...; "custom" for a non-EXAONE template
    template_notice: str | None
    system_prompt: str | None
    turns: int


@dataclass(frozen=True)
class _LocalLoad:
    """What it takes to load the current local model again (after a failed switch)."""

    key: tuple  # (spec, file glob, options): the same key again is nothing to do
    spec: str
    gguf: GGUFInfo
    options: LoadOptions
    template: ChatTemplate  # before the model's BOS/EOS texts are bound


class Session:
    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.template: ChatTemplate | None = None
        self.conversation = Conversation()
        self.last_reply: Reply | None = None
        self.model_spec: str | None = None
        self._local: _LocalLoad | None = None
        self._system_set_by_user = False
        self._watchers: list[Callable[[], Callable[[str], None] | None]] = []

    # -- watchers -------------------------------------------------------------------------------
    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback("conversation")`` or ``callback("model")`` after each change, in the
        thread that made it: a panel shows what a ``%%exaone`` cell said. A bound method is held
        weakly, so a panel that is gone is not kept alive by the session."""
        if hasattr(callback, "__self__"):
            self._watchers.append(weakref.WeakMethod(callback))
        else:
            self._watchers.append(lambda: callback)

    def _changed(self, what: str) -> None:
        for ref in list(self._watchers):
            callback = ref()
            if callback is None:
                continue
            try:
                callback(what)
            except Exception as err:  # a view that fails must not undo the change it shows
                warnings.warn(
                    f"exaone_jupyter: a session watcher failed: {err!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._watchers = [ref for ref in self._watchers if ref() is not None]

    # -- models ---------------------------------------------------------------------------------
    @staticmethod
    def default_spec(configured: str | None = None) -> str:
        """The env variable, else the configured model, else the catalog default."""
        return os.environ.get(MODEL_ENV) or configured or catalog.DEFAULT_ALIAS

    @staticmethod
    def gpu_support() -> GpuInfo:
        """What this llama.cpp build can offload to (no GPU when llama_cpp cannot even load:
        the next load says why in one sentence)."""
        try:
            import llama_cpp  # noqa: F401  (before numpy: see load)

            from .engine.gpu import probe_gpu

            return probe_gpu()
        except Exception:
            return GpuInfo(False)

    @staticmethod
    def catalog() -> list[tuple[catalog.CatalogEntry, str]]:
        """Each catalog model with whether it needs a download (``resolve.availability``)."""
        from .model.resolve import availability

        return [(entry, availability(entry)) for entry in catalog.CATALOG.values()]

    @staticmethod
    def peek(spec: str) -> GGUFInfo | None:
        """The GGUF header of ``spec`` when its file is on this machine (a path, or a catalog
        model in the cache), else None: no download, no error."""
        from .model.gguf_check import read_gguf
        from .model.resolve import local_path

        try:
            path = local_path(spec)
            return read_gguf(path) if path is not None else None
        except ExaoneError:
            return None

    def load(
        self,
        spec: str | None = None,
        *,
        file_glob: str | None = None,
        on_progress: Callable[[float], None] | None = None,
        **options: Any,
    ) -> list[str]:
        """Load ``spec`` (same spec and options: nothing to do); returns notices to show.

        ``on_progress(fraction)`` follows llama.cpp's own loading, in this thread. A load that
        fails or is interrupted (Ctrl-C) gives the user back the model loaded before it.
        """
        # llama_cpp before numpy (which gguf imports): on one CUDA image the other order made
        # every model load segfault (benchmarks/gpu/RESULTS.md).
        import llama_cpp  # noqa: F401

        from .engine.local import LocalBackend
        from .model.gguf_check import read_gguf
        from .model.probe import probe
        from .model.resolve import resolve

        spec = spec or self.default_spec()
        load_options = LoadOptions.from_options(**options)
        key = (spec, file_glob, load_options)
        if self._local is not None and self._local.key == key and self.backend is not None:
            return []
        resolved = resolve(spec, file_glob=file_glob)
        gguf = read_gguf(resolved.path)
        LocalBackend.check(gguf, load_options)  # e.g. n_ctx too large: fail before unloading
        probe(gguf.path)  # a file llama.cpp would abort() on ends a child process, not the kernel
        # A template that does not compile fails here, while the old model is still loaded.
        template = ChatTemplate.for_model(
            gguf.chat_template,
            family_hint=resolved.family_hint or _family_of_arch(gguf.architecture),
            model_name=gguf.path.name,
        )
        previous = self._local if self.backend is not None else None
        self.unload()  # free the old weights before the new ones take memory
        try:
            self._attach_local(_LocalLoad(key, spec, gguf, load_options, template), on_progress)
        except BaseException as err:
            restored = self._restore(previous)
            if isinstance(err, KeyboardInterrupt):
                now = (
                    f"{previous.spec} is loaded again"
                    if restored and previous
                    else "no model is loaded"
                )
                raise ExaoneError(
                    f"Loading {spec} was interrupted and {now}; run the load again to retry."
                ) from None
            raise
        notices = list(self.require_backend().info.notices)
        if template.notice:
            notices.append(template.notice)
        if not gguf.is_exaone_arch and template.family is None:
            notices.append(
                f"{gguf.name} is not an EXAONE model (architecture {gguf.architecture}); "
                "it loads, but its template is not one this package knows."
            )
        return notices

    def _attach_local(
        self, load: _LocalLoad, on_progress: Callable[[float], None] | None = None
    ) -> None:
        from .engine.local import LocalBackend

        backend = LocalBackend(load.gguf, load.options, on_progress=on_progress)
        self._attach(
            backend,
            load.template.with_special_tokens(backend.bos_text, backend.eos_text),
            load.spec,
        )
        self._local = load

    def _restore(self, previous: _LocalLoad | None) -> bool:
        """After a failed switch: load the model the user had again (True when it worked)."""
        if previous is None:
            return False
        try:
            self._attach_local(previous)
        except BaseException:  # it went away meanwhile; the user sees the new model's error
            return False
        return True

    def attach(self, backend: Backend, template: ChatTemplate | None, spec: str) -> None:
        """Use an engine made elsewhere (the remote backend); the conversation stays."""
        self.unload()
        self._attach(backend, template, spec)

    def _attach(self, backend: Backend, template: ChatTemplate | None, spec: str) -> None:
        self.backend, self.template, self.model_spec = backend, template, spec
        if not self._system_set_by_user:
            self.conversation.system = template.default_system if template else None
        self._changed("model")

    def unload(self) -> bool:
        """Free the loaded model; the conversation stays. Returns whether one was loaded."""
        if self.backend is None:
            return False
        self.backend.close()
        self.backend, self.template, self._local = None, None, None
        self._changed("model")
        return True

    def connect(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key_env: str | None = None,
        n_ctx: int | None = None,
    ) -> list[str]:
        """Use an OpenAI-compatible server instead of a local model; the conversation stays.

        The server applies its own chat template; the model's name picks the EXAONE family for
        the default system prompt and the reasoning tags. A failed connect changes nothing.
        """
        from .chat.families import FAMILIES
        from .engine.remote import RemoteBackend

        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ExaoneError(
                    f"The environment variable {api_key_env} is not set; set it to "
                    "the server's API key and connect again."
                )
        backend = RemoteBackend(
            url, model=model, api_key=api_key, api_key_env=api_key_env, n_ctx=n_ctx
        )
        family = FAMILIES.get(_family_of_name(backend.model) or "")
        template = ChatTemplate(family.template, family=family) if family else None
        self.attach(backend, template, backend.model)
        notices = list(backend.info.notices)
        if family is None:
            notices.append(
                f"{backend.model} does not look like an EXAONE model by its name; it is "
                "used as the server serves it, with no default system prompt."
            )
        return notices

    def disconnect(self) -> bool:
        """Stop using the server (the conversation stays); False when none was connected."""
        if self.backend is None or self.backend.info.kind != "server":
            return False
        return self.unload()

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise ExaoneError(
                "No model is loaded; run `%exaone load exaone-demo` (offline) or "
                "`%exaone load` for the default EXAONE model."
            )
        return self.backend

    # -- conversation ---------------------------------------------------------------------------
    def set_system(self, text: str | None) -> None:
        self.conversation.system = text or None
        self._system_set_by_user = True
        self._changed("conversation")

    def reset(self) -> None:
        self.conversation.reset()
        self._changed("conversation")

    def resume(self, notebook: str | os.PathLike) -> tuple[Conversation, list[str]]:
        """Rebuild the conversation from the exchanges saved in ``notebook``, in its order of
        cells (the system prompt is the last exchange's). A notebook that cannot be read, or has
        no exchanges, raises before anything changes. Returns notices to show."""
        from .chat.exchange import read_notebook

        exchanges = read_notebook(notebook)
        name = Path(notebook).name
        if not exchanges:
            raise ExaoneError(
                f"{name} holds no %%exaone replies to resume from (run and save some first); "
                "the conversation is unchanged."
            )
        conversation = Conversation(exchanges[-1].system)
        for exchange in exchanges:
            conversation.put(exchange.messages, cell=exchange.cell)
        self.conversation = conversation
        self._system_set_by_user = True
        self._changed("conversation")
        notices = []
        dropped = self._turns_beyond_context()
        if dropped:
            notices.append(
                f"The {dropped} oldest turn{'s' if dropped > 1 else ''} no longer fit the "
                "context; the next prompt leaves them out (the history keeps them)."
            )
        return conversation, notices

    def _turns_beyond_context(self) -> int:
        """How many of the oldest turns the next prompt (with a short question) leaves out."""
        backend, template = self.backend, self.template
        if backend is None or template is None or backend.tokenizer is None:
            return 0
        tokenizer = backend.tokenizer
        limit = backend.n_ctx - min(Sampling().max_tokens, backend.n_ctx // 2)
        try:
            fitted = self.conversation.fit(
                {"role": "user", "content": "?"},
                lambda messages: template.prompt(messages, tokenizer),
                limit,
            )
        except ExaoneError:
            return self.conversation.turns
        return fitted.dropped

    def restore(self, path: str) -> Conversation:
        self.conversation = Conversation.load(path)  # a bad file raises before anything changes
        self._system_set_by_user = True
        self._changed("conversation")
        return self.conversation

    # -- asking ---------------------------------------------------------------------------------
    def prepare(
        self,
        question: str,
        sampling: Sampling,
        *,
        system: str | None = None,
        new: bool = False,
        history: bool = True,
        think: bool = False,
        cell: str | None = None,
        run: int | None = None,
        adapt_max_tokens: bool = False,
    ) -> Turn:
        """Build the prompt for ``question``; nothing is generated or remembered yet.

        ``cell``: the notebook cell asking; a cell that asked before replaces its exchange, and
        sees only the history before it. ``adapt_max_tokens``: when ``sampling.max_tokens`` is a
        default that leaves the prompt less than half the context, the reply gets what is left
        instead of a refusal (with a note); an explicit max_tokens is kept or refused.
        """
        backend = self.require_backend()
        if not question.strip():
            raise ExaoneError("The message is empty; write a question in the cell.")
        if new:
            self.reset()
        if system is not None:
            self.set_system(system)
        notes: list[str] = []
        family = self._family()
        if think and not (family and family.reasoning_tags):
            notes.append("This model has no reasoning mode, so --think changes nothing.")
        variables = {"enable_thinking": True} if think else {}
        system_now = self.conversation.system
        source = self.conversation.before(cell) if history else Conversation(system_now)
        current = {"role": "user", "content": question}
        where: dict[str, Any] = {"cell": cell, "run": run, "system": system_now}

        tokenizer, template = backend.tokenizer, self.template
        if tokenizer is None or template is None:  # a server renders its own prompt
            messages = source.to_messages(current)
            return Turn(question, messages, None, sampling, think, history, notes, **where)

        def measure(messages: list[dict]) -> Prompt:
            return template.prompt(messages, tokenizer, **variables)

        n_ctx, wanted = backend.n_ctx, sampling.max_tokens
        if adapt_max_tokens and wanted > n_ctx // 2:
            # The default reply length would crowd out the prompt: keep half the context for
            # the history when it can, then let the reply have whatever the prompt leaves.
            try:
                fitted = source.fit(current, measure, n_ctx - n_ctx // 2)
            except ExaoneError:
                fitted = source.fit(current, measure, n_ctx - 1)
            room = n_ctx - len(fitted.prompt)
            if room < wanted:
                sampling = replace(sampling, max_tokens=room)
                notes.append(
                    f"The reply may use {room} tokens, what the {n_ctx}-token context leaves after "
                    f"the prompt (max_tokens is {wanted}); set -n to choose."
                )
        else:
            if n_ctx - wanted < 1:
                raise ExaoneError(
                    f"max_tokens={wanted} leaves no room for the prompt in the "
                    f"{n_ctx}-token context; lower --max-tokens."
                )
            fitted = source.fit(current, measure, n_ctx - wanted)
        if fitted.dropped:
            n = fitted.dropped
            notes.append(
                f"The {n} oldest turn{'s' if n > 1 else ''} no longer fit the "
                f"{n_ctx}-token context and {'were' if n > 1 else 'was'} "
                "left out of this prompt (the history keeps them)."
            )
        return Turn(
            question, fitted.messages, fitted.prompt, sampling, think, history, notes, **where
        )

    def send(self, turn: Turn) -> Reply:
        """Start generating; the turn joins the history when the reply ends (partial included)."""
        backend = self.require_backend()
        family = self._family()
        request = Request(
            turn.sampling,
            prompt_ids=turn.prompt.ids if turn.prompt else None,
            messages=turn.messages,
            template_kwargs=turn.template_kwargs,
            reasoning_tags=family.reasoning_tags if family else None,
            opens_reasoning=self._prompt_opens_reasoning(turn),
        )
        reply = backend.stream(request)
        previous, self.last_reply = self.last_reply, reply
        reply.on_finish(lambda r: self._keep_last(previous, r))
        if turn.remember:
            reply.on_finish(lambda r: self._remember(turn, r))
        return reply

    def ask(self, question: str, sampling: Sampling | None = None, **options: Any) -> Reply:
        """``prepare`` + ``send``, for code that does not need the notes (scripts, the API)."""
        return self.send(self.prepare(question, sampling or Sampling(), **options))

    def _family(self) -> Family | None:
        return self.template.family if self.template else None

    def _keep_last(self, previous: Reply | None, reply: Reply) -> None:
        """A reply refused before it said anything (e.g. busy) is not the last reply."""
        if reply.stats.finish_reason == "error" and not reply.text and self.last_reply is reply:
            self.last_reply = previous

    def _remember(self, turn: Turn, reply: Reply) -> None:
        if reply.stats.finish_reason == "error" and not reply.text:
            return  # nothing was said: the conversation stays as it was
        self.conversation.put(self.exchange(turn, reply).messages, cell=turn.cell, run=turn.run)
        self._changed("conversation")

    def exchange(self, turn: Turn, reply: Reply) -> Exchange:
        """The record of one question and its reply, as a notebook output keeps it."""
        flags = (
            {"interrupted": True} if reply.stats.finish_reason in ("interrupted", "error") else {}
        )
        messages: list[dict] = [
            {"role": "user", "content": turn.question},
            {"role": "assistant", "content": self._as_history(reply), **flags},
        ]
        return Exchange(
            cell=turn.cell,
            system=turn.system,
            messages=messages,
            model=self.model_spec,
            sampling=asdict(turn.sampling),
            stats=reply.stats.as_dict(),
        )

    def _as_history(self, reply: Reply) -> str:
        """The reply as the template expects it in the history. Reasoning that the prompt opened
        and the reply never closed (stopped, or out of tokens) gets its closing tag, so that the
        templates strip it like any earlier reasoning instead of replaying it as the answer."""
        family = self._family()
        if reply.thinking_opened and family and family.reasoning_tags:
            closing = family.reasoning_tags[1]
            if closing not in reply.text:
                return reply.text + closing
        return reply.text

    def _prompt_opens_reasoning(self, turn: Turn) -> bool:
        family = self._family()
        if not family or not family.reasoning_tags:
            return False
        return family.name == "exaone-deep" or turn.think

    def split_reasoning(self, reply: Reply) -> tuple[str, str]:
        if self.template is None:
            return "", reply.text
        return self.template.split_reasoning(reply.text, opened=reply.thinking_opened)

    def render_prompt(self, messages: Sequence[dict], **variables: Any) -> tuple[str, list[int]]:
        """The prompt text and token ids the loaded model would be fed for ``messages``.

        ``variables`` reach the template as Hugging Face's ``apply_chat_template`` kwargs do
        (``enable_thinking=True``, ``tools=[...]``, ``add_generation_prompt=False``); a
        ``bos_token`` or ``eos_token`` among them replaces the model's own.
        """
        backend = self.require_backend()
        if self.template is None or backend.tokenizer is None:
            raise ExaoneError(
                "The connected server applies its own template, so there is no local "
                "prompt to show; `--dry-run` lists the messages instead."
            )
        prompt = self.template.prompt(messages, backend.tokenizer, **variables)
        return prompt.text, prompt.ids

    def info(self) -> SessionInfo:
        backend = self.require_backend()
        template = self.template
        family = None
        if template is not None:
            family = template.family.name if template.family else "custom"
        return SessionInfo(
            backend=backend.info,
            spec=self.model_spec,
            template_family=family,
            template_notice=template.notice if template else None,
            system_prompt=self.conversation.system,
            turns=self.conversation.turns,
        )


def _family_of_arch(architecture: str) -> str | None:
    return {"exaone4": "exaone4"}.get(architecture)


def _family_of_name(name: str) -> str | None:
    """The EXAONE family a served model's name suggests ("LGAI-EXAONE/EXAONE-4.0-32B" -> exaone4)."""
    lowered = name.lower()
    if "exaone" not in lowered:
        return None
    if "deep" in lowered:
        return "exaone-deep"
    return "exaone4" if re.search(r"exaone[-_ ]?4", lowered) else "exaone3"


_session: Session | None = None


def get_session() -> Session:
    """The process's one session (one model per kernel)."""
    global _session
    if _session is None:
        _session = Session()
    return _session
