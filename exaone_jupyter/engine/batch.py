"""Many one-off prompts decoded together: several sequences in one llama batch.

Why a context of its own: the model's conversation context is created with one sequence, and its
KV cache holds the conversation a follow-up cell reuses. A map makes a second context on the same
weights with ``parallel + 1`` sequences and a unified KV cache (the sequences share the cells of
the common prefix), and frees it at the end; the conversation's cache is untouched. It costs one
more KV cache while the map runs, sized to what the rows need (``context_need``).

How: the prompts' common prefix (system prompt and template head) is evaluated once, on sequence
``parallel``, and copied (``llama_memory_seq_cp``, which shares cells) to each slot it refills.
Each step decodes the remaining prompt tokens of newly started rows and the last token of every
running row in one ``llama_decode``; each row samples from its own logits with its own sampler:
the numpy ``sampling.Sampler`` a single reply uses, or llama.cpp's chain behind a schema's grammar
(a llama.cpp sampler). So a row gets the answer it gets alone, for a greedy or a seeded one.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExaoneError
from .backend import Sampling
from .sampling import LogitsReader, Sampler, llama_chain

if TYPE_CHECKING:
    from .local import LocalBackend


@dataclass
class RowOutput:
    """What one row produced; ``finish_reason`` is stop, length, interrupted or error."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class _Running:
    index: int
    slot: int
    ids: list[int]
    sampler: Sampler | None  # the numpy chain, or None where ``chain`` (grammar first) samples
    chain: Any
    position: int  # the next free position of this sequence
    pending: list[int]  # tokens to decode at the next step (prompt rest, or the last sampled)
    out: RowOutput = field(default_factory=RowOutput)
    raw: bytearray = field(default_factory=bytearray)


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one of its own (the
    last prompt token is decoded per row: its logits pick the row's first token)."""
    if not prompts:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def context_need(prompts: Sequence[Sequence[int]], max_tokens: int, parallel: int) -> int:
    """KV cells a map needs at most: the shared prefix once, plus ``parallel`` of the longest
    rows' own tokens and replies."""
    prefix = shared_prefix(prompts)
    rests = sorted((len(p) - prefix + max_tokens for p in prompts), reverse=True)
    return prefix + sum(rests[:parallel])


def generate_batch(
    backend: LocalBackend,
    prompts: Sequence[Sequence[int]],
    sampling: Sampling,
    *,
    parallel: int,
    grammar: str | None = None,
    on_row: Callable[[int, RowOutput], None] | None = None,
    on_tokens: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[RowOutput]:
    """Generate a reply for each prompt (token ids), ``parallel`` at a time; in input order.

    ``on_row(index, output)`` is called as each row ends, ``on_tokens(n)`` after each decode
    step with the tokens it sampled. Ctrl-C (or ``should_stop()``) ends the run between steps:
    finished rows keep their outputs, the others end ``interrupted``. The caller checks that the
    prompts fit (``context_need``).
    """
    import llama_cpp

    outputs = [RowOutput() for _ in prompts]
    if not prompts:
        return outputs
    empty = next((i for i, ids in enumerate(prompts) if not ids), None)
    if empty is not None:
        raise ExaoneError(f"Prompt {empty} has no tokens; give every row something to ask.")
    with backend.exclusive() as llm:
        ctx = batch = None
        running: dict[int, _Running] = {}
        try:  # from here on, whatever happens (Ctrl-C included), the finally frees
            parallel = max(1, min(parallel, len(prompts)))
            need = context_need(prompts, sampling.max_tokens, parallel)
            n_ctx = max(need + 1, 32)
            n_batch = backend.n_batch
            params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
            params.n_ctx = n_ctx
            params.n_batch = n_batch
            params.n_ubatch = min(params.n_ubatch, n_batch)
            params.n_seq_max = parallel + 1
            params.kv_unified = True  # one cache: the prefix cells are shared, not copied
            params.no_perf = True
            ctx = llama_cpp.llama_init_from_model(llm.model, params)
            if not ctx:
                raise ExaoneError(
                    f"llama.cpp could not make a {n_ctx}-token context for {parallel} sequences; "
                    "use a smaller parallel or max_tokens."
                )
            memory = llama_cpp.llama_get_memory(ctx)
            batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
            stop_ids = backend.stop_ids
            vocab = backend.vocab
            logits = LogitsReader(ctx, backend.n_vocab)
            prefix_seq = parallel
            prefix = shared_prefix(prompts)
            head = list(prompts[0][:prefix])

            def decode(entries: list[tuple[int, int, int, _Running | None]]) -> None:
                """Decode (token, position, seq, row-wanting-logits) entries in n_batch chunks; a
                row samples right after the chunk that holds its logits."""
                for start in range(0, len(entries), n_batch):
                    chunk = entries[start : start + n_batch]
                    for i, (token, pos, seq, row) in enumerate(chunk):
                        batch.token[i] = token
                        batch.pos[i] = pos
                        batch.n_seq_id[i] = 1
                        batch.seq_id[i][0] = seq
                        batch.logits[i] = row is not None
                    batch.n_tokens = len(chunk)
                    code = llama_cpp.llama_decode(ctx, batch)
                    if code != 0:
                        raise ExaoneError(
                            f"llama.cpp failed to evaluate a batch (llama_decode returned {code}); "
                            "use a smaller parallel and try again."
                        )
                    sampled = 0
                    for i, (_, _, _, row) in enumerate(chunk):
                        if row is not None:
                            sample(row, i)
                            sampled += 1
                    if sampled and on_tokens is not None:
                        on_tokens(sampled)

            def finish(row: _Running, reason: str) -> None:
                row.out.finish_reason = reason
                row.out.text = codecs.decode(bytes(row.raw), "utf-8", "replace")
                if row.chain is not None:
                    llama_cpp.llama_sampler_free(row.chain)
                    row.chain = None
                llama_cpp.llama_memory_seq_rm(memory, row.slot, -1, -1)
                del running[row.slot]
                if on_row is not None:
                    on_row(row.index, row.out)

            def sample(row: _Running, i: int) -> None:
                if row.sampler is not None:
                    token = row.sampler.pick(logits(i))
                    row.sampler.accept(token)
                else:
                    token = llama_cpp.llama_sampler_sample(row.chain, ctx, i)
                if token in stop_ids or llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish(row, "stop")
                    return
                row.out.completion_tokens += 1
                row.raw += backend.piece(token)
                if row.out.completion_tokens >= sampling.max_tokens:
                    finish(row, "length")
                    return
                row.pending = [token]

            for start in range(0, len(head), n_batch):  # the shared prefix, once
                chunk = head[start : start + n_batch]
                decode([(t, start + i, prefix_seq, None) for i, t in enumerate(chunk)])

            waiting = iter(range(len(prompts)))
            free_slots = list(range(parallel))
            exhausted = False
            while True:
                if should_stop is not None and should_stop():
                    break
                while free_slots and not exhausted:  # refill the slots that finished
                    index = next(waiting, None)
                    if index is None:
                        exhausted = True
                        break
                    slot = free_slots.pop(0)
                    ids = list(prompts[index])
                    if prefix:
                        llama_cpp.llama_memory_seq_cp(memory, prefix_seq, slot, -1, -1)
                    grammared = grammar is not None
                    running[slot] = _Running(
                        index=index,
                        slot=slot,
                        ids=ids,
                        sampler=None if grammared else backend.sampler(sampling, ids),
                        chain=_with_grammar(llama_chain(sampling, ids, vocab), vocab, grammar)
                        if grammar is not None
                        else None,
                        position=prefix,
                        pending=ids[prefix:],
                    )
                    outputs[index] = running[slot].out
                if not running:
                    break
                entries: list[tuple[int, int, int, _Running | None]] = []
                for row in list(running.values()):
                    last = len(row.pending) - 1
                    for i, token in enumerate(row.pending):
                        entries.append(
                            (token, row.position + i, row.slot, row if i == last else None)
                        )
                    row.position += len(row.pending)
                    row.pending = []
                decode(entries)
                free_slots = sorted(set(range(parallel)) - set(running))
        except KeyboardInterrupt:
            pass
        finally:
            for row in list(running.values()):
                row.out.finish_reason = "interrupted"
                row.out.text = codecs.decode(bytes(row.raw), "utf-8", "replace")
                if row.chain is not None:
                    llama_cpp.llama_sampler_free(row.chain)
            if batch is not None:
                llama_cpp.llama_batch_free(batch)
            if ctx is not None:
                llama_cpp.llama_free(ctx)
    for out in outputs:
        if out.finish_reason is None:
            out.finish_reason = "interrupted"
    return outputs


def _with_grammar(chain: Any, vocab: Any, grammar: str) -> Any:
    """A new chain: the grammar first (it masks what the schema forbids), then ``chain``'s
    samplers, moved over in their order."""
    import llama_cpp

    constraint = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not constraint:
        llama_cpp.llama_sampler_free(chain)
        raise ExaoneError(
            "llama.cpp could not parse the grammar made from the schema; simplify it."
        )
    combined = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(combined, constraint)
    while llama_cpp.llama_sampler_chain_n(chain) > 0:
        llama_cpp.llama_sampler_chain_add(combined, llama_cpp.llama_sampler_chain_remove(chain, 0))
    llama_cpp.llama_sampler_free(chain)
    return combined
