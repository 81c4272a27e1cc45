"""How a magic's line is read: every ``%exaone`` subcommand declared once, with its arguments.

The same declaration parses the line and writes ``%exaone help`` and ``%exaone?``, so the help
can never disagree with what is accepted. A misspelled option gets a suggestion.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser, argument

from ..model import catalog
from .settings import LOADING, SAMPLING, Setting


@dataclass(frozen=True)
class Subcommand:
    """One ``%exaone NAME``: its help and its arguments (``raw``: the rest of the line is one text,
    not split into words, so an apostrophe in a system prompt needs no quoting)."""

    name: str
    help: str
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()
    raw: str | None = None  # the destination that takes the raw rest of the line
    parser: MagicArgumentParser = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # IPython's parser (errors are UsageErrors) with argparse's plain help, not its RST
        parser = MagicArgumentParser(
            prog=f"%exaone {self.name}",
            description=self.help,
            add_help=False,
            formatter_class=argparse.HelpFormatter,
        )
        for names, options in self.arguments:
            parser.add_argument(*names, **options)
        object.__setattr__(self, "parser", parser)

    def parse(self, rest: str) -> argparse.Namespace:
        """The line's arguments; a UsageError that shows the usage when they do not fit it."""
        try:
            if self.raw is not None:
                words = ["--clear"] if rest == "--clear" else []
                args = parse_words(self.parser, words)
                setattr(args, self.raw, "" if words else rest)
                return args
            return parse_words(self.parser, split_line(rest))
        except UsageError as err:
            if "did you mean" in str(err):
                raise
            raise UsageError(f"{str(err).rstrip('.')} (usage: `{self.usage}`).") from None

    @property
    def usage(self) -> str:
        return " ".join(self.parser.format_usage().removeprefix("usage: ").split())


_Magic = TypeVar("_Magic", bound=Callable[..., Any])


def sampling_arguments(func: _Magic) -> _Magic:
    """IPython's ``@argument`` for each sampling setting (``-t``, ``--top-p``...), in the order
    ``Sampling`` declares them: ``%%exaone``'s options."""
    for setting in reversed(SAMPLING):  # the @argument nearest the function comes last
        names, options = _setting_arg(setting)
        func = argument(*names, **options)(func)
    return func


def _arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    if "help" in options:  # argparse %-formats help texts; ours mention %exaone
        options["help"] = options["help"].replace("%", "%%")
    return names, options


def _setting_arg(setting: Setting) -> tuple[tuple[str, ...], dict[str, Any]]:
    names, options = setting.argument()
    return _arg(*names, **options)


