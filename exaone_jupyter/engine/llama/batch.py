"""Many one-off prompts decoded together: several sequences in one llama batch.

Why a context of its own: the model's conversation context is created with one sequence, and its
KV cache holds the conversation a follow-up cell reuses. A batch makes a second context on the
same weights with ``parallel + 1`` sequences and a unified KV cache (the sequences share the cells
of the common prefix), and frees it at the end; the conversation's cache is untouched. Its size is
what the rows need (``context_need``), not the conversation's n_ctx: each row's positions stay
within the model's trained context, and the sum of the rows is a memory budget.

How: the prompts' common prefix (system prompt and template head) is evaluated once, on sequence
``parallel``, and copied (``llama_memory_seq_cp``, which shares cells) to each slot it refills.
Each step decodes the remaining prompt tokens of newly started rows and the last token of every
running row in one ``llama_decode``; each row is a ``Generation``, the same token loop a single
reply runs, so a row gets the answer it gets alone, for a greedy or a seeded one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import ExaoneError
from ..backend import BatchResult, OnRow, Request, RowOutput, Sampling
from .generation import Generation
from .grammar import grammar_of
from .llama_load import kv_bytes_per_layer
from .sampling import host_picker

if TYPE_CHECKING:
    from .local import LocalBackend


DEFAULT_PARALLEL = 8  # sequences at a time when the caller names none
DEFAULT_MEMORY_MB = 1024  # the batch context's KV cache, at most (``memory_mb`` changes it)


@dataclass
class _Running:
    index: int
    slot: int
    generation: Generation
    position: int  # the next free position of this sequence
    pending: list[int]  # tokens to decode at the next step (prompt rest, or the last sampled)
    out: RowOutput = field(default_factory=RowOutput)


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


def generate_many(
    backend: LocalBackend,
    requests: Sequence[Request],
    parallel: int | None,
    memory_mb: int | None,
    on_row: OnRow | None,
    on_tokens: Callable[[int], None] | None,
) -> BatchResult:
    """``LocalBackend.generate_many``: the rows that fit the model's trained context, as one
    batch whose KV cache stays within ``memory_mb``; a row too long is that row's error."""
    if not requests:
        return BatchResult([])
    first = requests[0]
    if any(
        r.sampling != first.sampling or r.response_format != first.response_format for r in requests
    ):
        raise ExaoneError(
            "The rows of one batch share their settings; send them in one batch each."
        )
    s = first.sampling
    grammar = grammar_of(first.response_format) if first.response_format else None
    limit = backend.gguf.context_length
    outputs = [RowOutput() for _ in requests]
    todo: list[int] = []
    for i, request in enumerate(requests):
        ids = request.prompt_ids or ()
        if len(ids) + s.max_tokens > limit:
            outputs[i] = RowOutput(
                finish_reason="error",
                error=f"the prompt is {len(ids)} tokens, which with max_tokens={s.max_tokens} "
                f"does not fit the model's {limit}-token context; shorten it or lower max_tokens",
            )
            if on_row is not None:
                on_row(i, outputs[i])
        else:
            todo.append(i)
    if not todo:
        return BatchResult(outputs)
    prompts = [list(requests[i].prompt_ids or ()) for i in todo]
    fits = _parallel_within(backend, prompts, s.max_tokens, parallel, memory_mb)

    def ended(j: int, out: RowOutput) -> None:
        outputs[todo[j]] = out
        if on_row is not None:
            on_row(todo[j], out)

    done, restored = generate_batch(
        backend, prompts, s, parallel=fits, grammar=grammar, on_row=ended, on_tokens=on_tokens
    )
    for j, out in enumerate(done):
        outputs[todo[j]] = out
    return BatchResult(outputs, prefix_restored=restored)


