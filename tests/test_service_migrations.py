"""A service's own Alembic migrations next to flowstore's, on every backend.

A small test service (``acme``: an integer-key table and a UUID-key ``Entity`` table with a
foreign key to ``organizations``, a string, a JSON and a datetime column) gets its migrations
from ``flowstore db init``, its revisions from plain ``alembic revision --autogenerate`` and is
migrated by plain ``alembic`` and by ``flowstore db ... --migrations``, each in a database of
its own. The service's models are only ever imported in subprocesses: importing them here
would put its tables on flowstore's shared metadata for the rest of the test run.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, inspect, text

from flowstore import Store
from flowstore.errors import InvalidInputError
from flowstore.models import FLOWSTORE_TABLES as MODEL_TABLES
from flowstore.schema import head_revision
from tests.backends import SERVER_BACKENDS
from tests.conftest import BACKENDS, server_database
from tests.test_cli import assert_one_line_error, cli_env

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_BACKENDS = (["sqlite_file"] if {"sqlite", "sqlite_file"} & set(BACKENDS) else []) + [
    b for b in BACKENDS if b in SERVER_BACKENDS
]
FLOWSTORE_TABLES = frozenset(MODEL_TABLES) | {"alembic_version"}
ACME_TABLES = {"acme_counters", "acme_projects"}

MODELS_V1 = '''
"""The acme test service's models, on flowstore's Base."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from flowstore.models import Base, Entity


class Counter(Base):
    __tablename__ = "acme_counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    value: Mapped[int] = mapped_column(default=0)


class Project(Entity):
    __tablename__ = "acme_projects"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]]
    due_at: Mapped[datetime | None]
