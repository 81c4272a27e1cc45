"""``%exaone`` and ``%%exaone``: thin IPython magics over the shared session.

The magics parse, render and report; loading, prompting and generating happen in the layers
below. Settings are traitlets, so ``%config ExaoneMagics.temperature = 0`` works.
"""

from __future__ import annotations

import html
import json
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import (MagicArgumentParser, argument, magic_arguments,
                                          parse_argstring)
from traitlets import Bool, Float, Int, Unicode, observe

from ..engine.backend import Sampling
from ..errors import ExaoneError
from ..model import catalog
from ..session import get_session
from .interpolate import interpolate
from .render import renderer_for, show_markdown


def _subcommand_parser(name: str, help_text: str) -> MagicArgumentParser:
    return MagicArgumentParser(prog=f"%exaone {name}", description=help_text, add_help=False)


@magics_class
class ExaoneMagics(Magics):
    """Chat with EXAONE in this notebook."""

    model = Unicode("", help="Model to load when none is: a .gguf path, REPO:FILE or a catalog "
                    "alias (EXAONE_JUPYTER_MODEL wins over this).").tag(config=True)
    gpu_layers = Unicode("auto", help="auto, all, none or a number of layers.").tag(config=True)
    n_ctx = Int(0, help="Context size in tokens; 0 = the smaller of the model's and 4096.").tag(config=True)
    max_tokens = Int(512, help="Most tokens a reply may have.").tag(config=True)
    temperature = Float(0.7, help="0 is greedy and reproducible.").tag(config=True)
    top_p = Float(0.95).tag(config=True)
    top_k = Int(40).tag(config=True)
    repeat_penalty = Float(1.0, help="LG advises no penalty above 1.0 for EXAONE.").tag(config=True)
    system = Unicode(None, allow_none=True,
                     help="System prompt; None = the model family's default.").tag(config=True)
    update_interval = Float(0.1, help="Seconds between live updates of a streaming cell "
                            "(at least 0.05: 20 updates a second).").tag(config=True)
    show_meter = Bool(True, help="Show the tokens/s meter under each reply.").tag(config=True)

    @observe("system")
    def _system_changed(self, change) -> None:
        if change["new"] is not None:  # %config ExaoneMagics.system = "..." applies at once
            get_session().set_system(change["new"])

    # -- %%exaone -------------------------------------------------------------------------------
    @no_var_expand
    @magic_arguments("%exaone")  # the usage line reads "%%exaone", not the method's name
    @argument("-s", "--system", default=None, help="system prompt (kept for later cells)")
    @argument("-t", "--temperature", type=float, default=None, help="0 = greedy, reproducible")
    @argument("-n", "--max-tokens", type=int, default=None, help="most tokens in the reply")
    @argument("--top-p", type=float, default=None)
    @argument("--top-k", type=int, default=None)
    @argument("--repeat-penalty", type=float, default=None)
    @argument("--seed", type=int, default=None, help="fixed seed for sampling")
    @argument("--new", action="store_true", help="start a fresh conversation")
    @argument("--no-history", action="store_true", help="a one-off question, not remembered")
    @argument("-o", "--out", default=None, metavar="VAR", help="store the reply text in VAR")
    @argument("--dry-run", action="store_true",
              help="show the exact prompt text and its tokens; generate nothing")
    @argument("--think", action="store_true", help="reasoning mode (EXAONE 4.0, Deep)")
    @cell_magic("exaone")
    def exaone_cell(self, line: str, cell: str) -> None:
        """Ask EXAONE; the reply streams into the cell with a live tokens/s meter.

        The cell text is the question; ``{name}`` inserts a notebook variable (``{{name}}``
        writes ``{name}``; nothing else is touched). Each cell continues the same conversation
        (``--new`` starts over). Stop a reply with the kernel's interrupt button: the partial
        reply is kept.
        """
        args = _parse(lambda: parse_argstring(self.exaone_cell, line),
                      self.exaone_cell.parser)
        session = get_session()
        renderer = self._renderer()
        try:
            self._ensure_model(renderer)
            sampling = Sampling.from_options(
                self._sampling(), temperature=args.temperature, max_tokens=args.max_tokens,
                top_p=args.top_p, top_k=args.top_k, repeat_penalty=args.repeat_penalty,
                seed=args.seed)
            question = interpolate(cell.strip("\n"), self.shell.user_ns)
            turn = session.prepare(question, sampling, system=args.system, new=args.new,
                                   history=not args.no_history, think=args.think)
            for note in turn.notes:
                renderer.note(note)
            if args.dry_run:
                self._show_dry_run(turn)
                return
            reply = session.send(turn)
            renderer = self._renderer()  # picks up the model and GPU figures after a load
            renderer.stream(reply)
            if reply.note:
                renderer.note(reply.note)
            if args.out:
                self.shell.user_ns[args.out] = reply.text
        except ExaoneError as err:
            _error(err)

    # -- %exaone --------------------------------------------------------------------------------
    @no_var_expand
    @line_magic("exaone")
    def exaone_line(self, line: str) -> None:
        """Manage the model and the conversation: ``%exaone SUBCOMMAND [options]``.

        Subcommands: load, unload, info, models, reset, history, save, restore, system, stats,
        panel, connect, disconnect, help. ``%exaone help`` lists them with their options.
        """
        name, _, rest = line.strip().partition(" ")
        name = name or "help"
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            raise UsageError(f"Unknown subcommand {name!r}; use one of: {', '.join(self._commands())}.")
        try:
            handler(rest.strip())
        except ExaoneError as err:
            _error(err)

    def _commands(self) -> list[str]:
        return sorted(a[5:] for a in dir(self) if a.startswith("_cmd_"))

    def _cmd_help(self, rest: str) -> None:
        """List the subcommands and the cell options."""
        lines = ["**%exaone subcommands**", ""]
        for name in self._commands():
            doc = (getattr(self, f"_cmd_{name}").__doc__ or "").strip().splitlines()[0]
            lines.append(f"- `%exaone {name}`: {doc}")
        lines += ["", "**%%exaone options**", "", "```", self.exaone_cell.__doc__.strip(), "```"]
        show_markdown(("\n".join(lines)))

    def _cmd_load(self, rest: str) -> None:
        """Load a model: a .gguf path, REPO:FILE on the Hub, or an alias from `%exaone models`."""
        parser = _subcommand_parser("load", self._cmd_load.__doc__)
        parser.add_argument("spec", nargs="?", default=None)
        parser.add_argument("--file", default=None, help="glob for REPO's GGUF file")
        parser.add_argument("--gpu-layers", default=None)
        parser.add_argument("--n-ctx", type=int, default=None)
        parser.add_argument("--n-threads", type=int, default=None)
        parser.add_argument("--flash-attn", action="store_true", default=None)
        args = _parse(lambda: parser.parse_args(_split(rest)), parser)
        session = get_session()
        options = self._load_options()
        options.update({k: v for k, v in (("gpu_layers", args.gpu_layers), ("n_ctx", args.n_ctx),
                                          ("n_threads", args.n_threads),
                                          ("flash_attn", args.flash_attn)) if v is not None})
        spec = args.spec or session.default_spec(self.model or None)
        for notice in session.load(spec, file_glob=args.file, **options):
            _notice(notice)
        if self.system is not None:  # the configured system prompt wins over the model's default
            session.set_system(self.system)
        self._show_loaded()

    def _cmd_unload(self, rest: str) -> None:
        """Free the model's memory; the conversation stays."""
        print("Model unloaded." if get_session().unload() else "No model was loaded.")

    def _cmd_info(self, rest: str) -> None:
        """The loaded model: size, quantization, context, layers on the GPU and why."""
        facts = get_session().info()
        rows = [("model", facts.get("model")), ("spec", facts.get("spec")),
                ("backend", facts.get("backend"))]
        if "architecture" in facts:
            rows += [
                ("file", _short_path(facts["path"])),
                ("architecture", facts["architecture"]),
                ("parameters", f"{facts['parameters'] / 1e6:,.1f} M"),
                ("quantization", facts["quantization"]),
                ("file size", f"{facts['file_size'] / 2**20:,.1f} MiB"),
                ("context", f"{facts['context']} tokens (trained for {facts['trained_context']})"),
                ("GPU layers", f"{facts['gpu_layers']} of {facts['layers']}: "
                               f"{facts['gpu_layers_reason']}"),
                ("llama.cpp's count", "not reported (CPU-only build)"
                 if facts["gpu_layers_llama"] is None else
                 f"{facts['gpu_layers_llama']}/{facts['layers'] + 1} offloaded (it counts the output "
                 "layer as one; it goes to the GPU with any block)"),
                ("GPU support", "yes" + (f" ({facts['gpu']})" if facts.get("gpu") else "")
                 if facts["gpu_support"] else "no: this build runs on the CPU only"),
            ]
        rows += [("template", facts.get("template")), ("system prompt", facts.get("system_prompt")),
                 ("turns", facts.get("turns"))]
        if facts.get("template_notice"):
            rows.append(("note", facts["template_notice"]))
        if catalog.lookup(str(facts.get("spec") or "")) is catalog.CATALOG[catalog.DEMO_ALIAS]:
            rows.append(("what it is", catalog.CATALOG[catalog.DEMO_ALIAS].description))
        _table(rows)

    def _cmd_models(self, rest: str) -> None:
        """The catalog of known EXAONE GGUFs, and which are in the local cache."""
        from ..model.resolve import cached_path
        lines = ["| alias | family | size | context | cached | source |", "|---|---|---|---|---|---|"]
        for entry in catalog.CATALOG.values():
            try:
                cached = "yes" if cached_path(entry) else "no"
            except ExaoneError:
                cached = "missing"
            size = f"{entry.size_gb:.2f} GB" if entry.size_gb >= 0.01 else f"{entry.size_gb * 1000:.1f} MB"
            lines.append(f"| `{entry.alias}` | {entry.family} | {size} | {entry.context_length} | "
                         f"{cached} | {entry.repo or 'bundled'} |")
        show_markdown(("\n".join(lines)))

    def _cmd_reset(self, rest: str) -> None:
        """Forget the conversation (the system prompt stays)."""
        get_session().reset()
        print("Conversation cleared.")

    def _cmd_history(self, rest: str) -> None:
        """Show the conversation so far."""
        conversation = get_session().conversation
        if not conversation.messages and not conversation.system:
            print("The conversation is empty.")
            return
        parts = [f"**system**: {conversation.system}"] if conversation.system else []
        for m in conversation.messages:
            mark = " *(interrupted)*" if m.get("interrupted") else ""
            parts.append(f"**{m['role']}**{mark}: {m['content']}")
        show_markdown(("\n\n".join(parts)))

    def _cmd_save(self, rest: str) -> None:
        """Save the conversation as JSON: `%exaone save PATH`."""
        if not rest:
            raise UsageError("Give a file name: %exaone save PATH")
        path = get_session().conversation.save(rest)
        print(f"Saved {get_session().conversation.turns} turns to {path.name}.")

    def _cmd_restore(self, rest: str) -> None:
        """Restore a conversation saved with `%exaone save`: `%exaone restore PATH`."""
        if not rest:
            raise UsageError("Give a file name: %exaone restore PATH")
        conversation = get_session().restore(rest)
        print(f"Restored {conversation.turns} turns.")

    def _cmd_system(self, rest: str) -> None:
        """Show, set (`%exaone system TEXT`) or clear (`%exaone system --clear`) the system prompt."""
        session = get_session()
        if rest == "--clear":
            session.set_system(None)
            print("System prompt cleared.")
        elif rest:
            session.set_system(rest)
            print("System prompt set.")
        else:
            print(session.conversation.system or "(no system prompt)")

    def _cmd_stats(self, rest: str) -> None:
        """The last reply's figures: tokens, rates, time to first token, finish reason."""
        reply = get_session().last_reply
        if reply is None:
            print("No reply yet.")
            return
        _table([(k, v) for k, v in reply.stats.as_dict().items()])

    def _cmd_panel(self, rest: str) -> None:
        """Open the chat panel: model picker, GPU layers, Send, Stop and a live meter."""
        from IPython.display import display

        from .panel import ChatPanel
        display(ChatPanel())

    def _cmd_connect(self, rest: str) -> None:
        """Use an OpenAI-compatible server (vLLM, llama-server): `%exaone connect URL [--model NAME]`."""
        parser = _subcommand_parser("connect", self._cmd_connect.__doc__)
        parser.add_argument("url")
        parser.add_argument("--model", default=None, help="the server's model name")
        parser.add_argument("--api-key-env", default=None, metavar="VAR",
                            help="environment variable holding the API key")
        args = _parse(lambda: parser.parse_args(_split(rest)), parser)
        for notice in get_session().connect(args.url, model=args.model,
                                            api_key_env=args.api_key_env):
            _notice(notice)
        self._show_loaded()

    def _cmd_disconnect(self, rest: str) -> None:
        """Stop using the server; the conversation stays (load a local model to go on)."""
        print("Disconnected." if get_session().disconnect() else "No server was connected.")

    # -- helpers --------------------------------------------------------------------------------
    def _sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens, top_p=self.top_p,
                        top_k=self.top_k, repeat_penalty=self.repeat_penalty)

    def _load_options(self) -> dict[str, Any]:
        return {"gpu_layers": self.gpu_layers, "n_ctx": self.n_ctx or None}

    def _ensure_model(self, renderer) -> None:
        session = get_session()
        if session.backend is not None:
            return
        spec = session.default_spec(self.model or None)
        renderer.note(f"No model was loaded, so loading {spec}.")
        for notice in session.load(spec, **self._load_options()):
            renderer.note(notice)
        if self.system is not None:
            session.set_system(self.system)

    def _renderer(self):
        session = get_session()
        model = gpu = ""
        if session.backend is not None:
            facts = session.backend.describe()
            model = _short_spec(session.model_spec or "")
            if "gpu_layers" in facts:
                gpu = f"GPU {facts['gpu_layers']}/{facts['layers']} layers"
        return renderer_for(self.shell, interval=self.update_interval, model=model, gpu=gpu,
                            split=session.split_reasoning, meter=self.show_meter)

    def _show_loaded(self) -> None:
        facts = get_session().info()
        where = (f"{facts['gpu_layers']}/{facts['layers']} layers on GPU"
                 if "gpu_layers" in facts else facts.get("backend", ""))
        context = facts.get("context") or "unknown"
        verb = "Loaded" if "gpu_layers" in facts else "Connected to"
        print(f"{verb} {facts.get('model')} ({where}, context {context}).")

    def _show_dry_run(self, turn) -> None:
        if turn.prompt is None:
            show_markdown(("The server applies its own chat template; these messages would be "
                             "sent:\n\n```json\n"
                             + json.dumps(turn.messages, ensure_ascii=False, indent=1) + "\n```"))
            return
        ids = turn.prompt.ids
        shown = ", ".join(map(str, ids[:16])) + (", …, " + ", ".join(map(str, ids[-8:]))
                                                  if len(ids) > 24 else
                                                  ", ".join([""] + list(map(str, ids[16:]))))
        show_markdown((f"**Prompt: {len(ids)} tokens** (nothing generated)\n\n"
                         f"```text\n{turn.prompt.text}\n```\n\nids: `[{shown}]`"))


