# The two user-facing targets (demo, test) build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned so pip takes the CPU wheel found locally instead of resolving a multi-GB CUDA build.
# On a GPU machine: `make demo TORCH_SPEC=torch` (PyPI's Linux wheels are CUDA builds) or a
# CUDA index, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= postgres,dev
# The suite in two processes (pytest-xdist, tests handed out as each finishes): much of its
# time is real processes (CLI runs, workers, servers) starting and waiting on each other.
# PYTEST_WORKERS=0 runs it in one process, in order.
PYTEST_WORKERS ?= 2

.PHONY: demo test test-fast docs lint typecheck bench clean

$(BIN)/sweeps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/sweeps
	SWEEPS_HOME=$${SWEEPS_HOME:-./sweeps-data} $(BIN)/sweeps train --task d2l-synthetic --penalty none --lambda 0
	SWEEPS_HOME=$${SWEEPS_HOME:-./sweeps-data} $(BIN)/sweeps train --task d2l-synthetic --penalty l2 --lambda 3

test: $(BIN)/sweeps
	$(BIN)/ruff check sweeps trainer tracking tests bench
	$(BIN)/ruff format --check sweeps trainer tracking tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The inner loop: the tests that need no PostgreSQL, browser or real services (markers set by
# tests/conftest.py from the fixtures a test uses); `make test` runs them all, as CI does.
FAST := not slow and not postgres and not ui
test-fast: $(BIN)/sweeps
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -m "$(FAST)" $(PYTEST_ARGS)

# The docs' code blocks run as a reader would, output shown; DOC=docs/cli.md for one page.
DOC ?= README.md docs/*.md
docs: $(BIN)/sweeps
	$(BIN)/python -m tests.docs.runner $(DOC)

lint: $(BIN)/sweeps
	$(BIN)/ruff check --fix sweeps trainer tracking tests bench
	$(BIN)/ruff format sweeps trainer tracking tests bench

typecheck: $(BIN)/sweeps
	$(BIN)/mypy

# Trials/s against a plain Optuna+MLflow script; BENCH_ARGS="--trials 128 --device cuda".
bench: $(BIN)/sweeps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) sweeps-data .pytest_cache .mypy_cache .ruff_cache