SUBCOMMANDS: dict[str, Subcommand] = {
    s.name: s
    for s in (
        Subcommand(
            "load",
            "Load a model: a .gguf path, REPO:FILE on the Hub, or an alias from "
            "`%exaone models` (default: $EXAONE_JUPYTER_MODEL, else ExaoneMagics.model, else "
            f"{catalog.DEFAULT_ALIAS}).",
            (
                _arg(
                    "spec",
                    nargs="?",
                    default=None,
                    metavar="MODEL",
                    help="path, REPO:FILE, REPO or alias",
                ),
                _arg("--file", default=None, metavar="GLOB", help="which GGUF of REPO"),
                *map(_setting_arg, LOADING),  # --gpu-layers, --n-ctx... (LoadOptions)
            ),
        ),
        Subcommand("unload", "Free the model's memory; the conversation stays."),
        Subcommand(
            "info",
            "The loaded model: size, quantization, context, threads, layers on the GPU and why.",
        ),
        Subcommand("models", "The catalog of known EXAONE GGUFs, and which need no download."),
        Subcommand("reset", "Forget the conversation (the system prompt stays)."),
        Subcommand("history", "Show the conversation so far."),
        Subcommand(
            "save",
            "Save the conversation as JSON.",
            (_arg("path", metavar="PATH", help="file to write"),),
        ),
        Subcommand(
            "resume",
            "Rebuild the conversation from the replies saved in a notebook (after a kernel "
            "restart: the saved notebook is the record).",
            (
                _arg(
                    "notebook",
                    nargs="?",
                    default=None,
                    metavar="NOTEBOOK",
                    help="an .ipynb file (default: the notebook this kernel serves)",
                ),
            ),
        ),
        Subcommand(
            "restore",
            "Restore a conversation saved with `%exaone save`.",
            (_arg("path", metavar="PATH", help="file `%exaone save` wrote"),),
        ),
        Subcommand(
            "system",
            "Show, set (`%exaone system TEXT`) or clear (`--clear`) the system prompt.",
            (
                _arg(
                    "text",
                    nargs="?",
                    metavar="TEXT",
                    help="the prompt (the rest of the line, as typed)",
                ),
                _arg("--clear", action="store_true", help="no system prompt"),
            ),
            raw="text",
        ),
        Subcommand(
            "stats", "The last reply's figures: tokens, rates, time to first token, finish reason."
        ),
        Subcommand(
            "cache",
            "What the saved prompt states take (memory, and disk across restarts); "
            "`--clear` forgets them all.",
            (_arg("--clear", action="store_true", help="remove every saved state"),),
        ),
        Subcommand(
            "panel", "Open the chat panel: model picker, GPU layers, Send, Stop and a live meter."
        ),
        Subcommand(
            "connect",
            "Use an OpenAI-compatible server (vLLM, llama-server) instead of a "
            "local model; the conversation stays.",
            (
                _arg(
                    "url",
                    metavar="URL",
                    help="the server's base URL, e.g. http://127.0.0.1:8080/v1",
                ),
                _arg("--model", default=None, metavar="NAME", help="the server's model name"),
                _arg(
                    "--api-key-env",
                    default=None,
                    metavar="VAR",
                    help="environment variable holding the API key",
                ),
            ),
        ),
        Subcommand(
            "disconnect",
            "Stop using the server; the conversation stays (load a local model to go on).",
        ),
        Subcommand(
            "map",
            "Ask PROMPT once per item of the notebook variable VAR (a list, Series or "
            "DataFrame), batched; the results go to NAME and the summary shows under the cell "
            "(exaone_jupyter.map from Python has every option).",
            (
                _arg("var", metavar="VAR", help="the notebook variable that holds the items"),
                _arg(
                    "prompt",
                    metavar="PROMPT",
                    help="quoted; {} is the item, {column} a DataFrame column or dict key",
                ),
                _arg(
                    "--schema",
                    default=None,
                    metavar="FIELDS",
                    help="structured results, e.g. 'name, age int'",
                ),
                _arg(
                    "--parallel",
                    type=int,
                    default=None,
                    metavar="N",
                    help="rows at once (default 8 locally, 4 on a server)",
                ),
                _arg(
                    "-n",
                    "--max-tokens",
                    type=int,
                    default=None,
                    metavar="N",
                    help="per row (default 256)",
                ),
                _arg("-t", "--temperature", type=float, default=None, help="default 0 (greedy)"),
                _arg(
                    "--cache",
                    choices=("memory", "disk", "off"),
                    default="memory",
                    help="where reproducible rows are kept (default memory)",
                ),
                _arg(
                    "-o",
                    "--out",
                    default="_map",
                    metavar="NAME",
                    help="the variable that gets the results (default _map)",
                ),
            ),
        ),
        Subcommand(
            "explain",
            "Ask about the last exception of this kernel: the failing cell, the exception and "
            "the traceback's frames in your code (takes %%exaone's options, e.g. --code to get "
            "the fix in a new cell; `%%exaone explain` with text below extends the question).",
        ),
        Subcommand(
            "help",
            "List the subcommands, or one subcommand's options.",
            (_arg("subcommand", nargs="?", default=None, metavar="NAME"),),
        ),
    )
}


def find_subcommand(name: str) -> Subcommand:
    """The subcommand called ``name``; a UsageError naming the likely one when there is none."""
    command = SUBCOMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(
            f"Unknown subcommand {name!r}{hint}; use one of: {', '.join(SUBCOMMANDS)}."
        )
    return command


def subcommand_help(name: str | None = None) -> str:
    """Markdown: every subcommand's usage and help, or one subcommand's full options."""
    if name is not None:
        command = find_subcommand(name)
        return f"```text\n{command.parser.format_help().strip()}\n```"
    lines = ["**%exaone subcommands** (`%exaone help NAME` for one's options)", ""]
    lines += [f"- `{c.usage}`: {c.help}" for c in SUBCOMMANDS.values()]
    return "\n".join(lines)


def parse_words(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """Parse, and when an option is misspelled, say which one was probably meant."""
    try:
        return parser.parse_args(words)
    except UsageError as err:
        known = [
            o for action in parser._actions for o in action.option_strings if o.startswith("--")
        ]
        unknown = re.findall(r"(--?[\w-]+)", str(err).partition("unrecognized arguments:")[2])
        for word in unknown:
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.8)
            if close:
                where = "%exaone help" if " " in parser.prog else "%%exaone?"
                raise UsageError(
                    f"Unknown option {word}; did you mean {close[0]}? "
                    f"(`{where}` lists the options.)"
                ) from None
        raise


def split_line(text: str, posix: bool = os.name == "posix") -> list[str]:
    """The words of a magic's line, quotes removed, as a shell would split them.

    Not POSIX (Windows): a backslash is a path separator, not an escape, so ``C:\\models\\a.gguf``
    stays whole. (shlex's own non-POSIX mode would keep the quotes, and split
    ``--system="Be brief"`` in two; quoting stays POSIX here, only the escape character goes.)
    """
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    if not posix:
        lexer.escape = ""
    try:
        return list(lexer)
    except ValueError as err:
        raise UsageError(f"Cannot parse {text!r}: {err}.") from None
