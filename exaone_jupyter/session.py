"""The one loaded model and the current conversation, shared by the magics and the panel.

Everything a UI does goes through here: load a model, ask a question, read the figures. The UI
layers never touch llama_cpp, and this layer never touches IPython.
"""

from __future__ import annotations

import inspect
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .chat.conversation import Conversation
from .chat.exchange import Exchange
from .chat.families import Family
from .chat.template import ChatTemplate
from .chat.token_memo import TokenMemo
from .chat.turn import Turn, build_turn
from .engine.backend import Backend, BackendInfo, Request, Sampling, Tokenizer
from .engine.reply import Reply
from .errors import ExaoneError
from .model_slot import ModelSlot
from .tools import Tool
from .tools.calls import supports_tools


@dataclass(frozen=True)
class SessionInfo:
    """What ``%exaone info`` and the panel show: the backend's facts and the session's own."""

    backend: BackendInfo
    spec: str | None
    template_family: str | None  # "exaone3", "exaone4"...; "custom" for a non-EXAONE template
    template_notice: str | None
    system_prompt: str | None
    turns: int


class Session:
    """The kernel's model slot and conversation; UIs watch it for changes."""

    def __init__(self) -> None:
        self.conversation = Conversation()
        self.last_reply: Reply | None = None
        self._system_set_by_user = False
        self._records: dict[str, Exchange] = {}  # each cell's exchange, as its output carries it
        self.models = ModelSlot(on_change=self._model_changed)
        self._memo: TokenMemo | None = None  # the backend's tokenizer, remembering past turns
        self._watchers: list[Callable[[], Callable[[str], None] | None]] = []

    # -- watchers -------------------------------------------------------------------------------
    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback("conversation")`` or ``callback("model")`` after each change, in the
        thread that made it: a panel shows what a ``%%exaone`` cell said. A bound method is held
        weakly, so a panel that is gone is not kept alive by the session."""
        if inspect.ismethod(callback):
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

    # -- the model (model_slot.py does the work) --------------------------------------------------
    default_spec = staticmethod(ModelSlot.default_spec)
    gpu_support = staticmethod(ModelSlot.gpu_support)
    catalog = staticmethod(ModelSlot.catalog)
    peek = staticmethod(ModelSlot.peek)

    @property
    def backend(self) -> Backend | None:
        return self.models.backend

    @property
    def template(self) -> ChatTemplate | None:
        return self.models.template

    @property
    def model_spec(self) -> str | None:
        return self.models.spec

    def load(self, spec: str | None = None, **options: Any) -> list[str]:
        """Load a local model (``ModelSlot.load``); the conversation stays."""
        return self.models.load(spec, **options)

    def connect(self, url: str, **options: Any) -> list[str]:
        """Use an OpenAI-compatible server (``ModelSlot.connect``); the conversation stays."""
        return self.models.connect(url, **options)

    def attach(self, backend: Backend, template: ChatTemplate | None, spec: str) -> None:
        self.models.attach(backend, template, spec)

    def unload(self) -> bool:
        return self.models.unload()

    def disconnect(self) -> bool:
        return self.models.disconnect()

    def require_backend(self) -> Backend:
        return self.models.require_backend()

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The backend's tokenizer (None for a server), remembering the ids of past turns."""
        backend = self.backend
        tokenizer = backend.tokenizer if backend is not None else None
        if tokenizer is None:
            return None
        if self._memo is None or self._memo.tokenizer is not tokenizer:
            self._memo = TokenMemo(tokenizer)
        return self._memo

    def _model_changed(self, template: ChatTemplate | None, attached: bool) -> None:
        self._memo = None
        if attached and not self._system_set_by_user:  # a family brings its default prompt
            self.conversation.system = template.default_system if template else None
        self._changed("model")

    # -- conversation ---------------------------------------------------------------------------
    def set_system(self, text: str | None) -> None:
        self.conversation.system = text or None
        self._system_set_by_user = True
        self._changed("conversation")

    def use_family_system(self) -> None:
        """Back to the model family's default prompt, which later loads follow again."""
        self._system_set_by_user = False
        self.conversation.system = self.template.default_system if self.template else None
        self._changed("conversation")

    @property
    def system_chosen(self) -> bool:
        """Whether the system prompt is one a user set (a load keeps it), not the family's."""
        return self._system_set_by_user

    def reset(self) -> None:
        self.conversation.reset()
        self._changed("conversation")

    def resume(self, notebook: str | os.PathLike) -> tuple[Conversation, list[str]]:
        """Rebuild the conversation from the exchanges saved in ``notebook``, in its order of
        cells, from the last one that started afresh (``--new``); the system prompt is the last
        exchange's. A notebook that cannot be read, or has
        no exchanges, raises before anything changes. Returns notices to show."""
        from .chat.exchange import read_notebook

        exchanges = read_notebook(notebook)
        name = Path(notebook).name
        if not exchanges:
            raise ExaoneError(
                f"{name} holds no %%exaone replies to resume from (run and save some first); "
                "the conversation is unchanged."
            )
        starts = [i for i, exchange in enumerate(exchanges) if exchange.new]
        exchanges = exchanges[starts[-1] :] if starts else exchanges  # since the last --new
        conversation = Conversation(exchanges[-1].system)
        for exchange in exchanges:
            conversation.put(exchange.messages, cell=exchange.cell)
            if exchange.cell:
                self._records[exchange.cell] = exchange
        self.conversation = conversation
        self._system_set_by_user = True
        self._changed("conversation")
        notices = []
        dropped = self._turns_beyond_context()
        if dropped == 1:
            notices.append(
                "The oldest turn no longer fits the context; the next prompt leaves it out "
                "(the history keeps it)."
            )
        elif dropped:
            notices.append(
                f"The {dropped} oldest turns no longer fit the context; the next prompt leaves "
                "them out (the history keeps them)."
            )
        return conversation, notices

    def _turns_beyond_context(self) -> int:
        """How many of the oldest turns the next prompt (with a short question) leaves out."""
        backend, template = self.backend, self.template
        tokenizer = self.tokenizer
        if backend is None or template is None or tokenizer is None:
            return 0
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
        tools: Sequence[Tool] = (),
    ) -> Turn:
        """Build the prompt for ``question``; nothing is generated, remembered or changed yet.

        ``cell``: the notebook cell asking; a cell that asked before replaces its exchange, and
        sees only the history before it. ``new`` and ``system`` shape this prompt at once and
        the conversation only when the reply has said something, so a refused question, a dry
        run or a busy model leave it as it was. ``adapt_max_tokens``: when
        ``sampling.max_tokens`` is a default that leaves the prompt less than half the context,
        the reply gets what is left instead of a refusal (with a note); an explicit max_tokens
        is kept or refused. ``tools``: the functions the model may call (tool_loop.py runs them).
        """
        backend = self.require_backend()
        if tools and self.template is not None and not supports_tools(self.template):
            raise ExaoneError(
                "This model's chat template has no tool calls (EXAONE 3.x and EXAONE Deep have "
                "none); load an EXAONE 4.0 model to use --tools."
            )
        if not question.strip():
            raise ExaoneError("The message is empty; write a question in the cell.")
        notes: list[str] = []
        family = self._family()
        if think and not (family and family.reasoning_tags):
            notes.append("This model has no reasoning mode, so --think changes nothing.")
        asked_under = self.conversation.system if system is None else (system or None)
        if new or not history:
            source = Conversation(asked_under)
        else:
            source = self.conversation.before(cell)
            source.system = asked_under
        turn = build_turn(
            source,
            question,
            sampling,
            tokenizer=self.tokenizer,
            template=self.template,
            n_ctx=backend.n_ctx,
            think=think,
            remember=history,
            cell=cell,
            run=run,
            adapt_max_tokens=adapt_max_tokens,
            notes=notes,
            tools=[tool.spec() for tool in tools] or None,
        )
        turn.new, turn.sets_system = new, system is not None
        return turn

    def send(self, turn: Turn, *, settle: bool = True) -> Reply:
        """Start generating; the turn joins the history when the reply ends (partial included).
        ``settle=False``: the caller settles it (``settle``) once its tool rounds are over."""
        backend = self.require_backend()
        family = self._family()
        request = Request(
            turn.sampling,
            prompt_ids=turn.prompt.ids if turn.prompt else None,
            messages=turn.messages,
            template_kwargs=turn.template_kwargs,
            reasoning_tags=family.reasoning_tags if family else None,
            opens_reasoning=self._prompt_opens_reasoning(turn),
            tools=turn.tools,
        )
        reply = backend.stream(request)
        previous, self.last_reply = self.last_reply, reply
        reply.on_finish(lambda r: self._keep_last(previous, r))
        if settle:
            reply.on_finish(lambda r: self.settle(turn, r))
        return reply

    def one_off(
        self, messages: list[dict], sampling: Sampling, *, response_format: dict | None = None
    ) -> Request:
        """The request for a question outside the conversation (a map's row): the engine gets
        the token ids of the template's prompt where it is fed ids, the messages where a server
        renders them itself. Rows are tokenized afresh: each is seen once, so remembering them
        would only push the conversation's turns out of the memo."""
        backend = self.require_backend()
        ids = None
        if backend.tokenizer is not None and self.template is not None:
            ids = self.template.prompt(messages, backend.tokenizer).ids
        return Request(sampling, prompt_ids=ids, messages=messages, response_format=response_format)

    def ask(self, question: str, sampling: Sampling | None = None, **options: Any) -> Reply:
        """``prepare`` + ``send``, for code that does not need the notes (scripts, the API)."""
        return self.send(self.prepare(question, sampling or Sampling(), **options))

    def _family(self) -> Family | None:
        return self.template.family if self.template else None

    def _keep_last(self, previous: Reply | None, reply: Reply) -> None:
        """A reply refused before it said anything (e.g. busy) is not the last reply."""
        if reply.stats.finish_reason == "error" and not reply.text and self.last_reply is reply:
            self.last_reply = previous

    def settle(self, turn: Turn, reply: Reply) -> None:
        """The turn changes the conversation once its reply has said something: a fresh start
        (--new, from the cell's earlier exchange on), the system prompt (-s), then its exchange,
        which replaces the cell's earlier one; a one-off question from that cell (--no-history)
        removes it, as the saved notebook, which keeps no one-off exchange, will after a
        resume."""
        if reply.stats.finish_reason == "error" and not reply.text:
            return  # nothing was said: the conversation stays as it was
        if turn.new:
            self.conversation.start_at(turn.cell)
        if turn.sets_system:
            self.conversation.system = turn.system
            self._system_set_by_user = True
        if turn.remember:
            exchange = self.exchange(turn, reply)
            self.conversation.put(exchange.messages, cell=turn.cell, run=turn.run)
            if turn.cell:
                self._records[turn.cell] = exchange
        elif turn.cell:
            self.conversation.forget(turn.cell)
        self._changed("conversation")

    def kept_exchange(self, cell: str | None) -> Exchange | None:
        """The exchange the conversation keeps for ``cell``, as the cell's output last carried
        it (None when it keeps none). A run of the cell that gives no reply (an error, a dry run)
        shows it again: the saved notebook must still hold what the conversation holds."""
        record = self._records.get(cell) if cell else None
        if record is None or self.conversation.messages_of(record.cell or "") != record.messages:
            return None  # a reset, restore, resume or --new has left it
        return record

    def exchange(self, turn: Turn, reply: Reply) -> Exchange:
        """The record of one question and its reply, as a notebook output keeps it."""
        flags = (
            {"interrupted": True} if reply.stats.finish_reason in ("interrupted", "error") else {}
        )
        messages: list[dict] = [{"role": "user", "content": turn.question}, *turn.steps]
        if not turn.ends_in_steps:
            messages.append({"role": "assistant", "content": self._as_history(reply), **flags})
        return Exchange(
            cell=turn.cell,
            system=turn.system,
            messages=messages,
            model=self.model_spec,
            sampling=asdict(turn.sampling),
            stats=reply.stats.as_dict(),
            new=turn.new,
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
        self.require_backend()
        tokenizer = self.tokenizer
        if self.template is None or tokenizer is None:
            raise ExaoneError(
                "The connected server applies its own template, so there is no local "
                "prompt to show; `--dry-run` lists the messages instead."
            )
        prompt = self.template.prompt(messages, tokenizer, **variables)
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


_session: Session | None = None


def get_session() -> Session:
    """The process's one session (one model per kernel)."""
    global _session
    if _session is None:
        _session = Session()
    return _session
