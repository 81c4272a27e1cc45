"""The local engine, run for real on generated GGUF models: streaming, figures, stops, reuse.

Random weights answer with noise, so the tests assert mechanics: what the stream yields, how it
ends, what llama.cpp evaluated. Models built with ``favour_token``/``favour_text`` make greedy
output predictable where a test needs to know the answer.
"""

from __future__ import annotations

import re
import signal
import threading

import pytest

from checks import one_sentence
from exaone_jupyter.engine.backend import LoadOptions, Request, Sampling
from exaone_jupyter.engine.llama.batch import generate_batch
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.errors import ExaoneError, ModelBusyError
from exaone_jupyter.model.gguf_check import read_gguf
from exaone_jupyter.testing import EOS_ID, write_random_gguf

GREEDY = Sampling(temperature=0, max_tokens=64)


def request(ids, sampling: Sampling = GREEDY, **options) -> Request:
    return Request(Sampling.from_options(sampling, **options), prompt_ids=ids)


@pytest.fixture(scope="module")
def eos_backend(tmp_path_factory):
    """A model whose greedy pick is always the end-of-turn token."""
    path = write_random_gguf(tmp_path_factory.mktemp("eos") / "eos.gguf", favour_token=EOS_ID)
    backend = LocalBackend(read_gguf(path))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def korean_backend(tmp_path_factory):
    """A model that greedily writes 한국한국... one byte token (a third of a syllable) at a time."""
    path = write_random_gguf(tmp_path_factory.mktemp("ko") / "ko.gguf", favour_text="한국")
    backend = LocalBackend(read_gguf(path))
    yield backend
    backend.close()


# -- streaming and figures ----------------------------------------------------------------------
def test_streamed_pieces_join_to_the_reply_text(tiny_backend, prompt_ids):
    reply = tiny_backend.stream(
        request(prompt_ids(tiny_backend, "join the pieces"), max_tokens=100)
    )
    pieces = list(reply)
    assert pieces and all(pieces)  # no empty pieces reach the consumer
    assert "".join(pieces) == reply.text
    assert reply.done and reply.stats.finish_reason == "length"


def test_stats_are_sane(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "figures, please: 숫자")
    reply = tiny_backend.stream(request(ids, max_tokens=40)).consume()
    s = reply.stats
    assert s.prompt_tokens == len(ids)
    assert 1 <= s.prompt_tokens_evaluated <= len(ids)
    assert s.completion_tokens == 40 and s.finish_reason == "length"
    assert 0 < s.ttft_s <= s.total_s < 30
    assert s.prompt_tok_s > 0 and s.decode_tok_s > 0
    assert s.n_ctx == tiny_backend.n_ctx == 512 and s.rate_source == "llama.cpp"
    assert s.context_used == len(ids) + 40
    assert set(s.as_dict()) >= {
        "prompt_tokens",
        "prompt_tokens_evaluated",
        "completion_tokens",
        "ttft_s",
        "prompt_tok_s",
        "decode_tok_s",
        "total_s",
        "finish_reason",
    }


@pytest.mark.parametrize("max_tokens", [1, 2, 17])
def test_length_finish_at_max_tokens(tiny_backend, prompt_ids, max_tokens):
    reply = tiny_backend.stream(
        request(prompt_ids(tiny_backend, "count"), max_tokens=max_tokens)
    ).consume()
    assert reply.stats.completion_tokens == max_tokens
    assert reply.stats.finish_reason == "length"


def test_stop_finish_when_end_of_turn_is_the_greedy_pick(eos_backend, prompt_ids):
    assert eos_backend.eos_text == "[|endofturn|]"
    reply = eos_backend.stream(request(prompt_ids(eos_backend, "say nothing"))).consume()
    assert reply.text == "" and list(reply) == []
    assert reply.stats.finish_reason == "stop" and reply.stats.completion_tokens == 0
    assert reply.stats.ttft_s is None and reply.stats.decode_tok_s is None


def test_sampled_replies_stop_too(eos_backend, prompt_ids):
    reply = eos_backend.stream(
        request(prompt_ids(eos_backend, "hi"), temperature=0.5, seed=3)
    ).consume()
    assert reply.stats.finish_reason == "stop"


# -- prefix reuse -------------------------------------------------------------------------------
def test_a_follow_up_evaluates_only_its_new_tokens(tiny_backend, prompt_ids):
    first = prompt_ids(tiny_backend, "prefix reuse, turn one")
    tiny_backend.stream(request(first, max_tokens=1)).consume()  # caches exactly `first`
    added = tiny_backend.tokenize(
        "[|assistant|]noise[|endofturn|]\n[|user|]turn two\n", special=True
    )
    second = first + added
    reply = tiny_backend.stream(request(second, max_tokens=5)).consume()
    assert reply.stats.prompt_tokens == len(second)
    assert reply.stats.prompt_tokens_evaluated == len(added)


