"""The contracts between the layers: typed backend facts, one render per prompt, real load
progress that a Ctrl-C can cancel, settings refused when set, help written from the parsers.

Everything runs the real llama.cpp engine on the shipped demo model or generated GGUFs.
"""

from __future__ import annotations

import os
import signal

import pytest
from IPython.core.error import UsageError

from exaone_jupyter.chat.families import EXAONE3
from exaone_jupyter.chat.template import ChatTemplate
from exaone_jupyter.engine.backend import BackendInfo, LoadOptions, Sampling
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.session import Session
from exaone_jupyter.testing import TinyShape, write_random_gguf

GREEDY = Sampling(temperature=0, max_tokens=16)
QUESTION = "한국의 수도는 어디인가요? Answer in one sentence."
ANSWER = "한국의 수도는 서울입니다 (Seoul)."


# -- what a backend is -----------------------------------------------------------------------------
def test_a_local_backend_describes_itself_with_one_typed_value(tiny_gguf):
    backend = LocalBackend(read_gguf(tiny_gguf), LoadOptions(n_ctx=256, gpu_layers="none"))
    try:
        info = backend.info
        assert isinstance(info, BackendInfo) and info.kind == "local" and info.server is None
        assert info.n_ctx == backend.n_ctx == 256 and info.label == "llama.cpp (local)"
        local = info.local
        assert local.gguf.path == tiny_gguf and local.gguf.n_layers == 2
        assert local.offload.n_gpu_layers == 0 and "none" in local.offload.reason.lower()
        assert local.n_threads >= 1 and local.load_s > 0 and local.system_info
        assert info.gpu_label == "GPU 0/2 layers"
        assert backend.tokenizer is backend  # fed our ids: it tokenizes with its own vocabulary
        assert backend.eos_text == "[|endofturn|]"
    finally:
        backend.close()


def test_the_session_reports_backend_and_conversation_facts(demo_session):
    info = demo_session.info()
    assert info.backend is demo_session.backend.info
    assert info.spec == "exaone-demo" and info.template_family == "exaone3"
    assert info.turns == demo_session.conversation.turns


# -- the request path --------------------------------------------------------------------------------
def test_each_turn_renders_and_tokenizes_its_prompt_once(demo_session, monkeypatch):
    renders = []
    original = ChatTemplate.prompt

    def counting(self, messages, tokenizer, **kwargs):
        renders.append(len(messages))
        return original(self, messages, tokenizer, **kwargs)

    monkeypatch.setattr(ChatTemplate, "prompt", counting)
    demo_session.reset()
    turn = demo_session.prepare(QUESTION, GREEDY)
    assert len(renders) == 1
    assert demo_session.send(turn).consume().text == ANSWER
    assert len(renders) == 1  # sending reuses the prompt that prepare measured


def test_render_prompt_takes_the_template_variables_and_may_override_bos(demo_session):
    messages = [{"role": "user", "content": "Hi"}]
    text, ids = demo_session.render_prompt(messages)
    assert text.endswith("[|user|]Hi\n[|assistant|]")
    # the same names Hugging Face passes: a bos_token given here replaces the model's (EXAONE 3's
    # template prints none, so the prompt is unchanged rather than a TypeError)
    assert demo_session.render_prompt(messages, bos_token="<s>") == (text, ids)
    bare, _ = demo_session.render_prompt(messages, add_generation_prompt=False)
    assert bare == text.removesuffix("[|assistant|]")
    template = ChatTemplate(
        "{{ bos_token }}{{ messages[0]['content'] }}", family=None, bos_token="[BOS]"
    )
    assert template.render(messages) == "[BOS]Hi"
    assert template.render(messages, bos_token="<s>") == "<s>Hi"


def test_a_template_bound_to_a_model_keeps_its_compiled_source():
    template = ChatTemplate(EXAONE3.template, family=EXAONE3)
    bound = template.with_special_tokens("[BOS]", "[|endofturn|]")
    assert bound is not template and bound.bos_token == "[BOS]" and template.bos_token == ""
    assert bound.render([{"role": "user", "content": "a"}]) == template.render(
        [{"role": "user", "content": "a"}]
    )


# -- loading -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bigger_gguf(tmp_path_factory):
    """A few MB: llama.cpp reports progress over several tensors."""
    return write_random_gguf(
        tmp_path_factory.mktemp("models") / "bigger.gguf",
        shape=TinyShape(n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_layer=4),
    )


def test_load_progress_comes_from_llama_cpp(bigger_gguf):
    seen: list[float] = []
    backend = LocalBackend(read_gguf(bigger_gguf), on_progress=seen.append)
    backend.close()
    assert len(seen) >= 2 and seen == sorted(seen), seen
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_ctrl_c_during_a_load_gives_back_the_model_loaded_before(bigger_gguf):
    # Python's own SIGINT handler, as a kernel has: a shell that starts pytest in the background
    # (`make test &`) leaves SIGINT ignored, and then the signal below would do nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    session = Session()
    session.load("exaone-demo")
    try:
        calls = []

        def press_ctrl_c(fraction: float) -> None:
            calls.append(fraction)
            if len(calls) == 1:  # as the kernel's interrupt button does, mid-load
                os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(ExaoneError) as err:
            session.load(str(bigger_gguf), on_progress=press_ctrl_c)
        text = str(err.value)
        assert "was interrupted" in text and "exaone-demo is loaded again" in text
        assert text.endswith(".") and "\n" not in text
        assert calls and calls[-1] < 1.0  # llama.cpp stopped: the load never finished
        assert session.model_spec == "exaone-demo"
        assert session.ask(QUESTION, GREEDY).consume().text == ANSWER
    finally:
        session.unload()
        signal.signal(signal.SIGINT, previous)


# -- the magics in an in-process shell (tests/test_arguments.py has the refused %config values) -----
@pytest.fixture()
def shell(ipython_shell):
    return ipython_shell.ip


def test_help_is_written_from_the_parsers(shell, capsys):
    from exaone_jupyter.ui.arguments import SUBCOMMANDS, subcommand_help

    listing = subcommand_help()
    for command in SUBCOMMANDS.values():
        assert f"`{command.usage}`" in listing
    assert "--gpu-layers N" in listing and "--api-key-env VAR" in listing
    doc = shell.find_line_magic("exaone").__doc__
    assert "usage: %exaone load" in doc and "usage: %exaone connect" in doc
    assert "--n-threads N" in subcommand_help("load")


def test_an_unknown_subcommand_suggests_the_likely_one(shell):
    with pytest.raises(UsageError, match="did you mean unload"):
        shell.run_line_magic("exaone", "unlod")
    with pytest.raises(UsageError, match="unrecognized arguments: now"):
        shell.run_line_magic("exaone", "unload now")


def test_a_refused_setting_does_not_break_reloading_the_extension(shell, caplog):
    shell.run_line_magic("config", "ExaoneMagics.top_k = -3")  # refused; IPython keeps it anyway
    assert any("top_k must be 0 (off) or more" in r.getMessage() for r in caplog.records)
    shell.run_line_magic("reload_ext", "exaone_jupyter")  # would raise TraitError at creation
    assert shell.magics_manager.registry["ExaoneMagics"].top_k == Sampling().top_k
    assert "top_k" not in shell.config.get("ExaoneMagics", {})
