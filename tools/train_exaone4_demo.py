"""Train ``exaone-4.0-demo``: a tiny EXAONE 4.0 (``Exaone4ForCausalLM``) that answers fixed dialogues,
with and without thinking, saved for transformers/vLLM and as an ``exaone4`` GGUF for llama.cpp.

It is not EXAONE: a ~2M-parameter model of EXAONE 4.0's *architecture* (QK-norm, post-attention
and post-feed-forward norms, NEOX RoPE, grouped-query attention, head_dim 64 so vLLM's CPU
attention takes it) that memorised the demo dialogues (``demo_dialogues.json``) and a few
reasoning dialogues (``exaone4_reasoning_dialogues.json``) in EXAONE 4.0's chat format. Thinking
on (``enable_thinking=True``, the prompt ends ``<think>\\n``), it writes its reasoning, ``</think>``
and the answer; a demo dialogue has no reasoning, so it closes the block at once. Thinking off
(the prompt ends with the empty block ``<think>\\n\\n</think>\\n\\n``), it writes the answer.

The pipeline (the ideas of ``train_demo_model.py``, whose dialogue helpers it imports):

1. a byte-level BPE with EXAONE 4.0's 362 added tokens at LG's ids (``exaone4_vocab``);
2. conversations rendered by the Hugging Face tokenizer's own ``apply_chat_template`` with LG's
   4.0 template (the package ships it) and tokenized by it: what transformers and vLLM feed, and
   what this package feeds too (``tests/test_hf_judge.py``);
3. training of transformers' own ``Exaone4ForCausalLM`` (so the shipped model *is* the trained
   one) on fresh random chains of the dialogues every step (history augmentation: each one after
   0-5 others, LG's system prompt or none, the last one with thinking on or off), cross-entropy
   plus a hinge on the margin, until every answer token is the greedy argmax by a margin, also
   with the weights rounded to f16, on every dialogue in both modes and a fixed pool of histories;
4. export: the Hugging Face directory (weights f16-rounded, stored f32) and the GGUF (f16
   matrices, f32 norms), holding the same numbers;
5. checks: llama.cpp tokenizes as Hugging Face does; transformers' and llama.cpp's logits agree;
   llama.cpp regenerates every answer exactly at temperature 0, thinking on and off, also after
   seeded random histories.

Run from the repository root (dev dependencies; the package itself never imports torch)::

    pip install torch==2.13.0 transformers tokenizers gguf numpy jinja2 llama-cpp-python==0.3.36
    python tools/train_exaone4_demo.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template and system prompt come from the package itself

import exaone4_tool_dialogues as tool_data  # noqa: E402
import exaone4_vocab as vocab  # noqa: E402
from train_demo_model import (  # noqa: E402
    NAMED_HISTORIES,
    answer_for,
    batches,
    chain_units,
    greedy,
    load_dialogues,
    margins,
    with_history,
)

from exaone_jupyter.chat.families import EXAONE4_TEMPLATE, LG_SYSTEM_PROMPT  # noqa: E402

DATA = ROOT / "exaone_jupyter" / "data"
DIALOGUES = DATA / "demo_dialogues.json"
REASONING = DATA / "exaone4_reasoning_dialogues.json"
HF_DIR = DATA / "exaone-4.0-demo"
GGUF = DATA / "exaone-4.0-demo.gguf"
NAME = (
    "exaone-4.0-demo: tiny EXAONE 4.0-architecture demo model trained on {n} dialogues, not EXAONE"
)


@dataclass(frozen=True)
class Config:
    """Everything that decides the result; the defaults make the shipped model."""

    seed: int = 4000
    threads: int = 2
    n_merges: int = 1000  # learnt; those that glue a newline to anything are dropped
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 2
    n_head_kv: int = 2
    head_dim: int = 64  # vLLM's CPU attention rejects 16
    n_ff: int = 512
    n_ctx: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    post_norm_init: float = 0.1  # see build_model
    row_len: int = 1024
    batch_tokens: int = 4096
    chain_max: int = 6  # history augmentation, as in train_demo_model
    chains_per_step: int = 1
    p_lg_system: float = 0.75
    p_think: float = 0.5  # the last exchange of a chain is asked with thinking on
    pool_per_unit: int = 2
    check_histories: int = 100
    check_history_max: int = 4
    lr: float = 3e-3
    warmup: int = 20
    decay_steps: int = 250
    lr_floor: float = 0.1
    max_steps: int = 2000
    check_every: int = 10
    margin: float = 5.0
    hinge: float = 1.0
    hinge_margin: float = 7.0
    tool_history_max: int = 1  # a tool dialogue follows 0..this many other dialogues
    tool_checks: int = 3  # seeded draws of results per tool dialogue in the stop check
    p_tool_history: float = 0.5  # a tool dialogue follows another one


# --------------------------------------------------------------------------- dialogues


def load_all() -> tuple[list[list[dict]], list[list[dict]]]:
    """(demo dialogues, reasoning dialogues); a reasoning answer carries ``reasoning_content``."""
    demo = load_dialogues(DIALOGUES)
    reasoning = load_dialogues(REASONING)
    for messages in reasoning:
        assert all("reasoning_content" in m for m in messages if m["role"] == "assistant")
        for m in messages:
            text = m.get("reasoning_content", "")
            assert text == text.strip() and "<think>" not in text and "</think>" not in text
    return demo, reasoning


def has_reasoning(message: dict) -> bool:
    return bool(message.get("reasoning_content"))


def written(message: dict) -> str:
    """An assistant message's text as the template writes it: its content, or its tool calls."""
    if message.get("tool_calls"):
        return tool_data.call_text([c["function"] for c in message["tool_calls"]])
    return message["content"]


