"""A GGUF's tokenizer rebuilt as a Hugging Face tokenizer, from the GGUF's own metadata.

The judge for the template and tokenizer tests (``test_hf_judge.py``): Hugging Face's
``tokenizers`` and ``transformers`` are an implementation independent of llama.cpp and of this
package, and ``apply_chat_template`` is the reference the EXAONE templates are written for. Only
what the GGUF says is used (tokens, merges, token types, bos/eos/pad ids, chat template); nothing
is downloaded.

The twin is a byte-level BPE with the pre-tokenizer ``tools/train_demo_model.py`` trains with
(digits one by one, then GPT-2's regex), which is what llama.cpp's ``exaone`` pre-tokenizer does.
Control tokens are added as special tokens and user-defined ones as plain added tokens, as
llama.cpp's converter types LG's tokens (special added tokens -> CONTROL, the others ->
USER_DEFINED).
"""

from __future__ import annotations

from pathlib import Path

# What every tokenizer judge tokenizes on both sides: scripts, digits, emoji, whitespace, tags.
SAMPLE_TEXTS = {
    "korean": "한국의 수도는 어디인가요? 서울입니다. 감사합니다!",
    "english": "The quick brown fox jumps over the lazy dog. It's they're I'M we'll",
    "code": 'def f(x):\n    return {"a": x**2}  # 제곱\n\tprint(f"{x!r}")\n',
    "digits": "1234567 3.14 -0.5 2026년 11월 29일, 10,000원, ０１２",
    "emoji": "🙂👍🏽 emoji 😀 👨‍👩‍👧 ❤️",
    "mixed": "EXAONE는 LG AI Research의 모델입니다 (7.8B). Ask: 한국의 수도?",
    "whitespace": "  leading and trailing  \n\n\t tabs\r\n x  y   z \u00a0nbsp\n\n\n",
    "think-tags": "a <think>\nwhy</think> b",
    "empty": "",
}

# gguf.TokenType's values (gguf-py/gguf/constants.py)
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise KeyError(f"the GGUF has no {key}")
    return field.contents()


def hf_twin(path: str | Path):
    """A ``transformers.PreTrainedTokenizerFast`` with the GGUF's vocabulary and chat template."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(path))
    model, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre")
    if (model, pre) != ("gpt2", "exaone"):
        raise ValueError(f"only the gpt2 model with the exaone pre-tokenizer, not {model}/{pre}")
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    types: list[int] = _field(reader, "tokenizer.ggml.token_type")
    merges: list[str] = _field(reader, "tokenizer.ggml.merges")
    unknown = set(types) - {NORMAL, CONTROL, USER_DEFINED}
    if unknown:
        raise ValueError(f"token types {sorted(unknown)} have no Hugging Face twin here")

    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[tuple(m.split(" ")) for m in merges],
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Added tokens keep their ids (they are in the vocabulary already).
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, y in zip(tokens, types, strict=True)
            if y == CONTROL
        ]
    )
    tok.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, y in zip(tokens, types, strict=True)
            if y == USER_DEFINED
        ]
    )

    def special(key: str) -> str | None:
        field = reader.fields.get(key)
        return tokens[int(field.contents())] if field is not None else None

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special("tokenizer.ggml.bos_token_id"),
        eos_token=special("tokenizer.ggml.eos_token_id"),
        pad_token=special("tokenizer.ggml.padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )
