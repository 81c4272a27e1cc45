"""Saved KV states (engine/llama/prefix_cache.py): a prompt continues from the longest prefix of
its tokens ever evaluated, in this process or before a restart, and the reply is the one a full
evaluation gives, token for token. Real llama.cpp on the two shipped demo models; a "restart" is
a new engine on the same files (the kernel tests restart real kernels: test_kv_resume.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling
from exaone_jupyter.engine.llama.kv_state import common_prefix
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.model.gguf_check import read_gguf
from shared_fixtures import DATA

MODELS = {
    "exaone-4.0-demo": DATA / "exaone-4.0-demo.gguf",
    "exaone-demo": DATA / "exaone-demo.gguf",
}
DOC_A = "Seoul is the capital of Korea and its largest city. " * 12
DOC_B = "Busan is a port city in the south of Korea. " * 12
OFF = {"cache_ram_mb": 0, "cache_disk_mb": 0}


def engine(model: Path, folder: Path | None = None, **options) -> LocalBackend:
    if folder is not None:
        options["cache_dir"] = str(folder)
    return LocalBackend(read_gguf(model), LoadOptions(**options))


def prompt(backend: LocalBackend, document: str, question: str) -> list[int]:
    """A one-turn EXAONE prompt about ``document`` (the markers of both demo models)."""
    text = f"[|system|]{document}[|endofturn|]\n[|user|]{question}[|endofturn|]\n[|assistant|]"
    return backend.tokenize(text, special=True)


def answer(backend: LocalBackend, ids: list[int], max_tokens: int = 24):
    return backend.stream(
        Request(Sampling(temperature=0, max_tokens=max_tokens), prompt_ids=ids)
    ).consume()


@pytest.fixture(params=sorted(MODELS))
def model(request) -> Path:
    return MODELS[request.param]


@pytest.fixture()
def plain(model):
    """The engine without saved states: every prompt evaluated in full, the reference."""
    backend = engine(model, **OFF)
    yield backend
    backend.close()


def test_alternating_documents_reuse_both_and_answer_exactly(model, plain, tmp_path):
    backend = engine(model, tmp_path)
    try:
        asked = [(DOC_A, "Which city?"), (DOC_B, "Which city?"), (DOC_A, "Why?"), (DOC_B, "Why?")]
        replies = [answer(backend, prompt(backend, doc, q)) for doc, q in asked]
        for (doc, q), reply in zip(asked, replies, strict=True):
            assert reply.text == answer(plain, prompt(plain, doc, q)).text
        # the second question about each document evaluates only what follows the document
        for doc, reply in ((DOC_A, replies[2]), (DOC_B, replies[3])):
            before, now = prompt(backend, doc, "Which city?"), prompt(backend, doc, "Why?")
            assert reply.stats.prompt_tokens_evaluated == len(now) - common_prefix(before, now)
            assert reply.stats.restored_from == "memory"
        assert replies[1].stats.restored_from is None  # nothing saved shared document B yet
    finally:
        backend.close()


def test_a_new_engine_continues_from_the_disk_exactly(model, plain, tmp_path):
    """A follow-up after a "restart" evaluates what it evaluates in a warm engine (the plain
    one keeps its sequence), and answers the same."""
    first = engine(model, tmp_path)
    ids = prompt(first, DOC_A, "Which city?")
    reply = answer(first, ids)
    first.close()  # waits for the states still being written
    follow = ids + plain.tokenize(
        reply.text + "[|endofturn|]\n[|user|]And why?[|endofturn|]\n[|assistant|]", special=True
    )
    assert answer(plain, ids).text == reply.text
    warm = answer(plain, follow)

    restarted = engine(model, tmp_path)
    try:
        again = answer(restarted, follow)
        assert again.stats.restored_from == "disk"
        evaluated = again.stats.prompt_tokens_evaluated
        assert evaluated == warm.stats.prompt_tokens_evaluated < len(follow) // 4
        assert again.text == warm.text
    finally:
        restarted.close()


@pytest.mark.parametrize(
    "changed",
    [{"n_ctx": 1024}, {"kv_type": "q8_0"}, "another file"],
    ids=["context size", "KV type", "model file"],
)
def test_a_state_saved_for_other_settings_is_never_used(changed, tmp_path):
    model = MODELS["exaone-4.0-demo"]
    saving = engine(model, tmp_path / "states", n_ctx=2048)
    ids = prompt(saving, DOC_A, "Which city?")
    answer(saving, ids)
    saving.close()
    options = {"n_ctx": 2048}
    if changed == "another file":
        model = tmp_path / "copy.gguf"
        model.write_bytes(MODELS["exaone-4.0-demo"].read_bytes())
    else:
        options.update(changed)
    other = engine(model, tmp_path / "states", **options)
    try:
        reply = answer(other, ids)
        assert reply.stats.prompt_tokens_evaluated == len(ids)
        assert reply.stats.restored_from is None and reply.note is None
    finally:
        other.close()


def _state_file(folder: Path) -> Path:
    """The one saved state's file (diskcache keeps each value in a file of its own)."""
    files = list(folder.rglob("*.val"))
    assert len(files) == 1, files
    return files[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def _claim_another_build(path: Path) -> None:
    data = path.read_bytes()
    length = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + length])
    header["key"]["build"] = "llama-cpp-python 0.0.1"
    head = json.dumps(header).encode()
    path.write_bytes(data[:8] + len(head).to_bytes(4, "little") + head + data[12 + length :])


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate, "cut short"),
        (_flip_a_byte, "checksum does not match"),
        (_claim_another_build, "another model, context or llama.cpp build"),
    ],
    ids=["truncated", "a byte flipped", "another build"],
)
def test_a_damaged_state_is_removed_with_a_note_and_never_restored(damage, why, tmp_path):
    model = MODELS["exaone-4.0-demo"]
    plain = engine(model, **OFF)
    first = engine(model, tmp_path)
    ids = prompt(first, DOC_A, "Which city?")
    answer(first, ids)
    first.close()
    damage(_state_file(tmp_path))

    second = engine(model, tmp_path)
    try:
        reply = answer(second, ids)
        assert why in reply.note and "removed" in reply.note
        assert reply.stats.prompt_tokens_evaluated == len(ids)
        assert reply.text == answer(plain, ids).text
    finally:
        second.close()  # its new state replaces the removed one
        plain.close()
    third = engine(model, tmp_path)
    try:
        assert answer(third, ids).stats.restored_from == "disk"
        assert third.prefix_cache().disk_states == 1
    finally:
        third.close()


