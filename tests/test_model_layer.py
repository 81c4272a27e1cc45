"""The model layer: GGUF validation sentences and facts, and model specs resolved offline.

``gguf_check`` reads files before llama.cpp does, so every file a user can get wrong must end in
one sentence that says what to do. ``resolve`` must find cached Hub files without the network.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import gguf
import pytest

from checks import one_sentence
from exaone_jupyter.errors import ExaoneError
from exaone_jupyter.model import catalog
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.model.resolve import local_path, resolve
from exaone_jupyter.testing import TinyShape, write_random_gguf

REDOWNLOAD = "delete it and download or convert it again"


# -- gguf_check: files a user can get wrong ------------------------------------------------------
def test_missing_path_says_there_is_no_file(tmp_path):
    with pytest.raises(ExaoneError) as err:
        read_gguf(tmp_path / "nope.gguf")
    one_sentence(err, "There is no file at", "nope.gguf")


def test_directory_says_give_the_file_and_lists_what_is_inside(tmp_path, tiny_gguf):
    (tmp_path / "model.gguf").write_bytes(Path(tiny_gguf).read_bytes()[:100])
    (tmp_path / "Other.GGUF").write_bytes(b"")  # .gguf in any case, as a load takes it
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ExaoneError) as err:
        read_gguf(tmp_path)
    one_sentence(err, "is a directory", "Other.GGUF, model.gguf)", "path of the .gguf file")
    assert "notes.txt" not in str(err.value)


def test_empty_file_says_interrupted_download(tmp_path):
    path = tmp_path / "empty.gguf"
    path.touch()
    with pytest.raises(ExaoneError) as err:
        read_gguf(path)
    one_sentence(err, "empty (0 bytes)", REDOWNLOAD)


def test_text_file_named_gguf_is_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("<!doctype html>\n<title>404 Not Found</title>\n", encoding="utf-8")
    with pytest.raises(ExaoneError) as err:
        read_gguf(path)
    one_sentence(err, "is not a GGUF file", "convert_hf_to_gguf.py")


@pytest.fixture(scope="module")
def layout(tiny_gguf):
    """The generated file's bytes and where its sections start."""
    data = Path(tiny_gguf).read_bytes()
    reader = gguf.GGUFReader(tiny_gguf)
    last_kv = list(reader.fields.values())[-1]
    tensor_info = last_kv.offset + sum(part.nbytes for part in last_kv.parts)
    return {
        "data": data,
        "kv_start": 24,
        "tensor_data": reader.data_offset,
        "tensor_info": tensor_info,
    }


def cut(tmp_path, layout, at: int) -> Path:
    path = tmp_path / f"cut-{at}.gguf"
    path.write_bytes(layout["data"][:at])
    return path


@pytest.mark.parametrize("at", [4, 13, 23])
def test_truncated_in_the_header(tmp_path, layout, at):
    with pytest.raises(ExaoneError) as err:
        read_gguf(cut(tmp_path, layout, at))
    one_sentence(err, f"truncated inside its header ({at} bytes)")


@pytest.mark.parametrize("where", ["kv_start", "middle_of_metadata", "tensor_info"])
def test_truncated_in_the_metadata(tmp_path, layout, where):
    at = {"kv_start": 40, "middle_of_metadata": 3000, "tensor_info": layout["tensor_info"] + 20}[
        where
    ]
    assert at < layout["tensor_data"]
    with pytest.raises(ExaoneError) as err:
        read_gguf(cut(tmp_path, layout, at))
    one_sentence(err, "truncated or corrupt", "metadata or tensor table cannot be read", REDOWNLOAD)


@pytest.mark.parametrize("where", ["start", "middle", "last_byte"])
def test_truncated_in_the_tensor_data(tmp_path, layout, where):
    size = len(layout["data"])
    at = {"start": layout["tensor_data"] + 8, "middle": size // 2, "last_byte": size - 1}[where]
    with pytest.raises(ExaoneError) as err:
        read_gguf(cut(tmp_path, layout, at))
    one_sentence(
        err, f"cut-{at}.gguf is truncated", f"need {size:,} bytes", f"has {at:,}", REDOWNLOAD
    )


def test_unknown_architecture(tmp_path):
    path = write_random_gguf(tmp_path / "odd.gguf", arch="notanarch")
    with pytest.raises(ExaoneError) as err:
        read_gguf(path)
    one_sentence(err, "architecture 'notanarch'", "does not know", "upgrade llama-cpp-python")


def test_no_tokenizer(tmp_path):
    path = write_random_gguf(tmp_path / "notok.gguf", tokenizer=False)
    with pytest.raises(ExaoneError) as err:
        read_gguf(path)
    one_sentence(err, "has no tokenizer", "convert_hf_to_gguf.py")


def with_block_count(tmp_path, source, count: int) -> Path:
    """A copy of ``source`` whose llama.block_count (a uint32) says ``count``."""
    data = Path(source).read_bytes()
    key = b"llama.block_count"
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at)[0] == gguf.GGUFValueType.UINT32
    at += 4  # the value follows its type
    path = tmp_path / f"blocks-{count}.gguf"
    path.write_bytes(data[:at] + struct.pack("<I", count) + data[at + 4 :])
    return path


