"""Random-weight GGUF models in EXAONE's format, for tests, benchmarks and the GPU check.

They load and run in llama.cpp like a real EXAONE GGUF (the same tokenizer markers, chat template
and tensor layout) but answer with noise: use them to test mechanics and measure speed, and the
trained ``exaone-demo`` model to test answers. Needs only numpy and the ``gguf`` package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .chat.families import EXAONE3_TEMPLATE

if TYPE_CHECKING:
    import gguf

EXAONE_SPECIAL_TOKENS = (
    "[PAD]",
    "[BOS]",
    "[|endofturn|]",
    "[|system|]",
    "[|user|]",
    "[|assistant|]",
    "[|tool|]",
)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, which llama.cpp's BPE vocabularies are written in."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=False))


def add_exaone_tokenizer(
    writer,
    tokens: list[str],
    merges: list[str],
    *,
    pre: str = "exaone",
    user_defined: Sequence[str] = (),
) -> None:
    """EXAONE's tokenizer metadata: a GPT-2 style BPE whose first tokens are the control markers.

    ``tokens`` starts with EXAONE_SPECIAL_TOKENS (written as CONTROL tokens, so llama.cpp turns the
    markers into single tokens and never prints them); ``merges`` must not be empty. Tokens in
    ``user_defined`` are typed USER_DEFINED, as llama.cpp's converter types EXAONE 4.0's added
    tokens that are not special (``<think>``, ``</think>``): matched in any text.
    """
    import gguf

    n_special = len(EXAONE_SPECIAL_TOKENS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL] * n_special
        + [
            gguf.TokenType.USER_DEFINED if t in user_defined else gguf.TokenType.NORMAL
            for t in tokens[n_special:]
        ]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def add_llama_hparams(writer, shape, *, rope_base: float = 10000.0, rms_eps: float = 1e-5) -> None:
    """The llama architecture's hyperparameters for ``shape`` (anything with n_ctx, n_embd,
    n_layer, n_ff, n_head, n_head_kv and head_dim: a TinyShape, the demo trainer's Config)."""
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(rope_base)
    writer.add_layer_norm_rms_eps(rms_eps)


@dataclass(frozen=True)
class TinyShape:
    """The size of a generated model; the defaults make a ~100 KB model that loads in milliseconds."""

    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_layer: int = 2
    n_ctx: int = 512

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# EXAONE-4.0-1.2B's layout (its config.json), for benchmarks where the model's size matters.
EXAONE_4_1_2B = TinyShape(n_embd=2048, n_head=32, n_head_kv=8, n_ff=4096, n_layer=30, n_ctx=4096)


def write_exaone4_1_2b_shape(
    path: str | Path, *, n_layer: int = 30, dtype: str = "q8_0", **options: Any
) -> Path:
    """A random-weight GGUF of EXAONE-4.0-1.2B's layout and real vocabulary size (1.49 B
    parameters at 30 layers; Q8_0 is 1.48 GiB): the model the GPU benchmarks run."""
    shape = replace(EXAONE_4_1_2B, n_layer=n_layer)
    return write_random_gguf(
        path, shape=shape, arch="exaone4", pre="exaone4", n_vocab=102_400, dtype=dtype, **options
    )


# A ~75M-parameter exaone4 model (12 layers, width 768): big enough that a prompt costs what it
# costs a real model per layer, small enough to write in a second.
SHAPE_75M = TinyShape(n_embd=768, n_head=12, n_head_kv=4, n_ff=2048, n_layer=12, n_ctx=4096)


def benchmark_model(name: str, folder: Path, path: Path | None = None) -> Path:
    """A benchmark's random-weight model: ``"1.2B"`` (EXAONE-4.0-1.2B's shape, Q8_0; ``path``
    reused when it exists, else written there or in ``folder``) or ``"75M"`` (f16)."""
    if name == "1.2B":
        path = path or folder / "exaone4-1.2b-shape.gguf"
        return path if path.exists() else write_exaone4_1_2b_shape(path)
    return write_random_gguf(folder / "75m.gguf", shape=SHAPE_75M, dtype="f16", arch="exaone4")


