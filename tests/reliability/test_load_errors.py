"""``%exaone load`` of files a user really has: wrong paths, cut downloads, foreign or damaged GGUFs.

Each case: one ``✗`` sentence that says what to do, the kernel alive, the demo model (loaded
before) still answering, the conversation unchanged.
"""

from __future__ import annotations

from pathlib import Path

from checks import one_sentence
from exaone_jupyter.model.catalog import demo_model_path
from exaone_jupyter.testing import write_random_gguf
from kernel_helpers import answer_of, healthy, notes_of


def load(kernel, spec, options: str = ""):
    return kernel.run(f"%exaone load {spec} {options}".rstrip())


def _cut(models: Path, name: str, size: int) -> Path:
    path = models / name
    path.write_bytes(demo_model_path().read_bytes()[:size])
    return path


def test_missing_path(kernel, models, before):
    one_sentence(
        load(kernel, models / "nowhere" / "model.gguf"), "There is no file at", "check the path"
    )
    healthy(kernel, before)


def test_directory(kernel, models, before):
    (models / "inside.gguf").write_bytes(b"")
    body = one_sentence(
        load(kernel, models),
        "is a directory",
        "inside.gguf",
        "give the path of the .gguf file itself",
    )
    assert str(models) in body
    healthy(kernel, before)


def test_empty_file(kernel, models, before):
    path = models / "empty.gguf"
    path.write_bytes(b"")
    one_sentence(
        load(kernel, path), "empty.gguf is empty (0 bytes)", "download or convert it again"
    )
    healthy(kernel, before)


def test_text_file_named_gguf(kernel, models, before):
    path = models / "notes.gguf"
    path.write_text("# my notes\nnot a model at all\n")
    one_sentence(load(kernel, path), "notes.gguf is not a GGUF file", ".gguf model")
    healthy(kernel, before)


def test_truncated_in_header(kernel, models, before):
    one_sentence(
        load(kernel, _cut(models, "head.gguf", 13)),
        "head.gguf is truncated",
        "download or convert it again",
    )
    healthy(kernel, before)


def test_truncated_in_metadata(kernel, models, before):
    one_sentence(
        load(kernel, _cut(models, "meta.gguf", 5000)),
        "meta.gguf is truncated",
        "download or convert it again",
    )
    healthy(kernel, before)


def test_truncated_in_tensor_data(kernel, models, before):
    size = demo_model_path().stat().st_size
    body = one_sentence(
        load(kernel, _cut(models, "data.gguf", size - 4096)),
        "data.gguf is truncated",
        "download or convert it again",
    )
    assert f"{size - 4096:,}" in body  # says how much is there
    healthy(kernel, before)


def test_unknown_architecture(kernel, models, before):
    path = write_random_gguf(models / "martian.gguf", arch="martian-lm")
    one_sentence(
        load(kernel, path),
        "'martian-lm'",
        "this llama.cpp build does not know",
        "upgrade llama-cpp-python",
    )
    healthy(kernel, before)


def test_known_architecture_with_wrong_tensors(kernel, models, before):
    # gpt2 is known to llama.cpp, but wants tensors this llama-layout file lacks (position
    # embeddings, biases): llama.cpp itself rejects it, after the checks passed and after the
    # demo model was unloaded to make room. The demo model must come back.
    path = write_random_gguf(models / "gpt2-ish.gguf", arch="gpt2", name="not quite gpt2")
    one_sentence(load(kernel, path), "gpt2-ish.gguf", "llama.cpp")
    healthy(kernel, before)


def test_other_known_architectures_load(kernel, models, before):
    # EXAONE's own architecture loads with no note...
    exaone = write_random_gguf(models / "exaone-arch.gguf", arch="exaone")
    cell = load(kernel, exaone)
    assert not cell.stderr and "Loaded" in cell.stdout, cell
    assert not [n for n in notes_of(cell) if "not an EXAONE model" in n]
    # ...and models that are not EXAONE, with a template of another family, load with one.
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    for arch in ("llama", "qwen2"):  # qwen2's biases are optional: this file's tensors suffice
        path = write_random_gguf(
            models / f"tiny-{arch}.gguf", arch=arch, name=f"Tiny {arch} test", template=chatml
        )
        cell = load(kernel, path)
        assert not cell.stderr and "Loaded" in cell.stdout, cell
        assert any("not an EXAONE model" in n and arch in n for n in notes_of(cell)), cell
        answer = kernel.run("%%exaone -t 0 -n 4 --no-history\nhello")
        assert not answer.stderr and answer_of(answer) is not None, answer
    healthy(kernel, before, reload_demo=True)


def test_no_tokenizer(kernel, models, before):
    path = write_random_gguf(models / "notok.gguf", tokenizer=False)
    one_sentence(load(kernel, path), "notok.gguf has no tokenizer", "convert the model again")
    healthy(kernel, before)


def test_no_chat_template(kernel, models, before):
    path = write_random_gguf(models / "notemplate.gguf", template=None)
    cell = load(kernel, path)
    assert not cell.stderr and "Loaded" in cell.stdout, cell
    notes = notes_of(cell)
    assert any("carries no chat template" in n and "official" in n for n in notes), cell
    dry = kernel.run("%%exaone --dry-run --no-history -n 16\nhello")
    assert "[|user|]hello" in dry.text  # the family's (EXAONE) format, not Llama-2's [INST]
    assert "[INST]" not in dry.text
    healthy(kernel, before, reload_demo=True)


def test_template_that_raises(kernel, models, before):
    template = (
        "{% for m in messages %}{% if m.role == 'user' %}"
        "{{ raise_exception('This model takes no user messages') }}{% endif %}"
        "{% endfor %}"
    )
    path = write_random_gguf(models / "raises.gguf", template=template)
    cell = load(kernel, path)
    assert not cell.stderr and "Loaded" in cell.stdout, cell
    one_sentence(kernel.run("%%exaone -t 0 -n 16\nhello"), "This model takes no user messages")
    healthy(kernel, before, reload_demo=True)


def test_template_that_does_not_compile(kernel, models, before):
    path = write_random_gguf(models / "broken.gguf", template="{% for m in messages %}{{ m.content")
    one_sentence(load(kernel, path), "chat template does not compile")
    healthy(kernel, before)


def test_vocabulary_that_would_abort_llama_cpp(kernel, models, before):
    # Two equal tokens make llama.cpp abort() the process while it reads the vocabulary
    # (GGML_ASSERT(id_to_token.size() == token_to_id.size())); the probe takes that hit.
    data = bytearray(demo_model_path().read_bytes())
    at = data.index(b"\x02\x00\x00\x00\x00\x00\x00\x00\xc3\x8c")  # the 2-byte token "Ì"
    data[at + 9] ^= 0x02  # "Ì" -> "Î", which the vocabulary already has
    path = models / "twice.gguf"
    path.write_bytes(bytes(data))
    one_sentence(
        load(kernel, path),
        "twice.gguf makes llama.cpp crash",
        "not loaded into this kernel",
        "download or convert it again",
    )
    healthy(kernel, before)
