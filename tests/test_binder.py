"""What can be checked offline about the Binder set-up (mybinder builds from binder/)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from exaone_jupyter.model.catalog import CATALOG

BINDER = Path(__file__).resolve().parent.parent / "binder"


def _downloaded_file() -> tuple[str, str]:
    """The (repo, filename) that postBuild's `hf download` fetches."""
    for line in (BINDER / "postBuild").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["hf", "download"]:
            return words[2], words[3]
    raise AssertionError("postBuild downloads no model with `hf download REPO FILE`")


def test_post_build_stops_at_the_first_failing_command():
    text = (BINDER / "postBuild").read_text()
    assert text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -e", text, re.M), "without set -e a failed download is ignored"
    assert subprocess.run(["bash", "-n", str(BINDER / "postBuild")]).returncode == 0


def test_the_model_post_build_downloads_is_in_the_catalog_and_fits_binder():
    repo, filename = _downloaded_file()
    entries = [e for e in CATALOG.values() if (e.repo, e.filename) == (repo, filename)]
    assert entries, f"{repo}:{filename} is not a catalog model"
    assert entries[0].size_gb < 1.0, "mybinder gives 2 GB of memory in all"


def test_start_points_the_notebooks_at_that_file_and_hands_over():
    text = (BINDER / "start").read_text()
    _, filename = _downloaded_file()
    assert re.search(rf"^export EXAONE_JUPYTER_MODEL=.*{re.escape(filename)}", text, re.M)
    assert text.rstrip().endswith('exec "$@"')
    assert subprocess.run(["bash", "-n", str(BINDER / "start")]).returncode == 0


def test_requirements_install_this_package_and_jupyterlab():
    lines = [
        ln.split("#")[0].strip() for ln in (BINDER / "requirements.txt").read_text().splitlines()
    ]
    assert "." in lines and "jupyterlab" in lines
