# Set-up and the two main jobs. `make demo` and `make test` each create .venv and install
# everything they need on a fresh machine (CPU torch from PyPI, or the cached wheels).
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

$(BIN)/solov2: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/solov2

.PHONY: install demo test lint
install: $(BIN)/solov2

demo: install
	$(BIN)/solov2 demo --output-dir output/demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests tools dev