def test_an_identical_prompt_evaluates_one_token(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "the same prompt twice")
    first = tiny_backend.stream(request(ids, max_tokens=8)).consume()
    again = tiny_backend.stream(request(ids, max_tokens=8)).consume()
    assert again.stats.prompt_tokens_evaluated == 1
    assert again.text == first.text  # greedy: the same answer from the reused cache


def test_a_different_prompt_drops_the_old_cache(tiny_backend, prompt_ids):
    tiny_backend.stream(request(prompt_ids(tiny_backend, "alpha"), max_tokens=3)).consume()
    other = tiny_backend.tokenize("zzz entirely different", special=False)
    reply = tiny_backend.stream(request(other, max_tokens=3)).consume()
    assert reply.stats.prompt_tokens_evaluated == len(other)


# -- stopping -----------------------------------------------------------------------------------
def test_stop_from_another_thread_keeps_the_partial_text(tiny_backend, prompt_ids):
    reply = tiny_backend.stream(request(prompt_ids(tiny_backend, "stop me"), max_tokens=400))
    started, stopped = threading.Event(), threading.Event()

    def stopper():
        started.wait(10)
        reply.stop()
        stopped.set()

    thread = threading.Thread(target=stopper)
    thread.start()
    pieces = []
    for piece in reply:
        pieces.append(piece)
        if len(pieces) == 5:
            started.set()
            assert stopped.wait(10)
    thread.join(10)
    assert reply.done and reply.stats.finish_reason == "interrupted"
    assert len(pieces) == 5 and reply.text == "".join(pieces)
    assert reply.stats.completion_tokens < 400
    # the model is free again
    assert (
        tiny_backend.stream(request(prompt_ids(tiny_backend, "next"), max_tokens=3))
        .consume()
        .stats.finish_reason
        == "length"
    )


def test_ctrl_c_in_the_consumer_ends_the_reply_and_the_next_one_reuses_the_prefix(
    tiny_backend, prompt_ids
):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ids = prompt_ids(tiny_backend, "interrupt me with Ctrl-C")
        reply = tiny_backend.stream(request(ids, max_tokens=400))
        pieces = []
        with pytest.raises(KeyboardInterrupt):
            for piece in reply:
                pieces.append(piece)
                if len(pieces) == 4:
                    signal.raise_signal(signal.SIGINT)  # as Jupyter's "interrupt kernel" does
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reply.done and reply.stats.finish_reason == "interrupted"
    assert reply.text.startswith("".join(pieces)) and len(pieces) == 4
    assert reply.stats.completion_tokens < 400

    again = tiny_backend.stream(request(ids, max_tokens=5)).consume()
    assert again.stats.finish_reason == "length"
    assert again.stats.prompt_tokens_evaluated == 1


def test_close_ends_a_reply_that_was_never_iterated(tiny_backend, prompt_ids):
    reply = tiny_backend.stream(request(prompt_ids(tiny_backend, "never read"), max_tokens=50))
    reply.close()
    assert reply.done and reply.stats.finish_reason == "interrupted"
    assert (
        tiny_backend.stream(request(prompt_ids(tiny_backend, "x"), max_tokens=2))
        .consume()
        .stats.completion_tokens
        == 2
    )


def test_closing_a_reply_never_read_leaves_the_cache_and_a_running_reply_alone(
    tiny_backend, prompt_ids
):
    """It ends without running the engine: no busy error, no prefix trimmed."""
    ids = prompt_ids(tiny_backend, "kept in the cache")
    tiny_backend.stream(request(ids, max_tokens=2)).consume()
    running = tiny_backend.stream(request(ids, max_tokens=5))
    next(iter(running))
    other = tiny_backend.stream(request(prompt_ids(tiny_backend, "something else")))
    other.close()
    assert other.done and other.stats.finish_reason == "interrupted" and other.text == ""
    running.close()
    again = tiny_backend.stream(request(ids, max_tokens=2)).consume()
    assert again.stats.prompt_tokens_evaluated == 1


# -- unloading ----------------------------------------------------------------------------------
@pytest.fixture()
def own_backend(tiny_gguf):
    """A model of the test's own, to unload."""
    backend = LocalBackend(read_gguf(tiny_gguf))
    yield backend
    backend.close()


