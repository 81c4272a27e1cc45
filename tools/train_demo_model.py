"""Train ``exaone-demo``: a tiny EXAONE-format GGUF that really answers a fixed set of dialogues.

It is not EXAONE. It is a ~1.7M-parameter llama-architecture model that memorised the dialogues in
``exaone_jupyter/data/demo_dialogues.json`` (Korean and English, rendered through the EXAONE 3.0
chat template), so that the extension, its tests and its notebooks can show real, reproducible
answers offline in milliseconds. In a notebook every ``%%exaone`` cell continues one conversation,
so the model also learns to answer the last question whatever unrelated exchanges come before it
(history augmentation: random, seeded chains of the dialogues; see ``sample_chains``). The pipeline:

1. learn a byte-level BPE tokenizer on the dialogue texts, with EXAONE's special tokens in front;
2. write a vocab-only GGUF and let llama.cpp itself tokenize the rendered dialogues, so training
   sees exactly the token ids the runtime will feed (template markers are the only special tokens);
3. train a llama-architecture model in torch (RMSNorm, SwiGLU, RoPE with llama.cpp's adjacent-pair
   convention, grouped-query attention) on length-grouped batches with causal attention; every
   step sees the dialogues in two fresh random orders, cut into conversations of 1-6 (so each one
   follows 0-5 others; LG's system prompt or none), with cross-entropy plus a hinge on the margin,
   until every answer token is the greedy argmax by a margin, on the step's data and (f16 weights)
   on every dialogue as it is and a fixed pool of dialogues after histories;
4. export a GGUF (f16 matrices, f32 norms) with the template and EXAONE's token ids;
5. check it: torch vs llama.cpp logits, every answer regenerated exactly at temperature 0, and the
   same after seeded random histories of 1-4 other dialogues (plus the notebook cases in
   ``NAMED_HISTORIES``).

Run from the repository root (dev dependencies only; the package itself never imports torch)::

    pip install torch==2.13.0 tokenizers gguf numpy jinja2 llama-cpp-python==0.3.36
    python tools/train_demo_model.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template and token constants come from the package itself

from exaone_jupyter.chat.families import EXAONE3_TEMPLATE, LG_SYSTEM_PROMPT  # noqa: E402
from exaone_jupyter.testing import (  # noqa: E402
    EOS_ID,
    EXAONE_SPECIAL_TOKENS,
    PAD_ID,
    add_exaone_tokenizer,
    add_llama_hparams,
    bytes_to_unicode,
)

DATA = ROOT / "exaone_jupyter" / "data"
DIALOGUES = DATA / "demo_dialogues.json"
OUTPUT = DATA / "exaone-demo.gguf"
SYSTEM_ID, USER_ID, ASSISTANT_ID = 3, 4, 5


@dataclass(frozen=True)
class Config:
    """Everything that decides the result; the defaults make the shipped model."""

    seed: int = 1234
    threads: int = 2
    n_merges: int = (
        700  # BPE merges on top of 7 special + 256 byte tokens (fewer if the text runs out)
    )
    n_embd: int = 160
    n_layer: int = 6
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 320
    n_ctx: int = 2048  # what the GGUF declares; training rows are shorter
    rope_base: float = 10000.0
    rms_eps: float = 1e-5
    row_len: int = 1024  # the longest training sequence allowed
    batch_tokens: int = 4096  # padded tokens per forward pass (sequences grouped by length)
    # History augmentation: each step trains on the dialogues in fresh random orders, cut into
    # chains of 1..chain_max dialogues (so each one follows 0..chain_max-1 others), with LG's system
    # prompt with probability p_lg_system, else none. The loss is on every answer of a chain.
    chain_max: int = 6
    chains_per_step: int = 2  # random orders of all units per step
    p_lg_system: float = 0.75
    pool_per_unit: int = 2  # fixed (seeded) histories per dialogue that the stop rule also checks
    check_histories: int = 100  # seeded random histories of 1..check_history_max prior dialogues,
    check_history_max: int = 4  # ... with LG's system prompt, checked through llama.cpp
    lr: float = 3e-3
    warmup: int = 20
    # lr falls linearly from step 0 to lr_floor * lr at decay_steps, then stays there (fresh chains
    # every step make the gradient noisy; the last tokens reach the margin at a low lr).
    decay_steps: int = 250
    lr_floor: float = 0.1
    max_steps: int = 3000
    check_every: int = 10
    margin: float = 5.0  # stop when every answer token beats the runner-up logit by this much
    hinge: float = 1.0  # weight of the loss term max(0, hinge_margin - margin of the token)
    hinge_margin: float = 7.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# --------------------------------------------------------------------------- dialogues and template


def load_dialogues(path: Path = DIALOGUES) -> list[list[dict]]:
    dialogues = [d["messages"] for d in json.loads(path.read_text(encoding="utf-8"))]
    for messages in dialogues:
        assert messages[-1]["role"] == "assistant", messages
        for m in messages:
            # Content must never contain a marker: llama.cpp would turn it into a special token.
            assert (
                "[|" not in m["content"]
                and "[PAD]" not in m["content"]
                and "[BOS]" not in m["content"]
            )
    return dialogues


def template():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(EXAONE3_TEMPLATE)


def render(tpl, messages: list[dict], add_generation_prompt: bool) -> str:
    return tpl.render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="[BOS]",
        eos_token="[|endofturn|]",
    )


# --------------------------------------------------------------------------- history augmentation


def _system(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system is not None else []


def chain_units(dialogues: list[list[dict]]) -> list[list[dict]]:
    """The dialogues that may be chained: their turns without the system prompt, for those with
    LG's system prompt or none (the answers do not depend on which), each once.

    A unit is atomic: a two-turn dialogue keeps its follow-up right after the exchange it refers to.
    Dialogues with another system prompt ("Answer in Korean only.") are only trained as they are.
    """
    units: dict[str, list[dict]] = {}
    answers: dict[str, str] = {}
    for messages in dialogues:
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        if system not in (None, LG_SYSTEM_PROMPT):
            continue
        turns = [m for m in messages if m["role"] != "system"]
        units.setdefault(json.dumps(turns, ensure_ascii=False), turns)
        first = turns[0]["content"]
        assert answers.setdefault(first, turns[1]["content"]) == turns[1]["content"], (
            f"{first!r} has two answers, so it cannot follow arbitrary history"
        )
    return list(units.values())


def chain(system: str | None, parts: list[list[dict]]) -> list[dict]:
    return _system(system) + [m for part in parts for m in part]


def sample_chains(
    rng: np.random.Generator, units: list[list[dict]], cfg: Config
) -> list[list[dict]]:
    """Every unit once, in a random order, cut into conversations of 1..cfg.chain_max units."""
    order = rng.permutation(len(units))
    chains, i = [], 0
    while i < len(order):
        n = int(rng.integers(1, cfg.chain_max + 1))
        system = LG_SYSTEM_PROMPT if rng.random() < cfg.p_lg_system else None
        chains.append(chain(system, [units[j] for j in order[i : i + n]]))
        i += n
    return chains


def with_history(
    rng: np.random.Generator, units: list[list[dict]], last: int, n_history: int, system: str | None
) -> list[dict]:
    """Unit ``last`` after ``n_history`` other units (random, distinct), as one conversation."""
    others = [j for j in range(len(units)) if j != last]
    picked = rng.choice(len(others), size=n_history, replace=False)
    return chain(system, [units[others[j]] for j in picked] + [units[last]])


def history_pool(cfg: Config, units: list[list[dict]]) -> list[list[dict]]:
    """A fixed (seeded) set: every unit after 1..chain_max-1 others (LG's system prompt or none);
    the stop rule checks it too, with the f16-rounded weights."""
    rng = np.random.default_rng(cfg.seed + 1)
    pool = []
    for _ in range(cfg.pool_per_unit):
        for last in range(len(units)):
            system = LG_SYSTEM_PROMPT if rng.random() < cfg.p_lg_system else None
            pool.append(with_history(rng, units, last, int(rng.integers(1, cfg.chain_max)), system))
    return pool


def _turns(*texts: str) -> list[dict]:
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]


# Conversations seen in notebooks (every %%exaone cell continues the same one) that an earlier
# model got wrong: it answered the new question with an answer from the history. The last user
# message is the question; its answer is looked up in the dialogues.
NAMED_HISTORIES: list[list[dict]] = [
    _system(LG_SYSTEM_PROMPT)
    + _turns(
        "What is the capital of France?",
        "The capital of France is Paris.",
        "And of Japan?",
        "The capital of Japan is Tokyo.",
        "List the three primary colors of light.",
    ),
    _system(LG_SYSTEM_PROMPT)
    + _turns(
        "제 이름은 민수예요.",
        "반갑습니다, 민수 님!",
        "제 이름이 뭐라고 했죠?",
        "민수 님이라고 하셨어요.",
        "What is the capital of Korea?",
    ),
    # Follow-ups still need their own exchange, also after unrelated ones.
    _system(LG_SYSTEM_PROMPT)
    + _turns(
        "Hello!",
        "Hello! I am a tiny EXAONE demo model. Ask me one of the questions I was trained on.",
        "What is the capital of France?",
        "The capital of France is Paris.",
        "And of Japan?",
    ),
    _system(LG_SYSTEM_PROMPT)
    + _turns(
        "What is the capital of Korea?",
        "The capital of Korea is Seoul (서울).",
        "제 이름은 민수예요.",
        "반갑습니다, 민수 님!",
        "제 이름이 뭐라고 했죠?",
    ),
]


def answer_for(units: list[list[dict]], conversation: list[dict]) -> str:
    """The trained answer to the last user message of ``conversation``, given the turn before it."""
    question = conversation[-1]["content"]
    for turns in units:
        for k in range(1, len(turns), 2):
            # A follow-up's answer counts only after the exchange it follows.
            if turns[k - 1]["content"] == question and conversation[-k:-1] == turns[: k - 1]:
                return turns[k]["content"]
    raise KeyError(question)


# --------------------------------------------------------------------------- tokenizer


def learn_tokenizer(cfg: Config, dialogues: list[list[dict]]) -> tuple[list[str], list[str]]:
    """Byte-level BPE on the message texts. Returns (tokens, merges) in llama.cpp's GPT-2 spelling.

    The pre-tokenizer approximates llama.cpp's "exaone" one (digits split one by one, then GPT-2's
    regex); it only decides which merges are learnt, since the ids used for training come from
    llama.cpp's own tokenizer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=256 + cfg.n_merges,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [m["content"] for messages in dialogues for m in messages] + ["\n"]
    tok.train_from_iterator(texts, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    b2u = bytes_to_unicode()
    tokens = list(EXAONE_SPECIAL_TOKENS) + [b2u[b] for b in range(256)]
    seen = set(tokens)
    for merge in merges:
        left, right = merge.split(" ")
        assert left in seen and right in seen, merge
        tokens.append(left + right)
        seen.add(left + right)
    assert len(seen) == len(tokens), "duplicate token"
    return tokens, merges


# --------------------------------------------------------------------------- GGUF

GGUF_NAME = "exaone-demo: tiny demo model trained on {n} dialogues, not EXAONE"


def write_gguf(
    path: Path,
    cfg: Config,
    tokens: list[str],
    merges: list[str],
    n_dialogues: int,
    weights: dict[str, np.ndarray] | None,
) -> None:
    """A llama-architecture GGUF with EXAONE's tokenizer metadata; vocab-only when weights is None."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(GGUF_NAME.format(n=n_dialogues))
    w.add_description(
        "Memorised Korean/English demo dialogues in the EXAONE 3.0 chat format, for "
        "tests and offline demos of exaone-jupyter. Made by tools/train_demo_model.py; "
        "not a model by LG AI Research."
    )
    add_llama_hparams(w, cfg, rope_base=cfg.rope_base, rms_eps=cfg.rms_eps)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_exaone_tokenizer(w, tokens, merges, pre="exaone")
    w.add_chat_template(EXAONE3_TEMPLATE)
    for name, data in (weights or {}).items():
        # Matrices f16, norms f32 (as llama.cpp's converter writes them).
        w.add_tensor(name, data.astype(np.float16 if data.ndim == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class Encoder:
    """Renders conversations and tokenizes them with llama.cpp's own tokenizer (a vocab-only GGUF).

    Calling it returns (ids, is_answer) where is_answer[i] says token i is part of an assistant
    answer (its text and the closing [|endofturn|]), i.e. a token the model must predict.
    """

    def __init__(self, cfg, tokens, merges, n_dialogues, tpl):
        import llama_cpp

        self.tpl = tpl
        with tempfile.TemporaryDirectory() as tmp:
            vocab_path = Path(tmp) / "vocab.gguf"
            write_gguf(vocab_path, cfg, tokens, merges, n_dialogues, None)
            self.vocab = llama_cpp.Llama(str(vocab_path), vocab_only=True, verbose=False)

    def __call__(self, messages: list[dict]) -> tuple[list[int], list[bool]]:
        text = render(self.tpl, messages, add_generation_prompt=False)
        ids = self.vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        # Special tokens may only come from template markers: count them against the template.
        n_markers = sum(text.count(t) for t in EXAONE_SPECIAL_TOKENS)
        assert sum(1 for i in ids if i < len(EXAONE_SPECIAL_TOKENS)) == n_markers, text
        is_answer, inside = [], False
        for i in ids:
            is_answer.append(inside)
            if i == ASSISTANT_ID:
                inside = True
            elif i == EOS_ID:
                inside = False
        return ids, is_answer

    def text(self, ids: list[int]) -> str:
        return self.vocab.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def close(self) -> None:
        self.vocab.close()


# --------------------------------------------------------------------------- model (torch)


def build_model(cfg: Config, n_vocab: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_eps) * self.weight

    def rope_angles(T: int):
        # llama.cpp's NORM mode (what arch "llama" uses): rotate adjacent pairs (x[2i], x[2i+1]) by
        # pos * base^(-2i/d). Training in this convention means Q/K need no permutation on export.
        d = cfg.head_dim
        inv = cfg.rope_base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv  # (T, d/2)
        return ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

    def rope(x, cos_sin):
        cos, sin = cos_sin
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            hd = cfg.head_dim
            self.attn_norm = RMSNorm(cfg.n_embd)
            self.attn_q = nn.Linear(cfg.n_embd, cfg.n_head * hd, bias=False)
            self.attn_k = nn.Linear(cfg.n_embd, cfg.n_head_kv * hd, bias=False)
            self.attn_v = nn.Linear(cfg.n_embd, cfg.n_head_kv * hd, bias=False)
            self.attn_output = nn.Linear(cfg.n_head * hd, cfg.n_embd, bias=False)
            self.ffn_norm = RMSNorm(cfg.n_embd)
            self.ffn_gate = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
            self.ffn_up = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
            self.ffn_down = nn.Linear(cfg.n_ff, cfg.n_embd, bias=False)

        def forward(self, x, cos_sin):
            B, T, _ = x.shape
            hd, rep = cfg.head_dim, cfg.n_head // cfg.n_head_kv
            h = self.attn_norm(x)
            q = rope(self.attn_q(h).view(B, T, cfg.n_head, hd), cos_sin)
            k = rope(self.attn_k(h).view(B, T, cfg.n_head_kv, hd), cos_sin)
            v = self.attn_v(h).view(B, T, cfg.n_head_kv, hd)
            # Grouped-query attention as llama.cpp does it: query head h reads KV head h // rep.
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            x = x + self.attn_output(a.transpose(1, 2).reshape(B, T, cfg.n_head * hd))
            h = self.ffn_norm(x)
            return x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embd = nn.Embedding(n_vocab, cfg.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.output_norm = RMSNorm(cfg.n_embd)
            self.output = nn.Linear(cfg.n_embd, n_vocab, bias=False)
            for name, p in self.named_parameters():
                if p.ndim == 2:
                    std = (
                        0.02 / math.sqrt(2 * cfg.n_layer)
                        if name.endswith(("attn_output.weight", "ffn_down.weight"))
                        else 0.02
                    )
                    nn.init.normal_(p, std=std)

        def forward(self, ids, select=None):
            """ids (B, T): sequences that all start at position 0; padding only at the end.

            Logits (B, T, vocab), or only at the positions where ``select`` (B, T) is true (N, vocab).
            """
            x = self.token_embd(ids)
            cos_sin = rope_angles(ids.shape[1])
            for block in self.blocks:
                x = block(x, cos_sin)
            return self.output(self.output_norm(x if select is None else x[select]))

        def gguf_tensors(self) -> dict[str, np.ndarray]:
            """The weights under llama.cpp's names; nn.Linear's (out, in) is ggml's {in, out}."""
            t = lambda p: p.detach().float().numpy().copy()  # noqa: E731
            out = {"token_embd.weight": t(self.token_embd.weight)}
            for i, b in enumerate(self.blocks):
                for name in (
                    "attn_norm",
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    "ffn_norm",
                    "ffn_gate",
                    "ffn_up",
                    "ffn_down",
                ):
                    out[f"blk.{i}.{name}.weight"] = t(getattr(b, name).weight)
            out["output_norm.weight"] = t(self.output_norm.weight)
            out["output.weight"] = t(self.output.weight)
            return out

    return Model()


def batches(cfg: Config, sequences) -> list[tuple]:
    """Group the sequences by length into padded (ids, targets) batches of at most cfg.batch_tokens.

    Every sequence starts at position 0 and padding only trails it, so plain causal attention
    (torch's fused kernel) is exact and nothing is spent on attention across documents. Targets
    are -100 where there is no loss (prompts, padding).
    """
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    groups: list[list[int]] = [[]]
    for i in order:
        n = len(sequences[i][0])
        assert n <= cfg.row_len, f"sequence {i} has {n} tokens > row_len"
        if groups[-1] and (len(groups[-1]) + 1) * n > cfg.batch_tokens:
            groups.append([])
        groups[-1].append(i)
    out = []
    for group in groups:
        T = max(len(sequences[j][0]) for j in group)
        ids = torch.full((len(group), T), PAD_ID, dtype=torch.long)
        tgt = torch.full((len(group), T), -100, dtype=torch.long)
        for r, j in enumerate(group):
            seq, is_answer = sequences[j]
            ids[r, : len(seq)] = torch.tensor(seq)
            tgt[r, : len(seq) - 1] = torch.tensor(
                [t if a else -100 for t, a in zip(seq[1:], is_answer[1:], strict=False)]
            )
        out.append((ids, tgt))
    return out


def margins(logits, tgt):
    """target logit minus the best other logit, at every position that has a target."""
    import torch

    sel = tgt != -100
    lg, t = logits[sel], tgt[sel]
    right = lg.gather(1, t[:, None])[:, 0]
    other = lg.scatter(1, t[:, None], float("-inf")).max(1).values
    return right - other if sel.any() else torch.zeros(0)


def train(cfg: Config, n_vocab: int, dialogues, dialogues_seq, units, encode, pool_seq):
    """Full-batch AdamW; each step = fresh chains of all units (+ the dialogues no chain holds).

    Stops when every answer token of the step's data beats the runner-up by cfg.margin, confirmed
    with the weights rounded to f16 on the dialogues and on the fixed history pool.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg, n_vocab)
    n_params = sum(p.numel() for p in model.parameters())
    check_set = batches(cfg, dialogues_seq + pool_seq)

    # The dialogues that no chain holds (another system prompt) are in every step as they are.
    fixed = [
        s
        for s, d in zip(dialogues_seq, dialogues, strict=False)
        if d[0]["role"] == "system" and d[0]["content"] != LG_SYSTEM_PROMPT
    ]

    def step_data():
        chains = [c for _ in range(cfg.chains_per_step) for c in sample_chains(rng, units, cfg)]
        return batches(cfg, fixed + [encode(c) for c in chains])

    def all_margins(data):
        with torch.no_grad():
            return torch.cat(
                [margins(model(ids, tgt != -100), tgt[tgt != -100]) for ids, tgt in data]
            )

    data = step_data()
    n_tok = sum(int((t != -100).sum()) for _, t in data)
    print(
        f"model: {n_params:,} parameters; step data: {len(fixed)} dialogues + {cfg.chains_per_step}x "
        f"chains of {len(units)} units, about {sum(int((i != PAD_ID).sum()) for i, _ in data)} tokens "
        f"({n_tok} answer tokens) in {len(data)} batches; stop check also on {len(pool_seq)} fixed "
        f"histories ({sum(int((t != -100).sum()) for _, t in check_set)} answer tokens with the "
        f"dialogues)"
    )
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    t0 = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        if step > 1:
            data = step_data()
        for g in opt.param_groups:
            g["lr"] = (
                cfg.lr
                * min(1.0, step / cfg.warmup)
                * max(cfg.lr_floor, 1.0 - step / cfg.decay_steps)
            )
        n_tok = sum(int((t != -100).sum()) for _, t in data)
        opt.zero_grad(set_to_none=True)
        loss, ms, misses = 0.0, [], []
        for ids, tgt in data:  # one full-batch step, accumulated over the length groups
            sel = tgt != -100
            logits, want = model(ids, sel), tgt[sel]  # (N, vocab), (N,): answer positions only
            m = margins(logits, want)
            # Cross-entropy, plus a hinge on the margin itself: the stop rule asks for a margin,
            # and cross-entropy's pull fades out on tokens that are already right.
            part = (
                F.cross_entropy(logits, want, reduction="sum")
                + cfg.hinge * F.relu(cfg.hinge_margin - m).sum()
            ) / n_tok
            part.backward()
            loss += part.item()
            ms.append(m.detach())  # of the weights before this step's update
            if step % cfg.check_every == 0 and len(misses) < 3 and (ms[-1] <= 0).any():
                rows, cols = torch.nonzero(sel, as_tuple=True)
                k = int(torch.nonzero(ms[-1] <= 0)[0])
                r, c = int(rows[k]), int(cols[k])
                misses.append((ids[r, : c + 1].tolist(), int(tgt[r, c]), int(logits[k].argmax())))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % cfg.check_every == 0:
            m = torch.cat(ms)
            wrong = int((m <= 0).sum())
            print(
                f"step {step:4d}  loss {loss:.4f}  min margin {m.min().item():+.2f}  "
                f"wrong {wrong}/{m.numel()}  {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            for prefix, want, got in misses:  # where it goes wrong: the end of the context
                print(
                    f"           ...{encode.text(prefix)[-70:]!r}: want {encode.text([want])!r}, "
                    f"got {encode.text([got])!r}"
                )
            if m.min().item() >= cfg.margin:
                # Confirm with the final weights, as they will be exported (rounded to f16), on the
                # dialogues and the fixed histories.
                with torch.no_grad():
                    for p in model.parameters():
                        if p.ndim == 2:
                            p.copy_(p.half().float())
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
    seconds = time.perf_counter() - t0
    print(
        f"trained in {step} steps, {seconds:.1f}s; min margin {m.min().item():.2f} "
        f"(f16 weights, dialogues and fixed histories), loss {loss:.4f}"
    )
    return model, n_params, seconds, m.min().item(), step


# --------------------------------------------------------------------------- checks with llama.cpp


def check_logits(model, path: Path, sequences, n_ctx: int) -> tuple[float, float, float]:
    """(max, mean |torch - llama.cpp|, max |logit|) over all positions of a few sequences (torch
    weights already f16-rounded). llama.cpp's CPU f16 matmuls round the activations to f16 too, so
    single logits differ by up to ~1e-3 of their scale; an export bug (RoPE pairing, GQA order, a
    swapped tensor) shows up as differences of order 1 everywhere."""
    import llama_cpp
    import torch

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
    worst = scale = total = 0.0
    count = 0
    for seq, _ in sequences:
        llm.reset()
        llm.eval(seq)
        ours = np.asarray(llm.scores[: len(seq)])
        with torch.no_grad():
            ref = model(torch.tensor([seq]))[0].numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        total, count = total + float(np.abs(ours - ref).sum()), count + ref.size
    llm.close()
    return worst, total / count, scale


def greedy(llm, prompt_ids: list[int], max_tokens: int) -> tuple[list[int], bool]:
    """Greedy (temperature 0) continuation through llama-cpp-python; (tokens, stopped on eos)."""
    out = []
    for tok in llm.generate(prompt_ids, temp=0.0):
        if tok == llm.token_eos():
            return out, True
        out.append(tok)
        if len(out) >= max_tokens:
            return out, False
    return out, False


def check_answers(path: Path, dialogues, tpl, n_ctx: int) -> int:
    """Regenerate every assistant turn from its rendered prompt; returns how many came back exactly."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, verbose=False)
    exact = total = 0
    for messages in dialogues:
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = render(tpl, messages[:k], add_generation_prompt=True)
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            toks, stopped = greedy(llm, ids, max_tokens=512)
            text = llm.detokenize(toks).decode("utf-8", errors="replace")
            total += 1
            if stopped and text == m["content"]:
                exact += 1
            else:
                print(
                    f"MISMATCH for {messages[k - 1]['content']!r}:\n  want {m['content']!r}\n  got  {text!r}"
                )
    llm.close()
    print(f"answers: {exact}/{total} exact (greedy, stopped on [|endofturn|])")
    return exact if exact == total else -1


def random_histories(cfg: Config, units: list[list[dict]]) -> list[list[dict]]:
    """cfg.check_histories conversations (seeded, not the training chains): LG's system prompt, 1 to
    cfg.check_history_max other units, then a random unit; every answer of that last unit is checked."""
    rng = np.random.default_rng(cfg.seed + 2)
    return [
        with_history(
            rng,
            units,
            int(rng.integers(len(units))),
            int(rng.integers(1, cfg.check_history_max + 1)),
            LG_SYSTEM_PROMPT,
        )
        for _ in range(cfg.check_histories)
    ]


def check_histories(
    path: Path, units, conversations, named, tpl, n_ctx: int, max_prior: int
) -> int:
    """Regenerate the answers of the last unit of each conversation, and of each named history."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, verbose=False)
    cases = []  # (prompt messages, wanted answer)
    for conversation in conversations:
        n_last = next(len(u) for u in units if conversation[-len(u) :] == u)
        for k in range(len(conversation) - n_last, len(conversation)):
            if conversation[k]["role"] == "assistant":
                cases.append((conversation[:k], conversation[k]["content"]))
    cases += [(conversation, answer_for(units, conversation)) for conversation in named]
    exact, longest = 0, 0
    for prompt_messages, want in cases:
        ids = llm.tokenize(
            render(tpl, prompt_messages, add_generation_prompt=True).encode("utf-8"),
            add_bos=False,
            special=True,
        )
        longest = max(longest, len(ids))
        toks, stopped = greedy(llm, ids, max_tokens=512)
        text = llm.detokenize(toks).decode("utf-8", errors="replace")
        if stopped and text == want:
            exact += 1
        else:
            print(
                f"MISMATCH after {len(prompt_messages)} messages, for {prompt_messages[-1]['content']!r}:"
                f"\n  want {want!r}\n  got  {text!r}"
            )
    llm.close()
    print(
        f"histories: {exact}/{len(cases)} answers exact ({len(conversations)} random histories of 1-"
        f"{max_prior} earlier dialogues + {len(named)} named; longest prompt {longest} tokens)"
    )
    return exact if exact == len(cases) else -1


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUTPUT, help=f"GGUF to write (default {OUTPUT})")
    ap.add_argument("--dialogues", type=Path, default=DIALOGUES)
    args = ap.parse_args(argv)

    import torch

    cfg = Config()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()

    dialogues = load_dialogues(args.dialogues)
    units = chain_units(dialogues)
    tpl = template()
    tokens, merges = learn_tokenizer(cfg, dialogues)
    print(f"tokenizer: {len(tokens)} tokens ({len(merges)} merges)")
    encode = Encoder(cfg, tokens, merges, len(dialogues), tpl)
    sequences = [encode(messages) for messages in dialogues]
    lengths = [sum(a) for _, a in sequences]
    print(
        f"answer tokens per dialogue: min {min(lengths)}, max {max(lengths)}; {len(units)} units "
        f"for history chains"
    )
    pool = history_pool(cfg, units)
    pool_seq = [encode(c) for c in pool]

    model, n_params, seconds, min_margin, steps = train(
        cfg, len(tokens), dialogues, sequences, units, encode, pool_seq
    )
    encode.close()
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(args.out, cfg, tokens, merges, len(dialogues), model.gguf_tensors())
    size = args.out.stat().st_size

    # A few prompts of different kinds: Korean, English, two-turn, no system prompt, the longest,
    # and the longest of the fixed histories.
    probe = sorted(
        {
            0,
            1,
            3,
            len(sequences) - 1,
            max(range(len(sequences)), key=lambda i: lengths[i]),
            next(i for i, d in enumerate(dialogues) if len(d) > 4),
        }
    )
    longest_pool = max(pool_seq, key=lambda s: len(s[0]))
    diff, mean_diff, scale = check_logits(
        model, args.out, [sequences[i] for i in probe] + [longest_pool], cfg.n_ctx
    )
    print(
        f"logits: |torch - llama.cpp| max {diff:.2e}, mean {mean_diff:.1e} (max |logit| {scale:.1f}) "
        f"over {len(probe)} dialogues and a history of {len(longest_pool[0])} tokens"
    )
    exact = check_answers(args.out, dialogues, tpl, cfg.n_ctx)
    exact_h = check_histories(
        args.out,
        units,
        random_histories(cfg, units),
        NAMED_HISTORIES,
        tpl,
        cfg.n_ctx,
        cfg.check_history_max,
    )
    print(
        f"wrote {args.out} ({size / 1e6:.2f} MB, {n_params:,} parameters, trained {steps} steps in "
        f"{seconds:.1f}s, min answer margin {min_margin:.2f}, total {time.perf_counter() - t_start:.1f}s)"
    )
    if diff > 5e-2 or mean_diff > 2e-3 or exact < 0 or exact_h < 0:
        print("CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
