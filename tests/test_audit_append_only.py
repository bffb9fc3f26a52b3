"""The audit log is append-only in the ORM (repository, session, bulk statements) and in the
database itself (triggers from migration 0003, and from ``create_all`` for in-memory stores):
a raw UPDATE or DELETE fails on every backend, and through flowstore it is a flowstore error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, Connection, delete, text, update
from sqlalchemy import exc as sa_exc

from flowstore import Store
from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog
from flowstore.schema import alembic_config
from tests.backends import SERVER_BACKENDS
from tests.conftest import server_database


def _entry(store: Store) -> AuditLog:
    with store.unit_of_work() as uow:
        return uow.audit_logs.record(uuid.uuid4(), "login", "user", details={"ip": "10.0.0.1"})


def _actions(store: Store) -> list[str]:
    with store.unit_of_work() as uow:
        return [e.action for e in uow.audit_logs.list()]


def test_the_repository_refuses_update_and_delete(store: Store) -> None:
    entry = _entry(store)
    with store.unit_of_work() as uow:
        loaded = uow.audit_logs.get(entry.id)
        loaded.action = "changed"
        with pytest.raises(InvalidInputError):
            uow.audit_logs.update(loaded)
        with pytest.raises(InvalidInputError):
            uow.audit_logs.delete(entry.id)
        uow.rollback()
    assert _actions(store) == ["login"]


def test_a_session_cannot_flush_a_changed_or_deleted_entry(store: Store) -> None:
    entry = _entry(store)
    for change in ("modify", "delete"):
        with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
            loaded = uow.audit_logs.get(entry.id)
            if change == "modify":
                loaded.details = {"ip": "forged"}
            else:
                uow.session.delete(loaded)
            uow.session.flush()
    with store.session_factory() as session:  # a plain session, outside any unit of work
        session.delete(session.get(AuditLog, entry.id))
        with pytest.raises(InvalidInputError):
            session.flush()
        session.rollback()
    assert _actions(store) == ["login"]


def test_bulk_statements_on_the_audit_log_are_refused(store: Store) -> None:
    _entry(store)
    for statement in (update(AuditLog).values(action="x"), delete(AuditLog)):
        with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
            uow.session.execute(statement)
    assert _actions(store) == ["login"]


def test_appending_and_reading_still_work(store: Store) -> None:
    org = uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.audit_logs.record(org, "a", "thing")
        uow.audit_logs.add_many(
            AuditLog(org_id=org, action=f"bulk{i}", resource_type="t") for i in range(3)
        )
    with store.unit_of_work() as uow:
        assert uow.audit_logs.count(org_id=org) == 4
        unchanged = uow.audit_logs.query(org)[0]
        unchanged.action = unchanged.action  # no net change: nothing to refuse
        uow.session.flush()


@pytest.mark.parametrize(
    "sql", ["UPDATE audit_logs SET action = 'forged'", "DELETE FROM audit_logs"]
)
def test_the_database_refuses_raw_update_and_delete(store: Store, sql: str) -> None:
    _entry(store)
    with (
        pytest.raises((sa_exc.IntegrityError, sa_exc.OperationalError)),
        store.engine.begin() as conn,
    ):
        conn.execute(text(sql))
    # through flowstore, the trigger's refusal is a flowstore error
    with pytest.raises(InvalidInputError, match="append-only"), store.unit_of_work() as uow:
        uow.session.execute(text(sql))
    assert _actions(store) == ["login"]


def _triggers(conn: Connection) -> set[str]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        query = (
            "SELECT tgname FROM pg_trigger "
            "WHERE tgrelid = 'audit_logs'::regclass AND NOT tgisinternal"
        )
    elif dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_logs'"
    else:
        query = (
            "SELECT trigger_name FROM information_schema.triggers "
            "WHERE event_object_table = 'audit_logs' AND trigger_schema = DATABASE()"
        )
    return {str(name) for (name,) in conn.execute(text(query))}


@pytest.fixture
def fresh_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, never migrated database on ``backend`` (events off: it stays at revisions
    older than the events table)."""
    url: URL | str = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    if backend in SERVER_BACKENDS:
        url = server_database(request, backend, "audit").url
    with Store(url, events=False) as store:
        yield store


def test_migration_0003_adds_the_triggers_and_downgrade_removes_them(fresh_store: Store) -> None:
    store = fresh_store
    store.upgrade("0002")
    with store.engine.begin() as conn:
        assert _triggers(conn) == set()
    store.upgrade("0003")
    with store.engine.begin() as conn:
        assert _triggers(conn)
    _entry(store)
    with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
        uow.session.execute(text("DELETE FROM audit_logs"))

    store.downgrade("0002")
    with store.engine.begin() as conn:
        assert _triggers(conn) == set()
        conn.execute(text("UPDATE audit_logs SET action = 'allowed now'"))
    assert _actions(store) == ["allowed now"]

    store.upgrade()
    with store.engine.begin() as conn:
        assert _triggers(conn)
        command.check(alembic_config(conn))  # triggers are invisible to autogenerate
    if store.dialect != "sqlite":  # operators may still empty the table
        with store.engine.begin() as conn:
            conn.execute(text("TRUNCATE TABLE audit_logs"))
        assert _actions(store) == []


def test_an_in_memory_store_has_the_triggers_too() -> None:
    with Store("sqlite://") as store, store.engine.begin() as conn:
        assert _triggers(conn) == {"audit_logs_no_update", "audit_logs_no_delete"}
