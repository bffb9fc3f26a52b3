# Every target creates .venv when it is missing, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-sqlite lint typecheck migrate bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the demo on the embedded SQLite default
	$(BIN)/flowstore demo

test: $(STAMP)  ## the whole suite on SQLite, PostgreSQL and MariaDB (servers that are up)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	FLOWSTORE_TEST_BACKENDS=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

migrate: $(STAMP)  ## alembic upgrade head on FLOWSTORE_DATABASE_URL
	$(BIN)/alembic upgrade head

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