def expected_reply(message: dict, think: bool) -> str:
    """What the model must write after the generation prompt (the text before [|endofturn|])."""
    if not think:
        return written(message)
    return f"{message.get('reasoning_content', '')}\n</think>\n\n{written(message)}"


class Encoder:
    """Renders conversations with the Hugging Face tokenizer's chat template and tokenizes them.

    ``encode(messages, think)`` returns (ids, is_answer): the whole conversation, the last
    exchange asked with thinking on or off; is_answer marks the tokens the model must write for
    every assistant turn (from the end of that turn's generation prompt to [|endofturn|]). Each
    turn's generation prompt is checked to be a prefix of the conversation's ids, so training
    sees exactly what a runtime feeds.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict], think: bool, tools: list | None = None) -> list[int]:
        text = self.tok.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True, enable_thinking=think
        )
        return self.ids(text)

    def __call__(
        self, messages: list[dict], think: bool = False, tools: list | None = None
    ) -> tuple[list[int], list[bool]]:
        text = self.tok.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=False, skip_think=not think
        )
        ids = self.ids(text)
        is_answer = [False] * len(ids)
        last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            # A dialogue without reasoning is trained from "<think>\n" on (its empty block is the
            # same tokens in both modes); one with reasoning from there only when it is asked
            # with thinking on, else from after the empty block the prompt holds.
            turn_think = (think and k == last) or not has_reasoning(m)
            prompt = self.prompt(messages[:k], turn_think, tools)
            assert ids[: len(prompt)] == prompt, (text, k)
            end = ids.index(vocab.EOS_ID, len(prompt))
            for i in range(len(prompt), end + 1):
                is_answer[i] = True
            want = expected_reply(m, turn_think)
            assert self.tok.decode(ids[len(prompt) : end]) == want, (want, k)
        return ids, is_answer

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


# --------------------------------------------------------------------------- history chains


def sample_chains(rng, units, cfg: Config) -> list[tuple[list[dict], bool]]:
    """Every unit once, in a random order, cut into conversations of 1..chain_max units; each
    with LG's system prompt or none, its last exchange asked with thinking on or off."""
    order = rng.permutation(len(units))
    chains, i = [], 0
    while i < len(order):
        n = int(rng.integers(1, cfg.chain_max + 1))
        system = (
            [{"role": "system", "content": LG_SYSTEM_PROMPT}]
            if rng.random() < cfg.p_lg_system
            else []
        )
        parts = [m for j in order[i : i + n] for m in units[j]]
        chains.append((system + parts, bool(rng.random() < cfg.p_think)))
        i += n
    return chains


