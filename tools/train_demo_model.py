"""Train ``exaone-demo``: a tiny EXAONE-format GGUF that really answers a fixed set of dialogues.

It is not EXAONE. It is a ~0.8M-parameter llama-architecture model that memorised the dialogues in
``exaone_jupyter/data/demo_dialogues.json`` (Korean and English, rendered through the EXAONE 3.0
chat template), so that the extension, its tests and its notebooks can show real, reproducible
answers offline in milliseconds. The pipeline:

1. learn a byte-level BPE tokenizer on the dialogue texts, with EXAONE's special tokens in front;
2. write a vocab-only GGUF and let llama.cpp itself tokenize the rendered dialogues, so training
   sees exactly the token ids the runtime will feed (template markers are the only special tokens);
3. train a llama-architecture model in torch (RMSNorm, SwiGLU, RoPE with llama.cpp's adjacent-pair
   convention, grouped-query attention), packing the dialogues into rows with a block-diagonal mask,
   until every answer token is the greedy argmax by a margin;
4. export a GGUF (f16 matrices, f32 norms) with the template and EXAONE's token ids;
5. check it: torch vs llama.cpp logits, and every answer regenerated exactly at temperature 0.

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

from exaone_jupyter.chat.families import EXAONE3_TEMPLATE  # noqa: E402
from exaone_jupyter.testing import (  # noqa: E402
    BOS_ID, EOS_ID, EXAONE_SPECIAL_TOKENS, PAD_ID, bytes_to_unicode,
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
    n_merges: int = 700  # BPE merges on top of 7 special + 256 byte tokens (fewer if the text runs out)
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 256
    n_ctx: int = 2048  # what the GGUF declares; training rows are much shorter
    rope_base: float = 10000.0
    rms_eps: float = 1e-5
    row_len: int = 512  # packed training row length
    lr: float = 3e-3
    warmup: int = 20
    max_steps: int = 3000
    check_every: int = 10
    margin: float = 5.0  # stop when every answer token beats the runner-up logit by this much

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
            assert "[|" not in m["content"] and "[PAD]" not in m["content"] and "[BOS]" not in m["content"]
    return dialogues


def template():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(EXAONE3_TEMPLATE)


def render(tpl, messages: list[dict], add_generation_prompt: bool) -> str:
    return tpl.render(messages=messages, add_generation_prompt=add_generation_prompt,
                      bos_token="[BOS]", eos_token="[|endofturn|]")


# --------------------------------------------------------------------------- tokenizer

def learn_tokenizer(cfg: Config, dialogues: list[list[dict]]) -> tuple[list[str], list[str]]:
    """Byte-level BPE on the message texts. Returns (tokens, merges) in llama.cpp's GPT-2 spelling.

    The pre-tokenizer approximates llama.cpp's "exaone" one (digits split one by one, then GPT-2's
    regex); it only decides which merges are learnt, since the ids used for training come from
    llama.cpp's own tokenizer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    trainer = trainers.BpeTrainer(vocab_size=256 + cfg.n_merges, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
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