def test_the_budgets_hold(tmp_path):
    model = MODELS["exaone-4.0-demo"]
    backend = engine(model, tmp_path, cache_ram_mb=1, cache_disk_mb=2)
    try:
        documents = [f"Document {i}: " + DOC_A for i in range(8)]
        for doc in documents:
            answer(backend, prompt(backend, doc, "Which city?"), max_tokens=4)
        backend.states.disk.flush()
        usage = backend.prefix_cache()
        assert usage.ram_bytes <= usage.ram_budget == 2**20
        assert usage.disk_folder_bytes <= usage.disk_budget == 2 * 2**20
        assert 1 <= usage.ram_states < len(documents) and 1 <= usage.disk_states < len(documents)
        # the least recently used went first: a late document is still there, the first is not
        late = answer(backend, prompt(backend, documents[-2], "Why?"), max_tokens=4)
        assert late.stats.restored_from in ("memory", "disk")
        first = answer(backend, prompt(backend, documents[0], "Why?"), max_tokens=4)
        assert first.stats.restored_from is None
    finally:
        backend.close()


def test_states_and_texts_of_new_sizes_make_no_new_ctypes_types(tmp_path):
    """ctypes keeps every array type it makes for the life of the process; a state buffer made
    as ``c_uint8 * size``, or a token buffer as ``llama_token * size``, leaked one type a size."""
    import ctypes

    def array_types() -> int:  # ``c_uint8 * n`` makes a direct subclass of ctypes.Array
        kinds = (ctypes.c_uint8, ctypes.c_int32)
        return sum(t._type_ in kinds for t in ctypes.Array.__subclasses__())

    backend = engine(MODELS["exaone-4.0-demo"], tmp_path, cache_disk_mb=0)
    try:
        answer(backend, prompt(backend, DOC_A, "Which city?"), max_tokens=4)  # warm up
        before = array_types()
        for n in range(1, 6):  # five documents of five lengths: five state sizes
            answer(backend, prompt(backend, DOC_B[: 40 * n], "Which city?"), max_tokens=4)
        assert backend.prefix_cache().ram_states >= 5
        assert array_types() == before
    finally:
        backend.close()


def test_a_budget_of_zero_saves_nothing(tmp_path):
    model = MODELS["exaone-4.0-demo"]
    off = engine(model, tmp_path / "off", **OFF)
    memory_only = engine(model, tmp_path / "ram", cache_disk_mb=0)
    try:
        for backend in (off, memory_only):
            for doc in (DOC_A, DOC_B, DOC_A):
                reply = answer(backend, prompt(backend, doc, "Which city?"), max_tokens=4)
        assert off.prefix_cache() is None and "not saved" in off.info.local.kv_cache
        assert reply.stats.restored_from == "memory"  # the memory-only engine's last reply
        assert memory_only.prefix_cache().folder is None
        assert not (tmp_path / "off").exists() and not (tmp_path / "ram").exists()
    finally:
        off.close()
        memory_only.close()


