"""Option parsing of ``%exaone`` and ``%%exaone``, and ``%config`` values, in an in-process IPython
shell (the ``ipython_shell`` fixture): the same magics as in a kernel, without starting one.

IPython reports a bad option as one ``UsageError: ...`` line on stderr (no traceback); the
extension's own errors are one ``✗`` sentence. After each mistake the session is unchanged: the
same model loaded, the same conversation, and the demo model still gives its trained answer.
(The reliability suite checks, in a real kernel, that such a mistake leaves the kernel alive.)
"""

from __future__ import annotations

import pytest

from checks import one_sentence
from exaone_jupyter.ui.arguments import split_line
from kernel_helpers import DEMO_ANSWER, DEMO_QUESTION


@pytest.fixture(scope="module")
def shell(ipython_shell):
    """The in-process shell with the demo model loaded and one turn of conversation."""
    cell = ipython_shell.run("%exaone load exaone-demo")
    assert not cell.stderr and cell.error is None and "Loaded exaone-demo" in cell.stdout, cell
    cell = ipython_shell.run(f"%%exaone -t 0 --new\n{DEMO_QUESTION}")
    assert not cell.stderr and cell.error is None, cell
    assert ipython_shell.eval("__import__('exaone_jupyter').last_reply().text") == DEMO_ANSWER
    return ipython_shell


def _state(shell) -> tuple:
    session = "__import__('exaone_jupyter').get_session()"
    return shell.eval(f"({session}.model_spec, {session}.conversation.to_json())")


@pytest.fixture
def unchanged(shell):
    """After the test: the same model and conversation, and the model answers as trained."""
    before = _state(shell)
    yield
    assert _state(shell) == before
    cell = shell.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")
    assert not cell.stderr and cell.error is None, cell
    assert shell.eval("__import__('exaone_jupyter').last_reply().text") == DEMO_ANSWER
    assert _state(shell) == before


def usage_line(cell, *fragments: str) -> str:
    """One ``UsageError:`` line on stderr holding ``fragments``, nothing else."""
    lines = [line for line in cell.stderr.splitlines() if line.strip()]
    assert cell.usage_error and cell.error is None and "Traceback" not in cell.stderr, cell
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- options IPython's parser rejects ---------------------------------------------------------------
@pytest.mark.parametrize(
    "code, fragments",
    [
        ("%exaone bogus", ("Unknown subcommand 'bogus'", "load")),
        ("%exaone lod exaone-demo", ("'lod'", "load")),
        ("%%exaone --bogus\nHi", ("unrecognized arguments: --bogus",)),
        ("%%exaone -t hot\nHi", ("--temperature",)),
        ("%exaone save", ("save PATH",)),
        ("%exaone restore", ("restore PATH",)),
        ("%exaone load exaone-demo --gpu-layrs 3", ("--gpu-layrs", "did you mean --gpu-layers?")),
        ("%exaone load x --gpu-layrs 3", ("did you mean --gpu-layers?",)),
        (
            f"%%exaone --temprature 0\n{DEMO_QUESTION}",
            ("--temprature", "did you mean --temperature?"),
        ),
    ],
    ids=[
        "subcommand",
        "misspelled-subcommand",
        "cell-option",
        "cell-value",
        "save",
        "restore",
        "load-option",
        "load-option-unknown-model",
        "misspelled-cell-option",
    ],
)
def test_usage_errors(shell, unchanged, code, fragments):
    usage_line(shell.run(code), *fragments)


def test_unknown_subcommand_names_the_likely_one_in_one_sentence(shell, unchanged):
    line = usage_line(shell.run("%exaone lod exaone-demo"))
    assert "'lod' (did you mean load?); use one of: load," in line
    one_sentence(line.removeprefix("UsageError: "), "Unknown subcommand")


def test_unknown_model_with_abbreviated_option(shell, unchanged):
    # argparse takes --gpu-layer as short for --gpu-layers; the unknown model is what fails.
    one_sentence(shell.run("%exaone load x --gpu-layer 3"), "Unknown model 'x'", "%exaone models")


# -- how a line is split into words -----------------------------------------------------------------
@pytest.mark.parametrize(
    "line, posix_words, windows_words",
    [
        ('-s "Be brief" -o "ans"', ["-s", "Be brief", "-o", "ans"], None),
        ('-s "Don\'t ramble"', ["-s", "Don't ramble"], None),
        ("my\\ model.gguf", ["my model.gguf"], ["my\\", "model.gguf"]),
        ('--system="Be brief"', ["--system=Be brief"], None),
        ("C:\\models\\exaone.gguf", ["C:modelsexaone.gguf"], ["C:\\models\\exaone.gguf"]),
        (
            '"C:\\My Models\\a.gguf" --gpu-layers 3',
            ["C:\\My Models\\a.gguf", "--gpu-layers", "3"],
            None,
        ),
    ],
    ids=["quoted", "apostrophe", "escaped-space", "option-equals", "windows-path", "quoted-path"],
)
def test_lines_split_as_a_shell_splits_them(line, posix_words, windows_words):
    """Quotes go; a backslash escapes on POSIX and is a folder separator on Windows."""
    assert split_line(line, posix=True) == posix_words
    assert split_line(line, posix=False) == (windows_words or posix_words)


