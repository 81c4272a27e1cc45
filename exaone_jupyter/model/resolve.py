"""Turn a model spec into a local GGUF file, downloading through huggingface_hub when needed.

A spec is a path to a ``.gguf`` file, ``REPO:FILE`` on the Hugging Face Hub (``REPO`` plus a
``file_glob`` also works), or a catalog alias. A cached Hub file resolves with no network at all:
we ask the cache first, unlike ``Llama.from_pretrained``, which lists the repository every time.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExaoneError
from . import catalog

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OFFLINE_HINT = "or use the offline demo model with `%exaone load exaone-demo`"


@dataclass(frozen=True)
class Resolved:
    path: Path
    spec: str  # what the user asked for
    source: str  # "file", "hub", "bundled"
    repo: str | None = None
    family_hint: str | None = None  # the catalog's family, when the spec is an alias


def hub_offline() -> bool:
    """True when huggingface_hub is told to stay offline (read now, not at import time)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    return os.environ.get("HF_HUB_CACHE") or None


def resolve(
    spec: str, *, file_glob: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Resolved:
    """The local file for ``spec``; raises ExaoneError with one sentence when there is none."""
    spec = (spec or "").strip()
    if not spec:
        raise ExaoneError(
            "No model given: name a .gguf path, REPO:FILE on the Hugging Face Hub, "
            "or a catalog alias from `%exaone models`."
        )
    entry = catalog.lookup(spec)
    if entry is not None:
        if not entry.repo:
            path = catalog.demo_model_path(entry.alias)
            return Resolved(path, spec, "bundled", family_hint=entry.family)
        path = _hub_file(entry.repo, entry.filename, cache_dir)
        return Resolved(path, spec, "hub", entry.repo, entry.family)

    path = Path(spec).expanduser()
    if path.exists():  # before the Hub readings: "models/demo:q8.gguf" is a file, not REPO:FILE
        return Resolved(path.resolve(), spec, "file")
    repo, sep, filename = spec.partition(":")
    if sep and _REPO.match(repo) and filename:
        return Resolved(_hub_file(repo, filename, cache_dir), spec, "hub", repo)
    names_a_gguf = spec.lower().endswith(".gguf")  # DEMO.GGUF is a file name too
    if _REPO.match(spec) and not names_a_gguf:
        if not file_glob:
            raise ExaoneError(
                f"{spec} looks like a Hugging Face repository: add the file as "
                f"{spec}:FILE.gguf, or pass --file with a pattern such as '*Q4_K_M.gguf'."
            )
        name = _match_hub_file(spec, file_glob, cache_dir)
        return Resolved(_hub_file(spec, name, cache_dir), spec, "hub", spec)

    if names_a_gguf or os.sep in spec:
        raise ExaoneError(
            f"There is no file at {spec}; check the path, or name a model from `%exaone models`."
        )
    raise ExaoneError(
        f"Unknown model '{spec}': give a path to a .gguf file, REPO:FILE on the "
        "Hugging Face Hub, or a catalog alias from `%exaone models`."
    )


def _hub_file(repo: str, filename: str, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = _cache_dir(cache_dir)
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=where, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError):
        pass
    if hub_offline():
        raise ExaoneError(
            f"{repo}:{filename} is not in the Hugging Face cache and the Hub is "
            f"offline (HF_HUB_OFFLINE is set); download it once while online, "
            f"{_OFFLINE_HINT}."
        ) from None
    _preflight(repo, filename)
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=where))
    except RepositoryNotFoundError:
        raise ExaoneError(_no_repo(repo)) from None
    except LocalEntryNotFoundError:  # the Hub cannot be reached (first: it subclasses the next)
        raise ExaoneError(_unreachable(f"download {repo}:{filename}")) from None
    except EntryNotFoundError:
        raise ExaoneError(_no_file(repo, filename)) from None


