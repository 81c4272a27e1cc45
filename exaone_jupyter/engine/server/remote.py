"""The remote engine: an OpenAI-compatible chat server (vLLM, llama-server, llama-cpp-python's).

The server applies the model's chat template itself, so this engine sends messages, not token
ids (it has no ``tokenizer``). It streams chat completions and turns each chunk into a
Reply piece as it arrives. The figures come from the server where it reports them (``usage``
when asked with ``stream_options``; llama-server's ``timings``) and are counted and timed here
otherwise; ``stats.rate_source`` says which, so the meter never passes a guess off as a measurement.

``openai`` is imported by the first connect, not by importing this package.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import ExaoneError, ModelBusyError
from ..backend import (
    BackendInfo,
    BatchResult,
    OnRow,
    ReasoningTags,
    Request,
    Sampling,
    ServerFacts,
)
from ..reply import Reply
from . import many
from .reasoning import ReasoningText, reasoning_of
from .server_errors import (
    ReplyCutShort,
    ServerUnreachable,
    broken_reply,
    failed_request,
    openai_module,
    root_cause,
)
from .shared_client import SharedClient
from .tool_wire import StreamedCalls, wire_message

CONNECT_TIMEOUT_S = 10.0
# How reasoning that a server sends apart is marked in the reply when the request names no family.
DEFAULT_REASONING_TAGS: ReasoningTags = ("<think>", "</think>")
# How a request's response_format is spelled, in the order tried: OpenAI's json_schema (vLLM,
# llama-server), then json_object with a "schema" (llama-cpp-python's server, which answers 500
# to json_schema). A server that rejects both gets none, and the reply is only checked afterwards.
RESPONSE_FORMATS = ("json_schema", "json_object")


def normalize_url(url: str) -> str:
    """``http://host:8080`` -> ``http://host:8080/v1``; a URL with a path is kept as given."""
    text = (url or "").strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ExaoneError(
            f"{url!r} is not a server URL; give one with http:// or https://, "
            "e.g. http://127.0.0.1:8080/v1."
        )
    path = parts.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class RemoteBackend:
    """One model on an OpenAI-compatible server; connecting lists its models to check both."""

    tokenizer = None  # the server applies its own template to the messages
    bos_text = eos_text = ""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        n_ctx: int | None = None,
        api_key_env: str | None = None,
    ) -> None:
        openai_module()  # the install hint comes before anything else
        self.url = normalize_url(url)
        self.timeout = float(timeout)
        self.api_key_env = api_key_env
        self._notices: list[str] = []
        # The spellings of response_format not yet refused by this server (see RESPONSE_FORMATS).
        self.response_formats: list[str] = list(RESPONSE_FORMATS)
        # Never fall back to OPENAI_API_KEY: that key belongs to OpenAI, not to this server.
        self._api_key = api_key
        self._formats_lock = threading.Lock()
        # Whether this server returns the model's calls as its text rather than ``tool_calls``
        # (learnt from its replies); they then go back to it the same way (``wire_message``).
        self._calls_as_text = False
        self._lock = threading.Lock()  # held by the reply being read, or a map (``exclusive``)
        self._clients = SharedClient(self._new_client)  # shared by concurrent streams (map)
        # The replies streaming now: ``close`` stops them, as an unload stops a local reply.
        self._replies: weakref.WeakSet[Reply] = weakref.WeakSet()
        try:
            served, entry = self._list_models(model)
        except BaseException:
            self._clients.close()
            raise
        self.model: str = model or str(entry.get("id") or "")
        self.n_ctx = n_ctx or self._context_size(entry)
        self.info = BackendInfo(
            kind="server",
            label=f"server {self.url}",
            model=self.model,
            # None, not 0, when the server does not say (llama-cpp-python's server)
            n_ctx=self.n_ctx or None,
            notices=tuple(self._notices),
            server=ServerFacts(
                url=self.url,
                served_models=tuple(served),
                owned_by=entry.get("owned_by"),
                api_key_env=api_key_env,
            ),
        )

    def _new_client(self):
        return openai_module().OpenAI(
            base_url=self.url,
            api_key=self._api_key or "no-key",
            timeout=self.timeout,
            max_retries=0,
        )

    # -- connecting -----------------------------------------------------------------------------
    def _list_models(self, wanted: str | None) -> tuple[list[str], dict]:
        openai = openai_module()
        try:
            page = self._clients.current.with_options(
                timeout=min(self.timeout, CONNECT_TIMEOUT_S)
            ).models.list()
            entries = [_as_dict(m) for m in page.data]
        except openai.NotFoundError:
            if wanted:
                self._notices.append(
                    f"The server at {self.url} does not list its models, so the "
                    f"name {wanted!r} could not be checked."
                )
                return [wanted], {"id": wanted}
            raise ExaoneError(
                f"The server at {self.url} does not list its models (404); check "
                "that the URL is the API's base (it usually ends in /v1), or name "
                "the model with --model."
            ) from None
        except (openai.OpenAIError, ValueError, OSError) as err:
            raise ExaoneError(self._failed(err, min(self.timeout, CONNECT_TIMEOUT_S))) from None
        served = [str(e.get("id")) for e in entries if e.get("id")]
        if wanted is not None:
            for entry in entries:
                if entry.get("id") == wanted:
                    return served, entry
            raise ExaoneError(
                f"The server at {self.url} does not serve {wanted!r}; it serves "
                f"{_names(served)}, so connect with --model set to one of them."
            )
        if len(entries) == 1:
            return served, entries[0]
        if not entries:
            raise ExaoneError(
                f"The server at {self.url} lists no models; check that it has "
                "finished loading one, then connect again."
            )
        raise ExaoneError(
            f"The server at {self.url} serves several models ({_names(served)}); "
            "choose one with --model NAME."
        )

    def _context_size(self, entry: dict) -> int:
        """The context the server reports: vLLM's max_model_len, llama-server's /props; else 0."""
        for key in ("max_model_len", "context_length", "n_ctx"):
            value = entry.get(key)
            if isinstance(value, int) and value > 0:
                return value
        if entry.get("owned_by") == "llamacpp" or isinstance(entry.get("meta"), dict):
            props = self._get_json_root("/props")
            settings = props.get("default_generation_settings") if isinstance(props, dict) else None
            for source in (settings, props):
                if isinstance(source, dict) and isinstance(source.get("n_ctx"), int):
                    return source["n_ctx"]
        return 0  # unknown: llama-cpp-python's server does not say

    def _get_json_root(self, path: str) -> Any:
        """GET a path at the server's root (llama-server's /props sits beside /v1); None on failure."""
        parts = urllib.parse.urlsplit(self.url)
        root = parts.path[:-3] if parts.path.endswith("/v1") else parts.path
        address = urllib.parse.urlunsplit((parts.scheme, parts.netloc, root + path, "", ""))
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(address, headers=headers),
                timeout=min(self.timeout, CONNECT_TIMEOUT_S),
            ) as response:
                return json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError, urllib.error.URLError):
            return None

    # -- generation -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> Generator[None, None, None]:
        """The server for one reply, or for a map's rows together, as the local engine's model:
        ModelBusyError while another has it. Else a cell run while the panel writes would be
        sent beside it (llama-cpp-python's server cuts the reply it streams short for it)."""
        if not self._lock.acquire(blocking=False):
            raise ModelBusyError()
        try:
            yield
        finally:
            self._lock.release()

    def generate_many(
        self,
        requests: Sequence[Request],
        *,
        parallel: int | None = None,
        memory_mb: int | None = None,  # the server's memory is its own
        on_row: OnRow | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> BatchResult:
        """The requests as concurrent requests (``many.py``), the server held throughout."""
        return many.generate_many(self, requests, parallel, on_row, on_tokens)

    def stream_held(self, request: Request) -> Reply:
        """``stream`` for a caller that holds the server already (``generate_many``'s rows)."""
        return self.stream(request, held=True)

    def stream(self, request: Request, *, held: bool = False) -> Reply:
        """Send the request now (a refused or rejected request raises here, one sentence); the
        pieces come as the Reply is read, which holds the server (``exclusive``) unless the caller
        holds it already (``held``: ``generate_many``'s rows). A failure mid-reply raises ExaoneError from
        the iteration, as the local engine does: the Reply keeps the partial text, with
        ``finish_reason == "error"`` and ``reply.error`` set. ``reply.stop()`` and Ctrl-C close the
        stream, which tells the server to stop generating.
        """
        messages = [
            wire_message(m, calls_as_text=self._calls_as_text) for m in request.messages or ()
        ]
        if not messages:
            raise ExaoneError("The prompt is empty; write something to ask.")
        if not held and self._lock.locked():  # before sending: the request is what interferes
            raise ModelBusyError()
        started = time.perf_counter()
        client = self._clients.take()
        note = None
        try:
            chunks, note = self._open(client, messages, request)
        except KeyboardInterrupt:  # Ctrl-C while the server evaluated the prompt
            chunks = None
        except BaseException:
            self._clients.release(client)
            raise
        tags = request.reasoning_tags or DEFAULT_REASONING_TAGS
        reply = Reply(
            lambda reply: self._read(reply, client, chunks, started, tags, held),
            n_ctx=self.n_ctx,
            thinking_opened=request.opens_reasoning,
        )
        reply.note = note
        self._replies.add(reply)
        reply.on_finish(self._replies.discard)
        # Once the reply ends, however it ends (read, stopped, failed, closed before reading),
        # or is dropped unread: the request went out already, and would run to max_tokens.
        let_go = _once(lambda: self._let_go(client, chunks))
        reply.on_finish(lambda _: let_go())
        weakref.finalize(reply, let_go)
        reply.on_stop(lambda: _wake(chunks))
        return reply

    def _let_go(self, client, chunks) -> None:
        """Close the stream (which tells the server to stop generating) and give back the
        client."""
        if chunks is not None:
            with contextlib.suppress(Exception):
                chunks.close()
        self._clients.release(client)

    def _open(self, client, messages: list[dict], request: Request) -> tuple[Any, str | None]:
        """The stream, and a note when the server refused every spelling of response_format."""
        openai = openai_module()
        s: Sampling = request.sampling
        extra: dict[str, Any] = {
            # Not in OpenAI's API; llama.cpp's servers read these names, vLLM the second spelling.
            # Sent always: llama-cpp-python's server defaults to repeat_penalty 1.1 and min_p 0.05,
            # which would make "temperature 0" answers differ from the local engine's.
            "top_k": s.top_k,
            "repeat_penalty": s.repeat_penalty,
            "repetition_penalty": s.repeat_penalty,
            "min_p": 0.0,
        }
        if request.template_kwargs:  # the tools go as OpenAI's ``tools``, not to the template
            kwargs = {k: v for k, v in request.template_kwargs.items() if k != "tools"}
            if kwargs:
                extra["chat_template_kwargs"] = kwargs
        options: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "extra_body": extra,
        }
        if s.seed is not None:
            options["seed"] = s.seed
        if request.tools:
            options["tools"] = request.tools
        wanted = request.response_format
        spellings: list[str | None] = [*self.response_formats, None] if wanted else [None]
        for i, spelling in enumerate(spellings):
            if spelling is not None and wanted is not None:
                options["response_format"] = _spelled(wanted, spelling)
            else:
                options.pop("response_format", None)
            try:
                chunks = self._create(client, options)
            except openai.APIStatusError as err:
                # Servers refuse a spelling they do not know with 400, 422 or (llama-cpp-python's)
                # 500; whether the spelling was the reason shows when a later one is accepted.
                if spelling is None or err.status_code in (401, 403, 404, 429):
                    raise ExaoneError(self._failed(err, self.timeout)) from None
                continue
            except (openai.OpenAIError, ValueError, OSError) as err:
                kind = ServerUnreachable if isinstance(err, openai.APIConnectionError) else None
                raise (kind or ExaoneError)(self._failed(err, self.timeout)) from None
            # The server took a later spelling, so the earlier ones were what it refused.
            with self._formats_lock:
                for refused in spellings[:i]:
                    if refused in self.response_formats:
                        self.response_formats.remove(refused)
            note = None
            if wanted and spelling is None:
                note = (
                    f"The server at {self.url} refused every form of response_format, so its "
                    "replies are not held to the schema (each is still parsed and checked); "
                    "ask for the JSON in the prompt, or serve the model with vLLM or "
                    "llama-server."
                )
            return chunks, note
        raise AssertionError("unreachable: the last spelling (None) returns or raises")

    def _create(self, client, options: dict):
        openai = openai_module()
        for attempt in (1, 2):
            try:
                return client.chat.completions.create(**options)
            except openai.APIConnectionError as err:
                # A kept-alive connection that the server closed (it does after a failed stream)
                # fails before the server reads the request: sending it again is safe.
                stale = not isinstance(err, openai.APITimeoutError) and any(
                    w in root_cause(err).lower() for w in ("reset", "disconnected")
                )
                if not (stale and attempt == 1):
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _read(
        self, reply: Reply, client, chunks, started: float, tags: ReasoningTags, held: bool
    ) -> Generator[str, None, None]:
        with contextlib.nullcontext() if held else self.exclusive():
            yield from self._generate(reply, client, chunks, started, tags)

    def _generate(
        self, reply: Reply, client, chunks, started: float, tags: ReasoningTags
    ) -> Generator[str, None, None]:
        stats = reply.stats
        stats.rate_source = "client"
        reasoning = ReasoningText(tags, reply.thinking_opened)
        seen = _Seen()
        try:
            if chunks is None:
                stats.finish_reason = "interrupted"
                return
            for text in self._texts(reply, client, chunks, reasoning, seen):
                seen.count += 1
                seen.last = time.perf_counter()
                if seen.first is None:
                    seen.first = seen.last
                    stats.ttft_s = seen.first - started
                stats.completion_tokens = seen.count
                yield text
            tail = reasoning.end() + _calls_text(seen)  # balance the tag written here
            if seen.calls:
                self._calls_as_text = False
            elif "<tool_call>" in reply.text:
                self._calls_as_text = True
            if tail:
                yield tail
            if seen.stopped:
                stats.finish_reason = "interrupted"
                return
            if seen.finish is None:
                self._clients.drop(client)
                raise ReplyCutShort(self._cut_short(kept=bool(seen.count)))
            stats.finish_reason = {
                "eos": "stop",
                "stop_sequence": "stop",
                "tool_calls": "stop",  # the turn ended after its calls, as a local one does
            }.get(seen.finish, seen.finish)
        except KeyboardInterrupt:
            stats.finish_reason = "interrupted"
            tail = reasoning.end()
            if tail:
                yield tail
        finally:
            stats.total_s = time.perf_counter() - started
            self._figures(stats, seen.usage, seen.timings, seen.count, seen.first, seen.last)

    def _texts(
        self, reply: Reply, client, chunks, reasoning: ReasoningText, seen: _Seen
    ) -> Generator[str, None, None]:
        """The text of each chunk as it arrives, until the stream ends or a stop; what the
        chunks say besides (usage, timings, the finish reason) goes into ``seen``."""
        while not reply.stop_requested:
            try:
                chunk = next(chunks)
            except StopIteration:
                seen.stopped = seen.finish is None and reply.stop_requested  # under ``_wake``
                return
            except Exception as err:  # the network boundary: whatever broke, one sentence
                if reply.stop_requested:  # closed under it (``_wake``, ``close``)
                    break
                self._clients.drop(client)
                raise ExaoneError(
                    broken_reply(err, url=self.url, timeout=self.timeout, kept=bool(seen.count))
                ) from None
            seen.usage = getattr(chunk, "usage", None) or seen.usage
            seen.timings = getattr(chunk, "timings", None) or seen.timings
            for choice in getattr(chunk, "choices", None) or ():
                delta = getattr(choice, "delta", None)
                text = reasoning.text(reasoning_of(delta), getattr(delta, "content", None) or "")
                if text:
                    yield text
                seen.calls.add(getattr(delta, "tool_calls", None))
                if getattr(choice, "finish_reason", None):
                    seen.finish = choice.finish_reason
        seen.stopped = True

    def _cut_short(self, *, kept: bool) -> str:
        """The sentence for a stream that ended without a finish reason."""
        if kept:
            return (
                f"The server at {self.url} ended the reply without finishing it (it may have "
                "stopped or crashed); the partial reply is kept, check the server's log."
            )
        return (
            f"The server at {self.url} ended the reply before any text came (it may have "
            "failed on the prompt, e.g. one longer than its context); check the server's log, "
            "or shorten the conversation (`%%exaone --new` starts afresh)."
        )

    @staticmethod
    def _figures(
        stats, usage, timings, count: int, first: float | None, last: float | None
    ) -> None:
        """Server figures where the server gave them, else the client's count and clock."""
        if count > 1 and first is not None and last is not None and last > first:
            stats.decode_tok_s = (count - 1) / (last - first)
        if usage is not None:
            prompt = getattr(usage, "prompt_tokens", None)
            completion = getattr(usage, "completion_tokens", None)
            if isinstance(prompt, int):
                details = getattr(usage, "prompt_tokens_details", None)
                cached = getattr(details, "cached_tokens", None) if details is not None else None
                stats.prompt_tokens = prompt
                stats.prompt_tokens_evaluated = prompt - (cached if isinstance(cached, int) else 0)
            if isinstance(completion, int):
                stats.completion_tokens = completion
                if count > 1 and stats.decode_tok_s and completion > 1:
                    stats.decode_tok_s *= (completion - 1) / (
                        count - 1
                    )  # server's count, our clock
            stats.rate_source = "server"
        if isinstance(timings, dict):  # llama-server: its own measurement of prompt and decode
            prompt_n, cache_n = timings.get("prompt_n"), timings.get("cache_n") or 0
            if isinstance(prompt_n, int):
                stats.prompt_tokens_evaluated = prompt_n
                if usage is None:
                    stats.prompt_tokens = prompt_n + cache_n
            if timings.get("predicted_per_second"):
                stats.decode_tok_s = float(timings["predicted_per_second"])
            if timings.get("prompt_per_second") and prompt_n:
                stats.prompt_tok_s = float(timings["prompt_per_second"])
            if usage is None and isinstance(timings.get("predicted_n"), int):
                stats.completion_tokens = timings["predicted_n"]
            stats.rate_source = "server"

    def _failed(self, err: BaseException, timeout: float) -> str:
        return failed_request(err, url=self.url, timeout=timeout, api_key_env=self.api_key_env)

    def prefix_cache(self) -> None:
        """None: the server keeps its own prefix cache (vLLM's, llama-server's)."""
        return None

    def clear_prefix_cache(self) -> None:
        """Nothing to clear here: the server's cache is the server's."""

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the replies still streaming (each keeps its text, marked interrupted, as a local
        reply does when its model is unloaded), then close the connections."""
        for reply in list(self._replies):
            reply.stop()
        self._clients.close()


@dataclass
class _Seen:
    """What a stream said besides its text, and how far it came."""

    usage: Any = None
    timings: Any = None
    finish: str | None = None
    stopped: bool = False  # ended by a stop (or Ctrl-C), not by the server
    count: int = 0  # text pieces
    first: float | None = None  # when the first and the last piece came
    last: float | None = None
    calls: StreamedCalls = field(default_factory=StreamedCalls)  # the server's parsed calls


def _calls_text(seen: _Seen) -> str:
    """The calls a server parsed out of the reply, as the model wrote them (after its text)."""
    text = seen.calls.text()
    return ("\n" if text and seen.count else "") + text


def _spelled(response_format: dict, spelling: str) -> dict:
    """OpenAI's json_schema response_format, in the spelling a server may read instead."""
    if spelling == "json_object":
        return {"type": "json_object", "schema": response_format["json_schema"]["schema"]}
    return response_format


def _as_dict(model: Any) -> dict:
    if isinstance(model, dict):
        return model
    dump = getattr(model, "model_dump", None) or getattr(model, "dict", None)
    return dict(dump()) if dump else {"id": getattr(model, "id", None)}


def _wake(chunks) -> None:
    """End the stream's wait for the server (a long prompt, a queue): a stop only sets a flag,
    which the reading loop sees after the next chunk. Shutting the socket down ends the read at
    once (closing it would not, from another thread), and the server sees the client gone."""
    response = getattr(chunks, "response", None)
    if response is None or response.is_closed:  # ended: the connection may serve another stream
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "no models"


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, run by the first call only (from whichever thread makes it)."""
    lock, done = threading.Lock(), [False]

    def run() -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        action()

    return run