def test_out_must_name_a_variable(shell, unchanged):
    one_sentence(
        shell.run(f"%%exaone -t 0 -o my-var\n{DEMO_QUESTION}"),
        "--out takes a variable name",
        "'my-var'",
    )
    assert "my-var" not in shell.eval("dir()")


# -- values the extension refuses -------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, fragments",
    [
        ("--n-ctx -5", ("n_ctx", "1 or more")),
        ("--n-ctx 0", ("n_ctx", "1 or more")),
        ("--n-ctx 100000", ("n_ctx=100000", "use at most 2048")),
        ("--gpu-layers -3", ("gpu_layers", "negative")),
        ("--gpu-layers lots", ("gpu_layers", "auto, all, none")),
        ("--n-threads 0", ("n_threads", "1 or more")),
    ],
)
def test_impossible_load_values(shell, unchanged, options, fragments):
    one_sentence(shell.run(f"%exaone load exaone-demo {options}"), *fragments)


@pytest.mark.parametrize(
    "options, fragments",
    [
        ("-n 0", ("max_tokens", "1 or more")),
        ("-n -5", ("max_tokens", "1 or more")),
        ("-t -0.5", ("temperature", "0 or more")),
        ("--top-p 1.5", ("top_p", "at most 1")),
        ("--top-k -1", ("top_k",)),
        ("--repeat-penalty 0", ("repeat_penalty", "above 0")),
        ("--seed -1", ("seed",)),
    ],
)
def test_impossible_sampling_values(shell, unchanged, options, fragments):
    one_sentence(shell.run(f"%%exaone {options}\n{DEMO_QUESTION}"), *fragments)


# -- %config values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting, fragments",
    [
        ("max_tokens = 0", ("max_tokens", "1 or more")),
        ("gpu_layers = 'lots'", ("gpu_layers", "auto, all, none")),
        ("n_ctx = -5", ("n_ctx", "1 or more")),
        ("update_interval = 0", ("update_interval", "above 0")),
        ("temperature = -1", ("temperature", "0 or more")),
        ("top_p = 2.0", ("top_p", "at most 1")),
        ("repeat_penalty = 0", ("repeat_penalty", "above 0")),
    ],
)
def test_impossible_config_values_are_refused_when_set(
    shell, unchanged, caplog, setting, fragments
):
    """%config refuses the value at once, in one sentence (IPython logs it: in a kernel the cell
    shows "ERROR:root:ExaoneMagics.…"); the setting keeps its value and the next cell answers."""
    name = setting.split()[0]
    magics = "get_ipython().magics_manager.registry['ExaoneMagics']"
    before = shell.eval(f"{magics}.{name}")
    shell.run(f"%config ExaoneMagics.{setting}")
    [said] = [r.getMessage() for r in caplog.records if "ExaoneMagics." in r.getMessage()]
    one_sentence(said, *fragments, "the setting is unchanged")
    assert shell.eval(f"{magics}.{name}") == before
    cell = shell.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")
    assert not cell.stderr and DEMO_ANSWER in cell.stdout, cell


def test_config_values_are_what_a_cell_without_options_uses(shell, unchanged):
    """(The `%config ExaoneMagics` listing is checked in a kernel: test_magics.py.)"""
    magics = "get_ipython().magics_manager.registry['ExaoneMagics']"
    try:
        assert not shell.run("%config ExaoneMagics.max_tokens = 3").stderr
        assert shell.eval(f"{magics}.max_tokens") == 3
        cell = shell.run(f"%%exaone -t 0 --no-history\n{DEMO_QUESTION}")
        assert not cell.stderr and cell.error is None, cell
        stats = shell.eval("__import__('exaone_jupyter').last_reply().stats")
        assert stats.completion_tokens == 3 and stats.finish_reason == "length"
        # an option in the cell wins over the setting
        shell.run(f"%%exaone -t 0 -n 64 --no-history\n{DEMO_QUESTION}")
        assert shell.eval("__import__('exaone_jupyter').last_reply().text") == DEMO_ANSWER
    finally:
        shell.run("%config ExaoneMagics.max_tokens = 512")


def test_every_configurable_setting_is_a_trait_declared_from_its_field():
    """A Sampling or LoadOptions field marked for %config has its ExaoneMagics trait, with the
    field's default and help: a new setting cannot be forgotten there."""
    from exaone_jupyter.ui.magics import ExaoneMagics
    from exaone_jupyter.ui.settings import CONFIG

    traits = ExaoneMagics.class_traits()
    for name, setting in CONFIG.items():
        assert name in traits, name
        default = setting.default if setting.default is not None else 0
        assert traits[name].default_value == default, name
        assert setting.help[1:] in traits[name].help, name
