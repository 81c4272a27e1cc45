"""``%exaone`` and ``%%exaone``: thin IPython magics over the shared session.

The magics parse, render and report; loading, prompting and generating happen in the layers
below. Settings are traitlets, so ``%config ExaoneMagics.temperature = 0`` works, and a bad value
is refused when it is set; the sampling and load ones, and their options, are built from
``Sampling`` and ``LoadOptions`` (ui/settings.py). Every subcommand's parser is declared once,
in ``SUBCOMMANDS``: the same parser reads the line, and writes ``%exaone help`` and
``%exaone?``.
"""

from __future__ import annotations

import argparse
import contextlib
import keyword
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float, TraitError, Unicode, observe, validate

from ..chat.exchange import MIME
from ..chat.turn import Turn
from ..engine.backend import Sampling
from ..engine.reply import Reply
from ..errors import ExaoneError
from ..model import catalog
from ..session import get_session
from ..tool_loop import DEFAULT_MAX_ROUNDS, run_with_tools
from ..tools import Tool
from .arguments import (
    SUBCOMMANDS,
    find_subcommand,
    parse_words,
    sampling_arguments,
    split_line,
    subcommand_help,
)
from .next_cell import put_in_next_cell
from .notebook_context import DEFAULT_FRACTION, budget_of, gather
from .printed import PrintedLog
from .progress import LoadProgress
from .render import (
    DEFAULT_INTERVAL,
    MIN_INTERVAL,
    in_notebook,
    publish,
    renderer_for,
    show_markdown,
)
from .reports import (
    cache_rows,
    info_rows,
    short_spec,
    show_dry_run,
    show_history,
    show_loaded,
    show_table,
)
from .settings import CONFIG, LOADING, SAMPLING, config_trait, configured, given
from .tool_cell import CellToolUI, lookup_tools


