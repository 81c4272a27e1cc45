"""What every engine offers the layers above: settings in, a streaming Reply out, facts typed.

The local llama.cpp engine and the remote OpenAI-compatible one both implement ``Backend``. The
layers above ask it one way: ``stream`` for one reply, ``generate_many`` for many one-off rows
(one llama batch locally, concurrent requests to a server); ``backend.info`` (a ``BackendInfo``)
says what it is, and ``backend.tokenizer`` is there when the engine is fed our token ids (local)
and None when a server applies its own template. Settings live here with their defaults, help
and checks, the one place they are written: the magics' options, ``%config ExaoneMagics``, the
panel and the engines are built from these classes (``setting`` below; ui/settings.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from ..errors import ExaoneError
from ..model.gguf_check import GGUFInfo
from .offload import GpuInfo, OffloadPlan, parse_request
from .reply import Reply

DEFAULT_MAX_CTX = 4096  # the context a model gets unless asked: min(trained, this)
KV_TYPES = ("f16", "q8_0", "q4_0")  # the KV cache types offered (llama.cpp has more)
ReasoningTags = tuple[str, str]

_Options = TypeVar("_Options", "Sampling", "LoadOptions")


def _from_options(
    cls: type[_Options], what: str, base: _Options | None, options: dict[str, Any]
) -> _Options:
    """``base`` (or the defaults) with ``options`` replaced; None means "keep"; a misspelled name
    is an error, never ignored (llama-cpp-python's ``**kwargs`` swallow them)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ExaoneError(
            f"Unknown {what} option {unknown[0]!r}; the options are {', '.join(sorted(known))}."
        )
    given = {k: v for k, v in options.items() if v is not None}
    return replace(base or cls(), **given)


def setting(
    default: Any, help: str, *, short: str = "", metavar: str = "", config: bool = True
) -> Any:
    """A field users set, declared with what the notebook shows of it: ``help`` (a phrase, as an
    option's help reads), ``short`` (the option's letter: ``-t``), ``metavar`` (the value's name
    in a usage line) and ``config`` (``%config ExaoneMagics`` has it too, as the default for
    every cell or load). ui/settings.py builds the magics' options, their traits and the
    panel's fields from these; the validation is the class's own ``__post_init__``."""
    metadata = {"help": help, "short": short, "metavar": metavar, "config": config}
    return field(default=default, metadata=metadata)


def _is_number(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and not (isinstance(value, float) and math.isnan(value))
    )


