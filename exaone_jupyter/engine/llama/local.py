"""The local engine: llama-cpp-python loads the GGUF, our own token loop streams the reply.

Why not ``create_chat_completion(stream=True)``: it re-detokenizes a growing tail on every token,
so its cost per token grows with the reply (598 -> 9 tokens/s from 50 to 800 tokens on a tiny
model). Here a reply is one ``Generation`` (``generation.py``: the sampler, stop rules and an
incremental UTF-8 decoder, constant work a token), the same object every row of a batch runs
(``batch.py``). This module owns the model, its conversation context and the KV cache
bookkeeping, so a follow-up turn evaluates only its new tokens.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ExaoneError, ModelBusyError
from ...model.gguf_check import GGUFInfo
from ..backend import (
    DEFAULT_MAX_CTX,
    BackendInfo,
    BatchResult,
    LoadOptions,
    LocalFacts,
    OnRow,
    PrefixCacheUsage,
    Request,
    Sampling,
    Tokenizer,
)
from ..offload import GpuInfo, OffloadPlan, plan_offload
from ..reply import Reply
from . import heap, llama_log
from .generation import Generation
from .gpu import probe_gpu
from .grammar import grammar_of
from .kv_disk import StateKey, default_dir
from .kv_state import common_prefix
from .llama_load import (
    KV_BLOCK,
    LoadProgress,
    amx_hazard,
    head_dim,
    kv_bytes_per_layer,
    model_params,
    offloaded_from_log,
)
from .prefix_cache import PrefixCache
from .sampling import host_picker, llama_chain
from .threads import choose_threads, wait_policy

_DEFAULT_OPTIONS = LoadOptions()  # frozen: one shared default is safe
UNLOADED = "This model was unloaded; load it again with `%exaone load`."
CLOSE_WAIT_S = 30.0  # how long an unload waits for a stopped generation to let go of the model


@dataclass(frozen=True)
class _Holder:
    """Who has the model: the reply it is writing (None for a batch) and the thread asking."""

    reply: Reply | None
    thread: int


class LocalBackend:
    """One GGUF loaded in llama.cpp, with the KV cache of the conversation so far."""

    def __init__(
        self,
        gguf: GGUFInfo,
        options: LoadOptions = _DEFAULT_OPTIONS,
        *,
        gpu: GpuInfo | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        """Load ``gguf``. ``on_progress(fraction)`` is llama.cpp's own load progress, called in
        this thread; Ctrl-C during the load aborts it cleanly (KeyboardInterrupt, nothing kept)."""
        import llama_cpp

        llama_log.install()
        self.check(gguf, options)
        info = self.gguf = gguf
        self.options = options
        self.n_ctx = self._choose_n_ctx(info, options.n_ctx)
        self.gpu = gpu if gpu is not None else probe_gpu()
        self.plan: OffloadPlan = plan_offload(
            options.gpu_layers,
            layer_bytes=info.layer_bytes,
            head_bytes=info.other_bytes,
            kv_bytes_per_layer=kv_bytes_per_layer(info, self.n_ctx, options.kv_type),
            gpu=self.gpu,
        )

        self.threads = choose_threads(options.n_threads)
        self.extra_buffers = not amx_hazard(info)
        # llama.cpp quantizes the V cache only with flash attention on
        self.flash_attn = options.flash_attn or options.kv_type != "f16"
        position = llama_log.mark()
        started = time.perf_counter()
        self._llm: Any = self._load(on_progress)  # None once closed
        load_s = time.perf_counter() - started
        llama_gpu_layers = offloaded_from_log(llama_log.since(position, 2))

        # What a generation needs of the model, public for batch.py's rows as for our replies:
        # the vocabulary, its size, the largest batch one decode takes, the tokens that end a
        # turn (``stop_ids``) and each token's bytes (``piece``).
        self.vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_batch = self._llm.n_batch
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        # One token after another: a batch made once that llama.cpp places after the cached
        # tokens itself, so a token costs one write instead of five.
        self._next = (llama_cpp.llama_token * 1)()
        self._next_batch = llama_cpp.llama_batch_get_one(self._next, 1)
        self._eog: dict[int, bool] = {}  # ends_turn, asked of llama.cpp once per token id
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._control_texts: list[str] | None = None
        self._kv_ids: list[int] = []  # the tokens whose keys and values sit in the cache
        self._lock = threading.Lock()  # held by one generation at a time (``exclusive``)
        self._holder: _Holder | None = None
        self._closed = False
        self.eos_text = self.token_text(self._llm.token_eos())
        self.bos_text = self.token_text(self._llm.token_bos())
        self.stop_ids = self._end_of_turn_ids()
        self.sample_in_graph = (
            options.sample_in_graph
            if options.sample_in_graph is not None
            else self.plan.n_gpu_layers > 0 and self.gpu.supports_offload
        )
        self._graph_chain: Any = None  # the chain attached to the context (sample_in_graph)
        self.states = self._prefix_cache()
        self.info = self._describe(load_s, llama_gpu_layers)

    def _load(self, on_progress: Callable[[float], None] | None) -> Any:
        """llama-cpp-python's ``Llama`` for the file, as planned: a failure is one sentence (llama.cpp's
        own reason, from its log), Ctrl-C through ``on_progress`` a KeyboardInterrupt."""
        import llama_cpp

        info, options = self.gguf, self.options
        kv_type = getattr(llama_cpp, f"GGML_TYPE_{options.kv_type.upper()}")
        kwargs: dict[str, Any] = {
            "model_path": str(info.path),
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.plan.llama_n_gpu_layers,
            "n_batch": min(options.n_batch, self.n_ctx),
            "flash_attn": self.flash_attn,
            "type_k": kv_type,
            "type_v": kv_type,
            "use_mmap": options.use_mmap,
            "seed": random.SystemRandom().getrandbits(32),
            "verbose": False,
            "n_threads": self.threads.decode,
            "n_threads_batch": self.threads.batch,
        }
        position = llama_log.mark()
        progress = LoadProgress(on_progress)
        try:
            with model_params(
                use_extra_bufts=self.extra_buffers, progress_callback=progress.callback
            ):
                return llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as err:
            if progress.interrupted:  # our callback told llama.cpp to stop: not the file's fault
                raise KeyboardInterrupt from None
            reason = llama_log.last_error(position) or str(err)
            raise ExaoneError(
                f"llama.cpp could not load {info.path.name}: {reason.rstrip('.')}; "
                "check that the file is a complete GGUF of a supported model."
            ) from None

    def _prefix_cache(self) -> PrefixCache | None:
        """The saved prompt states of this model and settings; None when both budgets are 0."""
        import llama_cpp

        options = self.options
        if not (options.cache_ram_mb or options.cache_disk_mb):
            return None
        key = StateKey.of(
            self.gguf.path,
            n_ctx=self.n_ctx,
            type_k=options.kv_type,
            type_v=options.kv_type,
            flash_attn=self.flash_attn,
            build=f"llama-cpp-python {llama_cpp.__version__}",
        )
        folder = Path(options.cache_dir).expanduser() if options.cache_dir else default_dir()
        return PrefixCache(options.cache_ram_mb * 2**20, options.cache_disk_mb * 2**20, folder, key)

    def _describe(self, load_s: float, llama_gpu_layers: int | None) -> BackendInfo:
        """What this backend is, for %exaone info, the panel and the meter."""
        import llama_cpp

        return BackendInfo(
            kind="local",
            label="llama.cpp (local)",
            model=self.gguf.name,
            n_ctx=self.n_ctx,
            notices=(self.plan.notice,) if self.plan.notice else (),
            local=LocalFacts(
                gguf=self.gguf,
                offload=self.plan,
                gpu=self.gpu,
                llama_gpu_layers=llama_gpu_layers,
                n_threads=self._llm.n_threads,
                threads_why=f"{self.threads.why}; waiting threads {wait_policy()}",
                sampler="in llama.cpp's graph (on the output layer's device)"
                if self.sample_in_graph
                else "on the CPU: llama.cpp's sampler chain (numpy for top-p without a top-k)",
                load_s=load_s,
                kv_cache=self._kv_cache_facts(),
                kv_folder=self.states.disk.folder if self.states and self.states.disk else None,
                cpu_repack=self.extra_buffers,
                system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            ),
        )

    def _kv_cache_facts(self) -> str:
        """The KV cache's type and the budgets of its saved prompt states, for %exaone info."""
        options = self.options
        facts = f"{options.kv_type}, flash attention {'on' if self.flash_attn else 'off'}"
        if self.states is None:
            return f"{facts}; prompt states not saved (cache_ram_mb=0, cache_disk_mb=0)"
        disk = self.states.disk
        where = f"{options.cache_disk_mb} MiB on disk" if disk else "none on disk"
        return f"{facts}; prompt states saved: {options.cache_ram_mb} MiB in memory, {where}"

    @property
    def tokenizer(self) -> Tokenizer:
        return self  # the engine tokenizes with the model's own vocabulary

    @classmethod
    def check(cls, info: GGUFInfo, options: LoadOptions) -> None:
        """Raise the ExaoneError that loading ``info`` with ``options`` would raise for a setting
        that cannot work, without loading anything: the session asks before it unloads a model."""
        cls._choose_n_ctx(info, options.n_ctx)
        if options.kv_type != "f16" and head_dim(info) % KV_BLOCK:
            raise ExaoneError(
                f"kv_type={options.kv_type} stores heads in blocks of {KV_BLOCK} values, but "
                f"{info.path.name}'s heads have {head_dim(info)}; use kv_type=f16 for this model."
            )

    # -- facts ----------------------------------------------------------------------------------
    @staticmethod
    def _choose_n_ctx(info: GGUFInfo, requested: int | None) -> int:
        if requested is None:
            return min(info.context_length, DEFAULT_MAX_CTX)
        if requested > info.context_length:
            raise ExaoneError(
                f"n_ctx={requested} is more than {info.path.name} was trained for "
                f"({info.context_length} tokens); use at most {info.context_length}."
            )
        return requested

    def _end_of_turn_ids(self) -> frozenset[int]:
        """EOS plus ``[|endofturn|]`` when it is one special token, whatever EOS the file names."""
        ids = {self._llm.token_eos()}
        marker = self.tokenize("[|endofturn|]", special=True)
        if len(marker) == 1:
            ids.add(marker[0])
        return frozenset(i for i in ids if i >= 0)

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids for ``text``; ``special=False`` keeps marker strings as plain text."""
        import llama_cpp

        # Not Llama.tokenize: it allocates a buffer of the model's trained context on every call
        # (131072 tokens for EXAONE 4.0), and a corrupt context_length makes that fail. A text
        # never has more tokens than bytes, so that is the buffer: a bytearray, as ctypes keeps
        # every ``llama_token * size`` type it makes, one a text length, for the process's life.
        data = text.encode("utf-8")
        size = len(data) + 1
        for _ in range(2):
            buf = bytearray(ctypes.sizeof(llama_cpp.llama_token) * size)
            ids = ctypes.pointer(llama_cpp.llama_token.from_buffer(buf))
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), ids, size, False, special)
            if n >= 0:
                return memoryview(buf).cast("i")[:n].tolist()
            size = -n
        raise ExaoneError(f"llama.cpp could not tokenize a text of {len(data)} bytes; shorten it.")

    def control_token_texts(self) -> list[str]:
        """The strings llama.cpp turns into control tokens (role markers, end of turn...)."""
        if self._control_texts is None:
            import llama_cpp

            self._control_texts = [
                self.token_text(t)
                for t in range(self.n_vocab)
                if llama_cpp.llama_vocab_get_attr(self.vocab, t)
                & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
            ]
            self._control_texts = [t for t in self._control_texts if t]
        return self._control_texts

    def token_text(self, token: int) -> str:
        return self._llm._model.token_get_text(token)

    def is_control(self, token: int) -> bool:
        import llama_cpp

        return bool(
            llama_cpp.llama_vocab_get_attr(self.vocab, token)
            & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED)
        )

    def ends_turn(self, token: int) -> bool:
        """Whether ``token`` ends the reply: an end-of-generation token or end of turn."""
        eog = self._eog.get(token)  # llama_vocab_is_eog, asked once per token id
        if eog is None:
            import llama_cpp

            eog = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token)) or token in self.stop_ids
            self._eog[token] = eog
        return eog

    def detokenize(self, ids: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in ids).decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for (a piece of a UTF-8 character, maybe), cached."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            n = llama_cpp.llama_token_to_piece(
                self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False
            )
            piece = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    # -- generation -----------------------------------------------------------------------------
    def stream(self, request: Request) -> Reply:
        ids = list(request.prompt_ids or ())
        if not ids:
            raise ExaoneError("The prompt is empty; write something to ask.")
        if len(ids) >= self.n_ctx:
            raise ExaoneError(
                f"The prompt is {len(ids)} tokens but the context holds {self.n_ctx}; "
                "shorten it, or load the model with a larger n_ctx."
            )
        if self._closed:
            raise ExaoneError(UNLOADED)
        grammar = grammar_of(request.response_format) if request.response_format else None
        return Reply(
            lambda reply: self._generate(reply, ids, request.sampling, grammar),
            prompt_tokens=len(ids),
            n_ctx=self.n_ctx,
            thinking_opened=request.opens_reasoning,
        )

    def _generate(
        self, reply: Reply, ids: list[int], sampling: Sampling, grammar: str | None
    ) -> Generator[str, None, None]:
        with self.exclusive(reply):
            yield from self._write(reply, ids, sampling, grammar)

    def _write(
        self, reply: Reply, ids: list[int], sampling: Sampling, grammar: str | None
    ) -> Generator[str, None, None]:
        """The reply's tokens as text, the model held: the prompt's new tokens, then one token
        after another until the end of the turn, max_tokens, a full context or a stop."""
        import llama_cpp

        stats, ctx = reply.stats, self._llm.ctx
        started = time.perf_counter()
        generation: Generation | None = None
        decoded = 0  # decode steps of the reply (the last token picked is never decoded)
        try:  # from here on, whatever happens (Ctrl-C included), the figures are finished
            generation = self._generation(sampling, ids, grammar)
            position = self._evaluate_prompt(reply, ids)
            if position is None:
                return
            stats.prompt_tok_s = stats.prompt_tokens_evaluated / max(
                time.perf_counter() - started, 1e-9
            )
            llama_cpp.llama_perf_context_reset(ctx)  # from here the counters see decoding only
            while True:
                text = generation.advance(-1)
                stats.completion_tokens = generation.completion_tokens
                if stats.ttft_s is None and generation.completion_tokens:
                    stats.ttft_s = time.perf_counter() - started
                if text:
                    yield text
                if generation.done:
                    break
                if position + 1 >= self.n_ctx:
                    reply.note = (
                        f"The reply filled the {self.n_ctx}-token context; start a new "
                        "conversation or load the model with a larger n_ctx."
                    )
                    tail = generation.finish("length")
                elif reply.stop_requested:
                    tail = generation.finish("interrupted")
                else:
                    assert generation.last_token is not None
                    self._decode_next(generation.last_token)
                    position += 1
                    decoded += 1
                    continue
                if tail:
                    yield tail
                break
        except KeyboardInterrupt:
            pass
        finally:
            stats.total_s = time.perf_counter() - started
            self._save_state()
            if generation is not None:
                generation.finish("interrupted")  # a no-op once it has finished
                stats.finish_reason = generation.finish_reason
            stats.finish_reason = stats.finish_reason or "interrupted"
            if decoded:
                perf = llama_cpp.llama_perf_context(ctx)
                if perf.t_eval_ms > 0:
                    stats.decode_tok_s = decoded / (perf.t_eval_ms / 1000)

    def _evaluate_prompt(self, reply: Reply, ids: list[int]) -> int | None:
        """Decode the prompt's tokens past the cached prefix; the position after them, or None
        when a stop came first."""
        import llama_cpp

        position = self._reuse_prefix(ids)
        todo = ids[position:]
        reply.stats.prompt_tokens_evaluated = len(todo)
        if self.states is not None:
            reply.stats.restored_from = self.states.restored_from
            reply.note = reply.note or self.states.take_note()
        for start in range(0, len(todo), self.n_batch):
            if reply.stop_requested:
                return None
            chunk = todo[start : start + self.n_batch]
            # Only the prompt's last token needs logits: a chain in the graph samples every
            # output, and a draw for an earlier chunk would shift a seeded reply.
            self._decode(chunk, position, logits=start + len(chunk) == len(todo))
            position += len(chunk)
        llama_cpp.llama_synchronize(self._llm.ctx)  # a GPU decode returns before it is computed
        return position

    def generate_many(
        self,
        requests: Sequence[Request],
        *,
        parallel: int | None = None,
        memory_mb: int | None = None,
        on_row: OnRow | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> BatchResult:
        """The requests' prompts as sequences of one llama batch (``batch.py``), beside the
        conversation: its cache is left as it was."""
        from . import batch

        return batch.generate_many(self, requests, parallel, memory_mb, on_row, on_tokens)

    @contextlib.contextmanager
    def exclusive(self, reply: Reply | None = None) -> Iterator[Any]:
        """The model for one generation (a reply, or a batch of them), as llama-cpp-python's
        ``Llama``: ModelBusyError while another generation has it, ExaoneError once unloaded.
        ``reply`` is what ``close`` stops before it frees the model."""
        if not self._lock.acquire(blocking=False):
            raise ModelBusyError()
        try:  # whatever happens from here (Ctrl-C included), the model is let go
            if self._closed:
                raise ExaoneError(UNLOADED)
            self._holder = _Holder(reply, threading.get_ident())
            yield self._llm
        finally:
            self._holder = None
            self._lock.release()

    def _reuse_prefix(self, ids: list[int]) -> int:
        """Keep the cached tokens ``ids`` starts with, drop the rest; returns how many were kept.
        The cached tokens are the sequence's, or a saved state's that shares more of ``ids``.

        The cache itself is the truth (``seq_pos_max``): an interrupt may have landed between a
        decode and our bookkeeping, so the list is trimmed to what llama.cpp really holds.
        """
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        in_cache = llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1
        known = self._kv_ids[: max(in_cache, 0)]
        if self.states is not None:  # a saved state may share more of the prompt
            known = self.states.continue_from(self._llm.ctx, known, ids)
        keep = common_prefix(known, ids)
        if keep == len(ids):
            keep -= 1  # decode the last prompt token again: its logits pick the first token
        if not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
            llama_cpp.llama_memory_clear(memory, True)  # e.g. sliding-window caches
            keep = 0
        self._kv_ids = ids[:keep]
        return keep

    def _save_state(self) -> None:
        """Save what the sequence holds now (a reply's prompt and text) for a later prompt."""
        import llama_cpp

        if self.states is None:
            return
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        in_cache = llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1
        del self._kv_ids[max(in_cache, 0) :]  # an interrupt may have cut a decode short
        self.states.save(self._llm.ctx, self._kv_ids)

    def prefix_cache(self) -> PrefixCacheUsage | None:
        return self.states.usage() if self.states is not None else None

    def clear_prefix_cache(self) -> None:
        if self.states is not None:
            self.states.clear()

    def _decode(self, tokens: Sequence[int], position: int, *, logits: bool = True) -> None:
        """Evaluate ``tokens`` from ``position``; ``logits``: for the last of them."""
        import llama_cpp

        batch = self._batch
        n = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = position + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = logits and i == n - 1
        batch.n_tokens = n
        _check_decode(llama_cpp.llama_decode(self._llm.ctx, batch))
        self._kv_ids.extend(tokens)

    def _decode_next(self, token: int) -> None:
        """``_decode([token], position)`` for the token after the cached ones, in one write."""
        import llama_cpp

        self._next[0] = token
        _check_decode(llama_cpp.llama_decode(self._llm.ctx, self._next_batch))
        self._kv_ids.append(token)

    def _generation(
        self, s: Sampling, prompt: Sequence[int], grammar: str | None = None
    ) -> Generation:
        """A reply's generation on the conversation's context: sampled in llama.cpp's graph
        where the output layer runs on a GPU (``sample_in_graph``), else on the CPU."""
        import llama_cpp

        ctx = self._llm.ctx
        if not self.sample_in_graph or grammar is not None:
            pick, release = host_picker(ctx, self.vocab, self.n_vocab, s, prompt, grammar=grammar)
            if self._graph_chain is not None:  # a host reply after a graph one: detach it
                llama_cpp.llama_set_sampler(ctx, 0, None)
                llama_cpp.llama_sampler_free(self._graph_chain)
                self._graph_chain = None
            return Generation(pick, self, max_tokens=s.max_tokens, release=release)
        chain = llama_chain(s, prompt, self.vocab, in_graph=True)
        attached = llama_cpp.llama_set_sampler(ctx, 0, chain)  # replaces the last reply's
        if self._graph_chain is not None:
            llama_cpp.llama_sampler_free(self._graph_chain)
        self._graph_chain = chain  # alive while attached: freed by the next reply or by close
        if not attached:
            raise ExaoneError(
                "llama.cpp could not run these sampling settings in its graph; "
                "load the model with sample_in_graph=False."
            )

        def pick_in_graph(i: int) -> int:
            token = llama_cpp.llama_get_sampled_token_ith(ctx, i)
            llama_cpp.llama_sampler_accept(chain, token)
            return token

        return Generation(pick_in_graph, self, max_tokens=s.max_tokens)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the model and its context (the weights' memory, on the GPU too). A reply being
        written is stopped first (its text so far kept); one this thread left half-read is
        finished here, since nothing else would resume it."""
        holder = self._holder
        if self._closed:
            return
        if holder is not None and holder.reply is not None:
            if holder.thread == threading.get_ident():
                holder.reply.close()
            else:
                holder.reply.stop()
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            raise ModelBusyError(
                "The model is still busy (a reply or a map); press Stop or wait for it to "
                "finish, then unload again."
            )
        try:
            if self._closed:  # another unload came first, while this one waited
                return
            self._free()
        finally:
            self._lock.release()
        heap.release_free_pages()  # else glibc keeps llama.cpp's freed blocks resident

    def _free(self) -> None:
        import llama_cpp

        self._closed = True
        if self.states is not None:
            self.states.close()  # the states still being written reach the disk
        llama_cpp.llama_batch_free(self._batch)
        llm, self._llm = self._llm, None  # its numpy buffers go with the object
        llm.close()
        del llm
        if self._graph_chain is not None:
            llama_cpp.llama_sampler_free(self._graph_chain)
            self._graph_chain = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        with contextlib.suppress(Exception):
            self.close()


def _check_decode(code: int) -> None:
    if code != 0:
        raise ExaoneError(
            f"llama.cpp failed to evaluate the tokens (llama_decode returned {code}); "
            "start a new conversation with --new and try again."
        )