def _parallel_within(
    backend: LocalBackend,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    parallel: int | None,
    memory_mb: int | None,
) -> int:
    """How many rows run at a time: ``parallel`` (default ``DEFAULT_PARALLEL``) where their KV
    cache fits ``memory_mb``; fewer for the default; a sentence for an explicit one."""
    wanted = min(parallel if parallel is not None else DEFAULT_PARALLEL, len(prompts))
    budget_mb = memory_mb if memory_mb is not None else DEFAULT_MEMORY_MB
    per_token = kv_bytes_per_token(backend)
    fits = fitting_parallel(prompts, max_tokens, wanted, budget_mb * 2**20, per_token)
    if fits == wanted or (fits and parallel is None):
        return fits
    need_mb = -(-(context_need(prompts, max_tokens, wanted) + 1) * per_token // 2**20)
    advice = f"use parallel={fits} or less, " if fits else "lower max_tokens, "
    raise ExaoneError(
        f"{wanted} sequences of these prompts with max_tokens={max_tokens} need {need_mb} MiB of "
        f"KV cache, more than the batch's memory budget of {budget_mb} MiB; {advice}or raise "
        f"memory_mb to {need_mb}."
    )


def kv_bytes_per_token(backend: LocalBackend) -> int:
    """The KV cache's bytes for one token of one sequence (keys and values, all layers)."""
    return kv_bytes_per_layer(backend.gguf, 1, backend.options.kv_type) * backend.gguf.n_layers


def fitting_parallel(
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    wanted: int,
    budget_bytes: int,
    per_token: int,
) -> int:
    """The most sequences at a time, up to ``wanted``, whose context fits ``budget_bytes``."""
    return max(
        (
            n
            for n in range(1, wanted + 1)
            if (context_need(prompts, max_tokens, n) + 1) * per_token <= budget_bytes
        ),
        default=0,
    )


class _Batch:
    """The context, batch and rows of one run of ``generate_batch``."""

    def __init__(self, backend: LocalBackend, llm: Any, n_ctx: int, parallel: int) -> None:
        import llama_cpp

        self.backend = backend
        self.n_batch = backend.n_batch
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = min(params.n_ubatch, self.n_batch)
        params.n_seq_max = parallel + 1
        params.kv_unified = True  # one cache: the prefix cells are shared, not copied
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise ExaoneError(
                f"llama.cpp could not make a {n_ctx}-token context for {parallel} sequences; "
                "use a smaller parallel or max_tokens."
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.running: dict[int, _Running] = {}

    def decode(
        self,
        entries: list[tuple[int, int, int, _Running | None]],
        on_sampled: Callable[[_Running, int], None],
    ) -> None:
        """Decode (token, position, sequence, row wanting logits) entries in n_batch chunks; a
        row samples right after the chunk that holds its logits."""
        import llama_cpp

        batch = self.batch
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            for i, (token, pos, seq, row) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = row is not None
            batch.n_tokens = len(chunk)
            code = llama_cpp.llama_decode(self.ctx, batch)
            if code != 0:
                raise ExaoneError(
                    f"llama.cpp failed to evaluate a batch (llama_decode returned {code}); "
                    "use a smaller parallel and try again."
                )
            for i, (_, _, _, row) in enumerate(chunk):
                if row is not None:
                    on_sampled(row, i)

    def end(self, row: _Running, reason: str) -> RowOutput:
        import llama_cpp

        row.out.text += row.generation.finish(reason)
        row.out.finish_reason = row.generation.finish_reason
        llama_cpp.llama_memory_seq_rm(self.memory, row.slot, -1, -1)
        del self.running[row.slot]
        return row.out

    def free(self) -> None:
        import llama_cpp

        for row in list(self.running.values()):
            self.end(row, "interrupted")
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)


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
) -> tuple[list[RowOutput], int]:
    """Generate a reply for each prompt (token ids), ``parallel`` at a time; in input order,
    with how many tokens of their shared prefix a saved KV state served.

    ``on_row(index, output)`` is called as each row ends, ``on_tokens(n)`` after each decode
    step with the tokens it sampled. Ctrl-C (or ``should_stop()``) ends the run between steps:
    finished rows keep their outputs, the others end ``interrupted``. The caller sizes
    ``parallel`` to its memory budget (``fitting_parallel``).
    """
    outputs = [RowOutput() for _ in prompts]
    if not prompts:
        return outputs, 0
    empty = next((i for i, ids in enumerate(prompts) if not ids), None)
    if empty is not None:
        raise ExaoneError(f"Prompt {empty} has no tokens; give every row something to ask.")
    with backend.exclusive() as llm:
        parallel = max(1, min(parallel, len(prompts)))
        run: _Batch | None = None
        restored = 0
        try:  # from here on, whatever happens (Ctrl-C included), the finally frees
            need = context_need(prompts, sampling.max_tokens, parallel)
            run = _Batch(backend, llm, max(need + 1, 32), parallel)
            restored = _run_rows(
                run, prompts, sampling, parallel, grammar, outputs, on_row, on_tokens, should_stop
            )
        except KeyboardInterrupt:
            pass
        finally:
            if run is not None:
                run.free()
    for out in outputs:
        if out.finish_reason is None:
            out.finish_reason = "interrupted"
    return outputs, restored