def _is_count(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. Temperature 0 is greedy and reproducible; ``seed=None`` is random."""

    temperature: float = setting(0.7, "0 is greedy and reproducible", short="t")
    max_tokens: int = setting(512, "most tokens in the reply", short="n")
    top_p: float = setting(0.95, "1 turns top-p off")
    top_k: int = setting(40, "0 turns top-k off")
    repeat_penalty: float = setting(1.0, "LG advises no penalty above 1.0 for EXAONE")
    seed: int | None = setting(None, "fixed seed for sampling", config=False)

    def __post_init__(self) -> None:
        checks = (
            ("temperature", self.temperature, lambda v: v >= 0, "0 or more (0 is greedy)"),
            ("max_tokens", self.max_tokens, lambda v: v >= 1, "a whole number of 1 or more"),
            ("top_p", self.top_p, lambda v: 0 < v <= 1, "above 0 and at most 1"),
            ("top_k", self.top_k, lambda v: v >= 0, "0 (off) or more"),
            ("repeat_penalty", self.repeat_penalty, lambda v: v > 0, "above 0 (1.0 is off)"),
        )
        for name, value, ok, want in checks:
            if not _is_number(value) or not ok(value):
                raise ExaoneError(f"{name} must be {want}, not {value!r}.")
        for name in ("max_tokens", "top_k"):
            if not _is_count(getattr(self, name)):
                raise ExaoneError(f"{name} must be a whole number, not {getattr(self, name)!r}.")
        if self.seed is not None and (not _is_count(self.seed) or self.seed < 0):
            raise ExaoneError(f"seed must be a whole number of 0 or more, not {self.seed!r}.")

    @classmethod
    def from_options(cls, base: Sampling | None = None, **options: Any) -> Sampling:
        """``base`` with the given options replaced; a misspelled option is an error."""
        return _from_options(cls, "sampling", base, options)


@dataclass(frozen=True)
class LoadOptions:
    """Settings that need a reload to change (the local engine's); the fields declared with
    ``setting`` are ``%exaone load``'s options, the others are for Python callers."""

    gpu_layers: str | int = setting(
        "auto", "layers on the GPU: auto (default), all, none or a number", metavar="N"
    )
    n_ctx: int | None = setting(
        None,
        f"context size in tokens (default: the model's, at most {DEFAULT_MAX_CTX})",
        metavar="TOKENS",
    )
    n_threads: int | None = setting(  # default: threads.choose_threads (the usable CPUs)
        None,
        "CPU threads (default: one per usable core; %exaone info says why)",
        metavar="N",
        config=False,
    )
    n_batch: int = 512
    flash_attn: bool = setting(
        False, "flash attention (on by itself for a quantized KV cache)", config=False
    )
    kv_type: str = setting(
        "f16", "the KV cache's type: f16, q8_0 or q4_0 (more context per GiB)", metavar="TYPE"
    )
    # Saved prompt states (engine/llama/prefix_cache.py): a prompt continues from the longest
    # prefix of its tokens ever evaluated, in this kernel (RAM) or before a restart (disk).
    cache_ram_mb: int = setting(
        1024, "MiB of memory for saved prompt states; 0 is off", metavar="MB"
    )
    cache_disk_mb: int = setting(
        4096, "MiB of disk for prompt states kept across restarts; 0 is off", metavar="MB"
    )
    cache_dir: str | None = None  # default: the user's cache folder, exaone-jupyter/kv
    use_mmap: bool = True
    # Sample inside llama.cpp's graph (its backend sampling) instead of with numpy on the logits.
    # None: where the output layer runs on a GPU, so one token id crosses to the CPU, not the
    # 102,400 logits; on a CPU the numpy sampler is faster.
    sample_in_graph: bool | None = None

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_threads", "n_batch"):
            value = getattr(self, name)
            if value is not None and (not _is_count(value) or value < 1):
                raise ExaoneError(f"{name} must be a whole number of 1 or more, not {value!r}.")
        for name in ("cache_ram_mb", "cache_disk_mb"):
            value = getattr(self, name)
            if not _is_count(value) or value < 0:
                raise ExaoneError(
                    f"{name} must be a whole number of 0 (off) or more, not {value!r}."
                )
        if self.kv_type not in KV_TYPES:
            raise ExaoneError(
                f"kv_type must be one of {', '.join(KV_TYPES)}, not {self.kv_type!r}."
            )
        parse_request(self.gpu_layers)  # a bad layer count fails here, before anything loads

    @classmethod
    def from_options(cls, base: LoadOptions | None = None, **options: Any) -> LoadOptions:
        return _from_options(cls, "load", base, options)


@dataclass(frozen=True)
class Request:
    """One generation: local engines read the exact token ids, servers the messages."""

    sampling: Sampling
    prompt_ids: Sequence[int] | None = None
    messages: Sequence[dict] | None = None
    template_kwargs: dict = field(default_factory=dict)  # e.g. {"enable_thinking": True}
    # The model family's reasoning tags, and whether the prompt itself opened a reasoning block
    # (EXAONE Deep always, EXAONE 4.0 with thinking on): a server sends reasoning apart and the
    # engine wraps it in these tags, so the reply reads as the local engine's does.
    reasoning_tags: ReasoningTags | None = None
    opens_reasoning: bool = False
    # The JSON the reply must be, in OpenAI's shape ({"type": "json_schema", "json_schema":
    # {"name", "schema", "strict"}}). Servers are sent it; the local engine turns it into a
    # llama.cpp grammar (engine/llama/grammar.py). Both honour it, for one reply or many.
    response_format: dict | None = None
    # The tools a server is told of (OpenAI's ``tools``); a local engine's prompt lists them.
    tools: list[dict] | None = None


@dataclass
class RowOutput:
    """What one row of ``generate_many`` produced; ``finish_reason`` is stop, length,
    interrupted or error (then ``error`` says why in one sentence)."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class BatchResult:
    """The rows of ``generate_many`` in input order, and what it says about the run."""

    outputs: list[RowOutput]
    notes: list[str] = field(default_factory=list)  # sentences about the run as a whole
    unreachable: str | None = None  # the server could not be reached: why, in one sentence
    prefix_restored: int = 0  # tokens of the rows' shared prefix a saved KV state served


OnRow = Callable[[int, RowOutput], None]  # (row index, its output), as each row ends


# -- what a backend is ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFacts:
    """A GGUF loaded in this process: the file, where its layers run, and how it was loaded."""

    gguf: GGUFInfo
    offload: OffloadPlan
    gpu: GpuInfo
    llama_gpu_layers: int | None  # llama.cpp's own count (it adds the output layer); None on CPU
    n_threads: int
    load_s: float
    cpu_repack: bool  # llama.cpp's repacked CPU weight buffers (off where they would crash)
    system_info: str
    threads_why: str = ""  # how n_threads was chosen, for %exaone info
    kv_cache: str = ""  # the KV cache's type and how much of its prompt states are saved
    kv_folder: Path | None = None  # the folder prompt states are saved in, if on disk
    sampler: str = ""  # where tokens are picked, for %exaone info


@dataclass(frozen=True)
class ServerFacts:
    """An OpenAI-compatible server and what it said about itself when we connected."""

    url: str
    served_models: tuple[str, ...]
    owned_by: str | None
    api_key_env: str | None  # the variable's name; the key itself is never kept in the facts


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is: one typed value for ``%exaone info``, the panel and the meter."""

    kind: Literal["local", "server"]
    label: str  # the engine in a few words: "llama.cpp (local)", "server http://..."
    model: str
    n_ctx: int | None  # None when a server does not say
    notices: tuple[str, ...] = ()  # said once, when the backend is made
    local: LocalFacts | None = None
    server: ServerFacts | None = None

    @property
    def gpu_label(self) -> str:
        """ "GPU 4/8 layers" for the meter; empty for a server."""
        if self.local is None:
            return ""
        return f"GPU {self.local.offload.n_gpu_layers}/{self.local.offload.n_layers} layers"


@dataclass(frozen=True)
class PrefixCacheUsage:
    """What the saved prompt states take, for ``%exaone cache``."""

    ram_states: int
    ram_bytes: int
    ram_budget: int
    disk_states: int  # this model's, with these settings
    disk_bytes: int
    disk_folder_bytes: int  # the whole folder: every model's states
    disk_budget: int
    folder: str | None  # None when nothing is kept on disk


class Tokenizer(Protocol):
    """The part of a local engine the chat template needs."""

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...

    def control_token_texts(self) -> Sequence[str]: ...


class Backend(Protocol):
    """An engine that turns a request into a streaming Reply."""

    @property
    def info(self) -> BackendInfo: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def tokenizer(self) -> Tokenizer | None:
        """Our token ids are what it is fed (local); None when a server applies the template."""

    @property
    def bos_text(self) -> str: ...  # the template's ``bos_token`` ("" for a server)

    @property
    def eos_text(self) -> str: ...

    def stream(self, request: Request) -> Reply: ...

    def generate_many(
        self,
        requests: Sequence[Request],
        *,
        parallel: int | None = None,
        memory_mb: int | None = None,
        on_row: OnRow | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> BatchResult:
        """A one-off reply to each request (same sampling and response_format), ``parallel`` at
        a time (None: the engine's default), within ``memory_mb`` of working memory where the
        engine holds one (a local batch's KV cache). Ctrl-C ends it: finished rows keep their
        outputs, the others end ``interrupted``."""
        ...

    def prefix_cache(self) -> PrefixCacheUsage | None:
        """The saved prompt states' use; None where the engine keeps none (a server caches
        prefixes itself)."""
        ...

    def clear_prefix_cache(self) -> None: ...

    def close(self) -> None: ...
