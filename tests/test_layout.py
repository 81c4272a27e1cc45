"""The package's shape, as docs/architecture.md states it: checked, so it cannot drift."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exaone_jupyter"
LONGEST = 80  # lines a function of the package may have


def test_no_function_in_the_package_is_over_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines})")
    assert not long, "split these by concept: " + ", ".join(long)


def test_importing_the_package_and_its_engines_imports_no_llama_cpp():
    """%load_ext stays fast: llama_cpp (and numpy's sampler) load with the first model."""
    code = (
        "import sys, exaone_jupyter, exaone_jupyter.engine.backend, exaone_jupyter.mapping\n"
        "import exaone_jupyter.ui.magics\n"
        "print('llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_engine_never_imports_ipython_and_the_ui_never_imports_the_engines_internals():
    """Imports point down the layers: engine/ knows no IPython, ui/ asks the session."""
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(n.split(".")[0] in ("IPython", "ipywidgets") for n in names), path
    for path in sorted((PACKAGE / "ui").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "engine.llama" not in text and "llama_cpp" not in text, path