def _preflight(repo: str, filename: str | None) -> None:
    """One request to the Hub with no retries, so that a Hub that cannot be reached fails at
    once in one sentence: huggingface_hub's own download retries five times over 23 seconds and
    logs every try to stderr. ``filename`` None only asks whether the repository is there."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(repo, filename or ".gitattributes"))
    except RepositoryNotFoundError:
        raise ExaoneError(_no_repo(repo)) from None
    except EntryNotFoundError:
        if filename is not None:
            raise ExaoneError(_no_file(repo, filename)) from None
    except HfHubHTTPError:
        pass  # the Hub answered: the real request reports what it says
    except Exception:  # connection refused, DNS, timeout, TLS, proxy...
        raise ExaoneError(_unreachable(f"reach {repo}")) from None


def _no_repo(repo: str) -> str:
    return (
        f"The Hugging Face repository {repo} does not exist or needs a login "
        "(`hf auth login`); check the name in `%exaone models`."
    )


def _no_file(repo: str, filename: str) -> str:
    return (
        f"The Hugging Face repository {repo} has no file {filename}; check the file name on "
        "the repository's page."
    )


def _unreachable(what: str) -> str:
    return (
        f"Cannot reach the Hugging Face Hub to {what}; check the network connection, "
        f"{_OFFLINE_HINT}."
    )


def _match_hub_file(repo: str, pattern: str, cache_dir: str | os.PathLike | None) -> str:
    """The one file of ``repo`` matching ``pattern``: from the cache offline, else the Hub."""
    names = _cached_files(repo, cache_dir)
    if not names and hub_offline():
        raise ExaoneError(
            f"{repo} is not in the Hugging Face cache and the Hub is offline "
            f"(HF_HUB_OFFLINE is set); download it once while online, "
            f"{_OFFLINE_HINT}."
        )
    if not names:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        _preflight(repo, None)
        try:
            names = HfApi().list_repo_files(repo)
        except RepositoryNotFoundError:
            raise ExaoneError(_no_repo(repo)) from None
        except Exception:
            raise ExaoneError(_unreachable(f"list {repo}")) from None
    matches = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(matches[:4])})"
        raise ExaoneError(
            f"The pattern {pattern!r} matches {found} in {repo}; give a pattern "
            "that matches exactly one .gguf file."
        )
    return matches[0]


def _cached_files(repo: str, cache_dir: str | os.PathLike | None) -> list[str]:
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(_cache_dir(cache_dir))
    except Exception:  # no cache yet
        return []
    names: set[str] = set()
    for cached in info.repos:
        if cached.repo_id == repo and cached.repo_type == "model":
            for revision in cached.revisions:
                names.update(
                    str(f.file_path.relative_to(revision.snapshot_path)) for f in revision.files
                )
    return sorted(names)


def cached_path(
    entry: catalog.CatalogEntry, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """Where a catalog model lies in the local cache, or None (never touches the network)."""
    if not entry.repo:
        return catalog.demo_model_path(entry.alias)
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(entry.repo, entry.filename, cache_dir=_cache_dir(cache_dir))
    return Path(hit) if isinstance(hit, str) else None


def availability(entry: catalog.CatalogEntry) -> str:
    """Whether a catalog model can load without a download, in the words every view uses:
    "bundled", "cached", "not cached (download 1.64 GB)" or "missing" (never touches the network)."""
    try:
        path = cached_path(entry)
    except Exception:  # a missing demo file, a broken cache: still offer the name
        return "missing"
    if not entry.repo:
        return "bundled"
    return "cached" if path else f"not cached (download {entry.size_text})"


def local_path(spec: str) -> Path | None:
    """The file ``spec`` names when it is on this machine already (a path, or a cached catalog
    model), else None; never touches the network."""
    entry = catalog.lookup(spec)
    path = cached_path(entry) if entry is not None else Path(spec).expanduser()
    return path if path is not None and path.is_file() else None
