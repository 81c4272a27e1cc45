"""``map``: one prompt over many rows, each a one-off question, answered in batches.

``run.py`` turns items and a prompt into one request per row and collects the results,
``cache.py`` keeps reproducible rows across re-runs (and restarts, on disk), ``structured.py``
turns a schema into the engine's ``response_format`` and each reply into its value. The engine
answers the rows (``Backend.generate_many``), whichever engine it is.
"""

from .cache import clear_cache
from .run import MapProgress, MapResult, RowError, run_map

__all__ = ["MapProgress", "MapResult", "RowError", "clear_cache", "run_map"]
