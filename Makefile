# Hybrid Router: `make serve` runs the gateway, `make test` runs every test.
# Both create .venv and install from hash-pinned lock files first (only when the locks changed).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: serve test specialists eval bench lock check clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements-pip.lock

$(VENV)/.run-installed: requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements.lock
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements-dev.lock
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.run-installed

serve: $(VENV)/.run-installed  ## run the gateway on 127.0.0.1:8080 with the bundled specialists
	$(BIN)/hybrid-router serve

test: $(VENV)/.dev-installed  ## run the whole test suite
	$(BIN)/python -m pytest

$(VENV)/.tier2-installed: requirements-tier2.txt | $(VENV)/.dev-installed
	$(PIP) torch==2.13.0  # the CPU build from the local wheel; never plain `torch` (a CUDA build)
	$(PIP) -r requirements-tier2.txt
	touch $@

specialists: $(VENV)/.tier2-installed  ## rebuild the bundled specialists (tier 1 and 2) from ../shared/data
	HF_HUB_OFFLINE=1 $(BIN)/hybrid-router specialists-build

eval: $(VENV)/.dev-installed  ## metrics, reliability diagrams and risk-coverage curves of every specialist
	$(BIN)/hybrid-router eval

bench: $(VENV)/.dev-installed  ## benchmarks (see BENCHMARKS.md)
	$(BIN)/python -m bench

check: $(VENV)/.dev-installed  ## lint and type-check
	$(BIN)/ruff check router ops specialists tests bench
	$(BIN)/mypy router ops specialists

lock:  ## re-resolve the lock files (needs uv)
	uv pip compile pyproject.toml requirements-build.in --python-version 3.11 --generate-hashes -o requirements.lock
	uv pip compile pyproject.toml requirements-build.in --extra train --extra test --python-version 3.11 \
		--generate-hashes -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