def _shared_head(
    run: _Batch, head: list[int], seq: int, on_sampled: Callable[[_Running, int], None]
) -> int:
    """The rows' shared prefix on sequence ``seq``: from a saved state as far as one holds it,
    then evaluated, then saved (a re-run map, or a map after a question with the same system
    prompt, starts from it). How many tokens the saved state served."""
    states = run.backend.states
    restored = states.restore_into(run.ctx, head, seq) if states is not None else 0
    run.decode([(t, i, seq, None) for i, t in enumerate(head) if i >= restored], on_sampled)
    if states is not None and restored < len(head):
        states.save(run.ctx, head, seq)
    return restored


def _run_rows(
    run: _Batch,
    prompts: Sequence[Sequence[int]],
    sampling: Sampling,
    parallel: int,
    grammar: str | None,
    outputs: list[RowOutput],
    on_row: Callable[[int, RowOutput], None] | None,
    on_tokens: Callable[[int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> int:
    """The shared prefix once, then steps until every row has ended (or a stop); returns how
    many of the prefix's tokens a saved state served."""
    import llama_cpp

    backend = run.backend
    prefix_seq = parallel
    prefix = shared_prefix(prompts)
    head = list(prompts[0][:prefix])
    sampled = 0

    def on_sampled(row: _Running, i: int) -> None:
        nonlocal sampled
        sampled += 1
        row.out.text += row.generation.advance(i)
        row.out.completion_tokens = row.generation.completion_tokens
        if row.generation.done:
            out = run.end(row, row.generation.finish_reason or "stop")
            if on_row is not None:
                on_row(row.index, out)
        else:
            assert row.generation.last_token is not None
            row.pending = [row.generation.last_token]

    restored = _shared_head(run, head, prefix_seq, on_sampled)
    waiting = iter(range(len(prompts)))
    exhausted = False
    while True:
        if should_stop is not None and should_stop():
            return restored
        free_slots = sorted(set(range(parallel)) - set(run.running))
        while free_slots and not exhausted:  # refill the slots that finished
            index = next(waiting, None)
            if index is None:
                exhausted = True
                break
            slot = free_slots.pop(0)
            ids = list(prompts[index])
            if prefix:
                llama_cpp.llama_memory_seq_cp(run.memory, prefix_seq, slot, -1, -1)
            pick, release = host_picker(
                run.ctx, backend.vocab, backend.n_vocab, sampling, ids, grammar=grammar
            )
            generation = Generation(pick, backend, max_tokens=sampling.max_tokens, release=release)
            row = _Running(index, slot, generation, position=prefix, pending=ids[prefix:])
            run.running[slot] = row
            outputs[index] = row.out
        if not run.running:
            return restored
        entries: list[tuple[int, int, int, _Running | None]] = []
        for row in list(run.running.values()):
            last = len(row.pending) - 1
            for i, token in enumerate(row.pending):
                entries.append((token, row.position + i, row.slot, row if i == last else None))
            row.position += len(row.pending)
            row.pending = []
        sampled = 0
        run.decode(entries, on_sampled)
        if sampled and on_tokens is not None:
            on_tokens(sampled)