'''

SUMMARY = "    summary: Mapped[str | None] = mapped_column(String(500))\n"
MODELS_V2 = (
    MODELS_V1.replace(
        "    due_at: Mapped[datetime | None]\n", f"    due_at: Mapped[datetime | None]\n{SUMMARY}"
    )
    + """

class Tag(Base):
    __tablename__ = "acme_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))
"""
)


@pytest.fixture(params=SERVICE_BACKENDS)
def service_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service_url(request: pytest.FixtureRequest, service_backend: str, tmp_path: Path) -> str:
    """A new, empty database. On MariaDB/MySQL its default collation is case-insensitive, so
    only the table options the service's tables get make their strings compare exactly."""
    if service_backend == "sqlite_file":
        return f"sqlite:///{tmp_path / 'service.sqlite3'}"
    database = server_database(request, service_backend, "svc")
    if service_backend == "mysql":
        with _engine(database.url) as engine, engine.begin() as conn:
            conn.execute(
                text(
                    f"ALTER DATABASE `{database.url.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
                )
            )
    return database.url.render_as_string(hide_password=False)


@contextmanager
def _engine(url: str | URL) -> Iterator[Engine]:
    """An engine on ``url`` for looking at the database (never through the service's models)."""
    with Store(url) as store:
        yield store.engine


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """The acme service's folder: its package, with the first version of its models."""
    folder = tmp_path / "acme-service"
    (folder / "acme").mkdir(parents=True)
    (folder / "acme" / "__init__.py").write_text("")
    (folder / "acme" / "models.py").write_text(MODELS_V1)
    return folder


def _env(folder: Path, url: str, **extra: str) -> dict[str, str]:
    paths = [str(folder), os.environ.get("PYTHONPATH", ""), str(REPO_ROOT)]
    return cli_env(
        FLOWSTORE_DATABASE_URL=url, PYTHONPATH=os.pathsep.join(p for p in paths if p), **extra
    )


def _run(folder: Path, url: str, *command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=folder,
        env=_env(folder, url, **extra),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def alembic(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain ``alembic`` in the service's folder."""
    script = Path(sys.executable).with_name("alembic")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]
    return _run(folder, url, *command, *args)


def flowstore(folder: Path, url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``flowstore`` in the service's folder."""
    return _run(folder, url, sys.executable, "-m", "flowstore", *args, **extra)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _unbound_names(source: str) -> set[str]:
    """Names a module reads but never binds (an import it lacks, like ``Text``)."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - bound


def _calls(source: str, function: str, operation: str) -> list[str]:
    """The table names given to ``op.<operation>(...)`` inside ``function``."""
    tree = ast.parse(source)
    (body,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    return [
        str(node.args[0].value)
        for node in ast.walk(body)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == operation
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]


def _strings(source: str) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _new_revision(folder: Path, url: str, message: str, known: set[Path]) -> Path:
    """Autogenerate a revision with plain alembic; check it names only acme's tables and
    imports everything it uses; return its file."""
    _ok(alembic(folder, url, "revision", "--autogenerate", "-m", message))
    (made,) = set((folder / "migrations" / "versions").glob("*.py")) - known
    source = made.read_text()
    assert _unbound_names(source) == set(), source
    assert not (_strings(source) & FLOWSTORE_TABLES), source
    assert _calls(source, "upgrade", "drop_table") == []
    return made


def _tables(url: str) -> set[str]:
    with _engine(url) as engine, engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _versions(url: str) -> tuple[list[str], list[str]]:
    """The rows of flowstore's and acme's version tables."""
    with _engine(url) as engine, engine.connect() as conn:
        flowstore_rows, acme_rows = (
            [str(v) for v in conn.scalars(text(f"SELECT version_num FROM {table}"))]
            for table in ("alembic_version", "acme_alembic_version")
        )
    return flowstore_rows, acme_rows


def test_a_service_migrates_with_plain_alembic_next_to_flowstore(
    service: Path, service_url: str
) -> None:
    url = service_url
    made = _ok(flowstore(service, url, "db", "init", "migrations", "--models", "acme.models"))
    assert "acme_alembic_version" in made
    for path in ("alembic.ini", "migrations/env.py", "migrations/script.py.mako"):
        assert (service / path).is_file(), path
    assert (service / "migrations" / "versions").is_dir()

    first = _new_revision(service, url, "acme tables", set())
    assert set(_calls(first.read_text(), "upgrade", "create_table")) == ACME_TABLES
    # flowstore is behind: the service's upgrade brings it to head first, in the same run
    _ok(flowstore(service, url, "db", "upgrade", "0001"))
    upgraded = _ok(alembic(service, url, "upgrade", "heads"))
    assert "Running upgrade 0001 -> 0002" in upgraded
    assert _tables(url) == FLOWSTORE_TABLES | ACME_TABLES | {"acme_alembic_version"}
    first_id = first.name.split("_")[1]
    assert _versions(url) == ([head_revision()], [first_id])
    assert "No new upgrade operations detected" in _ok(alembic(service, url, "check"))
    checked = _ok(flowstore(service, url, "db", "check", "--migrations", "migrations"))
    assert "the schema matches the models" in checked
    current = flowstore(service, url, "db", "current", FLOWSTORE_MIGRATIONS="migrations")
    assert _ok(current).splitlines()[:2] == [
        f"flowstore: {head_revision()} (head)",
        f"acme: {first_id} (head)",
    ]

    # the service's strings compare exactly, as flowstore's do, whatever the database's default
    with _engine(url) as engine, engine.begin() as conn:
        conn.execute(text("INSERT INTO acme_counters (id, name, value) VALUES (1, 'alpha', 0)"))
        found = conn.scalar(
            text("SELECT COUNT(*) FROM acme_counters WHERE name IN ('ALPHA', 'alpha ')")
        )
    assert found == 0

    # a newer flowstore revision (here: one taken back) is applied by the service's upgrade
    _ok(flowstore(service, url, "db", "downgrade", "0005"))
    _ok(alembic(service, url, "upgrade", "head"))
    assert _versions(url) == ([head_revision()], [first_id])

    (service / "acme" / "models.py").write_text(MODELS_V2)
    second = _new_revision(service, url, "tags and summaries", {first})
    assert set(_calls(second.read_text(), "upgrade", "create_table")) == {"acme_tags"}
    assert f"down_revision: str | None = {first_id!r}" in second.read_text()
    _ok(alembic(service, url, "upgrade", "heads"))
    assert "No new upgrade operations detected" in _ok(alembic(service, url, "check"))
    _ok(flowstore(service, url, "db", "check", "--migrations", "migrations"))

    # drift in a service table fails both gates; without the service's models flowstore's
    # check cannot tell, and says so
    with _engine(url) as engine, engine.begin() as conn:
        conn.execute(text("ALTER TABLE acme_counters ADD COLUMN rogue INTEGER"))
    drift = flowstore(service, url, "db", "check", FLOWSTORE_MIGRATIONS="migrations")
    assert "1 difference(s)" in assert_one_line_error(drift)
    assert drift.stdout.splitlines() == [
        "  - column acme_counters.rogue: in the database, not in the models"
    ]
    assert alembic(service, url, "check").returncode != 0
    plain = flowstore(service, url, "db", "check")
    assert "--migrations DIR" in assert_one_line_error(plain)

    _ok(alembic(service, url, "downgrade", "-1"))
    assert _versions(url) == ([head_revision()], [first_id])
    behind = flowstore(service, url, "db", "check", "--migrations", "migrations")
    assert f"at acme {first_id}, behind head" in assert_one_line_error(behind)
    _ok(alembic(service, url, "downgrade", "base"))
    assert _tables(url) == FLOWSTORE_TABLES | {"acme_alembic_version"}
    assert _versions(url) == ([head_revision()], [])


_API_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import StaticPool
    from flowstore import Store, schema
    from flowstore.errors import InvalidInputError
    from flowstore.revision_state import revision_state
    from flowstore.schema_check import compare_schema

    url, migrations, scratch = sys.argv[1], "migrations", sys.argv[2]
    engine = Store(url).engine
    seen = {}

    def refused(call):
        try:
            call()
        except InvalidInputError as exc:
            return str(exc)
        return None

    def revisions(on):
        return [schema.current_revision(on), schema.current_revision(on, migrations=migrations)]

    seen["before"] = revisions(engine)
    schema.upgrade(engine, "head", migrations=migrations)
    state = revision_state(engine, migrations=migrations)
    seen["state"] = [[t.tree, t.current, t.head, t.at_head] for t in state.trees]
    seen["matches"] = compare_schema(engine, migrations=migrations).matches
    seen["unknown"] = refused(lambda: schema.upgrade(engine, "9f1c0ffee5a7", migrations=migrations))
    seen["under_service"] = refused(lambda: schema.downgrade(engine, "0005", migrations=migrations))
    seen["after_refusals"] = revisions(engine)
    schema.downgrade(engine, "base", migrations=migrations)
    seen["after_base"] = revisions(engine)
    seen["tables_after_base"] = sorted(inspect(engine).get_table_names())
    schema.downgrade(engine, "0005", migrations=migrations)
    seen["flowstore_down"] = revisions(engine)
    schema.upgrade(engine, state.service.head, migrations=migrations)
    seen["to_service_revision"] = revisions(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE acme_alembic_version SET version_num = '9f1c0ffee5a7'"))
    ahead = revision_state(engine, migrations=migrations).service
    seen["ahead"] = [ahead.unknown, ahead.unknown_message()]

    memory = create_engine("sqlite://", poolclass=StaticPool)
    schema.create_schema(memory, migrations=migrations)
    seen["memory"] = revisions(memory) + [compare_schema(memory, migrations=migrations).matches]

    async def through_run_sync():
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{scratch}")
        async with async_engine.begin() as conn:
            await conn.run_sync(schema.upgrade_on, "heads", migrations=migrations)
        async with async_engine.connect() as conn:
            found = [
                await conn.run_sync(schema.current_revision_on),
                await conn.run_sync(schema.current_revision_on, migrations=migrations),
            ]
        await async_engine.dispose()
        return found

    seen["async"] = asyncio.run(through_run_sync())
    print(json.dumps(seen))
    """
)


def test_the_schema_layer_takes_the_service_migrations(service: Path, service_url: str) -> None:
    scratch = service / "scratch.sqlite3"
    _ok(flowstore(service, "", "db", "init", "migrations", "--models", "acme.models"))
    first = _new_revision(service, f"sqlite:///{scratch}", "acme tables", set())
    service_head = first.name.split("_")[1]
    scratch.unlink(missing_ok=True)

    ran = _run(service, "", sys.executable, "-c", _API_SCRIPT, service_url, str(scratch))
    seen = json.loads(_ok(ran).strip().splitlines()[-1])
    head = head_revision()
    assert seen["before"] == [None, None]
    assert seen["state"] == [
        ["flowstore", head, head, True],
        ["acme", service_head, service_head, True],
    ]
    assert seen["matches"] is True
    assert "'9f1c0ffee5a7'" in seen["unknown"]
    assert "downgrade them to 'base' first" in seen["under_service"]
    assert seen["after_refusals"] == [head, service_head]
    assert seen["after_base"] == [head, None]
    assert set(seen["tables_after_base"]) == FLOWSTORE_TABLES | {"acme_alembic_version"}
    assert seen["flowstore_down"] == ["0005", None]
    assert seen["to_service_revision"] == [head, service_head]
    assert seen["ahead"][0] is True
    assert "acme revision '9f1c0ffee5a7'" in seen["ahead"][1]
    assert seen["memory"] == [head, service_head, True]
    assert seen["async"] == [head, service_head]


def test_a_shared_version_table_is_a_clear_error(tmp_path: Path) -> None:
    """Two revisions in flowstore's version table (a service that merged its tree into
    flowstore's) give InvalidInputError, not Alembic's raw CommandError."""
    with Store(f"sqlite:///{tmp_path / 'merged.sqlite3'}") as store:
        store.upgrade()
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('a1b2c3d4e5f6')"))
        with pytest.raises(InvalidInputError, match="flowstore db init"):
            store.current_revision()


def test_flowstore_revisions_carry_the_branch_label(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'label.sqlite3'}") as store:
        store.upgrade("flowstore@head")
        assert store.current_revision() == head_revision()
        store.downgrade("flowstore@base")
        assert store.current_revision() is None


@pytest.fixture
def initialised(service: Path) -> Path:
    _ok(flowstore(service, "", "db", "init", "migrations", "--models", "acme.models"))
    return service


def test_db_commands_refuse_a_bad_migrations_directory(initialised: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.sqlite3'}"
    missing = flowstore(initialised, url, "db", "upgrade", "--migrations", "nowhere")
    assert "holds no env.py" in assert_one_line_error(missing)
    (initialised / "acme" / "models.py").unlink()
    unimportable = flowstore(initialised, url, "db", "upgrade", "--migrations", "migrations")
    assert "cannot import acme's models module 'acme.models'" in assert_one_line_error(unimportable)
