"""Corrupt-GGUF fuzz: seeded mutations of the demo model, each loaded through ``%exaone load``.

Every mutant must end in one ``✗`` sentence or load (and then answer a question); the kernel must
never die. The default run takes 20 mutations (every kind of damage at least three times); the
``soak`` run takes 200. ``tests/reliability/mutations.py`` says what the kinds are; a failing
seed replays alone with ``mutate(data, seed, regions(path))``.
"""

from __future__ import annotations

import collections
import time

import pytest

from checks import one_sentence
from exaone_jupyter.model.catalog import demo_model_path
from kernel_helpers import SUMMARY, Snapshot, healthy
from mutations import mutate, regions


def _verdict(message: str) -> str:
    if "makes llama.cpp crash" in message:
        return "probe: llama.cpp would have crashed"
    if "llama.cpp cannot load" in message:
        return "rejected by llama.cpp in the probe"
    if "llama.cpp could not load" in message:
        return "rejected by llama.cpp in the kernel (previous model reloaded)"
    return "rejected by the checks"


def fuzz(kernel, tmp_path, seeds: range) -> collections.Counter:
    source = demo_model_path()
    data, r = source.read_bytes(), regions(str(source))
    before = Snapshot(kernel)
    counts: collections.Counter = collections.Counter()
    started = time.perf_counter()
    for seed in seeds:
        what, mutant = mutate(data, seed, r)
        path = tmp_path / f"mutant-{seed}.gguf"
        path.write_bytes(mutant)
        cell = kernel.run(f"%exaone load {path}", timeout=180)
        assert kernel.alive(), f"seed {seed} ({what}) killed the kernel"
        if cell.stderr:
            try:
                body = one_sentence(cell)
            except AssertionError as err:
                raise AssertionError(f"seed {seed} ({what}): {err}") from None
            counts[_verdict(body)] += 1
        else:
            assert "Loaded" in cell.stdout and cell.error is None, (seed, what, cell)
            refused = False
            for options in ("-t 0", "-t 0.8 --seed 1"):  # greedy, and sampling (NaN logits...)
                answer = kernel.run(f"%%exaone {options} -n 4 --no-history\nhello", timeout=120)
                assert kernel.alive(), f"seed {seed} ({what}) killed the kernel while answering"
                if answer.stderr:
                    one_sentence(answer)
                    refused = True
                else:
                    assert answer.error is None, (seed, what, answer)
            counts["loaded, then refused to answer" if refused else "loaded and answered"] += 1
        path.unlink()
    elapsed = time.perf_counter() - started
    healthy(kernel, before, reload_demo=True)
    SUMMARY.append(
        f"GGUF fuzz, {len(seeds)} mutations of the demo model in {elapsed:.0f} s, "
        "0 dead kernels: " + ", ".join(f"{n} {k}" for k, n in counts.most_common())
    )
    return counts


def test_fuzz_20_mutations(kernel, tmp_path):
    counts = fuzz(kernel, tmp_path, range(20))
    assert sum(counts.values()) == 20
    # seed 2 duplicates a vocabulary token: llama.cpp would abort() the kernel without the probe
    assert counts["probe: llama.cpp would have crashed"] >= 1


@pytest.mark.soak
def test_fuzz_200_mutations(kernel, tmp_path):
    counts = fuzz(kernel, tmp_path, range(200))
    assert sum(counts.values()) == 200
