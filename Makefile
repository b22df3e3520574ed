# aihub-billing: every target sets up what it needs (.venv on first use) and says what it does.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test lint format bench clean

help:
	@echo "make run    - install, migrate, seed and serve the API on 127.0.0.1:$${PORT:-8000} (SQLite)"
	@echo "make test   - install and run the whole test suite"
	@echo "make lint   - ruff, ruff format --check, mypy, import-linter contracts"
	@echo "make bench  - benchmarks with figures and ratios"

$(STAMP): pyproject.toml requirements.lock
	@echo ">> creating $(VENV) and installing aihub-billing with pinned dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@echo ">> serving with the embedded default: SQLite under ./var, in-process counters"
	@$(BIN)/aihub-billing serve --port $${PORT:-8000}

test: $(STAMP)
	@echo ">> running the test suite (SQLite always; PostgreSQL and Redis when reachable)"
	@$(BIN)/pytest

lint: $(STAMP)
	@echo ">> ruff check"
	@$(BIN)/ruff check .
	@echo ">> ruff format --check"
	@$(BIN)/ruff format --check .
	@echo ">> mypy src/"
	@$(BIN)/mypy src
	@echo ">> import-linter contracts"
	@$(BIN)/lint-imports

format: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

bench: $(STAMP)
	@echo ">> benchmarks"
	@$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
