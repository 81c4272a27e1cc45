"""Tools on a server: vLLM serving exaone-4.0-demo's Hugging Face twin as LG serves EXAONE 4.0
(``--enable-auto-tool-choice --tool-call-parser hermes``). The tools go as OpenAI's ``tools``,
the calls come back as ``tool_calls``, the results go back as ``tool`` messages; the answers are
the local twin's."""

from __future__ import annotations

import pytest

from exaone_jupyter.chat.families import LG_SYSTEM_PROMPT
from exaone_jupyter.engine.backend import Sampling
from exaone_jupyter.session import Session
from exaone_jupyter.tool_loop import run_with_tools
from exaone_jupyter.tools import describe
from test_tool_loop import WEATHER_CALL, Answers, add, get_weather

GREEDY = Sampling(temperature=0)
TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")


@pytest.fixture(scope="module")
def vllm_tools():
    """vLLM serving exaone-4.0-demo's twin as LG serves EXAONE 4.0 with tools."""
    from server_helpers import VllmServer
    from shared_fixtures import EXAONE4_DEMO_DIR, EXAONE4_DEMO_SERVED

    srv = VllmServer(EXAONE4_DEMO_DIR, EXAONE4_DEMO_SERVED, *TOOL_FLAGS).wait()
    yield srv
    srv.stop()


def test_messages_go_in_openais_shape_and_streamed_calls_come_back_as_text():
    from types import SimpleNamespace as NS

    from exaone_jupyter.engine.server.tool_wire import StreamedCalls, wire_message

    assert wire_message(WEATHER_CALL[1])["tool_calls"] == [
        {
            "id": "call_7_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Seoul"}'},
        }
    ]
    assert wire_message(WEATHER_CALL[2]) == {
        "role": "tool",
        "content": "10°C, sunny",
        "tool_call_id": "call_7_1",
    }
    calls = StreamedCalls()
    calls.add([NS(index=0, function=NS(name="get_weather", arguments='{"ci'))])
    calls.add([NS(index=0, function=NS(name=None, arguments='ty": "서울"}'))])
    calls.add([NS(index=1, function=NS(name="add", arguments="{oops"))])
    assert calls.text() == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": "{oops"}</tool_call>'
    )


def test_calls_go_back_as_text_to_a_server_that_returned_them_as_text():
    """llama-cpp-python's server renders the GGUF's template on the messages as sent: with
    OpenAI's string arguments EXAONE 4.0's template writes them quoted; sent as the model's text,
    the prompt is Hugging Face's on the structured calls."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    from exaone_jupyter.engine.server.tool_wire import wire_message
    from shared_fixtures import EXAONE4_DEMO_DIR

    tools = [describe(get_weather).spec()]
    template = (EXAONE4_DEMO_DIR / "chat_template.jinja").read_text(encoding="utf-8")
    served = Jinja2ChatFormatter(template, eos_token="[|endofturn|]", bos_token="[BOS]")
    as_text = [wire_message(m, calls_as_text=True) for m in WEATHER_CALL]
    assert "tool_calls" not in as_text[1]
    assert as_text[1]["content"] == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Seoul"}}</tool_call>'
    )
    hf = AutoTokenizer.from_pretrained(str(EXAONE4_DEMO_DIR))
    want = hf.apply_chat_template(
        WEATHER_CALL, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert served(messages=as_text, tools=tools).prompt == want
    as_strings = [wire_message(m) for m in WEATHER_CALL]
    assert '"arguments": "{\\"city' in served(messages=as_strings, tools=tools).prompt


@pytest.mark.vllm
def test_vllm_takes_the_tools_and_the_tool_turns_and_renders_the_prompt_as_here(vllm_tools):
    """The request (tools, an assistant's tool_calls, a tool message) is accepted, and vLLM's
    prompt is as long, in tokens, as the one this package renders from the same messages with
    the same template (the twin GGUF's)."""
    here = Session()
    here.load("exaone-4.0-demo")
    remote = Session()
    remote.connect(vllm_tools.url)
    tools = [describe(get_weather), describe(add)]
    try:
        for session in (here, remote):
            session.conversation.put([dict(m) for m in WEATHER_CALL[:1]])
        turn = remote.prepare("And in Busan?", GREEDY, tools=tools)
        at = turn.messages.index(WEATHER_CALL[0]) + 1
        turn.messages[at:at] = [dict(m) for m in WEATHER_CALL[1:]]  # the calls and the result
        reply = run_with_tools(remote, turn, tools, Answers(), max_rounds=0)
        assert reply.stats.finish_reason in ("stop", "length"), reply
        local = here.render_prompt(turn.messages, tools=[t.spec() for t in tools])[1]
        assert reply.stats.prompt_tokens == len(local)
    finally:
        remote.disconnect()
        here.unload()


@pytest.mark.vllm
@pytest.mark.parametrize("think", [False, True])
def test_vllm_calls_the_tool_and_answers_with_its_result(vllm_tools, think):
    remote = Session()
    remote.connect(vllm_tools.url)
    remote.set_system(LG_SYSTEM_PROMPT)
    tools = [describe(get_weather), describe(add)]
    try:
        ui = Answers(True)
        turn = remote.prepare("What's the weather in Seoul?", GREEDY, think=think, tools=tools)
        reply = run_with_tools(remote, turn, tools, ui)
        assert ui.asked == ["get_weather(city='Seoul')"]
        assert ui.outcomes == [("get_weather", "10°C, sunny", True, None)]
        assert remote.split_reasoning(reply)[1] == "The weather in Seoul: **10°C, sunny**."
        messages = remote.conversation.messages
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": {"city": "Seoul"},
        }
        ui = Answers()
        turn = remote.prepare("What is 1234 + 5678?", GREEDY, new=True, tools=tools)
        reply = run_with_tools(remote, turn, tools, ui, ask=False)
        assert reply.text == "1234 + 5678 = **6912**."
    finally:
        remote.disconnect()


@pytest.fixture(scope="module")
def server4():
    """llama-cpp-python's server on exaone-4.0-demo's GGUF (its own template renders the
    tools; the calls come back as the model's text)."""
    from server_helpers import Server
    from shared_fixtures import DATA

    srv = Server(DATA / "exaone-4.0-demo.gguf").wait()
    yield srv
    srv.stop()


@pytest.mark.server
def test_llama_cpp_pythons_server_runs_the_tool_from_the_calls_text(server4):
    remote = Session()
    remote.connect(server4.url)
    tools = [describe(get_weather), describe(add)]
    try:
        ui = Answers()
        turn = remote.prepare("What is 1234 + 5678?", GREEDY, tools=tools)
        reply = run_with_tools(remote, turn, tools, ui, ask=False)
        assert ui.outcomes == [("add", "6912", True, None)]
        assert reply.text == "1234 + 5678 = **6912**."
    finally:
        remote.disconnect()