def write_gguf(path: Path, cfg: Config, tokens: list[str], merges: list[str], n_dialogues: int,
               weights: dict[str, np.ndarray] | None) -> None:
    """A llama-architecture GGUF with EXAONE's tokenizer metadata; vocab-only when weights is None."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(GGUF_NAME.format(n=n_dialogues))
    w.add_description("Memorised Korean/English demo dialogues in the EXAONE 3.0 chat format, for "
                      "tests and offline demos of exaone-jupyter. Made by tools/train_demo_model.py; "
                      "not a model by LG AI Research.")
    w.add_context_length(cfg.n_ctx)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("exaone")
    w.add_token_list(tokens)
    n_special = len(EXAONE_SPECIAL_TOKENS)
    w.add_token_types([gguf.TokenType.CONTROL] * n_special
                      + [gguf.TokenType.NORMAL] * (len(tokens) - n_special))
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(EXAONE3_TEMPLATE)
    for name, data in (weights or {}).items():
        # Matrices f16, norms f32 (as llama.cpp's converter writes them).
        w.add_tensor(name, data.astype(np.float16 if data.ndim == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenize_dialogues(cfg, tokens, merges, dialogues, tpl):
    """Render every dialogue and tokenize it with llama.cpp; mark the tokens the loss is on.

    Returns a list of (ids, is_answer) where is_answer[i] says token i is part of an assistant
    answer (its text and the closing [|endofturn|]), i.e. a token the model must predict.
    """
    import llama_cpp

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path = Path(tmp) / "vocab.gguf"
        write_gguf(vocab_path, cfg, tokens, merges, len(dialogues), None)
        vocab = llama_cpp.Llama(str(vocab_path), vocab_only=True, verbose=False)
        out = []
        for messages in dialogues:
            text = render(tpl, messages, add_generation_prompt=False)
            ids = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
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
            out.append((ids, is_answer))
        vocab.close()
    return out


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

    def rope(x, pos):
        # llama.cpp's NORM mode (what arch "llama" uses): rotate adjacent pairs (x[2i], x[2i+1]) by
        # pos * base^(-2i/d). Training in this convention means Q/K need no permutation on export.
        d = x.shape[-1]
        inv = cfg.rope_base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        ang = pos[..., None].float() * inv  # (B, T, d/2)
        cos, sin = ang.cos()[:, :, None, :], ang.sin()[:, :, None, :]
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

        def forward(self, x, pos, mask):
            B, T, _ = x.shape
            hd, rep = cfg.head_dim, cfg.n_head // cfg.n_head_kv
            h = self.attn_norm(x)
            q = rope(self.attn_q(h).view(B, T, cfg.n_head, hd), pos)
            k = rope(self.attn_k(h).view(B, T, cfg.n_head_kv, hd), pos)
            v = self.attn_v(h).view(B, T, cfg.n_head_kv, hd)
            # Grouped-query attention as llama.cpp does it: query head h reads KV head h // rep.
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=mask)
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
                    std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(
                        ("attn_output.weight", "ffn_down.weight")) else 0.02
                    nn.init.normal_(p, std=std)

        def forward(self, ids, pos, mask):
            x = self.token_embd(ids)
            for block in self.blocks:
                x = block(x, pos, mask)
            return self.output(self.output_norm(x))

        def gguf_tensors(self) -> dict[str, np.ndarray]:
            """The weights under llama.cpp's names; nn.Linear's (out, in) is ggml's {in, out}."""
            t = lambda p: p.detach().float().numpy().copy()  # noqa: E731
            out = {"token_embd.weight": t(self.token_embd.weight)}
            for i, b in enumerate(self.blocks):
                for name in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                             "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"):
                    out[f"blk.{i}.{name}.weight"] = t(getattr(b, name).weight)
            out["output_norm.weight"] = t(self.output_norm.weight)
            out["output.weight"] = t(self.output.weight)
            return out

    return Model()


