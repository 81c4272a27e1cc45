# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# llama-cpp-python compiles from source on first install (8-15 min on 2 cores); pip caches the
# built wheel, so later installs take seconds. CMAKE_ARGS=-DGGML_CUDA=on makes a CUDA build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test soak install bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,remote,lint]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m exaone_jupyter --model exaone-demo -t 0 "한국의 수도는 어디인가요? Answer in one sentence."

# The tutorials run as tests too: offline, on the demo model, answers compared (nbval).
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
         --nbval-cell-timeout 300

test: $(STAMP)
	bash tools/ensure_chromium.sh
	$(PY) -m pytest
	EXAONE_JUPYTER_MODEL=exaone-demo HF_HUB_OFFLINE=1 $(PY) -m pytest $(NBVAL) notebooks

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
