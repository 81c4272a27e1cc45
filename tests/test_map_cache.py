"""``map(..., cache="disk")``: reproducible rows kept on disk, served to another process (as after
a kernel restart); a disk cache that cannot be used costs the run nothing but one sentence.

The demo model answers the trained questions exactly, so a row served from the disk is checked
against the answer the model gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checks import one_sentence
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.mapping import clear_cache, run_map
from exaone_jupyter.mapping.cache import default_dir

QUESTIONS = ["Hello!", "Goodbye.", "What is 2 + 2?", "What is 10 times 3?"]
ANSWERS = [
    "Hello! I am a tiny EXAONE demo model. Ask me one of the questions I was trained on.",
    "Goodbye! See you next time.",
    "2 + 2 = 4.",
    "10 times 3 is 30.",
]
ANOTHER_PROCESS = """
import json, sys
from exaone_jupyter.mapping import run_map
from exaone_jupyter.session import Session

session = Session()
session.load("exaone-demo")
result = run_map(session, json.loads(sys.argv[1]), "{}", max_tokens=60, cache=sys.argv[2])
print(json.dumps([list(result), result.progress.from_disk, result.summary()]))
"""


@pytest.fixture(scope="module")
def session(demo_session):
    return demo_session  # the model family's default system prompt, as in a new process


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_map_cache):
    """Every test here starts and ends with map's memory cache empty."""


def _in_another_process(questions: list[str], cache: str) -> tuple[list[str], int, str]:
    out = subprocess.run(
        [sys.executable, "-c", ANOTHER_PROCESS, json.dumps(questions), cache],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values, from_disk, summary = json.loads(out.stdout.strip().splitlines()[-1])
    return values, from_disk, summary


def test_rows_on_disk_serve_another_process_and_a_cleared_memory(session, tmp_path):
    folder = tmp_path / "map-cache"
    first = run_map(session, QUESTIONS[:3], "{}", max_tokens=60, cache=str(folder))
    assert list(first) == ANSWERS[:3] and first.progress.from_cache == 0
    assert (folder / "cache.db").is_file()

    # another process (a restarted kernel): the three rows come from the disk, the fourth is new
    values, from_disk, summary = _in_another_process(QUESTIONS, str(folder))
    assert values == ANSWERS and from_disk == 3
    assert summary == "4 rows: 4 answered (3 from the cache, 3 of them from disk)."

    # this process, its memory cleared: all four from the disk (the other process wrote one)
    clear_cache()
    again = run_map(session, QUESTIONS, "{}", max_tokens=60, cache=folder)  # a Path works too
    assert list(again) == ANSWERS
    assert (again.progress.from_cache, again.progress.from_disk) == (4, 4)
    # ...and then from memory, without the disk
    memory = run_map(session, QUESTIONS, "{}", max_tokens=60)
    assert (memory.progress.from_cache, memory.progress.from_disk) == (4, 0)


def test_disk_is_the_users_cache_folder_and_clear_cache_empties_it(session, tmp_path, monkeypatch):
    monkeypatch.delenv("EXAONE_JUPYTER_CACHE")  # the tests' own folder (conftest.py)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "exaone-jupyter" / "map"
    run_map(session, QUESTIONS[:2], "{}", max_tokens=60, cache="disk")
    assert (default_dir() / "cache.db").is_file()
    clear_cache("disk")
    fresh = run_map(session, QUESTIONS[:2], "{}", max_tokens=60, cache="disk")
    assert fresh.progress.from_cache == 0 and list(fresh) == ANSWERS[:2]


def test_rows_that_are_not_reproducible_are_not_kept(session, tmp_path):
    folder = tmp_path / "random"
    run_map(session, QUESTIONS[:2], "{}", max_tokens=20, temperature=0.8, cache=str(folder))
    again = run_map(session, QUESTIONS[:2], "{}", max_tokens=20, temperature=0.8, cache=str(folder))
    assert again.progress.from_cache == 0


@pytest.mark.parametrize("damage", ["corrupt", "a file"])
def test_a_disk_cache_that_cannot_be_used_is_one_sentence_and_the_rows_still_come(
    session, tmp_path, damage
):
    folder = tmp_path / "broken"
    if damage == "corrupt":
        folder.mkdir()
        (folder / "cache.db").write_bytes(b"this is not an SQLite database" * 100)
        reason = "could not be opened (file is not a database)"
    else:
        folder.write_text("a file where the folder should be")
        reason = "could not be opened (it is a file, not a folder)"
    result = run_map(session, QUESTIONS, "{}", max_tokens=60, cache=str(folder))
    assert list(result) == ANSWERS and result.errors == []
    assert len(result.notes) == 1
    one_sentence(result.notes[0], f"The disk cache at {folder} {reason}", "fix or delete")
    assert result.summary().splitlines() == ["4 rows: 4 answered.", result.notes[0]]
    # the rows were kept in memory all the same
    assert run_map(session, QUESTIONS, "{}", max_tokens=60).progress.from_cache == 4
    if damage == "corrupt":  # clearing it, as the note suggests, is one sentence too
        with pytest.raises(ExaoneError) as err:
            clear_cache(str(folder))
        one_sentence(err, f"The disk cache at {folder} could not be cleared", "delete that folder")
        assert run_map(session, QUESTIONS, "{}", max_tokens=60).progress.from_cache == 0


@pytest.mark.parametrize("cache", ["dsik", "", None])
def test_a_cache_that_is_not_a_choice_is_one_sentence(session, cache):
    with pytest.raises(ExaoneError) as err:
        run_map(session, QUESTIONS, "{}", cache=cache)
    one_sentence(err, "cache must be True", "'disk' or a folder", f"not {cache!r}")
    assert not Path("dsik").exists()