def tool_conversations(rng, cfg: Config, tools, dialogues, units, held_out: bool = False):
    """Every tool dialogue once, with fresh results, after 0..tool_history_max other dialogues
    and, as a notebook's earlier cell, sometimes another tool dialogue (answered, or stopped by
    Ctrl-C before its calls ran); LG's system prompt or none, thinking on or off:
    (messages, think, tools listed)."""
    out = []
    for dialogue in dialogues:
        conversation, listed = tool_data.sample(rng, tools, dialogue, held_out)
        n = int(rng.integers(0, cfg.tool_history_max + 1))
        history = [m for j in rng.choice(len(units), size=n, replace=False) for m in units[j]]
        if rng.random() < cfg.p_tool_history:
            earlier, _ = tool_data.sample(rng, tools, dialogues[rng.integers(len(dialogues))])
            history += tool_data.stopped(earlier) if rng.random() < 0.5 else earlier
        system = (
            [{"role": "system", "content": LG_SYSTEM_PROMPT}]
            if rng.random() < cfg.p_lg_system
            else []
        )
        out.append((system + history + conversation, bool(rng.random() < cfg.p_think), listed))
    return out


def history_pool(cfg: Config, units) -> list[tuple[list[dict], bool]]:
    """A fixed (seeded) set: every unit after 1..chain_max-1 others, thinking on or off."""
    rng = np.random.default_rng(cfg.seed + 1)
    pool = []
    for _ in range(cfg.pool_per_unit):
        for last in range(len(units)):
            system = LG_SYSTEM_PROMPT if rng.random() < cfg.p_lg_system else None
            conversation = with_history(
                rng, units, last, int(rng.integers(1, cfg.chain_max)), system
            )
            pool.append((conversation, bool(rng.random() < cfg.p_think)))
    return pool


# --------------------------------------------------------------------------- model


def model_config(cfg: Config, n_vocab: int):
    from transformers import Exaone4Config

    return Exaone4Config(
        vocab_size=n_vocab,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.n_ff,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head_kv,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.n_ctx,
        rms_norm_eps=cfg.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        sliding_window=None,
        layer_types=["full_attention"] * cfg.n_layer,
        bos_token_id=vocab.BOS_ID,
        eos_token_id=vocab.EOS_ID,
        pad_token_id=vocab.PAD_ID,
        tie_word_embeddings=False,
        initializer_range=0.02,
    )


def build_model(cfg: Config, n_vocab: int):
    import torch
    from transformers import Exaone4ForCausalLM

    torch.manual_seed(cfg.seed)
    model = Exaone4ForCausalLM(model_config(cfg, n_vocab))
    # EXAONE 4.0 normalizes each block's *output* before adding it to the residual stream. With
    # the usual init (embeddings of std 0.02, norm weights 1) the first block's output, of RMS 1,
    # drowns the token's own embedding and training crawls. Embeddings of RMS 1 and post-norms
    # that start small keep the token visible, as a pre-norm model's residual stream does.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.model.embed_tokens.weight[vocab.PAD_ID] = 0.0
        for name, p in model.named_parameters():
            if name.endswith(
                ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")
            ):
                p.fill_(cfg.post_norm_init)
    return model


def logits_at(model, ids, select=None):
    """Logits (B, T, V), or only where ``select`` (B, T) is true (N, V): the output layer is the
    biggest matmul, so training computes it only where there is a target."""
    hidden = model.model(input_ids=ids).last_hidden_state
    return model.lm_head(hidden if select is None else hidden[select])


