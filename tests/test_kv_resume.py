"""Saved KV states in real kernels: after a restart, ``%exaone resume`` and a follow-up evaluate
what the follow-up evaluates in a warm kernel and answer the same; cells alternating between two
documents reuse both; ``%exaone cache`` shows and clears the states. The shipped demo model's
trained answers (engine-level cases: test_prefix_cache.py)."""

from __future__ import annotations

import nbformat
import pytest

from checks import one_sentence
from kernel_helpers import Cell, Kernel, answer_of, start_kernel

pytestmark = pytest.mark.kernel

FRANCE, PARIS = "What is the capital of France?", "The capital of France is Paris."
JAPAN, TOKYO = "And of Japan?", "The capital of Japan is Tokyo."


def ask(kernel: Kernel, question: str, cell_id: str, options: str = "-t 0") -> Cell:
    cell = kernel.run(f"%%exaone {options}\n{question}", cell_id=cell_id)
    assert cell.ok and not cell.stderr, cell
    return cell


def stats(kernel: Kernel) -> dict:
    return kernel.eval("exaone_jupyter.last_reply().stats.as_dict()")


def restart(kernel: Kernel) -> None:
    """End the kernel as a restart does: asked to shut down, so its exit handlers run."""
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=False)


def test_a_restarted_kernel_resumes_from_the_saved_state(tmp_path):
    cache = str(tmp_path / "cache")
    notebook = tmp_path / "chat.ipynb"
    (tmp_path / "one").mkdir()
    first = start_kernel(tmp_path / "one", EXAONE_JUPYTER_CACHE=cache)
    try:
        france = ask(first, FRANCE, "cell-a", "-t 0 --new")
    finally:
        restart(first)
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(f"%%exaone -t 0 --new\n{FRANCE}", id="cell-a")
    code.outputs = [nbformat.from_dict(o) for o in france.final_outputs()]
    nb.cells.append(code)
    nbformat.write(nb, str(notebook))

    (tmp_path / "two").mkdir()
    second = start_kernel(tmp_path / "two", EXAONE_JUPYTER_CACHE=cache)
    try:
        assert second.run(f"%exaone resume {notebook}").ok
        assert answer_of(ask(second, JAPAN, "cell-b")) == TOKYO
        resumed = stats(second)
    finally:
        second.shutdown()

    (tmp_path / "warm").mkdir()
    warm = start_kernel(tmp_path / "warm")  # a cache folder of its own: nothing saved before
    try:
        assert answer_of(ask(warm, FRANCE, "cell-a", "-t 0 --new")) == PARIS
        assert answer_of(ask(warm, JAPAN, "cell-b")) == TOKYO
        warm_stats = stats(warm)
    finally:
        warm.shutdown()
    assert resumed["restored_from"] == "disk" and warm_stats["restored_from"] is None
    assert resumed["prompt_tokens"] == warm_stats["prompt_tokens"]
    assert resumed["prompt_tokens_evaluated"] == warm_stats["prompt_tokens_evaluated"]
    assert resumed["prompt_tokens_evaluated"] < resumed["prompt_tokens"] // 3


DOCUMENTS = {
    "a": "Seoul is the capital of Korea and its largest city. " * 10,
    "b": "Busan is a port city in the south of Korea. " * 10,
}


def test_cells_alternating_documents_reuse_both_and_the_cache_command(tmp_path):
    kernel = start_kernel(tmp_path)
    try:
        for name in ("a", "b", "a", "b"):
            ask(
                kernel,
                f"{DOCUMENTS[name]}\n\nWhich city?",
                f"cell-{name}",
                "-t 0 -n 8 --no-history",
            )
        again = stats(kernel)
        assert again["restored_from"] == "memory"
        assert again["prompt_tokens_evaluated"] <= 2  # only what the sequence lost: one token
        shown = kernel.run("%exaone cache")
        assert shown.ok and "2 states" in shown.text and "cache/kv" in shown.text, shown
        info = kernel.run("%exaone info")
        assert "f16, flash attention off; prompt states saved" in info.text, info
        folder = shown.text.split("| folder | ", 1)[1].split(" |", 1)[0]
        assert f"MiB on disk in {folder} |" in info.text  # the same folder, written the same way
        plain = next(d["text/plain"] for d in info.displays if "| KV cache |" in d["text/plain"])
        assert "llama.cpp's sampler chain" in plain and "&#x27;" not in plain  # a terminal's view
        cleared = kernel.run("%exaone cache --clear")
        assert "cleared" in cleared.stdout and "0 states" in cleared.text, cleared
        ask(kernel, f"{DOCUMENTS['a']}\n\nWhich city?", "cell-c", "-t 0 -n 8 --no-history")
        assert stats(kernel)["restored_from"] is None
    finally:
        kernel.shutdown()


def test_a_bad_cache_option_is_one_sentence_and_the_model_stays(tmp_path):
    kernel = start_kernel(tmp_path)
    try:
        for line, words in (
            ("%exaone load exaone-demo --kv-type q5_1", "kv_type must be one of f16, q8_0, q4_0"),
            ("%exaone load exaone-demo --cache-ram-mb -1", "cache_ram_mb must be a whole number"),
        ):
            one_sentence(kernel.run(line), words)
        refused = kernel.run("%config ExaoneMagics.cache_disk_mb = -5")  # IPython logs it
        one_sentence(refused, "cache_disk_mb must be a whole", prefix="ERROR:root:ExaoneMagics.")
        assert answer_of(ask(kernel, FRANCE, "cell-a", "-t 0 --new")) == PARIS
    finally:
        kernel.shutdown()
