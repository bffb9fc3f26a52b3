"""Migrations on every backend: the Alembic CLI and ``Store.upgrade()``, a clean round trip,
models that match the migrations, pytest-alembic's standard tests, and an installed wheel.

Every test gets its own empty database: a SQLite file (whenever a SQLite backend is selected)
or a throwaway database on PostgreSQL / MariaDB. Tests are written against ``head``, so new
revisions are covered without editing this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import URL, Connection, Engine, inspect, make_url, text

from flowstore import Store
from flowstore.config import Settings
from flowstore.engine import build_engine
from flowstore.migration_hooks import flowstore_include_object
from flowstore.models import FLOWSTORE_TABLES, Base
from flowstore.schema import alembic_config as flowstore_alembic_config
from flowstore.schema import head_revision
from tests.backends import SERVER_BACKENDS
from tests.conftest import BACKENDS, server_database

REPO_ROOT = Path(__file__).resolve().parent.parent

# A migrated SQLite database must be a file (the CLI and the store see the same database).
MIGRATION_BACKENDS = (["sqlite_file"] if {"sqlite", "sqlite_file"} & set(BACKENDS) else []) + [
    b for b in BACKENDS if b in SERVER_BACKENDS
]

# Re-exported so that pytest collects pytest-alembic's standard tests in this module, where
# `alembic_engine` below runs them on every backend.
__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

MODEL_TABLES = FLOWSTORE_TABLES


@pytest.fixture(params=MIGRATION_BACKENDS)
def migration_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, migration_backend: str, tmp_path: Path) -> URL:
    """The URL of a new, empty database on ``migration_backend``."""
    if migration_backend == "sqlite_file":
        return make_url(f"sqlite:///{tmp_path / 'migrations.sqlite3'}")
    return server_database(request, migration_backend, "mig").url


@pytest.fixture
def empty_store(empty_database: URL) -> Iterator[Store]:
    with Store(empty_database) as store:
        yield store


# -- pytest-alembic, on every backend ----------------------------------------------------------


@pytest.fixture
def alembic_engine(empty_database: URL) -> Iterator[Engine]:
    """pytest-alembic's database: an empty one per test, on each migration backend."""
    engine = build_engine(empty_database, Settings())
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def alembic_config() -> Any:
    """flowstore's own Alembic config, so pytest-alembic runs env.py exactly as Store does."""
    return flowstore_alembic_config()


# -- helpers -----------------------------------------------------------------------------------


