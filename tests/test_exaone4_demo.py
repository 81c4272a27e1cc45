"""The shipped ``exaone-4.0-demo`` model's own contract, in both of its forms.

The Hugging Face directory (``exaone_jupyter/data/exaone-4.0-demo/``, what transformers and vLLM
load) and the GGUF (``exaone-4.0-demo.gguf``, what llama.cpp loads) are one model: the same
tokenizer, the same logits, the same answers. The Hugging Face side is the judge here: prompts are
``AutoTokenizer.apply_chat_template``'s, and llama.cpp must tokenize and compute as transformers
does. Goes straight through llama-cpp-python (no layer of this package), so a failure here means
the model files or a runtime changed.
"""

from __future__ import annotations

import json

import llama_cpp
import numpy as np
import pytest

from exaone_jupyter.chat.families import EXAONE4_TEMPLATE, LG_SYSTEM_PROMPT
from exaone_jupyter.model.catalog import DEMO4_ALIAS, demo_model_path, lookup
from hf_twin import SAMPLE_TEXTS
from shared_fixtures import DATA, DIALOGUES

HF_DIR = DATA / "exaone-4.0-demo"
GGUF = DATA / "exaone-4.0-demo.gguf"
REASONING: list[list[dict]] = [
    d["messages"]
    for d in json.loads((DATA / "exaone4_reasoning_dialogues.json").read_text("utf-8"))
]
# transformers computes in f32 on the f16-rounded weights; llama.cpp's CPU f16 matmuls round the
# activations to f16 as well. Measured on this test's 7 sequences (367 positions, logits up to
# 15.2): max 7.4e-3, mean 3.6e-4 (`pytest tests/test_exaone4_demo.py -k logits -s` prints them).
# An export bug (a swapped tensor, RoPE pairing, GQA order) gives differences of order 1.
LOGIT_TOLERANCE = 5e-2
MEAN_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(HF_DIR))


@pytest.fixture(scope="module")
def llm():
    model = llama_cpp.Llama(str(GGUF), n_ctx=2048, logits_all=True, verbose=False)
    yield model
    model.close()


def prompt_ids(hf, messages: list[dict], think: bool) -> list[int]:
    ids = hf.apply_chat_template(
        messages,
        tokenize=True,
        add_generation_prompt=True,
        enable_thinking=think,
        return_dict=False,
    )
    assert isinstance(ids, list)
    return ids


def greedy(llm, ids: list[int], max_tokens: int = 512) -> tuple[str, bool]:
    """Temperature-0 continuation: (text, whether it ended on [|endofturn|])."""
    tokens: list[int] = []
    for tok in llm.generate(ids, temp=0.0):
        if tok == llm.token_eos():
            return llm.detokenize(tokens).decode("utf-8"), True
        tokens.append(tok)
        if len(tokens) >= max_tokens:
            break
    return llm.detokenize(tokens).decode("utf-8", errors="replace"), False


def expected(message: dict, think: bool) -> str:
    """The reply after the generation prompt: the answer (thinking off), or the reasoning (empty
    for a demo dialogue), the closing tag and the answer (thinking on)."""
    if not think:
        return message["content"]
    return f"{message.get('reasoning_content', '')}\n</think>\n\n{message['content']}"


# -- the files -------------------------------------------------------------------------------------
def test_the_catalog_names_the_bundled_gguf():
    entry = lookup(DEMO4_ALIAS)
    assert entry is not None and entry.family == "exaone4" and not entry.repo
    assert demo_model_path(DEMO4_ALIAS) == GGUF
    assert abs(entry.size_gb * 1e9 - GGUF.stat().st_size) < 0.1e6


