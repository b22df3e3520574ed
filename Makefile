# aihub-billing: every target sets up what it needs (.venv on first use) and says what it does.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install system-deps bench-deps run test lint format bench clean

help:
	@echo "make run    - install, migrate, seed and serve the API on 127.0.0.1:$${PORT:-8000} (SQLite)"
	@echo "make test   - install and run the whole test suite"
	@echo "make lint   - ruff, ruff format --check, mypy, import-linter contracts"
	@echo "make bench  - benchmarks with figures and ratios"
	@echo "make system-deps - CJK font and libharfbuzz-subset for invoice PDFs, promtool (apt-get when root)"

# Invoice PDFs (WeasyPrint): a CJK font for zh_CN documents and HarfBuzz's subsetter (fonts are
# subset in C instead of fontTools: ~10x faster). The alert rules' tests run promtool (Debian
# package prometheus, which also holds the server: only promtool is used). Installed with
# apt-get when root, else reported.
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
# $(call apt_need,CHECK,PACKAGE,WHAT FOR,WITHOUT IT): installs PACKAGE when CHECK fails.
apt_need = if ! { $(1); }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">> apt-get install $(2) ($(3))"; \
	    $(APT_INSTALL) $(2) >/dev/null || { apt-get update -q >/dev/null && \
	      $(APT_INSTALL) $(2) >/dev/null; } || echo "!! installing $(2) failed"; \
	  else \
	    echo "!! no $(2): $(4) (apt-get install $(2))"; \
	  fi; \
	fi
system-deps:
	@$(call apt_need,fc-list :lang=zh 2>/dev/null | grep -q .,fonts-wqy-microhei,a CJK font for zh_CN invoice PDFs,zh_CN invoice PDFs need a CJK font)
	@$(call apt_need,ldconfig -p 2>/dev/null | grep -q libharfbuzz-subset.so.0,libharfbuzz-subset0,fast PDF font subsetting,invoice PDFs work but font subsetting is ~10x slower)
	@$(call apt_need,command -v promtool >/dev/null,prometheus,promtool checks and tests deploy/prometheus/alerts.yml,the alert rule tests skip and fail under CI=true)
	@ldconfig -p 2>/dev/null | grep -q libpango-1.0.so.0 || \
	  echo "!! no pango (libpango-1.0-0): WeasyPrint cannot render invoice PDFs"

$(STAMP): pyproject.toml requirements.lock
	@echo ">> creating $(VENV) and installing aihub-billing with pinned dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: system-deps $(STAMP)

run: $(STAMP)
	@echo ">> serving with the embedded default: SQLite under ./var, in-process counters"
	@$(BIN)/aihub-billing serve --port $${PORT:-8000}

# Each worker process has its own PostgreSQL database and SQLite file; Redis keys carry a
# per-test prefix. Two workers halve the suite's time on two cores.
TEST_WORKERS ?= 2

test: system-deps $(STAMP)
	@echo ">> running the test suite on $(TEST_WORKERS) processes (SQLite always; PostgreSQL and Redis when reachable)"
	@$(BIN)/pytest -n $(TEST_WORKERS)

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

# wrk loads the HTTP benchmarks; without it they fall back to an async httpx driver, which
# saturates its own core long before the server does.
bench-deps:
	@$(call apt_need,command -v wrk >/dev/null,wrk,the HTTP load generator of the benchmarks,the HTTP benchmarks use a slower httpx driver)

bench: system-deps bench-deps $(STAMP)
	@echo ">> benchmarks"
	@$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
