"""EXAONE 4.0's vocabulary layout on a small byte-level BPE: one tokenizer, written twice.

``exaone-4.0-demo`` must tokenize exactly as a real EXAONE 4.0 tokenizer would *lay out* its ids:
362 added tokens at LG's ids (``[PAD]`` 0, ``[BOS]`` 1, ``</think>`` 355, ``<think>`` 356, the role
markers 357-360, ``[|endofturn|]`` 361), then a small BPE learnt on the demo dialogues. The same
tokenizer is saved as a Hugging Face ``tokenizer.json`` (for transformers and vLLM) and as GGUF
tokenizer metadata (for llama.cpp, pre-tokenizer ``exaone4`` = GPT-2's regex), so both runtimes
turn any text into the same ids (the tests prove it).

What is LG's and what is a stand-in:

* LG's (from the published ``tokenizer_config.json`` facts): the ids and texts of ``[PAD]``,
  ``[BOS]``, ``[EOS]``, ``[UNK]``, ``[unused0..99]``, ``[extra_id_0..188]``, ``</think>``,
  ``<think>`` and the five chat markers; which ones are special (``<think>``/``</think>`` are
  added but *not* special, so they are matched in any text, also a user's).
* A stand-in: ids 293-354 hold LG's PII placeholders, of which only two names are known to us
  (``PI:URL``, ``PI:EMAIL``, in an order we guessed); the other 60 are called
  ``[unknown_pii_<id>]`` so every later id stays where LG has it.
* Ours: the BPE itself (bytes at 362-617, then the merges), learnt on the dialogue texts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

PAD, BOS, EOS_PLAIN, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
THINK, END_THINK = "<think>", "</think>"
SYSTEM, TOOL, ASSISTANT, USER, END_OF_TURN = (
    "[|system|]",
    "[|tool|]",
    "[|assistant|]",
    "[|user|]",
    "[|endofturn|]",
)
KNOWN_PII = ("PI:URL", "PI:EMAIL")
FIRST_PII_ID, END_THINK_ID = 293, 355


def added_tokens() -> list[tuple[str, bool]]:
    """EXAONE 4.0's 362 added tokens in id order, each with whether it is special."""
    tokens = [PAD, BOS, EOS_PLAIN, UNK]
    tokens += [f"[unused{i}]" for i in range(100)]
    tokens += [f"[extra_id_{i}]" for i in range(189)]
    assert len(tokens) == FIRST_PII_ID
    tokens += list(KNOWN_PII)
    tokens += [f"[unknown_pii_{i}]" for i in range(len(tokens), END_THINK_ID)]
    tokens += [END_THINK, THINK, SYSTEM, TOOL, ASSISTANT, USER, END_OF_TURN]
    assert len(tokens) == 362 and tokens.index(END_OF_TURN) == 361
    return [(t, t not in (THINK, END_THINK)) for t in tokens]


N_ADDED = 362
PAD_ID, BOS_ID, UNK_ID = 0, 1, 3
THINK_ID, ASSISTANT_ID, EOS_ID = 356, 359, 361


def bytes_to_unicode() -> dict[int, str]:
    from exaone_jupyter.testing import bytes_to_unicode as b2u

    return b2u()


def _digits(token: str) -> int:
    return sum(c.isascii() and c.isdigit() for c in token)


def learn_bpe(texts: Iterable[str], n_merges: int) -> tuple[list[str], list[str]]:
    """(tokens, merges): the added tokens, the 256 bytes, then merges learnt on ``texts``.

    Merges that would glue a newline to anything are dropped (with every merge built on them):
    EXAONE 4.0's template puts ``\\n\\n`` right before an answer, and a ``\\n\\n`` token at the end
    of a prompt would not be the ``\\n`` ``\\n`` that the same text tokenizes to inside a longer
    conversation. Without such merges, the prompt for every turn is a prefix of the whole
    conversation's ids, so training sees exactly the ids a runtime feeds.

    Merges that would make a token of two or more digits are dropped too: numbers stay one token
    a digit (GPT-2's regex still groups them, so llama.cpp and Hugging Face agree), and a tool's
    result the model never saw, ``6912``, is copied digit by digit rather than through pieces
    such as ``69`` + ``12`` that training may never have paired.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + n_merges,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer)
    learnt = json.loads(tok.to_str())["model"]["merges"]
    learnt = [m if isinstance(m, str) else " ".join(m) for m in learnt]

    b2u = bytes_to_unicode()
    newline = b2u[ord("\n")]
    tokens = [t for t, _ in added_tokens()] + [b2u[b] for b in range(256)]
    seen, merges = set(tokens[N_ADDED:]), []
    for merge in learnt:
        left, right = merge.split(" ")
        token = left + right
        if left not in seen or right not in seen or newline in token or _digits(token) > 1:
            continue
        merges.append(merge)
        tokens.append(token)
        seen.add(token)
    assert len(set(tokens)) == len(tokens), "duplicate token"
    return tokens, merges


def hf_tokenizer(tokens: list[str], merges: list[str], chat_template: str, n_ctx: int):
    """The Hugging Face tokenizer (``PreTrainedTokenizerFast``) for ``tokens``/``merges``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[tuple(m.split(" ")) for m in merges],
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = [AddedToken(t, special=s, normalized=False) for t, s in added_tokens()]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END_OF_TURN,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=chat_template,
        model_max_length=n_ctx,
        clean_up_tokenization_spaces=False,
    )


def add_gguf_tokenizer(writer, tokens: list[str], merges: list[str], chat_template: str) -> None:
    """The same tokenizer as GGUF metadata, typed as llama.cpp's converter types LG's tokens:
    special added tokens CONTROL, ``<think>``/``</think>`` USER_DEFINED, the BPE NORMAL."""
    import gguf

    special = dict(added_tokens())
    types = [
        (gguf.TokenType.CONTROL if special[t] else gguf.TokenType.USER_DEFINED)
        if i < N_ADDED
        else gguf.TokenType.NORMAL
        for i, t in enumerate(tokens)
    ]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("exaone4")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template)


def save_hf(tokenizer, directory: Path) -> None:
    tokenizer.save_pretrained(str(directory))
