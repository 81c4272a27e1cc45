"""Known EXAONE GGUFs, so a user can say ``exaone-3.5-7.8b`` instead of a Hub path.

Each entry names one exact file on the Hugging Face Hub, so a cached file resolves offline
without listing the repository. ``exaone-demo`` (EXAONE 3.0's format) and ``exaone-4.0-demo``
(EXAONE 4.0's architecture, thinking on and off) are tiny models shipped inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ExaoneError

DEMO_ALIAS = "exaone-demo"
DEMO4_ALIAS = "exaone-4.0-demo"
DEFAULT_ALIAS = "exaone-3.0-7.8b"


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    repo: str  # "" for a model bundled in the package
    filename: str
    family: str  # "exaone3", "exaone-deep", "exaone4"
    size_gb: float
    context_length: int
    description: str

    @property
    def size_text(self) -> str:
        return f"{self.size_gb:.2f} GB" if self.size_gb >= 0.01 else f"{self.size_gb * 1000:.1f} MB"


_ENTRIES = (
    CatalogEntry(
        DEFAULT_ALIAS,
        "Bingsu/exaone-3.0-7.8b-it",
        "exaone-3.0-7.8B-it-Q8_0.gguf",
        "exaone3",
        8.31,
        4096,
        "EXAONE 3.0 7.8B instruct, Q8_0 (the model card's GGUF)",
    ),
    CatalogEntry(
        "exaone-3.5-2.4b",
        "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct-GGUF",
        "EXAONE-3.5-2.4B-Instruct-Q4_K_M.gguf",
        "exaone3",
        1.64,
        32768,
        "EXAONE 3.5 2.4B instruct, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-3.5-7.8b",
        "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct-GGUF",
        "EXAONE-3.5-7.8B-Instruct-Q4_K_M.gguf",
        "exaone3",
        4.77,
        32768,
        "EXAONE 3.5 7.8B instruct, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-3.5-32b",
        "LGAI-EXAONE/EXAONE-3.5-32B-Instruct-GGUF",
        "EXAONE-3.5-32B-Instruct-Q4_K_M.gguf",
        "exaone3",
        19.3,
        32768,
        "EXAONE 3.5 32B instruct, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-4.0-1.2b",
        "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF",
        "EXAONE-4.0-1.2B-Q4_K_M.gguf",
        "exaone4",
        0.81,
        65536,
        "EXAONE 4.0 1.2B, hybrid reasoning, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-4.0-32b",
        "LGAI-EXAONE/EXAONE-4.0-32B-GGUF",
        "EXAONE-4.0-32B-Q4_K_M.gguf",
        "exaone4",
        19.3,
        131072,
        "EXAONE 4.0 32B, hybrid reasoning, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-deep-2.4b",
        "LGAI-EXAONE/EXAONE-Deep-2.4B-GGUF",
        "EXAONE-Deep-2.4B-Q4_K_M.gguf",
        "exaone-deep",
        1.64,
        32768,
        "EXAONE Deep 2.4B reasoning, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-deep-7.8b",
        "LGAI-EXAONE/EXAONE-Deep-7.8B-GGUF",
        "EXAONE-Deep-7.8B-Q4_K_M.gguf",
        "exaone-deep",
        4.77,
        32768,
        "EXAONE Deep 7.8B reasoning, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        "exaone-deep-32b",
        "LGAI-EXAONE/EXAONE-Deep-32B-GGUF",
        "EXAONE-Deep-32B-Q4_K_M.gguf",
        "exaone-deep",
        19.3,
        32768,
        "EXAONE Deep 32B reasoning, Q4_K_M (LG official)",
    ),
    CatalogEntry(
        DEMO_ALIAS,
        "",
        "exaone-demo.gguf",
        "exaone3",
        0.0034,
        2048,
        "tiny demo model shipped with the package; answers only its training dialogues",
    ),
    CatalogEntry(
        DEMO4_ALIAS,
        "",
        "exaone-4.0-demo.gguf",
        "exaone4",
        0.0029,
        2048,
        "tiny EXAONE 4.0-architecture demo model shipped with the package (thinking on and off); "
        "answers only its training dialogues",
    ),
)

CATALOG: dict[str, CatalogEntry] = {e.alias: e for e in _ENTRIES}


def lookup(alias: str) -> CatalogEntry | None:
    return CATALOG.get(alias.strip().lower())


def demo_model_path(alias: str = DEMO_ALIAS) -> Path:
    """A bundled demo GGUF inside the installed package (``exaone-demo`` unless named)."""
    entry = CATALOG[alias]
    if entry.repo:
        raise ValueError(f"{alias} is not bundled with the package")
    path = Path(str(resources.files("exaone_jupyter") / "data" / entry.filename))
    if not path.is_file():
        tool = "train_exaone4_demo.py" if alias == DEMO4_ALIAS else "train_demo_model.py"
        raise ExaoneError(
            f"The bundled model {alias} is missing from {path.parent}; reinstall exaone-jupyter "
            f"or regenerate it with `python tools/{tool}`."
        )
    return path


def bundled_paths() -> set[Path]:
    """The GGUFs that ship with the package, wherever they are installed."""
    return {
        Path(str(resources.files("exaone_jupyter") / "data" / e.filename))
        for e in _ENTRIES
        if not e.repo
    }
