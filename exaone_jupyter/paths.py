"""Where the extension keeps what outlives a kernel: the user's cache folder.

``$EXAONE_JUPYTER_CACHE`` names another root (the tests point it at a temporary folder);
otherwise it is platformdirs' cache folder for the app (``~/.cache/exaone-jupyter`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EXAONE_JUPYTER_CACHE"


def cache_root() -> Path:
    """The folder under which map's rows (``map/``) and saved KV states (``kv/``) live."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("exaone-jupyter", appauthor=False)