def round_to_f16(model) -> None:
    """The weights as the GGUF stores its matrices (and the HF directory stores them too)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(p.half().float())


def train(cfg: Config, model, fixed, units, encode, check_seqs, fresh=lambda rng: []):
    """Full-batch AdamW on fresh chains each step, until every answer token has the margin.
    ``fresh(rng)``: more sequences drawn for each step (the tool dialogues with new results)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(cfg.seed)
    check_set = batches(cfg, check_seqs)

    def step_data():
        chains = [c for _ in range(cfg.chains_per_step) for c in sample_chains(rng, units, cfg)]
        return batches(cfg, fixed + [encode(m, think) for m, think in chains] + fresh(rng))

    def all_margins(data):
        """Margins of every answer token; prints where the worst one is (the end of its context)."""
        out, worst = [], (float("inf"), "", 0)
        with torch.no_grad():
            for ids, tgt in data:
                sel = tgt != -100
                m = margins(logits_at(model, ids, sel), tgt[sel])
                out.append(m)
                k = int(m.argmin())
                if m[k] < worst[0]:
                    rows, cols = torch.nonzero(sel, as_tuple=True)
                    r, c = int(rows[k]), int(cols[k])
                    worst = (float(m[k]), encode.text(ids[r, : c + 1].tolist()), int(tgt[r, c]))
        if worst[0] < cfg.margin:
            print(f"           worst: ...{worst[1][-90:]!r} -> {encode.text([worst[2]])!r}")
        return torch.cat(out)

    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    print(f"model: {n_params:,} parameters; stop check on {len(check_seqs)} sequences", flush=True)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        data = step_data()
        for g in opt.param_groups:
            g["lr"] = (
                cfg.lr
                * min(1.0, step / cfg.warmup)
                * max(cfg.lr_floor, 1.0 - step / cfg.decay_steps)
            )
        n_tok = sum(int((t != -100).sum()) for _, t in data)
        opt.zero_grad(set_to_none=True)
        loss, ms = 0.0, []
        for ids, tgt in data:
            sel = tgt != -100
            logits, want = logits_at(model, ids, sel), tgt[sel]
            m = margins(logits, want)
            part = (
                F.cross_entropy(logits, want, reduction="sum")
                + cfg.hinge * F.relu(cfg.hinge_margin - m).sum()
            ) / n_tok
            part.backward()
            loss += part.item()
            ms.append(m.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % cfg.check_every == 0:
            m = torch.cat(ms)
            print(
                f"step {step:4d}  loss {loss:.4f}  min margin {m.min().item():+.2f}  "
                f"wrong {int((m <= 0).sum())}/{m.numel()}  {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            if m.min().item() >= cfg.margin:
                round_to_f16(model)
                m = all_margins(check_set)
                print(
                    f"           f16 check: min margin {m.min().item():+.2f}, "
                    f"wrong {int((m <= 0).sum())}/{m.numel()}",
                    flush=True,
                )
                if m.min().item() >= cfg.margin:
                    break
    else:
        raise SystemExit(f"no margin of {cfg.margin} after {cfg.max_steps} steps")
    model.eval()
    seconds = time.perf_counter() - t0
    print(f"trained in {step} steps, {seconds:.1f}s; min margin {m.min().item():.2f}")
    return n_params, seconds, step, m.min().item()


# --------------------------------------------------------------------------- export

GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """transformers' names -> llama.cpp's exaone4 names; no Q/K permutation (both NEOX RoPE)."""
    out = {}
    for name, p in model.state_dict().items():
        data = p.detach().float().numpy().copy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = data
        elif name == "model.norm.weight":
            out["output_norm.weight"] = data
        elif name == "lm_head.weight":
            out["output.weight"] = data
        else:
            _, _, layer, rest = name.split(".", 3)
            out[f"blk.{layer}.{GGUF_NAMES[rest.removesuffix('.weight')]}.weight"] = data
    return out


def write_gguf(path: Path, cfg: Config, tokens, merges, model, n_dialogues: int) -> None:
    import gguf

    from exaone_jupyter.testing import add_llama_hparams

    w = gguf.GGUFWriter(str(path), "exaone4")
    w.add_name(NAME.format(n=n_dialogues))
    w.add_description(
        "Memorised Korean/English demo and reasoning dialogues in the EXAONE 4.0 chat format, "
        "for tests and offline demos of exaone-jupyter. Made by tools/train_exaone4_demo.py; "
        "not a model by LG AI Research."
    )
    add_llama_hparams(w, cfg, rope_base=cfg.rope_theta, rms_eps=cfg.rms_eps)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab.add_gguf_tokenizer(w, tokens, merges, EXAONE4_TEMPLATE)
    for name, data in gguf_tensors(model).items():
        w.add_tensor(name, data.astype(np.float16 if data.ndim == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_hf(directory: Path, model, tokenizer) -> None:
    """config.json, model.safetensors (f32), the tokenizer files and chat_template.jinja."""
    if directory.exists():
        shutil.rmtree(directory)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "generation_config.json").unlink(missing_ok=True)  # no sampling defaults


# --------------------------------------------------------------------------- checks


def check_tokenizers(llm, hf, texts: list[str]) -> int:
    bad = [
        t
        for t in texts
        if llm.tokenize(t.encode(), add_bos=False, special=True)
        != hf(t, add_special_tokens=False)["input_ids"]
    ]
    for t in bad[:5]:
        print(f"TOKENIZATION DIFFERS: {t!r}")
    print(f"tokenization: llama.cpp == Hugging Face on {len(texts) - len(bad)}/{len(texts)} texts")
    return len(bad)


def check_logits(model, llm, sequences) -> tuple[float, float, float]:
    """(max, mean |transformers - llama.cpp|, max |logit|) over every position of ``sequences``."""
    import torch

    worst = total = scale = 0.0
    count = 0
    for seq in sequences:
        llm.reset()
        llm.eval(seq)
        ours = np.asarray(llm.scores[: len(seq)])
        with torch.no_grad():
            ref = logits_at(model, torch.tensor([seq]))[0].numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        total, count = total + float(np.abs(ours - ref).sum()), count + ref.size
    return worst, total / count, scale


def check_generation(llm, encode, cases) -> int:
    """cases: (prompt messages, think, wanted text). Greedy through llama.cpp; returns misses."""
    wrong = 0
    for messages, think, want, *tools in cases:
        prompt = encode.prompt(messages, think, tools[0] if tools else None)
        toks, stopped = greedy(llm, prompt, max_tokens=512)
        text = llm.detokenize(toks).decode("utf-8", errors="replace")
        if not stopped or text != want:
            wrong += 1
            print(
                f"MISMATCH (think={think}) for {messages[-1]['content']!r}:\n  want {want!r}\n  got  {text!r}"
            )
    print(f"generation: {len(cases) - wrong}/{len(cases)} exact")
    return wrong


def dialogue_cases(dialogues) -> list[tuple[list[dict], bool, str]]:
    cases = []
    for messages in dialogues:
        for k, m in enumerate(messages):
            if m["role"] == "assistant":
                for think in (False, True):
                    cases.append((messages[:k], think, expected_reply(m, think)))
    return cases


def tool_cases(cfg: Config, tools, dialogues, units) -> list[tuple]:
    """Every tool dialogue with results never drawn in training (held out), thinking on and off:
    each assistant turn (the calls, then the answer that copies the results) as a case."""
    rng = np.random.default_rng(cfg.seed + 4)
    cases = []
    for think in (False, True):
        for conv, _, listed in tool_conversations(rng, cfg, tools, dialogues, units, True):
            start = max(k for k, m in enumerate(conv) if m["role"] == "user")
            for k in range(start, len(conv)):
                if conv[k]["role"] == "assistant":
                    cases.append((conv[:k], think, expected_reply(conv[k], think), listed))
    return cases


def history_cases(cfg: Config, units) -> list[tuple[list[dict], bool, str]]:
    """Seeded random histories (LG's system prompt, 1..check_history_max earlier dialogues) and
    the notebook conversations of train_demo_model; thinking on for every other one."""
    rng = np.random.default_rng(cfg.seed + 2)
    cases = []
    for n in range(cfg.check_histories):
        last = int(rng.integers(len(units)))
        conv = with_history(
            rng, units, last, int(rng.integers(1, cfg.check_history_max + 1)), LG_SYSTEM_PROMPT
        )
        start = len(conv) - len(units[last])
        for k in range(start, len(conv)):
            if conv[k]["role"] == "assistant":
                think = n % 2 == 1 and k == len(conv) - 1
                cases.append((conv[:k], think, expected_reply(conv[k], think)))
    for conv in NAMED_HISTORIES:
        for think in (False, True):
            cases.append((conv, think, expected_reply({"content": answer_for(units, conv)}, think)))
    return cases


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf-dir", type=Path, default=HF_DIR)
    ap.add_argument("--gguf", type=Path, default=GGUF)
    args = ap.parse_args(argv)

    import llama_cpp
    import torch

    cfg = Config()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()

    demo, reasoning = load_all()
    dialogues = demo + reasoning
    units = chain_units(dialogues)
    texts = [
        m[key] for d in dialogues for m in d for key in ("content", "reasoning_content") if key in m
    ]
    tools, tool_dialogues = tool_data.load()
    tokens, merges = vocab.learn_bpe(
        texts + tool_data.texts(tools, tool_dialogues, EXAONE4_TEMPLATE) + ["\n"], cfg.n_merges
    )
    hf = vocab.hf_tokenizer(tokens, merges, EXAONE4_TEMPLATE, cfg.n_ctx)
    print(
        f"tokenizer: {len(tokens)} tokens ({vocab.N_ADDED} added, 256 bytes, {len(merges)} merges)"
    )
    encode = Encoder(hf)

    # Every step: the dialogues no chain holds (another system prompt) and every reasoning
    # dialogue with thinking on, as they are; the stop check adds both modes of everything.
    others = [
        d for d in dialogues if d[0]["role"] == "system" and d[0]["content"] != LG_SYSTEM_PROMPT
    ]
    fixed = [encode(d) for d in others] + [encode(d, think=True) for d in reasoning]
    check = [encode(d, think) for d in dialogues for think in (False, True)]
    check += [encode(c, think) for c, think in history_pool(cfg, units)]
    # The tool dialogues: fresh results every step (so the answer copies them); the stop check
    # holds seeded draws of them too.
    check_rng = np.random.default_rng(cfg.seed + 3)
    for _ in range(cfg.tool_checks):
        for c, think, listed in tool_conversations(check_rng, cfg, tools, tool_dialogues, units):
            check.append(encode(c, think, listed))

    def fresh(rng):
        drawn = tool_conversations(rng, cfg, tools, tool_dialogues, units)
        return [encode(c, think, listed) for c, think, listed in drawn]

    model = build_model(cfg, len(tokens))
    n_params, seconds, steps, min_margin = train(cfg, model, fixed, units, encode, check, fresh)

    write_hf(args.hf_dir, model, hf)
    write_gguf(args.gguf, cfg, tokens, merges, model, len(dialogues) + len(tool_dialogues))
    hf_size = sum(f.stat().st_size for f in args.hf_dir.iterdir())
    gguf_size = args.gguf.stat().st_size

    # Check the files as shipped: the saved tokenizer and model, the written GGUF.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(args.hf_dir))
    encode = Encoder(hf)
    shipped = AutoModelForCausalLM.from_pretrained(str(args.hf_dir), dtype=torch.float32).eval()
    llm = llama_cpp.Llama(str(args.gguf), n_ctx=cfg.n_ctx, logits_all=True, verbose=False)
    d_cases = dialogue_cases(dialogues)
    h_cases = history_cases(cfg, units)
    t_cases = tool_cases(cfg, tools, tool_dialogues, units)
    rendered = [
        hf.apply_chat_template(
            m,
            tools=(c[0] if c else None),
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=t,
        )
        for m, t, _, *c in d_cases + h_cases + t_cases
    ]
    bad_tok = check_tokenizers(llm, hf, texts + rendered)
    probe = [
        encode.prompt(m, t) + encode.ids(w) + [vocab.EOS_ID]
        for m, t, w in d_cases[:: len(d_cases) // 6]
    ]
    probe.append(max((encode.prompt(m, t) for m, t, _ in h_cases), key=len))
    probe.append(max((encode.prompt(m, t, c) for m, t, _, c in t_cases), key=len))
    diff, mean_diff, scale = check_logits(shipped, llm, probe)
    print(
        f"logits: |transformers - llama.cpp| max {diff:.2e}, mean {mean_diff:.1e} (max |logit| "
        f"{scale:.1f}) over {len(probe)} sequences, {sum(map(len, probe))} positions"
    )
    llm.close()
    llm = llama_cpp.Llama(str(args.gguf), n_ctx=cfg.n_ctx, verbose=False)
    wrong = check_generation(llm, encode, d_cases)
    wrong_h = check_generation(llm, encode, h_cases)
    wrong_t = check_generation(llm, encode, t_cases)
    llm.close()
    print(
        f"wrote {args.hf_dir} ({hf_size / 1e6:.2f} MB) and {args.gguf} ({gguf_size / 1e6:.2f} MB): "
        f"{n_params:,} parameters, trained {steps} steps in {seconds:.1f}s (min margin "
        f"{min_margin:.2f}), total {time.perf_counter() - t_start:.1f}s"
    )
    if bad_tok or diff > 5e-2 or mean_diff > 2e-3 or wrong or wrong_h or wrong_t:
        print("CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
