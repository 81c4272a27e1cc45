"""Re-execute the tutorial notebooks in place so their saved outputs come from the demo model.

    .venv/bin/python tools/run_notebooks.py [notebooks/01-quickstart.ipynb ...]

Runs offline with EXAONE_JUPYTER_MODEL=exaone-demo, like `make test` does under nbval, so the
saved answers are the ones the tests compare. Like `make test` it names vLLM's python (the
environment `make vllm` installs) in EXAONE_JUPYTER_VLLM_PYTHON, so that tutorial 06 saves what
vLLM answers; its vLLM cells' outputs are not compared, they are shown to the reader.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_helpers import VLLM_VENV  # noqa: E402 (the Makefile's, where `make vllm` installs)


def run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    os.environ.update(EXAONE_JUPYTER_MODEL="exaone-demo", HF_HUB_OFFLINE="1")
    if (VLLM_VENV / "bin" / "python").is_file():
        os.environ.setdefault("EXAONE_JUPYTER_VLLM_PYTHON", str(VLLM_VENV / "bin" / "python"))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nb.metadata.pop("widgets", None)  # live widget state is meaningless once saved
    nbformat.write(nb, path)
    print(f"executed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    targets = [Path(p).resolve() for p in sys.argv[1:]] or sorted(
        (ROOT / "notebooks").glob("*.ipynb")
    )
    for target in targets:
        run(target)