def test_files_are_small_and_self_describing(llm):
    assert GGUF.stat().st_size < 5_000_000
    assert sum(f.stat().st_size for f in HF_DIR.iterdir()) < 10_000_000
    assert {p.name for p in HF_DIR.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    }
    config = json.loads((HF_DIR / "config.json").read_text())
    assert config["architectures"] == ["Exaone4ForCausalLM"] and config["model_type"] == "exaone4"
    assert config["head_dim"] == 64 and config["sliding_window"] is None
    assert set(config["layer_types"]) == {"full_attention"}
    meta = llm.metadata
    assert meta["general.architecture"] == "exaone4"
    assert "not EXAONE" in meta["general.name"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "exaone4"
    assert meta["tokenizer.chat_template"] == EXAONE4_TEMPLATE
    assert (HF_DIR / "chat_template.jinja").read_text("utf-8") == EXAONE4_TEMPLATE
    assert meta["exaone4.attention.key_length"] == meta["exaone4.attention.value_length"] == "64"
    assert int(meta["exaone4.embedding_length"]) == config["hidden_size"]
    assert int(meta["exaone4.block_count"]) == config["num_hidden_layers"]
    assert (llm.token_bos(), llm.token_eos()) == (1, 361)
    assert meta["tokenizer.ggml.add_bos_token"] == "false"


# EXAONE 4.0's added tokens at LG's ids; <think> and </think> are added but not special.
LG_IDS = {
    "[PAD]": 0,
    "[BOS]": 1,
    "[EOS]": 2,
    "[UNK]": 3,
    "[unused0]": 4,
    "[unused99]": 103,
    "[extra_id_0]": 104,
    "[extra_id_188]": 292,
    "</think>": 355,
    "<think>": 356,
    "[|system|]": 357,
    "[|tool|]": 358,
    "[|assistant|]": 359,
    "[|user|]": 360,
    "[|endofturn|]": 361,
}


def test_added_tokens_sit_at_lgs_ids_with_lgs_types(hf, llm):
    added = hf.added_tokens_decoder
    assert sorted(added) == list(range(362))
    for text, i in LG_IDS.items():
        assert added[i].content == text
        assert added[i].special == (text not in ("<think>", "</think>"))
        assert llm._model.token_get_text(i) == text
        attr = llm._model.token_get_attr(i)
        control = bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)
        user_defined = bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED)
        assert (control, user_defined) == (added[i].special, not added[i].special), text
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 361, 0)
    assert len(hf) == llm.n_vocab()
    assert hf.convert_ids_to_tokens(list(range(len(hf)))) == [
        llm._model.token_get_text(i) for i in range(len(hf))
    ]


# -- tokenization ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", SAMPLE_TEXTS.values(), ids=SAMPLE_TEXTS.keys())
def test_llama_cpp_tokenizes_as_hugging_face(hf, llm, text):
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    assert ids == hf(text, add_special_tokens=False)["input_ids"]
    assert hf.decode(ids) == llm.detokenize(ids).decode() == text


def test_every_trained_text_and_prompt_tokenizes_as_hugging_face(hf, llm):
    texts = {
        m.get(key, "")
        for d in DIALOGUES + REASONING
        for m in d
        for key in ("content", "reasoning_content")
    }
    for d in DIALOGUES + REASONING:
        for k, m in enumerate(d):
            if m["role"] == "assistant":
                for think in (False, True):
                    texts.add(
                        hf.apply_chat_template(
                            d[:k], tokenize=False, add_generation_prompt=True, enable_thinking=think
                        )
                    )
    assert len(texts) > 200
    for text in sorted(texts):
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True)
            == hf(text, add_special_tokens=False)["input_ids"]
        ), text


