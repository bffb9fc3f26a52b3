# Every target creates .venv when it is missing, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The lowest SQLAlchemy and Alembic pyproject.toml admits (tests/test_sa_contract.py checks
# these pins against it): `make test-min` runs the SQLite suite on them.
MIN_VENV := .venv-min
MIN_PINS := 'sqlalchemy[asyncio]==2.0.36' 'alembic==1.14.0'

.PHONY: run test test-sqlite test-min test-faults test-pgbouncer lint typecheck migrate bench bench-replicas bench-retention clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the demo on the embedded SQLite default
	$(BIN)/flowstore demo

# make test runs the suite in this process; TEST_WORKERS=2 runs it in two (pytest-xdist, each
# with its own throwaway databases): 6 minutes against 13. CI keeps one: under two workers a
# timing-sensitive test flaked once (tests/test_audit_writer.py's batch count, since fixed).
TEST_WORKERS ?= 0

test: $(STAMP)  ## the whole suite on SQLite, PostgreSQL and MariaDB (servers that are up)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

$(MIN_VENV)/.installed: pyproject.toml
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_VENV)/bin/python -m pip install -q -e '.[dev]' $(MIN_PINS)
	touch $@

test-min: $(MIN_VENV)/.installed  ## the SQLite suite on the lowest SQLAlchemy and Alembic admitted
	FLOWSTORE_TEST_BACKENDS=sqlite $(MIN_VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	FLOWSTORE_TEST_BACKENDS=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)

test-faults: $(STAMP)  ## servers of its own crashed, stopped and cut off (root; docs/faults.md)
	$(BIN)/python -m pytest tests/faults -n 2 $(PYTEST_ARGS)

test-pgbouncer: $(STAMP)  ## the PostgreSQL suite through PgBouncer in transaction pooling (root)
	FLOWSTORE_TEST_BACKENDS=postgresql $(BIN)/python -m tests.pgbouncer \
		$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

migrate: $(STAMP)  ## alembic upgrade head on FLOWSTORE_DATABASE_URL
	$(BIN)/alembic upgrade head

bench: $(STAMP)  ## pgqueuer (the bench extra) runs beside flowstore's queue
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

bench-replicas: $(STAMP)  ## read replicas on a streaming pair of its own (root; docs/scaling.md)
	PYTHONPATH=. $(BIN)/python scripts/bench_replicas.py $(BENCH_ARGS)

bench-retention: $(STAMP)  ## a month of history dropped against DELETE (PostgreSQL; docs/scaling.md)
	$(BIN)/python scripts/bench_retention.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MIN_VENV) build dist *.egg-info .mypy_cache .ruff_cache