def pack(cfg: Config, sequences):
    """First-fit-decreasing packing into rows of cfg.row_len, no padding inside documents.

    Each row carries token ids, per-document positions (RoPE restarts at 0), the target of each
    position (-100 where there is no loss) and a block-diagonal causal mask.
    """
    import torch

    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    rows: list[list[int]] = []
    for i in order:
        n = len(sequences[i][0])
        assert n <= cfg.row_len, f"dialogue {i} has {n} tokens > row_len"
        for row in rows:
            if sum(len(sequences[j][0]) for j in row) + n <= cfg.row_len:
                row.append(i)
                break
        else:
            rows.append([i])
    T = max(sum(len(sequences[j][0]) for j in row) for row in rows)
    ids = torch.full((len(rows), T), PAD_ID, dtype=torch.long)
    pos = torch.zeros((len(rows), T), dtype=torch.long)
    tgt = torch.full((len(rows), T), -100, dtype=torch.long)
    doc = torch.full((len(rows), T), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for j in row:
            seq, is_answer = sequences[j]
            n = len(seq)
            ids[r, at:at + n] = torch.tensor(seq)
            pos[r, at:at + n] = torch.arange(n)
            doc[r, at:at + n] = j
            for k in range(n - 1):
                if is_answer[k + 1]:
                    tgt[r, at + k] = seq[k + 1]
            at += n
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    mask = (doc[:, :, None] == doc[:, None, :]) & causal
    mask |= torch.eye(T, dtype=torch.bool)  # padding rows attend to themselves (no NaNs)
    return ids, pos, tgt, mask[:, None]


def margins(logits, tgt):
    """target logit minus the best other logit, at every position that has a target."""
    import torch

    sel = tgt != -100
    lg, t = logits[sel], tgt[sel]
    right = lg.gather(1, t[:, None])[:, 0]
    other = lg.scatter(1, t[:, None], float("-inf")).max(1).values
    return right - other if sel.any() else torch.zeros(0)


def train(cfg: Config, n_vocab: int, sequences):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, n_vocab)
    ids, pos, tgt, mask = pack(cfg, sequences)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters; data: {len(sequences)} dialogues, "
          f"{int((ids != PAD_ID).sum())} tokens ({int((tgt != -100).sum())} answer tokens) "
          f"packed in {ids.shape[0]} rows of {ids.shape[1]}")
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    t0 = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, step / cfg.warmup)
        logits = model(ids, pos, mask)
        loss = F.cross_entropy(logits.view(-1, n_vocab), tgt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % cfg.check_every == 0:
            with torch.no_grad():
                m = margins(logits.detach(), tgt)  # logits of the weights before this step's update
            wrong = int((m <= 0).sum())
            print(f"step {step:4d}  loss {loss.item():.4f}  min margin {m.min().item():+.2f}  "
                  f"wrong {wrong}/{m.numel()}  {time.perf_counter() - t0:.1f}s", flush=True)
            if m.min().item() >= cfg.margin:
                # Confirm with the final weights, as they will be exported (rounded to f16).
                with torch.no_grad():
                    for p in model.parameters():
                        if p.ndim == 2:
                            p.copy_(p.half().float())
                    m = margins(model(ids, pos, mask), tgt)
                if m.min().item() >= cfg.margin:
                    break
    else:
        raise SystemExit(f"no margin of {cfg.margin} after {cfg.max_steps} steps")
    seconds = time.perf_counter() - t0
    print(f"trained in {step} steps, {seconds:.1f}s; min margin {m.min().item():.2f} "
          f"(f16 weights), loss {loss.item():.4f}")
    return model, n_params, seconds, m.min().item()


# --------------------------------------------------------------------------- checks with llama.cpp

def check_logits(model, path: Path, sequences, n_ctx: int) -> float:
    """Max |torch - llama.cpp| over all positions of a few dialogues (torch weights already f16-rounded)."""
    import llama_cpp
    import torch

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
    worst = 0.0
    for seq, _ in sequences:
        llm.reset()
        llm.eval(seq)
        ours = np.asarray(llm.scores[:len(seq)])
        with torch.no_grad():
            ids = torch.tensor([seq])
            T = len(seq)
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
            ref = model(ids, torch.arange(T)[None], mask)[0].numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
    llm.close()
    return worst


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
                print(f"MISMATCH for {messages[k - 1]['content']!r}:\n  want {m['content']!r}\n  got  {text!r}")
    llm.close()
    print(f"answers: {exact}/{total} exact (greedy, stopped on [|endofturn|])")
    return exact if exact == total else -1


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
    tpl = template()
    tokens, merges = learn_tokenizer(cfg, dialogues)
    print(f"tokenizer: {len(tokens)} tokens ({len(merges)} merges)")
    sequences = tokenize_dialogues(cfg, tokens, merges, dialogues, tpl)
    lengths = [sum(a) for _, a in sequences]
    print(f"answer tokens per dialogue: min {min(lengths)}, max {max(lengths)}")

    model, n_params, seconds, min_margin = train(cfg, len(tokens), sequences)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(args.out, cfg, tokens, merges, len(dialogues), model.gguf_tensors())
    size = args.out.stat().st_size

    # A few prompts of different kinds: Korean, English, two-turn, no system prompt, the longest.
    probe = sorted({0, 1, 3, len(sequences) - 1, max(range(len(sequences)), key=lambda i: lengths[i]),
                    next(i for i, d in enumerate(dialogues) if len(d) > 4)})
    diff = check_logits(model, args.out, [sequences[i] for i in probe], cfg.n_ctx)
    print(f"logits: max |torch - llama.cpp| = {diff:.2e} over {len(probe)} dialogues")
    exact = check_answers(args.out, dialogues, tpl, cfg.n_ctx)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {n_params:,} parameters, trained {seconds:.1f}s, "
          f"min answer margin {min_margin:.2f}, total {time.perf_counter() - t_start:.1f}s)")
    if diff > 1e-2 or exact < 0:
        print("CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
