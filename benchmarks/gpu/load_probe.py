"""Find where a model load dies: each step in its own process, with llama.cpp's log visible.

``Llama(verbose=False)`` sends fds 1 and 2 to /dev/null while it loads, so a crash there leaves
no trace, not even faulthandler's. This loads one small GGUF several ways and prints, per step,
the exit code and the end of its stderr.

    python3 benchmarks/gpu/load_probe.py [GGUF ...]   # default: a 4-layer f16 model it writes
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STEPS = {
    "raw Llama, all layers, verbose": """
llm = llama_cpp.Llama(PATH, n_gpu_layers=-1, n_ctx=512, verbose=True)
print(llm("hello", max_tokens=4, temperature=0)["choices"][0]["text"].encode())""",
    "raw Llama, no layers, verbose": """
llm = llama_cpp.Llama(PATH, n_gpu_layers=0, n_ctx=512, verbose=True)
print(llm("hello", max_tokens=4, temperature=0)["choices"][0]["text"].encode())""",
    "raw Llama, all layers, quiet": """
llm = llama_cpp.Llama(PATH, n_gpu_layers=-1, n_ctx=512, verbose=False)
print(llm("hello", max_tokens=4, temperature=0)["choices"][0]["text"].encode())""",
    "our log callback, then raw Llama, verbose": """
from exaone_jupyter.engine.llama import llama_log
llama_log.install()
llm = llama_cpp.Llama(PATH, n_gpu_layers=-1, n_ctx=512, verbose=True)
print(llm("hello", max_tokens=4, temperature=0)["choices"][0]["text"].encode())""",
    "probe_gpu, then raw Llama, verbose": """
from exaone_jupyter.engine.llama.gpu import probe_gpu
print(probe_gpu())
llm = llama_cpp.Llama(PATH, n_gpu_layers=-1, n_ctx=512, verbose=True)
print(llm("hello", max_tokens=4, temperature=0)["choices"][0]["text"].encode())""",
    "LocalBackend, verbose": """
from exaone_jupyter.engine.backend import LoadOptions
from exaone_jupyter.engine.llama.local import LocalBackend
from exaone_jupyter.model.gguf_check import read_gguf
_init = llama_cpp.Llama.__init__
llama_cpp.Llama.__init__ = lambda self, *a, **k: _init(self, *a, **{**k, "verbose": True})
b = LocalBackend(read_gguf(PATH), LoadOptions(n_ctx=512))
print(b.info.local.offload.n_gpu_layers, b.info.local.llama_gpu_layers)""",
}


BISECT = [(32, 256, True), (2, 2048, True), (8, 2048, True), (16, 2048, True), (16, 2048, False)]


def bisect() -> int:
    """Raw loads of gpu_check-shaped f16 models, smallest first; prints the largest that loads."""
    from exaone_jupyter.testing import TinyShape, write_random_gguf

    best = None
    for layers, width, mmap in BISECT:
        path = Path(tempfile.gettempdir()) / f"exaone-shape-{layers}x{width}-f16.gguf"
        if not path.exists():
            heads = 16 if width >= 2048 else 4
            write_random_gguf(
                path,
                dtype="f16",
                shape=TinyShape(
                    n_embd=width,
                    n_head=heads,
                    n_head_kv=heads // 4,
                    n_ff=width * 7 // 2,
                    n_layer=layers,
                    n_ctx=4096,
                ),
            )
        code = (
            f"import llama_cpp\nllm = llama_cpp.Llama({str(path)!r}, n_gpu_layers=-1, "
            f"n_ctx=512, verbose=True, use_mmap={mmap})\n"
            "print(llm('hello', max_tokens=4, temperature=0)['choices'][0]['text'].encode())\n"
            "print('STEP OK')"
        )
        child = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        ok = "STEP OK" in child.stdout
        size = path.stat().st_size / 2**20
        print(
            f"== {layers} layers x {width}, {size:.0f} MiB, mmap={mmap}: rc={child.returncode} "
            f"{'OK' if ok else 'FAILED'}",
            flush=True,
        )
        if not ok:
            lines = [line for line in child.stderr.splitlines() if line.strip()]
            print("   " + "\n   ".join(lines[-25:]), flush=True)
        elif width == 2048:
            best = (layers, mmap)
    if best:
        print(f"BEST {best[0]} {'mmap' if best[1] else 'no-mmap'}", flush=True)
    return 0


def main() -> int:
    if sys.argv[1:] == ["--bisect"]:
        return bisect()
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths:
        from exaone_jupyter.testing import TinyShape, write_random_gguf

        path = Path(tempfile.gettempdir()) / "load-probe-4x256-f16.gguf"
        write_random_gguf(
            path,
            shape=TinyShape(n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_layer=4, n_ctx=1024),
            dtype="f16",
        )
        paths = [path]
    for path in paths:
        print(f"### {path} md5 {hashlib.md5(path.read_bytes()).hexdigest()}", flush=True)
        for name, body in STEPS.items():
            code = f"import llama_cpp\nPATH = {str(path)!r}\n{body}\nprint('STEP OK')"
            try:
                child = subprocess.run(
                    [sys.executable, "-X", "faulthandler", "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=90,
                    cwd=ROOT,
                )
                rc, out, err = child.returncode, child.stdout, child.stderr
            except subprocess.TimeoutExpired as timeout:
                rc, out, err = "timeout", str(timeout.stdout or ""), str(timeout.stderr or "")
            print(f"== {name}: rc={rc} {'OK' if 'STEP OK' in out else 'FAILED'}", flush=True)
            if "STEP OK" not in out:
                lines = [line for line in err.splitlines() if line.strip()]
                print("   stdout:", out.strip()[-300:])
                print("   " + "\n   ".join(lines[-30:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