@pytest.mark.parametrize("count", [0xFFFFFFF0, TinyShape().n_layer + 1])
def test_a_block_count_the_tensors_contradict_is_corrupt(tmp_path, tiny_gguf, count):
    """A count read from a damaged file sizes no list (0xFFFFFFF0 would exhaust memory)."""
    with pytest.raises(ExaoneError) as err:
        read_gguf(with_block_count(tmp_path, tiny_gguf, count))
    one_sentence(
        err, "is corrupt", f"block_count says {count:,} layers", f"hold {TinyShape().n_layer}"
    )


# -- gguf_check: the facts ----------------------------------------------------------------------
N_VOCAB = 7 + 256 + 5  # special tokens, bytes, merges


def expected_params(s: TinyShape) -> tuple[int, int, int]:
    """(all parameters, 2-D parameters of one layer, 1-D parameters of one layer)."""
    hd = s.head_dim
    matrices = (
        2 * s.n_head * hd * s.n_embd + 2 * s.n_head_kv * hd * s.n_embd + 3 * s.n_ff * s.n_embd
    )
    norms = 2 * s.n_embd
    total = 2 * N_VOCAB * s.n_embd + s.n_embd + s.n_layer * (matrices + norms)
    return total, matrices, norms


@pytest.mark.parametrize(
    "dtype, quantization, bytes_per_2d",
    [("f32", "F32", 4.0), ("f16", "F16", 2.0), ("q8_0", "Q8_0", 34 / 32)],
)
def test_reported_facts(tmp_path, dtype, quantization, bytes_per_2d):
    shape = TinyShape(n_embd=64, n_head=4, n_head_kv=2, n_ff=96, n_layer=3, n_ctx=1024)
    path = write_random_gguf(tmp_path / f"m-{dtype}.gguf", shape=shape, dtype=dtype, name="facts")
    info = read_gguf(path)
    total, matrices, norms = expected_params(shape)
    assert info.architecture == "llama"
    assert info.name == "facts"
    assert info.n_params == total
    assert info.quantization == quantization
    assert info.context_length == 1024
    assert info.n_layers == 3
    assert (info.n_embd, info.n_head, info.n_head_kv) == (64, 4, 2)
    assert info.layer_bytes == [int(matrices * bytes_per_2d) + norms * 4] * 3
    assert info.file_size == path.stat().st_size
    assert sum(info.layer_bytes) + info.other_bytes < info.file_size
    assert info.eos_token_id == 2 and info.tokenizer_pre == "exaone"
    assert info.chat_template.startswith("{% for message in messages %}")


def test_exaone_arch_is_recognised(tmp_path):
    info = read_gguf(write_random_gguf(tmp_path / "e.gguf", arch="exaone"))
    assert info.architecture == "exaone" and info.is_exaone_arch
    assert not read_gguf(write_random_gguf(tmp_path / "l.gguf", name="llama")).is_exaone_arch


# -- resolve ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network: the Hub is offline for all of them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def cache_file(
    cache: Path,
    repo: str,
    filename: str,
    content: bytes,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
) -> Path:
    """Put a file in a Hugging Face cache the way huggingface_hub lays it out."""
    root = cache / ("models--" + repo.replace("/", "--"))
    blob = root / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    link = root / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def test_a_path_resolves_to_itself(tiny_gguf):
    resolved = resolve(str(tiny_gguf))
    assert resolved.source == "file" and resolved.path == Path(tiny_gguf).resolve()


def test_a_missing_path_is_a_sentence(tmp_path):
    with pytest.raises(ExaoneError) as err:
        resolve(str(tmp_path / "missing.gguf"))
    one_sentence(err, "There is no file at", "missing.gguf")


