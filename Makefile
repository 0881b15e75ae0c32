# Set-up and the main jobs. `make demo`, `make test` and `make check` each create .venv and install
# everything they need on a fresh machine, at the versions of constraints.txt (the ones the
# suite is tested with); `make test CONSTRAINTS= VENV=.venv-newest` takes the newest releases.
# PyTorch comes from PyPI, whose Linux x86_64 torch wheel is the CUDA build (~5.5 GB in .venv
# with its nvidia-* libraries; it runs on the CPU as well). PyPI has no CPU-only torch for Linux
# x86_64; where PyTorch's own CPU index is reachable, PIP_TORCH="--index-url URL" installs the
# torch/torchvision pair from there (~1 GB).
PY ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PIP_TORCH ?=
BIN := $(VENV)/bin
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

$(BIN)/solov2: pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(PIN)
	$(BIN)/pip install -q $(PIP_TORCH) torch torchvision $(PIN)
	$(BIN)/pip install -q -e ".[dev]" $(PIN)
	touch $(BIN)/solov2

.PHONY: install demo test lint check
install: $(BIN)/solov2

demo: install
	$(BIN)/solov2 demo --output-dir output/demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests tools dev
	$(BIN)/ruff format --check src tests tools dev

# What CI checks before the tests: lint and format, the import layers (contracts in
# pyproject.toml), types, and the code-shape limits (files <= 400 lines, functions <= 80;
# parameter lists <= 7 are ruff's PLR0913).
check: lint
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python dev/check_shape.py