def test_a_folder_that_cannot_be_written_is_one_note_and_memory_still_serves(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    backend = engine(MODELS["exaone-4.0-demo"], blocked / "kv")
    try:
        first = answer(backend, prompt(backend, DOC_A, "Which city?"), max_tokens=4)
        assert "cannot be used" in first.note and "cache_disk_mb=0" in first.note
        answer(backend, prompt(backend, DOC_B, "Which city?"), max_tokens=4)
        again = answer(backend, prompt(backend, DOC_A, "Why?"), max_tokens=4)
        assert again.stats.restored_from == "memory" and again.note is None
    finally:
        backend.close()


def test_clearing_forgets_every_state(tmp_path):
    backend = engine(MODELS["exaone-4.0-demo"], tmp_path)
    try:
        for doc in (DOC_A, DOC_B):
            answer(backend, prompt(backend, doc, "Which city?"), max_tokens=4)
        backend.states.disk.flush()
        assert backend.prefix_cache().disk_states == 2
        backend.clear_prefix_cache()
        usage = backend.prefix_cache()
        assert (usage.ram_states, usage.disk_states, usage.disk_bytes) == (0, 0, 0)
        reply = answer(backend, prompt(backend, DOC_A, "Why?"), max_tokens=4)
        assert reply.stats.restored_from is None
    finally:
        backend.close()


# -- other processes ------------------------------------------------------------------------------
WRITER = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_prefix_cache import MODELS, answer, engine, prompt
if {limit!r}:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit!r}, {limit!r}))
backend = engine(MODELS["exaone-4.0-demo"], Path({folder!r}))
notes = []
for i in range({count!r}):
    reply = answer(backend, prompt(backend, "Writer {name} document %d. " % i + {doc!r}, "Which city?"), 4)
    backend.states.disk.flush()
    notes.append(reply.note)
notes.append(backend.states.take_note())
backend.close()
print(repr(notes))
"""


def run_writer(folder: Path, name: str, *, count: int = 4, limit: int = 0) -> subprocess.Popen:
    code = WRITER.format(
        tests=str(Path(__file__).parent),
        folder=str(folder),
        name=name,
        count=count,
        limit=limit,
        doc=DOC_A,
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_share_the_folder_without_damage(tmp_path):
    writers = [run_writer(tmp_path, name) for name in ("one", "two")]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert set(eval(out)) == {None}, out  # no note: nothing failed, nothing was damaged
    reader = engine(MODELS["exaone-4.0-demo"], tmp_path)
    try:
        assert reader.prefix_cache().disk_states == 8
        for name in ("one", "two"):
            for i in range(4):
                doc = f"Writer {name} document {i}. " + DOC_A
                reply = answer(reader, prompt(reader, doc, "Why?"), max_tokens=4)
                assert reply.stats.restored_from in ("disk", "memory") and reply.note is None
    finally:
        reader.close()


def test_a_disk_that_fills_while_a_state_is_written_is_one_note(tmp_path):
    """RLIMIT_FSIZE makes the state's write fail half-way (EFBIG), as a full disk does."""
    writer = run_writer(tmp_path, "small", count=2, limit=350_000)  # SQLite needs ~300 KB
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    notes = [n for n in eval(out) if n]
    assert notes and all("could not be saved" in n and "File too large" in n for n in notes), notes
    assert not list(tmp_path.rglob("*.val"))  # the half-written file was removed
    reader = engine(MODELS["exaone-4.0-demo"], tmp_path)
    try:
        reply = answer(reader, prompt(reader, "Writer small document 0. " + DOC_A, "Which city?"))
        assert reply.stats.restored_from is None and reply.note is None
    finally:
        reader.close()


# -- map's shared prefix --------------------------------------------------------------------------
def test_a_rerun_batch_restores_its_shared_prefix_and_answers_the_same(tmp_path):
    from exaone_jupyter.engine.llama.batch import shared_prefix

    backend = engine(MODELS["exaone-4.0-demo"], tmp_path)
    try:
        questions = ["Which city?", "Why?", "Where is it?", "Who lives there?"]
        requests = [
            Request(Sampling(temperature=0, max_tokens=12), prompt_ids=prompt(backend, DOC_A, q))
            for q in questions
        ]
        first = backend.generate_many(requests, parallel=2)
        again = backend.generate_many(requests, parallel=2)
        shared = shared_prefix([r.prompt_ids for r in requests])
        assert first.prefix_restored == 0 and again.prefix_restored == shared > 100
        assert [o.text for o in again.outputs] == [o.text for o in first.outputs]
        # each row equals the same prompt asked alone, from nothing saved
        plain = engine(MODELS["exaone-4.0-demo"], **OFF)
        try:
            alone = [answer(plain, list(r.prompt_ids), max_tokens=12).text for r in requests]
        finally:
            plain.close()
        assert [o.text for o in again.outputs] == alone
        # and a question about the same document after it starts from the saved prefix
        reply = answer(backend, prompt(backend, DOC_A, "How big is it?"))
        assert reply.stats.restored_from == "memory"
        assert reply.stats.prompt_tokens_evaluated < reply.stats.prompt_tokens - 100
    finally:
        backend.close()