UNLOADED = "This model was unloaded; load it again with `%exaone load`."


def test_unloading_finishes_a_reply_this_thread_left_half_read(own_backend, prompt_ids):
    reply = own_backend.stream(request(prompt_ids(own_backend, "half read"), max_tokens=200))
    pieces = iter(reply)  # held: the reply stays suspended between two pieces
    first = next(pieces)
    own_backend.close()
    assert reply.done and reply.stats.finish_reason == "interrupted"
    assert reply.text.startswith(first) and reply.stats.completion_tokens < 200
    with pytest.raises(ExaoneError, match=re.escape(UNLOADED)):
        own_backend.stream(request([1, 2, 3]))


def test_unloading_stops_a_reply_another_thread_writes(own_backend, prompt_ids):
    reply = own_backend.stream(request(prompt_ids(own_backend, "a long one"), max_tokens=400))
    started = threading.Event()

    def read() -> None:
        for _ in reply:
            started.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(60)
    closers = [threading.Thread(target=own_backend.close) for _ in range(2)]  # freed once
    for closer in closers:
        closer.start()
    for thread in (*closers, reader):
        thread.join(60)
        assert not thread.is_alive()
    assert reply.stats.finish_reason == "interrupted" and reply.stats.completion_tokens < 400


def test_a_reply_read_after_unloading_is_a_sentence(own_backend, prompt_ids):
    reply = own_backend.stream(request(prompt_ids(own_backend, "read too late")))
    own_backend.close()
    with pytest.raises(ExaoneError, match=re.escape(UNLOADED)):
        reply.consume()
    assert reply.stats.finish_reason == "error" and reply.error == UNLOADED


# -- UTF-8 --------------------------------------------------------------------------------------
def test_korean_round_trips_through_the_tokenizer(tiny_backend):
    text = "안녕하세요 world, 한국어 [|user|] 텍스트"
    ids = tiny_backend.tokenize(text, special=False)
    assert len(ids) > len(text)  # byte tokens: three per syllable
    assert tiny_backend.detokenize(ids) == text


def test_korean_split_across_byte_tokens_streams_as_whole_syllables(korean_backend, prompt_ids):
    reply = korean_backend.stream(
        request(prompt_ids(korean_backend, "한국어로 말해 주세요"), max_tokens=30)
    )
    pieces = list(reply)
    assert reply.stats.completion_tokens == 30  # 10 syllables of 3 byte tokens each
    assert pieces == ["한", "국"] * 5
    assert reply.text == "한국" * 5 and "\ufffd" not in reply.text


def test_a_reply_cut_inside_a_syllable_ends_with_one_replacement_character(
    korean_backend, prompt_ids
):
    reply = korean_backend.stream(request(prompt_ids(korean_backend, "cut"), max_tokens=7))
    assert list(reply) == ["한", "국", "\ufffd"]  # the 7th token is the first byte of 한


def test_streaming_decodes_exactly_like_decoding_the_whole_reply(
    tiny_backend, prompt_ids, monkeypatch
):
    # Random weights emit random bytes, so invalid UTF-8 (and U+FFFD) is legitimate here. What
    # streaming must not do is add damage: the pieces must equal decoding all bytes at once.
    tokens, real_piece = [], tiny_backend.piece

    def recording_piece(token):
        tokens.append(token)
        return real_piece(token)

    monkeypatch.setattr(tiny_backend, "piece", recording_piece)
    seen = ""
    for seed in range(1, 50):  # sampled replies end early at a sampled end-of-turn: run several
        tokens.clear()
        reply = tiny_backend.stream(
            request(
                prompt_ids(tiny_backend, "bytes"),
                temperature=1.5,
                top_k=0,
                max_tokens=300,
                seed=seed,
            )
        )
        pieces = list(reply)
        assert len(tokens) == reply.stats.completion_tokens
        whole = b"".join(real_piece(t) for t in tokens).decode("utf-8", "replace")
        assert "".join(pieces) == whole == reply.text
        seen += whole
        if len(seen) > 500:
            break
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in seen)
    assert any(0x7F < ord(ch) != 0xFFFD for ch in seen)  # some multi-byte characters came whole


# -- errors -------------------------------------------------------------------------------------
def test_a_second_stream_while_one_is_iterated_is_busy(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "busy")
    first = tiny_backend.stream(request(ids, max_tokens=30))
    for _ in first:
        with pytest.raises(ModelBusyError) as err:
            tiny_backend.stream(request(ids, max_tokens=3)).consume()
        assert str(err.value) == (
            "The model is busy with another reply; wait for it to finish or press Stop."
        )
        break
    first.close()
    assert tiny_backend.stream(request(ids, max_tokens=3)).consume().stats.completion_tokens == 3


