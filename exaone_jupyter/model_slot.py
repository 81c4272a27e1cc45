"""The one loaded engine and its chat template: load a GGUF, switch, connect, unload.

A switch never leaves the user worse off than before it: every check that can fail runs while the
old model is still loaded, and a load that llama.cpp refuses or a Ctrl-C cancels brings the old
model back. The session owns one slot and hears of each change (``on_change``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .chat.families import family_of_architecture, family_of_model_name
from .chat.template import ChatTemplate
from .engine.backend import Backend, LoadOptions
from .engine.offload import GpuInfo
from .errors import ExaoneError
from .model import catalog
from .model.gguf_check import GGUFInfo

MODEL_ENV = "EXAONE_JUPYTER_MODEL"


@dataclass(frozen=True)
class _LocalLoad:
    """What it takes to load the current local model again (after a failed switch)."""

    key: tuple  # (spec, file glob, options): the same key again is nothing to do
    spec: str
    gguf: GGUFInfo
    options: LoadOptions
    template: ChatTemplate  # before the model's BOS/EOS texts are bound


class ModelSlot:
    """Holds at most one backend (local or server) with the template its prompts use."""

    def __init__(self, on_change: Callable[[ChatTemplate | None, bool], None]) -> None:
        """``on_change(template, attached)``: after each attach (``attached``) and unload."""
        self.backend: Backend | None = None
        self.template: ChatTemplate | None = None
        self.spec: str | None = None
        self._local: _LocalLoad | None = None
        self._on_change = on_change

    @staticmethod
    def default_spec(configured: str | None = None) -> str:
        """The env variable, else the configured model, else the catalog default."""
        return os.environ.get(MODEL_ENV) or configured or catalog.DEFAULT_ALIAS

    @staticmethod
    def gpu_support() -> GpuInfo:
        """What this llama.cpp build can offload to (no GPU when llama_cpp cannot even load:
        the next load says why in one sentence)."""
        try:
            import llama_cpp  # noqa: F401  (before numpy: see load)

            from .engine.llama.gpu import probe_gpu

            return probe_gpu()
        except Exception:
            return GpuInfo(False)

    @staticmethod
    def catalog() -> list[tuple[catalog.CatalogEntry, str]]:
        """Each catalog model with whether it needs a download (``resolve.availability``)."""
        from .model.resolve import availability

        return [(entry, availability(entry)) for entry in catalog.CATALOG.values()]

    @staticmethod
    def peek(spec: str) -> GGUFInfo | None:
        """The GGUF header of ``spec`` when its file is on this machine (a path, or a catalog
        model in the cache), else None: no download, no error."""
        from .model.gguf_check import read_gguf
        from .model.resolve import local_path

        try:
            path = local_path(spec)
            return read_gguf(path) if path is not None else None
        except ExaoneError:
            return None

    def load(
        self,
        spec: str | None = None,
        *,
        file_glob: str | None = None,
        on_progress: Callable[[float], None] | None = None,
        **options: Any,
    ) -> list[str]:
        """Load ``spec`` (same spec and options: nothing to do); returns notices to show.

        ``on_progress(fraction)`` follows llama.cpp's own loading, in this thread. A load that
        fails or is interrupted (Ctrl-C) gives the user back the model loaded before it.
        """
        # llama_cpp before numpy (which gguf imports): on one CUDA image the other order made
        # every model load segfault (benchmarks/gpu/RESULTS.md).
        import llama_cpp  # noqa: F401

        from .engine.llama.local import LocalBackend
        from .model.gguf_check import read_gguf
        from .model.probe import probe
        from .model.resolve import resolve

        spec = spec or self.default_spec()
        load_options = LoadOptions.from_options(**options)
        key = (spec, file_glob, load_options)
        if self._local is not None and self._local.key == key and self.backend is not None:
            return []
        resolved = resolve(spec, file_glob=file_glob)
        gguf = read_gguf(resolved.path)
        LocalBackend.check(gguf, load_options)  # e.g. n_ctx too large: fail before unloading
        probe(gguf.path)  # a file llama.cpp would abort() on ends a child process, not the kernel
        # A template that does not compile fails here, while the old model is still loaded.
        template = ChatTemplate.for_model(
            gguf.chat_template,
            family_hint=resolved.family_hint or family_of_architecture(gguf.architecture),
            model_name=gguf.path.name,
            is_exaone=gguf.is_exaone_arch or resolved.family_hint is not None,
        )
        previous = self._local if self.backend is not None else None
        self.unload()  # free the old weights before the new ones take memory
        try:
            self._attach_local(_LocalLoad(key, spec, gguf, load_options, template), on_progress)
        except BaseException as err:
            restored = self._restore(previous)
            if isinstance(err, KeyboardInterrupt):
                now = (
                    f"{previous.spec} is loaded again"
                    if restored and previous
                    else "no model is loaded"
                )
                raise ExaoneError(
                    f"Loading {spec} was interrupted and {now}; run the load again to retry."
                ) from None
            raise
        notices = list(self.require_backend().info.notices)
        if template.notice:
            notices.append(template.notice)
        # Without a template of its own, the template's notice already says it is not EXAONE.
        if not gguf.is_exaone_arch and gguf.chat_template and template.family is None:
            notices.append(
                f"{gguf.name} is not an EXAONE model (architecture {gguf.architecture}); "
                "it loads, but its template is not one this package knows."
            )
        return notices

    def _attach_local(
        self, load: _LocalLoad, on_progress: Callable[[float], None] | None = None
    ) -> None:
        from .engine.llama.local import LocalBackend

        backend = LocalBackend(load.gguf, load.options, on_progress=on_progress)
        self._attach(
            backend,
            load.template.with_special_tokens(backend.bos_text, backend.eos_text),
            load.spec,
        )
        self._local = load

    def _restore(self, previous: _LocalLoad | None) -> bool:
        """After a failed switch: load the model the user had again (True when it worked)."""
        if previous is None:
            return False
        try:
            self._attach_local(previous)
        except BaseException:  # it went away meanwhile; the user sees the new model's error
            return False
        return True

    def attach(self, backend: Backend, template: ChatTemplate | None, spec: str) -> None:
        """Use an engine made elsewhere (the remote backend)."""
        self.unload()
        self._attach(backend, template, spec)

    def _attach(self, backend: Backend, template: ChatTemplate | None, spec: str) -> None:
        self.backend, self.template, self.spec = backend, template, spec
        self._on_change(template, True)

    def unload(self) -> bool:
        """Free the loaded model; returns whether one was loaded."""
        if self.backend is None:
            return False
        self.backend.close()
        self.backend, self.template, self._local = None, None, None
        self._on_change(None, False)
        return True

    def connect(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key_env: str | None = None,
        n_ctx: int | None = None,
    ) -> list[str]:
        """Use an OpenAI-compatible server instead of a local model.

        The server applies its own chat template; the model's name picks the EXAONE family for
        the default system prompt and the reasoning tags. A failed connect changes nothing.
        """
        from .engine.server.remote import RemoteBackend

        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ExaoneError(
                    f"The environment variable {api_key_env} is not set; set it to "
                    "the server's API key and connect again."
                )
        backend = RemoteBackend(
            url, model=model, api_key=api_key, api_key_env=api_key_env, n_ctx=n_ctx
        )
        family = family_of_model_name(backend.model)
        template = ChatTemplate(family.template, family=family) if family else None
        self.attach(backend, template, backend.model)
        notices = list(backend.info.notices)
        if family is None:
            notices.append(
                f"{backend.model} does not look like an EXAONE model by its name; it is "
                "used as the server serves it, with no default system prompt."
            )
        return notices

    def disconnect(self) -> bool:
        """Stop using the server; False when none was connected."""
        if self.backend is None or self.backend.info.kind != "server":
            return False
        return self.unload()

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise ExaoneError(
                "No model is loaded; run `%exaone load exaone-demo` (offline) or "
                "`%exaone load` for the default EXAONE model."
            )
        return self.backend
