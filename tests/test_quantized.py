"""Quantized models run: a Q8_0 GGUF answers a multi-token prompt without crashing the process.

On CPUs with AMX, llama.cpp's repacked Q8_0 buffers segfault on the first batch of more than one
token; the engine turns them off there. The model runs in a child process so a regression fails
this test instead of killing the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_q8_0_model_answers_a_multi_token_prompt(tmp_path):
    script = textwrap.dedent(f"""
        from exaone_jupyter.testing import TinyShape, write_random_gguf
        from exaone_jupyter.model.gguf_check import read_gguf
        from exaone_jupyter.engine.llama.local import LocalBackend
        from exaone_jupyter.engine.backend import Request, Sampling
        path = write_random_gguf({str(tmp_path / "q8.gguf")!r}, dtype="q8_0",
                                 shape=TinyShape(n_embd=256, n_head=8, n_head_kv=2, n_ff=512))
        backend = LocalBackend(read_gguf(path))
        ids = backend.tokenize("[|user|]hello there, how are you today?\\n[|assistant|]", special=True)
        reply = backend.stream(Request(Sampling(temperature=0, max_tokens=20), prompt_ids=ids)).consume()
        print(backend.gguf.quantization, reply.stats.completion_tokens, reply.stats.finish_reason)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == ["Q8_0", "20", "length"]