def test_an_existing_file_wins_over_reading_its_path_as_repo_file(tmp_path, tiny_gguf, monkeypatch):
    """``models/demo:q8.gguf`` also reads as REPO:FILE; the file that is there is what was meant."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "demo:q8.gguf").write_bytes(Path(tiny_gguf).read_bytes())
    resolved = resolve("models/demo:q8.gguf", cache_dir=tmp_path)
    assert resolved.source == "file" and resolved.path == tmp_path / "models" / "demo:q8.gguf"
    assert local_path("models/demo:q8.gguf").resolve() == resolved.path


def test_a_missing_upper_case_gguf_path_is_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExaoneError) as err:
        resolve("models/DEMO.GGUF", cache_dir=tmp_path)
    one_sentence(err, "There is no file at", "models/DEMO.GGUF")


def test_the_demo_alias_resolves_to_the_bundled_file():
    demo = Path(catalog.__file__).parent.parent / "data" / "exaone-demo.gguf"
    assert demo.is_file(), "the package ships exaone_jupyter/data/exaone-demo.gguf"
    resolved = resolve("exaone-demo")
    assert resolved.source == "bundled" and resolved.path.name == "exaone-demo.gguf"
    assert resolved.family_hint == "exaone3"


def test_cached_repo_file_resolves_offline(tmp_path):
    link = cache_file(
        tmp_path,
        "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct-GGUF",
        "EXAONE-3.5-2.4B-Instruct-Q4_K_M.gguf",
        b"GGUF cached",
    )
    spec = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct-GGUF:EXAONE-3.5-2.4B-Instruct-Q4_K_M.gguf"
    resolved = resolve(spec, cache_dir=tmp_path)
    assert resolved.source == "hub" and resolved.repo == "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct-GGUF"
    assert resolved.path == link and resolved.path.read_bytes() == b"GGUF cached"


def test_cached_catalog_alias_resolves_offline(tmp_path):
    entry = catalog.lookup("exaone-3.5-2.4b")
    link = cache_file(tmp_path, entry.repo, entry.filename, b"GGUF alias")
    resolved = resolve("exaone-3.5-2.4b", cache_dir=tmp_path)
    assert resolved.path == link and resolved.family_hint == "exaone3"


def test_uncached_repo_file_offline_names_the_demo_model(tmp_path):
    with pytest.raises(ExaoneError) as err:
        resolve("someone/some-model-GGUF:model-Q8_0.gguf", cache_dir=tmp_path)
    one_sentence(err, "not in the Hugging Face cache", "HF_HUB_OFFLINE", "exaone-demo")


def test_repo_with_a_glob_matching_one_cached_file(tmp_path):
    repo = "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF"
    cache_file(tmp_path, repo, "EXAONE-4.0-1.2B-Q8_0.gguf", b"GGUF q8")
    link = cache_file(tmp_path, repo, "EXAONE-4.0-1.2B-Q4_K_M.gguf", b"GGUF q4")
    resolved = resolve(repo, file_glob="*Q4_K_M.gguf", cache_dir=tmp_path)
    assert resolved.path == link and resolved.repo == repo


@pytest.mark.parametrize("pattern, found", [("*IQ2_XS.gguf", "no file"), ("*.gguf", "2 files")])
def test_repo_with_a_glob_not_matching_exactly_one_file(tmp_path, pattern, found):
    repo = "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF"
    cache_file(tmp_path, repo, "EXAONE-4.0-1.2B-Q8_0.gguf", b"GGUF q8")
    cache_file(tmp_path, repo, "EXAONE-4.0-1.2B-Q4_K_M.gguf", b"GGUF q4")
    with pytest.raises(ExaoneError) as err:
        resolve(repo, file_glob=pattern, cache_dir=tmp_path)
    one_sentence(err, f"matches {found}", "exactly one .gguf file")


def test_unknown_alias(tmp_path):
    with pytest.raises(ExaoneError) as err:
        resolve("exaone-9000", cache_dir=tmp_path)
    one_sentence(err, "Unknown model 'exaone-9000'", "%exaone models")


def test_repo_without_a_file(tmp_path):
    with pytest.raises(ExaoneError) as err:
        resolve("LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF", cache_dir=tmp_path)
    one_sentence(err, "looks like a Hugging Face repository", "--file")


def test_empty_spec():
    with pytest.raises(ExaoneError) as err:
        resolve("  ")
    one_sentence(err, "No model given")