def _short_spec(spec: str) -> str:
    """What the meter calls the model: the alias or REPO:FILE as typed, a path by its file name."""
    if spec.lower().endswith(".gguf") and ("/" in spec or "\\" in spec) and ":" not in spec[2:]:
        return spec.replace("\\", "/").rsplit("/", 1)[-1]
    return spec


def _parse(parse, parser):
    """Parse, and when an option is misspelled, say which one was probably meant."""
    import difflib
    import re

    try:
        return parse()
    except UsageError as err:
        known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
        words = re.findall(r"(--?[\w-]+)", str(err).partition("unrecognized arguments:")[2])
        for word in words:
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.8)
            if close:
                where = "%exaone help" if " " in parser.prog else "%%exaone?"
                raise UsageError(f"Unknown option {word}; did you mean {close[0]}? "
                                 f"(`{where}` lists the options.)") from None
        raise


def _split(text: str) -> list[str]:
    import shlex
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UsageError(f"Cannot parse {text!r}: {err}.") from None


def _short_path(path: str) -> str:
    """The bundled model by name, others with the home folder as ~ (saved notebooks travel)."""
    from pathlib import Path
    p = Path(path)
    if p == catalog.demo_model_path():
        return f"{p.name} (bundled with exaone-jupyter)"
    try:
        return "~/" + str(p.relative_to(Path.home()))
    except ValueError:
        return str(p)


def _error(err: Exception) -> None:
    print(f"✗ {err}", file=sys.stderr)


def _notice(text: str) -> None:
    print(f"ℹ {text}")


def _table(rows) -> None:
    lines = ["| | |", "|---|---|"]
    for key, value in rows:
        text = "" if value is None else str(value)
        lines.append(f"| {key} | {html.escape(text).replace('|', '&#124;')} |")
    show_markdown(("\n".join(lines)))


def register(ipython) -> None:
    ipython.register_magics(ExaoneMagics)


def unregister(ipython) -> None:
    """Undo ``register``: both magics and the configurable disappear."""
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("exaone", None)
    instance = manager.registry.pop("ExaoneMagics", None)
    if instance is not None and instance in ipython.configurables:
        ipython.configurables.remove(instance)


__all__ = ["ExaoneMagics", "register", "unregister"]