def test_an_empty_prompt_is_a_sentence(tiny_backend):
    for ids in ([], None):
        with pytest.raises(ExaoneError, match=r"^The prompt is empty; write something to ask\.$"):
            tiny_backend.stream(Request(GREEDY, prompt_ids=ids))


def test_an_empty_prompt_in_a_batch_is_a_sentence(tiny_backend, prompt_ids):
    with pytest.raises(ExaoneError, match=r"^Prompt 1 has no tokens; give every row something"):
        generate_batch(tiny_backend, [prompt_ids(tiny_backend, "Hi"), []], GREEDY, parallel=2)
    assert tiny_backend.stream(request([1, 2, 3], max_tokens=2)).consume().stats.completion_tokens


def test_a_batch_of_rows_with_different_settings_is_a_sentence(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "Hi")
    requests = [Request(GREEDY, prompt_ids=ids), Request(Sampling(temperature=0.5), prompt_ids=ids)]
    with pytest.raises(ExaoneError) as err:
        tiny_backend.generate_many(requests)
    one_sentence(err, "share their settings", "one batch each")
    assert len(tiny_backend.generate_many(requests[:1]).outputs[0].text) > 0


def test_a_prompt_longer_than_the_context_is_a_sentence(tiny_backend):
    ids = tiny_backend.tokenize("word " * 600, special=False)
    assert len(ids) > 512
    with pytest.raises(ExaoneError) as err:
        tiny_backend.stream(request(ids))
    assert str(err.value) == (
        f"The prompt is {len(ids)} tokens but the context holds 512; "
        "shorten it, or load the model with a larger n_ctx."
    )


def test_a_token_llama_cpp_refuses_is_a_sentence_and_the_model_stays(tiny_backend, prompt_ids):
    """A token id outside the vocabulary (from code that builds prompt ids itself)."""
    ids = prompt_ids(tiny_backend, "a token out of range")
    reply = tiny_backend.stream(request([*ids, 10**6]))
    with pytest.raises(ExaoneError) as err:
        reply.consume()
    assert str(err.value) == (
        "llama.cpp failed to evaluate the tokens (llama_decode returned -1); "
        "start a new conversation with --new and try again."
    )
    assert reply.stats.finish_reason == "error"
    assert tiny_backend.stream(request(ids, max_tokens=3)).consume().stats.completion_tokens == 3


def test_a_reply_that_fills_the_context_ends_with_a_note(tiny_backend):
    ids = tiny_backend.tokenize("word " * 200, special=False)[:500]
    assert len(ids) == 500
    reply = tiny_backend.stream(request(ids, max_tokens=100)).consume()
    assert reply.stats.finish_reason == "length"
    assert reply.stats.context_used <= 512 and reply.stats.completion_tokens < 100
    assert "filled the 512-token context" in reply.note


# -- seeds --------------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_text(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "seeded")
    sampling = Sampling(temperature=0.8, max_tokens=60, seed=1234)
    tiny_backend.stream(request(ids, max_tokens=1)).consume()  # both runs then start alike
    one = tiny_backend.stream(Request(sampling, prompt_ids=ids)).consume()
    two = tiny_backend.stream(Request(sampling, prompt_ids=ids)).consume()
    assert one.text == two.text and one.stats.completion_tokens == 60


def test_a_seed_in_the_graph_gives_the_same_text_however_the_prompt_was_split(tiny_gguf):
    """Only the prompt's last token has logits: a chain in llama.cpp's graph samples every
    output, so logits for each chunk of the prompt would spend the seed's first draws there."""
    options = LoadOptions(gpu_layers="none", sample_in_graph=True, n_batch=8)
    backend = LocalBackend(read_gguf(tiny_gguf), options)
    try:
        ids = backend.tokenize("Tell me a story about cats and a long river. " * 3, special=False)
        sampling = Sampling(temperature=0.9, max_tokens=40, seed=7)
        whole = backend.stream(Request(sampling, prompt_ids=ids)).consume()
        cached = backend.stream(Request(sampling, prompt_ids=ids)).consume()
        assert whole.stats.prompt_tokens_evaluated == len(ids) > 3 * 8
        assert cached.stats.prompt_tokens_evaluated == 1
        assert whole.text == cached.text
    finally:
        backend.close()


