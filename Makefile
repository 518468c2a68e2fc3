# One command per job. Each bootstraps .venv from the committed, hash-pinned lock file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.onecard-installed

.PHONY: run test lint bench openapi lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "onecard needs Python >= 3.11 (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## Start every service on the embedded default (SQLite + embedded Redis), seed the demo
## province under var/demo/ once, print what to try; Ctrl-C stops them.
run: $(STAMP)
	$(BIN)/onecard up --demo

## Lint, type-check, check the architecture, then the whole test suite.
test: lint
	$(BIN)/pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Benchmarks: figures and ratios measured side by side in one run.
bench: $(STAMP)
	$(BIN)/python -m bench

## Regenerate openapi/ from the code (a test fails when it drifts).
openapi: $(STAMP)
	$(BIN)/onecard openapi

## Re-pin requirements.lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