def _alembic_cli(url: URL, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``alembic`` console script of this environment from the repository root."""
    script = Path(sys.executable).with_name("alembic")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]
    env = {**os.environ, "FLOWSTORE_DATABASE_URL": url.render_as_string(hide_password=False)}
    return subprocess.run(
        [*command, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _catalog(conn: Connection) -> set[tuple[str, str]]:
    """Every schema object of the current database (tables, indexes, constraints, sequences,
    types, functions, triggers, views) as ``(kind, name)``, straight from the system catalog."""
    dialect = conn.dialect.name
    queries: list[str]
    if dialect == "sqlite":
        queries = ["SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"]
    elif dialect == "postgresql":
        queries = [
            "SELECT 'rel:' || c.relkind::text, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()",
            "SELECT 'type:' || t.typtype::text, t.typname FROM pg_type t"
            " JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd', 'r', 'm')",
            "SELECT 'function', p.proname FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema()",
            "SELECT 'trigger', t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal",
            "SELECT 'constraint', conname FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = current_schema()",
        ]
    else:
        queries = [
            "SELECT 'table', table_name FROM information_schema.tables"
            " WHERE table_schema = DATABASE()",
            "SELECT DISTINCT 'index', CONCAT(table_name, '.', index_name)"
            " FROM information_schema.statistics WHERE table_schema = DATABASE()",
            "SELECT 'constraint', CONCAT(table_name, '.', constraint_name)"
            " FROM information_schema.table_constraints WHERE constraint_schema = DATABASE()",
            "SELECT 'trigger', trigger_name FROM information_schema.triggers"
            " WHERE trigger_schema = DATABASE()",
            "SELECT 'routine', routine_name FROM information_schema.routines"
            " WHERE routine_schema = DATABASE()",
        ]
    found: set[tuple[str, str]] = set()
    for query in queries:
        found.update((str(kind), str(name)) for kind, name in conn.execute(text(query)))
    return found


def _reflected_schema(conn: Connection) -> dict[str, Any]:
    """A comparable description of every table: columns with types, keys, indexes, checks."""
    inspector = inspect(conn)
    described: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], str(c["type"].compile(dialect=conn.dialect)), c["nullable"])
            for c in inspector.get_columns(table)
        ]
        foreign_keys = sorted(
            (
                str(fk["name"]),
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                str(fk.get("options", {}).get("ondelete", "")).upper(),
            )
            for fk in inspector.get_foreign_keys(table)
        )
        indexes = sorted(
            (str(ix["name"]), tuple(str(c) for c in ix["column_names"]), bool(ix["unique"]))
            for ix in inspector.get_indexes(table)
        )
        uniques = sorted(
            (str(uq["name"]), tuple(uq["column_names"]))
            for uq in inspector.get_unique_constraints(table)
        )
        checks = sorted(str(ck["name"]) for ck in inspector.get_check_constraints(table))
        primary = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
        described[table] = {
            "columns": columns,
            "primary_key": primary,
            "foreign_keys": foreign_keys,
            "indexes": indexes,
            "uniques": uniques,
            "checks": checks,
        }
    return described


def _table_names(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _model_diffs(store: Store) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: in sync)."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": flowstore_include_object(conn.dialect.name),
            },
        )
        return list(compare_metadata(context, Base.metadata))


# -- the CLI and Store.upgrade() ----------------------------------------------------------------


def test_alembic_cli_upgrades_to_head_and_check_is_clean(empty_database: URL) -> None:
    upgraded = _alembic_cli(empty_database, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    current = _alembic_cli(empty_database, "current")
    assert current.returncode == 0, current.stderr
    assert f"{head_revision()} (head)" in current.stdout
    checked = _alembic_cli(empty_database, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    with Store(empty_database) as store:
        assert store.current_revision() == head_revision()
        assert _table_names(store) == MODEL_TABLES | {"alembic_version"}


def test_store_upgrade_reaches_head_with_every_model_table(empty_store: Store) -> None:
    assert empty_store.current_revision() is None
    empty_store.upgrade()
    assert empty_store.current_revision() == head_revision()
    assert _table_names(empty_store) == MODEL_TABLES | {"alembic_version"}
    empty_store.upgrade()  # already at head: nothing to do, nothing fails
    assert empty_store.current_revision() == head_revision()


def test_upgrade_downgrade_upgrade_leaves_no_trace(empty_store: Store) -> None:
    with empty_store.engine.connect() as conn:
        untouched = _catalog(conn)
    empty_store.upgrade()
    with empty_store.engine.connect() as conn:
        migrated_catalog, migrated_schema = _catalog(conn), _reflected_schema(conn)
    assert set(MODEL_TABLES) <= set(migrated_schema)

    empty_store.downgrade("base")
    assert empty_store.current_revision() is None
    with empty_store.engine.connect() as conn:
        leftovers = _catalog(conn) - untouched
    assert all("alembic_version" in name for _, name in leftovers), sorted(leftovers)

    empty_store.upgrade()
    with empty_store.engine.connect() as conn:
        assert _catalog(conn) == migrated_catalog
        assert _reflected_schema(conn) == migrated_schema
    assert empty_store.current_revision() == head_revision()


def test_models_match_migrations(empty_store: Store) -> None:
    empty_store.upgrade()
    assert _model_diffs(empty_store) == []


def test_model_comparison_notices_a_schema_drift(empty_store: Store) -> None:
    """The comparison above can fail: an index dropped behind the models' back is reported."""
    empty_store.upgrade()
    index = "ix_templates_provider_type"
    with empty_store.engine.begin() as conn:
        on_table = " ON templates" if empty_store.dialect in {"mysql", "mariadb"} else ""
        conn.execute(text(f"DROP INDEX {index}{on_table}"))
    diffs = _model_diffs(empty_store)
    assert [(d[0], d[1].name) for d in diffs] == [("add_index", index)]


# -- an installed wheel, outside the checkout ---------------------------------------------------

_WHEEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import flowstore
    from flowstore import Store
    from flowstore.schema import head_revision, script_location
    from sqlalchemy import inspect

    store = Store(sys.argv[1])
    before = store.current_revision()
    store.upgrade()
    with store.engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
    print(json.dumps({
        "module": flowstore.__file__,
        "script_location": str(script_location()),
        "before": before,
        "current": store.current_revision(),
        "head": head_revision(),
        "tables": tables,
    }))
    store.close()
    """
)


def _site_packages(python_prefix: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return python_prefix / "lib" / version / "site-packages"


def test_store_upgrade_from_an_installed_wheel(tmp_path: Path) -> None:
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("flowstore-*.whl")

    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    # The dependencies come from this environment; flowstore itself only from the wheel (a
    # path in a .pth file is appended after the new venv's own site-packages).
    dependencies = _site_packages(Path(sys.prefix))
    (_site_packages(target) / "flowstore_test_deps.pth").write_text(f"{dependencies}\n")

    database = elsewhere / "wheel.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FLOWSTORE_"))}
    ran = subprocess.run(
        [str(python), "-c", _WHEEL_SCRIPT, f"sqlite:///{database}"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])

    package = _site_packages(target) / "flowstore"
    assert Path(result["module"]).parent == package
    assert Path(result["script_location"]) == package / "_migrations"
    assert result["before"] is None
    assert result["current"] == result["head"] == head_revision()
    assert set(result["tables"]) == MODEL_TABLES | {"alembic_version"}
    shipped = {p.name for p in (package / "_migrations" / "versions").glob("*.py")}
    in_checkout = {p.name for p in (REPO_ROOT / "migrations" / "versions").glob("*.py")}
    assert shipped == in_checkout