def test_no_seed_gives_different_text(tiny_backend, prompt_ids):
    ids = prompt_ids(tiny_backend, "unseeded")
    sampling = Sampling(temperature=0.8, max_tokens=200)
    texts = {
        tiny_backend.stream(Request(sampling, prompt_ids=ids)).consume().text for _ in range(2)
    }
    assert len(texts) == 2


# -- options ------------------------------------------------------------------------------------
def test_load_options_reject_a_misspelled_name():
    with pytest.raises(ExaoneError) as err:
        LoadOptions.from_options(n_gpu_layer=10)
    text = str(err.value)
    assert text.startswith("Unknown load option 'n_gpu_layer'; the options are ")
    assert "gpu_layers" in text and "n_ctx" in text


@pytest.mark.parametrize(
    "name, value",
    [
        ("n_ctx", -1),
        ("n_ctx", 0),
        ("n_ctx", 2.5),
        ("n_ctx", True),
        ("n_batch", 0),
        ("n_threads", "4"),
    ],
)
def test_load_options_reject_bad_values(name, value):
    with pytest.raises(ExaoneError, match=rf"^{name} must be a whole number of 1 or more"):
        LoadOptions.from_options(**{name: value})


def test_load_options_accept_good_values():
    opts = LoadOptions.from_options(n_ctx=256, gpu_layers="none", n_threads=None)
    assert opts.n_ctx == 256 and opts.gpu_layers == "none" and opts.n_threads is None


def test_n_ctx_above_the_trained_context_is_refused_before_loading(tiny_gguf):
    with pytest.raises(ExaoneError) as err:
        LocalBackend(read_gguf(tiny_gguf), LoadOptions.from_options(n_ctx=1024))
    assert str(err.value) == (
        "n_ctx=1024 is more than tiny.gguf was trained for (512 tokens); use at most 512."
    )


def test_a_smaller_n_ctx_is_used(tiny_gguf, prompt_ids):
    backend = LocalBackend(read_gguf(tiny_gguf), LoadOptions.from_options(n_ctx=128))
    try:
        assert backend.n_ctx == 128
        with pytest.raises(ExaoneError, match="the context holds 128"):
            backend.stream(request(backend.tokenize("x" * 200, special=False)))
    finally:
        backend.close()
    with pytest.raises(ExaoneError, match="unloaded"):
        backend.stream(request([1, 2, 3]))


@pytest.mark.parametrize(
    "options, said",
    [
        ({"temperature": -0.1}, "temperature must be 0 or more"),
        ({"max_tokens": 0}, "max_tokens must be a whole number of 1 or more"),
        ({"max_tokens": 2.5}, "max_tokens must be a whole number"),
        ({"top_p": 0}, "top_p must be above 0"),
        ({"seed": -1}, "seed must be a whole number of 0 or more"),
        ({"top_k": 40.0}, "top_k must be a whole number"),
        ({"temprature": 0.5}, "Unknown sampling option 'temprature'"),
        ({"max_new_tokens": 5}, "Unknown sampling option 'max_new_tokens'"),
    ],
)
def test_sampling_rejects_bad_options(options, said):
    with pytest.raises(ExaoneError) as err:
        Sampling.from_options(**options)
    assert str(err.value).startswith(said) and str(err.value).endswith(".")


def test_sampling_options_replace_the_base_and_ignore_none():
    base = Sampling(temperature=0.2, max_tokens=10)
    s = Sampling.from_options(base, temperature=None, max_tokens=20)
    assert (s.temperature, s.max_tokens) == (0.2, 20)


def test_an_exaone4_model_with_the_real_vocabulary_size_loads_and_answers(tmp_path):
    """EXAONE 4.0's layout (q/k norms, post-norms) and 102,400 tokens, as LG's GGUFs have them."""
    from exaone_jupyter.testing import TinyShape

    path = write_random_gguf(
        tmp_path / "exaone4.gguf",
        arch="exaone4",
        n_vocab=102_400,
        logit_scale=10.0,
        shape=TinyShape(n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_layer=2),
    )
    info = read_gguf(path)
    assert info.architecture == "exaone4" and info.is_exaone_arch
    backend = LocalBackend(info, LoadOptions(n_ctx=256))
    try:
        import llama_cpp

        assert llama_cpp.llama_vocab_n_tokens(backend.vocab) == 102_400
        ids = backend.tokenize("[|user|]hello\n[|assistant|]", special=True)
        reply = backend.stream(request(ids, Sampling(temperature=0, max_tokens=8))).consume()
        again = backend.stream(request(ids, Sampling(temperature=0, max_tokens=8))).consume()
        assert reply.stats.completion_tokens >= 1 and reply.text == again.text  # greedy: stable
    finally:
        backend.close()