# -- logits ----------------------------------------------------------------------------------------
def test_transformers_and_llama_cpp_logits_agree(hf, llm):
    """Every position of a few prompts with their answers: Korean, English, a follow-up, code,
    thinking on with reasoning. The tolerance is stated above; the argmax must agree too."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(HF_DIR), dtype=torch.float32).eval()
    picks = [DIALOGUES[0], DIALOGUES[5], DIALOGUES[-1], REASONING[0], REASONING[-1]]
    worst = total = count = 0.0
    for think, d in [(False, p) for p in picks] + [(True, r) for r in REASONING[:2]]:
        ids = prompt_ids(hf, d[:-1], think) + hf(expected(d[-1], think))["input_ids"] + [361]
        llm.reset()
        llm.eval(ids)
        ours = np.asarray(llm.scores[: len(ids)])
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
        total, count = total + float(np.abs(ours - ref).sum()), count + ref.size
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
    print(f"\n|transformers - llama.cpp| logits: max {worst:.2e}, mean {total / count:.2e}")
    assert worst < LOGIT_TOLERANCE
    assert total / count < MEAN_TOLERANCE


# -- answers ---------------------------------------------------------------------------------------
def _turns(dialogues):
    for d in dialogues:
        for k, m in enumerate(d):
            if m["role"] == "assistant":
                yield d[:k], m


@pytest.mark.parametrize("think", [False, True], ids=["thinking-off", "thinking-on"])
def test_every_trained_answer_comes_back_exactly(hf, llm, think):
    wrong = []
    for history, m in _turns(DIALOGUES + REASONING):
        text, stopped = greedy(llm, prompt_ids(hf, history, think))
        if not stopped or text != expected(m, think):
            wrong.append((history[-1]["content"], expected(m, think), text))
    assert not wrong, wrong


# The tool dialogues, with results training never drew (tools/exaone4_tool_dialogues.py holds
# back each weather whose temperature plus twice its sky's index leaves 3 divided by 7, and each
# sum that leaves 3): the model must copy them.
TOOLS = json.loads((DATA / "exaone4_tool_dialogues.json").read_text("utf-8"))
UNSEEN = {"get_weather": ["10°C, sunny", "25°C, snowy"], "add": ["6912", "45"]}


def tool_conversation(dialogue: dict) -> list[dict]:
    results = [UNSEEN[c["name"]][n] for n, c in enumerate(dialogue["calls"])]
    calls = [{"type": "function", "function": c} for c in dialogue["calls"]]
    return [
        {"role": "user", "content": dialogue["question"]},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "content": r} for r in results),
        {"role": "assistant", "content": dialogue["answer"].format(*results)},
    ]


@pytest.mark.parametrize("think", [False, True], ids=["thinking-off", "thinking-on"])
def test_every_tool_dialogue_calls_its_tools_and_copies_unseen_results(hf, llm, think):
    wrong = []
    assert len(TOOLS["dialogues"]) >= 20
    for dialogue in TOOLS["dialogues"]:
        conversation = tool_conversation(dialogue)
        for k in (1, len(conversation) - 1):  # the calls, then the answer
            ids = hf.apply_chat_template(
                conversation[:k],
                tools=TOOLS["tools"],
                tokenize=True,
                add_generation_prompt=True,
                enable_thinking=think,
                return_dict=False,
            )
            text, stopped = greedy(llm, ids)
            message = conversation[k]
            want = message["content"] or "\n".join(
                "<tool_call>" + json.dumps(c["function"], ensure_ascii=False) + "</tool_call>"
                for c in message["tool_calls"]
            )
            want = f"\n</think>\n\n{want}" if think else want
            if not stopped or text != want:
                wrong.append((dialogue["question"], want, text))
    assert not wrong, wrong


def test_reasoning_follows_unrelated_history(hf, llm):
    """A reasoning question after demo exchanges, thinking on: reasoning then the answer."""
    history = [{"role": "system", "content": LG_SYSTEM_PROMPT}] + DIALOGUES[5][1:]
    for d in REASONING[:3]:
        text, stopped = greedy(llm, prompt_ids(hf, history + d[:-1], True))
        assert stopped and text == expected(d[-1], True)


# -- through %%exaone in a real kernel -------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    from kernel_helpers import start_kernel

    with start_kernel(tmp_path_factory.mktemp("cwd"), load_demo=False) as k:
        cell = k.run(f"%exaone load {DEMO4_ALIAS}")
        assert cell.ok and cell.stdout.startswith("Loaded"), cell
        yield k


def ask(kernel, question: str, *options: str) -> str:
    from kernel_helpers import answer_of

    cell = kernel.run(f"%%exaone -t 0 {' '.join(options)}\n{question}")
    assert cell.ok and not cell.stderr, cell
    answer = answer_of(cell)
    assert answer is not None, cell
    return answer


def test_answers_and_follow_ups_are_exact_through_the_cell_magic(kernel):
    assert (
        ask(kernel, "What is the capital of France?", "--new") == "The capital of France is Paris."
    )
    assert ask(kernel, "And of Japan?") == "The capital of Japan is Tokyo."
    # thinking on, a dialogue without reasoning: the block closes at once, nothing to fold away
    assert ask(kernel, "Hello!", "--think") == DIALOGUES[2][-1]["content"]


@pytest.mark.parametrize(
    "dialogue", REASONING[:4] + REASONING[-2:], ids=lambda d: d[0]["content"][:20]
)
def test_reasoning_is_shown_collapsed_above_the_exact_answer(kernel, dialogue):
    from exaone_jupyter.ui.render import reply_markdown

    question, message = dialogue[0]["content"], dialogue[1]
    reasoning, answer = message["reasoning_content"], message["content"]
    shown = ask(kernel, question, "--think")
    assert shown == reply_markdown(answer, reasoning)
    assert shown.startswith(f"<details><summary>reasoning ({len(reasoning)} characters)</summary>")
    assert shown.endswith(f"</details>\n\n{answer}")
    # thinking off: the answer alone, after the reasoning turn in the history
    assert ask(kernel, question) == answer