# -- the magics ------------------------------------------------------------------------------------
@magics_class
class ExaoneMagics(Magics):
    """Chat with EXAONE in this notebook."""

    model = Unicode(
        "",
        help="Model to load when none is: a .gguf path, REPO:FILE or a catalog "
        "alias (EXAONE_JUPYTER_MODEL wins over this).",
    ).tag(config=True)
    # The Sampling and LoadOptions settings that %config has: each trait's type, default and
    # help come from the field that declares the setting (ui/settings.py).
    temperature = config_trait("temperature")
    max_tokens = config_trait("max_tokens")
    top_p = config_trait("top_p")
    top_k = config_trait("top_k")
    repeat_penalty = config_trait("repeat_penalty")
    gpu_layers = config_trait("gpu_layers")
    n_ctx = config_trait("n_ctx")
    kv_type = config_trait("kv_type")
    cache_ram_mb = config_trait("cache_ram_mb")
    cache_disk_mb = config_trait("cache_disk_mb")
    system = Unicode(
        None,
        allow_none=True,
        help="System prompt; None = the model family's default (setting None restores it).",
    ).tag(config=True)
    _constructed = False  # True once the configured values are set (%load_ext, %reload_ext)
    update_interval = Float(
        DEFAULT_INTERVAL,
        help="Seconds between live updates of a streaming "
        f"cell (at least {MIN_INTERVAL}: 20 updates a second).",
    ).tag(config=True)
    show_meter = Bool(True, help="Show the tokens/s meter under each reply.").tag(config=True)
    context_budget = Float(
        DEFAULT_FRACTION,
        help="The fraction of the model's context that each {name} value, the --cells and an "
        "explained exception may take (above 0, at most 1); a value cut to fit says so.",
    ).tag(config=True)
    confirm_tools = Bool(
        True, help="Ask before each tool call runs (--tools); False runs them as --yes does."
    ).tag(config=True)

    # A bad %config value is refused when it is set, in one sentence, not at the next cell.
    @validate(*CONFIG, "update_interval", "context_budget")
    def _valid_setting(self, proposal: dict) -> Any:
        try:
            check_setting(proposal["trait"].name, proposal["value"])
        except ExaoneError as err:
            raise TraitError(
                f"ExaoneMagics.{str(err).rstrip('.')}; the setting is unchanged."
            ) from None
        return proposal["value"]

    @observe("system")
    def _system_changed(self, change) -> None:
        """``%config ExaoneMagics.system = "..."`` applies at once, ``None`` gives the model
        family's default back at once (later loads follow the family again). While the
        extension loads (``%reload_ext``), a prompt chosen since with ``%exaone system`` or
        ``-s`` stays."""
        session = get_session()
        if change["new"] is None:
            session.use_family_system()
        elif self._constructed or not session.system_chosen:
            session.set_system(change["new"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # sets the configured traits (their observers run first)
        self._constructed = True
        self._printed = PrintedLog()  # what each cell prints, for --cells

    # -- %%exaone -------------------------------------------------------------------------------
    @no_var_expand
    @magic_arguments("%exaone")  # the usage line reads "%%exaone", not the method's name
    @argument("-s", "--system", default=None, help="system prompt (kept for later cells)")
    @sampling_arguments  # -t, -n, --top-p, --top-k, --repeat-penalty, --seed (Sampling)
    @argument("--new", action="store_true", help="start a fresh conversation")
    @argument("--no-history", action="store_true", help="a one-off question, not remembered")
    @argument("-o", "--out", default=None, metavar="VAR", help="store the reply text in VAR")
    @argument(
        "--dry-run",
        action="store_true",
        help="show the exact prompt text and its tokens; generate nothing",
    )
    @argument("--think", action="store_true", help="reasoning mode (EXAONE 4.0, Deep)")
    @argument(
        "--cells",
        type=int,
        default=None,
        metavar="N",
        help="add the last N code cells run (code and outputs) before the question",
    )
    @argument("--code", action="store_true", help="put the reply's Python code in a new cell")
    @argument("--tools", default=None, metavar="F,G", help="functions the model may call")
    @argument("--yes", action="store_true", help="run tool calls without asking")
    @argument(
        "--max-tool-rounds",
        type=int,
        default=DEFAULT_MAX_ROUNDS,
        metavar="N",
        help=f"rounds of tool calls before the model must answer (default {DEFAULT_MAX_ROUNDS})",
    )
    @cell_magic("exaone")  # type: ignore[arg-type]  # IPython types the decorator as Never
    def exaone_cell(self, line: str, cell: str) -> None:
        """Ask EXAONE; the reply streams into the cell with a live tokens/s meter.

        The cell text is the question; ``{name}`` inserts a notebook variable, rendered for
        the model by its type within ``%config ExaoneMagics.context_budget`` (a DataFrame as
        shape, dtypes, nulls and sample rows; ``{{name}}`` writes ``{name}``; nothing else is
        touched). ``%%exaone explain`` asks about the last exception (the text below extends
        the question). Each cell continues the same conversation (``--new`` starts over). Stop
        a reply with the kernel's interrupt button: the partial reply is kept.
        """
        cell_id, self._cell_id = self._cell_id, None  # a second call in this cell appends
        recorded: list[bool] = []  # set once this run's output carries its own exchange
        try:
            self._ask(line, cell, cell_id, recorded)
        finally:
            # No new exchange (an error, a dry run, a busy model): the conversation keeps the
            # cell's earlier one, so its output carries it on for the saved notebook to resume.
            kept = None if recorded else get_session().kept_exchange(cell_id)
            if kept is not None:
                publish({"text/plain": "", MIME: kept.to_json()})

    def _ask(self, line: str, cell: str, cell_id: str | None, recorded: list[bool]) -> None:
        """The body of ``%%exaone``; ``recorded`` gets an item when the reply's output carries
        the exchange."""
        # split as the subcommands are (IPython's parse_argstring would keep the quotes)
        words = split_line(line)
        explain = words[:1] == ["explain"]  # %%exaone explain, %exaone explain
        args = parse_words(self.exaone_cell.parser, words[explain:])
        session = get_session()
        renderer = renderer_for(
            self.shell,
            interval=self.update_interval,
            split=session.split_reasoning,
            meter=self.show_meter,
        )
        try:
            if args.out:
                check_variable_name(args.out, "-o answer")
            self._ensure_model(renderer.note)
            sampling = Sampling.from_options(self._sampling(), **given(SAMPLING, args))
            question = gather(
                self.shell,
                cell.strip("\n"),
                budget_of(session, self.context_budget),
                explain=explain,
                cells=args.cells,
                run=self._cell_run,
                printed=self._printed.printed,
            )
            for note in question.notes:
                renderer.note(note)
            tools = lookup_tools(args.tools, self._namespace) if args.tools else []
            if args.max_tool_rounds < 0:
                raise ExaoneError("--max-tool-rounds is a number of rounds, 0 or more.")
            turn = session.prepare(
                question.text,
                sampling,
                system=args.system,
                new=args.new,
                history=not args.no_history,
                think=args.think,
                cell=cell_id,
                run=self._cell_run,
                adapt_max_tokens=args.max_tokens is None,
                tools=tools,
            )
            for note in turn.notes:
                renderer.note(note)
            if args.dry_run:
                show_dry_run(turn)
                return

            def record(reply: Reply) -> dict[str, Any]:
                """The exchange, kept in the saved notebook (not for a one-off question)."""
                recorded.append(True)
                return {MIME: session.exchange(turn, reply).to_json()} if turn.remember else {}

            reply = self._reply(turn, tools, renderer, args, record)
            if reply is None:
                return
            if reply.note:
                renderer.note(reply.note)
            if args.code:
                renderer.note(put_in_next_cell(self.shell, session.split_reasoning(reply)[1]))
            if args.out:
                self._namespace[args.out] = reply.text
        except ExaoneError as err:
            _error(err)

    def _reply(
        self,
        turn: Turn,
        tools: list[Tool],
        renderer: Any,
        args: argparse.Namespace,
        record: Callable[[Reply], dict[str, Any]],
    ) -> Reply | None:
        """Stream the turn's reply; with tools, round by round (tool_loop.py), the exchange
        then published once, after the last round."""
        session = get_session()
        labels = {
            "model": short_spec(session.model_spec or ""),
            "gpu": session.require_backend().info.gpu_label,
        }
        if not tools:
            return renderer.stream(session.send(turn), record=record, **labels)
        return run_with_tools(
            session,
            turn,
            tools,
            CellToolUI(renderer, **labels),
            ask=self.confirm_tools and not args.yes,
            max_rounds=args.max_tool_rounds,
            record=(lambda r: publish({"text/plain": "", **record(r)})) if turn.remember else None,
        )

    # -- %exaone --------------------------------------------------------------------------------
    @no_var_expand
    @line_magic("exaone")  # type: ignore[arg-type]  # (as above)
    def exaone_line(self, line: str) -> None:
        """Manage the model and the conversation: ``%exaone SUBCOMMAND [options]``."""
        name, _, rest = line.strip().partition(" ")
        if name == "explain":  # takes %%exaone's options: the same magic, with no cell text
            self.exaone_cell(line.strip(), "")
            return
        command = find_subcommand(name or "help")
        args = command.parse(rest.strip())
        try:
            getattr(self, f"_cmd_{command.name}")(args)
        except ExaoneError as err:
            _error(err)

    def _cmd_help(self, args: argparse.Namespace) -> None:
        text = subcommand_help(args.subcommand)
        if args.subcommand is None:
            text += "\n\n**%%exaone options** (`%%exaone?` for the full help)\n\n```text\n"
            text += self.exaone_cell.parser.format_usage().removeprefix("usage: ").strip()
            text += "\n```"
        show_markdown(text)

    def _cmd_load(self, args: argparse.Namespace) -> None:
        session = get_session()
        options = {**self._load_options(), **given(LOADING, args)}
        spec = args.spec or session.default_spec(self.model or None)
        for notice in self._load(spec, file_glob=args.file, **options):
            _notice(notice)
        show_loaded(session.info())

    def _cmd_unload(self, args: argparse.Namespace) -> None:
        print("Model unloaded." if get_session().unload() else "No model was loaded.")

    def _cmd_info(self, args: argparse.Namespace) -> None:
        show_table(info_rows(get_session().info()))

    def _cmd_models(self, args: argparse.Namespace) -> None:
        from ..model.resolve import availability

        lines = [
            "| alias | family | size | context | available | source |",
            "|---|---|---|---|---|---|",
        ]
        for entry in catalog.CATALOG.values():
            lines.append(
                f"| `{entry.alias}` | {entry.family} | {entry.size_text} | "
                f"{entry.context_length} | {availability(entry)} | "
                f"{entry.repo or 'bundled'} |"
            )
        show_markdown("\n".join(lines))

    def _cmd_reset(self, args: argparse.Namespace) -> None:
        get_session().reset()
        print("Conversation cleared.")

    def _cmd_history(self, args: argparse.Namespace) -> None:
        conversation = get_session().conversation
        if not conversation.messages and not conversation.system:
            print("The conversation is empty.")
            return
        show_history(conversation)

    def _cmd_resume(self, args: argparse.Namespace) -> None:
        path = args.notebook or self._notebook_path()
        conversation, notices = get_session().resume(path)
        for notice in notices:
            _notice(notice)
        print(f"Resumed {turns(conversation.turns)} from {Path(path).name}.")

    def _notebook_path(self) -> str:
        """The notebook this kernel serves, as the frontend told it (JupyterLab and Notebook 7
        through jupyter_server's JPY_SESSION_NAME, VS Code through __vsc_ipynb_file__)."""
        for candidate in (
            os.environ.get("JPY_SESSION_NAME"),
            self._namespace.get("__vsc_ipynb_file__"),
        ):
            if isinstance(candidate, str) and candidate.endswith(".ipynb"):
                path = Path(candidate).expanduser()
                if not path.is_file() and Path(path.name).is_file():
                    path = Path(path.name)  # a path relative to the server's root, not ours
                return str(path)
        raise ExaoneError(
            "This kernel does not know which notebook it serves (no JPY_SESSION_NAME); name it: "
            "%exaone resume NOTEBOOK.ipynb."
        )

    def _cmd_save(self, args: argparse.Namespace) -> None:
        session = get_session()
        path = session.conversation.save(args.path)
        print(f"Saved {turns(session.conversation.turns)} to {path.name}.")

    def _cmd_restore(self, args: argparse.Namespace) -> None:
        conversation = get_session().restore(args.path)
        print(f"Restored {turns(conversation.turns)}.")

    def _cmd_system(self, args: argparse.Namespace) -> None:
        session = get_session()
        if args.clear:
            session.set_system(None)
            print("System prompt cleared.")
        elif args.text:
            session.set_system(args.text)
            print("System prompt set.")
        else:
            print(session.conversation.system or "(no system prompt)")

    def _cmd_stats(self, args: argparse.Namespace) -> None:
        reply = get_session().last_reply
        if reply is None:
            print("No reply yet.")
            return
        show_table(list(reply.stats.as_dict().items()))

    def _cmd_cache(self, args: argparse.Namespace) -> None:
        backend = get_session().require_backend()
        if args.clear:
            backend.clear_prefix_cache()
            print("Saved prompt states cleared (memory and disk).")
        usage = backend.prefix_cache()
        if usage is None:
            print("This engine saves no prompt states; a server keeps its own prefix cache.")
            return
        show_table(cache_rows(usage))

    def _cmd_panel(self, args: argparse.Namespace) -> None:
        from IPython.display import display

        from .panel import ChatPanel

        display(ChatPanel(sampling=self._sampling(), interval=self.update_interval))

    def _cmd_connect(self, args: argparse.Namespace) -> None:
        session = get_session()
        for notice in session.connect(args.url, model=args.model, api_key_env=args.api_key_env):
            _notice(notice)
        show_loaded(session.info())

    def _cmd_map(self, args: argparse.Namespace) -> None:
        from .map_progress import map_with_progress

        if args.var not in self._namespace:
            raise ExaoneError(
                f"There is no variable {args.var!r} in this notebook; define it first (a list, "
                "Series or DataFrame) or check the name."
            )
        check_variable_name(args.out, "-o rows")
        self._ensure_model(_notice)
        result = map_with_progress(
            get_session(),
            self._namespace[args.var],
            args.prompt,
            shell=self.shell,
            interval=self.update_interval,
            schema=args.schema,
            parallel=args.parallel,
            cache={"memory": True, "disk": "disk", "off": False}[args.cache],
            max_tokens=args.max_tokens,
            temperature=args.temperature,
        )
        self._namespace[args.out] = result

    def _cmd_disconnect(self, args: argparse.Namespace) -> None:
        print("Disconnected." if get_session().disconnect() else "No server was connected.")

    # -- helpers --------------------------------------------------------------------------------
    _cell_id: str | None = None
    _cell_run: int | None = None

    def _note_cell(self, info: Any) -> None:
        """IPython's pre_run_cell event: the frontend's id of the cell about to run (JupyterLab,
        Notebook 7 and VS Code send it; ipykernel 6+ hands it on; None elsewhere), and its
        In [n] (IPython has already counted the cell by then: n is the count less one)."""
        self._cell_id = getattr(info, "cell_id", None) or None
        stored = getattr(info, "store_history", False)
        self._cell_run = self.shell.execution_count - 1 if stored and self.shell else None

    @property
    def _namespace(self) -> dict[str, Any]:
        """The notebook's variables (a registered magic always has its shell)."""
        assert self.shell is not None
        return self.shell.user_ns

    def _sampling(self) -> Sampling:
        return Sampling(**configured(SAMPLING, self))

    def _load_options(self) -> dict[str, Any]:
        return configured(LOADING, self)

    def _ensure_model(self, note: Callable[[str], None]) -> None:
        """Load the default model when none is, saying so first."""
        session = get_session()
        if session.backend is not None:
            return
        spec = session.default_spec(self.model or None)
        note(f"No model was loaded, so loading {spec}.")
        for notice in self._load(spec, **self._load_options()):
            note(notice)

    def _load(self, spec: str, **options: Any) -> list[str]:
        """Load with a progress bar that follows llama.cpp (in a notebook)."""
        with LoadProgress(
            short_spec(spec), notebook=in_notebook(self.shell), interval=self.update_interval
        ) as progress:
            return get_session().load(spec, on_progress=progress, **options)


# The line magic's help (`%exaone?`) is the same text as `%exaone help`.
_line_magic: Any = ExaoneMagics.exaone_line
_line_magic.__doc__ = f"{_line_magic.__doc__}\n\n" + "\n\n".join(
    c.parser.format_help().strip() for c in SUBCOMMANDS.values()
)


def check_setting(name: str, value: object) -> None:
    """Raise the ExaoneError (one sentence) that a bad value of setting ``name`` deserves."""
    if name in CONFIG:
        CONFIG[name].check(value)
    elif name == "update_interval" and not (isinstance(value, (int, float)) and value > 0):
        raise ExaoneError(f"update_interval must be a number of seconds above 0, not {value!r}.")
    elif name == "context_budget" and not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ExaoneError(
            f"context_budget is the fraction of the context a value may take, above 0 and at "
            f"most 1 (e.g. 0.25), not {value!r}."
        )


def turns(n: int) -> str:
    """``1 turn``, ``2 turns``."""
    return f"{n} turn{'' if n == 1 else 's'}"


def check_variable_name(name: str, example: str) -> None:
    """``--out`` names a Python variable: a name the notebook can use afterwards."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ExaoneError(f"--out takes a variable name, not {name!r}; use e.g. {example}.")


def _error(err: Exception) -> None:
    print(f"✗ {err}", file=sys.stderr)


def _notice(text: str) -> None:
    print(f"ℹ {text}")


def register(ipython) -> None:
    # %config keeps a value in the shell's config even when it was refused; left there, it
    # would make the next %load_ext (or %reload_ext) fail. It was refused once: drop it.
    settings = ipython.config.get("ExaoneMagics", {})
    for name in [n for n in list(settings) if n in ExaoneMagics.class_trait_names()]:
        try:
            check_setting(name, settings[name])
        except ExaoneError:
            del settings[name]
    magics = ExaoneMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics._note_cell)
    ipython.events.register("pre_run_cell", magics._printed.before)
    ipython.events.register("post_run_cell", magics._printed.after)


def unregister(ipython) -> None:
    """Undo ``register``: both magics and the configurable disappear."""
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("exaone", None)
    instance = manager.registry.pop("ExaoneMagics", None)
    if instance is not None:
        with contextlib.suppress(ValueError):  # not registered (an older load)
            ipython.events.unregister("pre_run_cell", instance._note_cell)
            ipython.events.unregister("pre_run_cell", instance._printed.before)
            ipython.events.unregister("post_run_cell", instance._printed.after)
        printed = getattr(instance, "_printed", None)  # (an older load has none)
        if printed is not None:
            printed.release()
    if instance is not None and instance in ipython.configurables:
        ipython.configurables.remove(instance)


__all__ = ["SUBCOMMANDS", "ExaoneMagics", "info_rows", "register", "subcommand_help", "unregister"]