def write_random_gguf(
    path: str | Path,
    *,
    shape: TinyShape = TinyShape(),
    arch: str = "llama",
    pre: str = "exaone",
    template: str | None = EXAONE3_TEMPLATE,
    tokenizer: bool = True,
    dtype: str = "f32",
    name: str = "tiny random EXAONE-format test model (not EXAONE)",
    seed: int = 0,
    quiet_control_tokens: bool = True,
    favour_token: int | None = None,
    favour_text: str | None = None,
    n_vocab: int | None = None,
    logit_scale: float = 1.0,
    user_defined: Sequence[str] = (),
) -> Path:
    """Write a loadable random-weight GGUF and return its path.

    ``dtype`` is ``f32``, ``f16`` or ``q8_0`` (for realistic bytes per token). With
    ``quiet_control_tokens`` the output rows of the special tokens are zero, so greedy decoding
    never picks ``[|endofturn|]`` and a benchmark can ask for thousands of tokens.

    Two options make greedy (temperature 0) output predictable, for tests:
    ``favour_token`` is picked after every token (e.g. ``EOS_ID``: every reply stops at once);
    ``favour_text`` is written over and over, one byte token at a time, after any prompt that
    does not end inside it (e.g. ``"한국"``: six byte tokens, two syllables). Its bytes must all
    differ. The transformer blocks then add nothing, so the output depends only on the last token.

    ``arch`` is ``llama`` (EXAONE 3.x as the catalog's GGUF has it), ``exaone`` or ``exaone4``
    (EXAONE 4.0's layout: q/k norms, post-attention and post-feed-forward norms, no pre-norms).
    ``n_vocab`` pads the vocabulary with tokens no merge reaches (three ASCII letters each), e.g.
    102,400 for EXAONE's real size, where sampling costs what it costs on a real model.
    ``logit_scale`` multiplies the output layer: random weights give nearly flat next-token
    distributions; a scale of 10-20 spreads the logits as a trained model's are.
    ``user_defined`` adds tokens typed USER_DEFINED (e.g. ``("<think>", "</think>")``, as EXAONE
    4.0's GGUFs have them), after the merged ones.
    """
    cycle = _favour_text_tokens(favour_token, favour_text)
    import gguf

    path = Path(path)
    tokens, merges = _vocabulary(user_defined, n_vocab)
    n_vocab = len(tokens)
    if arch == "exaone4" and shape.n_head * shape.head_dim != shape.n_embd:
        raise ValueError("exaone4 needs n_head * head_dim == n_embd")

    writer = gguf.GGUFWriter(str(path), arch)
    _add_model_metadata(writer, shape, arch=arch, name=name, n_vocab=n_vocab, dtype=dtype)
    if tokenizer:
        add_exaone_tokenizer(writer, tokens, merges, pre=pre, user_defined=user_defined)
    if template is not None:
        writer.add_chat_template(template)

    tensors = _TensorWriter(writer, dtype, seed)
    embd = tensors.random(n_vocab, shape.n_embd)
    _steer_embeddings(embd, favour_token, cycle)
    tensors.add("token_embd.weight", embd)
    for layer in range(shape.n_layer):
        _add_block(tensors, layer, shape, arch=arch, quiet=bool(cycle))
    tensors.add("output_norm.weight", np.ones(shape.n_embd, np.float32))
    output = tensors.random(n_vocab, shape.n_embd)
    if logit_scale != 1.0:
        output *= np.float32(logit_scale)
    if quiet_control_tokens:
        output[: len(EXAONE_SPECIAL_TOKENS)] = 0.0
    _steer_output(output, embd, favour_token, cycle)
    tensors.add("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _favour_text_tokens(favour_token: int | None, favour_text: str | None) -> list[int]:
    """The byte tokens of ``favour_text``, in order: the cycle greedy decoding is to write.

    Empty without ``favour_text``. Refuses what cannot be steered: a byte that came twice would
    need two successors, and a favoured token and a favoured text would compete for one row.
    """
    if favour_token is not None and favour_text is not None:
        raise ValueError("give favour_token or favour_text, not both")
    text_bytes = list(favour_text.encode("utf-8")) if favour_text is not None else []
    if len(set(text_bytes)) != len(text_bytes):
        raise ValueError(f"the bytes of favour_text {favour_text!r} must all differ")
    return [len(EXAONE_SPECIAL_TOKENS) + b for b in text_bytes]


def _vocabulary(user_defined: Sequence[str], n_vocab: int | None) -> tuple[list[str], list[str]]:
    """(tokens, merges) of a small BPE in EXAONE's format.

    The control markers come first, then one token per byte (byte ``b`` is token
    ``len(EXAONE_SPECIAL_TOKENS) + b``), the merged pairs, ``user_defined``, and filler up to
    ``n_vocab`` tokens when it is given.
    """
    b2u = bytes_to_unicode()
    tokens = list(EXAONE_SPECIAL_TOKENS) + [b2u[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n"]  # llama.cpp rejects a BPE vocab without merges
    tokens += [merge.replace(" ", "") for merge in merges] + list(user_defined)
    if n_vocab is not None:
        tokens += _filler_tokens(n_vocab - len(tokens))
    return tokens, merges


def _add_model_metadata(
    writer: gguf.GGUFWriter, shape: TinyShape, *, arch: str, name: str, n_vocab: int, dtype: str
) -> None:
    """The name, hyperparameters, vocabulary size and file type: what llama.cpp sizes a model by."""
    import gguf

    writer.add_name(name)
    add_llama_hparams(writer, shape)
    if arch == "exaone4":
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_vocab_size(n_vocab)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    writer.add_file_type(file_type)


class _TensorWriter:
    """Adds a model's tensors in the file's dtype, drawing the random ones from one seeded stream.

    The draws come in the order the tensors are added, so a seed gives the same model every time.
    """

    def __init__(self, writer: gguf.GGUFWriter, dtype: str, seed: int) -> None:
        self._writer = writer
        self._dtype = dtype
        self._rng = np.random.default_rng(seed)

    def random(self, rows: int, cols: int) -> np.ndarray:
        """The stream's next matrix of small weights (standard deviation 0.02)."""
        return self._rng.standard_normal((rows, cols), dtype=np.float32) * 0.02

    def add(self, name: str, data: np.ndarray) -> None:
        """Add ``data`` as ``name``: matrices in the file's dtype, vectors (norms) in f32.

        A ``q8_0`` file quantizes the matrices whose rows split into Q8_0's blocks of 32 and
        keeps the others in f16.
        """
        import gguf

        if data.ndim == 2 and self._dtype == "q8_0" and data.shape[1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            self._writer.add_tensor(
                name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        elif data.ndim == 2 and self._dtype in ("f16", "q8_0"):
            self._writer.add_tensor(name, data.astype(np.float16))
        else:  # norms stay f32, as llama.cpp's converter writes them
            self._writer.add_tensor(name, data)


def _add_block(tensors: _TensorWriter, i: int, shape: TinyShape, *, arch: str, quiet: bool) -> None:
    """Layer ``i``'s tensors, named as llama.cpp names them.

    Llama and EXAONE 3 normalize before attention and before the feed-forward; EXAONE 4.0
    normalizes q and k, and after attention and after the feed-forward. A ``quiet`` block adds
    nothing to the residual stream (its two output projections are zero), so the model's output
    depends only on the last token. Those projections are drawn all the same, so that the other
    weights a seed gives do not depend on ``quiet``.
    """
    hd, n_embd = shape.head_dim, shape.n_embd
    pre_norms = arch != "exaone4"
    if pre_norms:
        tensors.add(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
    tensors.add(f"blk.{i}.attn_q.weight", tensors.random(shape.n_head * hd, n_embd))
    tensors.add(f"blk.{i}.attn_k.weight", tensors.random(shape.n_head_kv * hd, n_embd))
    tensors.add(f"blk.{i}.attn_v.weight", tensors.random(shape.n_head_kv * hd, n_embd))
    attn_output = tensors.random(n_embd, shape.n_head * hd)
    tensors.add(f"blk.{i}.attn_output.weight", attn_output * 0 if quiet else attn_output)
    if pre_norms:
        tensors.add(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
    else:
        tensors.add(f"blk.{i}.attn_q_norm.weight", np.ones(hd, np.float32))
        tensors.add(f"blk.{i}.attn_k_norm.weight", np.ones(hd, np.float32))
        tensors.add(f"blk.{i}.post_attention_norm.weight", np.ones(n_embd, np.float32))
        tensors.add(f"blk.{i}.post_ffw_norm.weight", np.ones(n_embd, np.float32))
    tensors.add(f"blk.{i}.ffn_gate.weight", tensors.random(shape.n_ff, n_embd))
    tensors.add(f"blk.{i}.ffn_up.weight", tensors.random(shape.n_ff, n_embd))
    ffn_down = tensors.random(n_embd, shape.n_ff)
    tensors.add(f"blk.{i}.ffn_down.weight", ffn_down * 0 if quiet else ffn_down)


def _steer_embeddings(embd: np.ndarray, favour_token: int | None, cycle: list[int]) -> None:
    """Make dimension 0 of the embeddings the signal that steers greedy decoding.

    A large constant there outweighs the random rest after the final norm, and only the output
    rows that _steer_output sets read it. ``favour_text``'s byte tokens have 0 there instead, so
    that after one of them the signal is silent and the next byte's row decides.
    """
    if favour_token is not None or cycle:
        embd[:, 0] = 1.0
        embd[cycle, 0] = 0.0


def _steer_output(
    output: np.ndarray, embd: np.ndarray, favour_token: int | None, cycle: list[int]
) -> None:
    """Set the output rows that make greedy decoding predictable.

    ``favour_token``'s row alone reads dimension 0, so it follows every token. For
    ``favour_text`` each byte's row is the direction of the previous byte's embedding, so the
    bytes follow one another round the cycle, and the first byte's row also reads dimension 0,
    so any other token leads into the text.
    """
    if favour_token is not None:
        output[:, 0] = 0.0
        output[favour_token] = 0.0
        output[favour_token, 0] = 2.0
    if cycle:
        output[:, 0] = 0.0
        for before, after in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            output[after] = 2.0 * embd[before] / np.linalg.norm(embd[before])
        output[cycle[0], 0] = 2.0


def _filler_tokens(count: int) -> list[str]:
    """``count`` distinct three-letter tokens (aaa, aab, ...): a real-sized vocabulary's tail."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if count < 0 or count > len(letters) ** 3:
        raise ValueError(f"n_vocab must be between the base vocabulary and {len(letters) ** 3}")
    n = len(letters)
    return [letters[i // n // n] + letters[i // n % n] + letters[i % n] for i in range(count)]
