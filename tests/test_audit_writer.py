"""``AuditWriter``: background batches that lose nothing, on every backend.

No timing is asserted: "write() returns at once" is shown by entries not being stored until
the writer's thread gets to them, and failures are injected at the writer's insert step.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from flowstore import Store
from flowstore.audit_writer import AuditWriteError, AuditWriter, FailedEntry
from flowstore.errors import FlowstoreError, InvalidInputError
from flowstore.models import AuditLog

ROOT = Path(__file__).resolve().parent.parent


def entry(org: uuid.UUID, n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "org_id": org,
        "action": "deployment.update",
        "resource_type": "deployment",
        "resource_id": f"dep-{n}",
        "details": {"n": n},
        **extra,
    }


def stored(store: Store, org: uuid.UUID) -> list[AuditLog]:
    with store.unit_of_work() as uow:
        return uow.audit_logs.query(org, limit=10_000)


def test_entries_are_stored_in_batches_with_ids_and_times(store: Store) -> None:
    org = uuid.uuid4()
    with store.unit_of_work() as uow:
        writer = uow.audit_logs.writer(batch_size=10, flush_interval=60)
    try:
        before = datetime.now(UTC)
        ids = [writer.write(entry(org, n)) for n in range(25)]
        writer.flush()
        stats = writer.stats
    finally:
        writer.close()
    assert stats.written == 25 and stats.failed == 0 and stats.pending == 0
    assert stats.batches == 3  # 10 + 10 + 5
    rows = stored(store, org)
    assert {r.id for r in rows} == set(ids)
    assert all(i.version == 7 for i in ids)
    assert all(r.created_at >= before.replace(microsecond=0) for r in rows)
    assert all(r.created_at.utcoffset() == UTC.utcoffset(None) for r in rows)
    by_id = {r.id: r for r in rows}
    assert by_id[ids[7]].details == {"n": 7} and by_id[ids[7]].resource_id == "dep-7"
    assert by_id[ids[7]].lock_version == 1


def test_write_returns_before_the_entry_is_stored(store: Store) -> None:
    org = uuid.uuid4()
    with AuditWriter(store, batch_size=1000, flush_interval=3600) as writer:
        writer.write(entry(org))
        writer.write(entry(org, 1))
        assert stored(store, org) == []  # the thread waits for a full batch or a flush
        assert writer.stats.pending == 2
        writer.flush()
        assert len(stored(store, org)) == 2


def test_close_stores_everything_and_refuses_more(store: Store) -> None:
    org = uuid.uuid4()
    writer = AuditWriter(store, batch_size=7, flush_interval=3600)
    for n in range(20):
        writer.write(entry(org, n))
    writer.close()
    assert len(stored(store, org)) == 20
    with pytest.raises(InvalidInputError):
        writer.write(entry(org))
    writer.close()  # closing again is harmless


def test_an_audit_log_object_gets_its_id_and_time(store: Store) -> None:
    org = uuid.uuid4()
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    log = AuditLog(org_id=org, action="key.rotate", resource_type="application", details={})
    given = {**entry(org, 9), "created_at": when, "user_id": str(uuid.uuid4())}
    with AuditWriter(store) as writer:
        assert writer.write(log) == log.id
        assert log.created_at is not None
        writer.write(given)
    rows = {r.action: r for r in stored(store, org)}
    assert rows["key.rotate"].id == log.id
    assert rows["deployment.update"].created_at == when
    assert rows["deployment.update"].user_id == uuid.UUID(given["user_id"])


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "a", "resource_type": "r"},  # no org_id
        {"org_id": "not-a-uuid", "action": "a", "resource_type": "r"},
        {"org_id": uuid.uuid4(), "action": "a" * 101, "resource_type": "r"},
        {"org_id": uuid.uuid4(), "action": "a\x00b", "resource_type": "r"},
        {"org_id": uuid.uuid4(), "action": "a", "resource_type": "r", "details": {1, 2}},
        {"org_id": uuid.uuid4(), "action": "a", "resource_type": "r", "details": [1]},
        {"org_id": uuid.uuid4(), "action": "a", "resource_type": "r", "details": {"x": 1e999}},
        {"org_id": uuid.uuid4(), "action": "a", "resource_type": "r", "colour": "red"},
        {"org_id": uuid.uuid4(), "action": "a", "resource_type": "r", "created_at": "today"},
    ],
)
def test_bad_entries_are_refused_at_once(bad: dict[str, Any]) -> None:
    with Store("sqlite://") as store, AuditWriter(store) as writer:
        with pytest.raises(InvalidInputError):
            writer.write(bad)
        assert writer.stats.pending == 0


def test_a_refused_entry_is_isolated_and_reported(store: Store) -> None:
    org = uuid.uuid4()
    reported: list[tuple[FlowstoreError, list[FailedEntry]]] = []
    writer = AuditWriter(
        store, batch_size=10, flush_interval=3600, on_error=lambda e, f: reported.append((e, f))
    )
    try:
        first = writer.write(entry(org, 0))
        writer.flush()
        for n in range(1, 10):
            writer.write(entry(org, n, id=first) if n == 4 else entry(org, n))
        with pytest.raises(AuditWriteError) as caught:
            writer.flush()
        writer.flush()  # reported once: nothing new to raise
    finally:
        writer.close()
    assert [f.values["resource_id"] for f in caught.value.failed] == ["dep-4"]
    assert len(reported) == 1 and reported[0][1][0].values["id"] == first
    assert writer.stats.failed == 1 and writer.stats.written == 9
    assert [f.values["resource_id"] for f in writer.failed] == ["dep-4"]
    assert len(stored(store, org)) == 9


def failing_insert(
    monkeypatch: pytest.MonkeyPatch, writer: AuditWriter, failures: int
) -> list[int]:
    """Make the writer's first ``failures`` inserts fail as a lost connection would."""
    from sqlalchemy.exc import OperationalError

    real = writer._insert
    calls: list[int] = []

    def insert(rows: list[Any]) -> None:
        calls.append(len(rows))
        if len(calls) <= failures:
            raise OperationalError("INSERT", None, Exception("server closed the connection"))
        real(rows)

    monkeypatch.setattr(writer, "_insert", insert)
    return calls


def test_a_passing_failure_is_retried(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    org = uuid.uuid4()
    with AuditWriter(store, flush_interval=3600, retries=3, retry_delay=0) as writer:
        calls = failing_insert(monkeypatch, writer, failures=2)
        for n in range(5):
            writer.write(entry(org, n))
        writer.flush()
        assert writer.stats.retries == 2 and writer.stats.written == 5
    assert calls == [5, 5, 5]
    assert len(stored(store, org)) == 5


def test_a_lasting_failure_is_reported_not_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    writer = AuditWriter(store, flush_interval=3600, retries=2, retry_delay=0)
    calls = failing_insert(monkeypatch, writer, failures=1000)
    ids = [writer.write(entry(org, n)) for n in range(3)]
    with pytest.raises(AuditWriteError, match="3 audit entries"):
        writer.close()
    assert calls == [3, 3, 3]  # the first try and two retries
    assert [f.values["id"] for f in writer.failed] == ids
    assert writer.stats.failed == 3 and writer.stats.written == 0


def test_a_dead_writer_thread_is_reported_not_waited_for(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the crash is expected
    writer = AuditWriter(store, batch_size=10, max_pending=10, flush_interval=3600)

    def crash(rows: list[Any]) -> None:
        raise SystemExit("not a database error")

    monkeypatch.setattr(writer, "_store", crash)
    writer.write(entry(org, 0))
    with pytest.raises(AuditWriteError):
        writer.flush()  # the batch the thread died on is reported, not lost silently
    assert writer.stats.failed == 1
    for n in range(20):  # more than max_pending: write() must not wait for a dead thread
        writer.write(entry(org, n))
    with pytest.raises(FlowstoreError, match="stopped"):
        writer.flush(timeout=5)
    with pytest.raises(FlowstoreError):
        writer.close(timeout=5)
    assert writer.stats.failed == 21 and writer.stats.pending == 0
    assert len(writer.failed) == 21  # the stranded entries are kept, not dropped


def test_back_pressure_keeps_memory_bounded_and_loses_nothing(store: Store) -> None:
    org = uuid.uuid4()
    with AuditWriter(store, batch_size=3, max_pending=5, flush_interval=3600) as writer:
        for n in range(40):
            writer.write(entry(org, n))
            assert writer.stats.pending <= 5 + 3  # waiting, plus one batch being stored
    assert len(stored(store, org)) == 40


def test_a_scoped_writer_writes_one_organization(store: Store) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    with AuditWriter(store, org_id=org) as writer:
        writer.write({"action": "a", "resource_type": "r"})
        with pytest.raises(InvalidInputError):
            writer.write(entry(other))
    assert [r.action for r in stored(store, org)] == ["a"]


def test_a_tenant_scoped_repository_gives_a_scoped_writer(store: Store) -> None:
    org = uuid.uuid4()
    with store.unit_of_work(org_id=org) as uow:
        writer = uow.audit_logs.writer()
    with writer:
        writer.write({"action": "scoped", "resource_type": "r"})
        with pytest.raises(InvalidInputError):
            writer.write(entry(uuid.uuid4()))
    assert [r.action for r in stored(store, org)] == ["scoped"]


def test_entries_left_at_interpreter_exit_are_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.sqlite3'}"
    with Store(url) as store:
        store.upgrade()
    script = textwrap.dedent(
        f"""
        import uuid
        from flowstore import Store
        from flowstore.audit_writer import AuditWriter
        store = Store({url!r})
        writer = AuditWriter(store, batch_size=1000, flush_interval=3600)
        for n in range(500):
            writer.write({{"org_id": uuid.UUID(int=1), "action": "a", "resource_type": "r"}})
        # no flush, no close: the interpreter exits with 500 entries waiting
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with Store(url) as store, store.unit_of_work() as uow:
        assert uow.audit_logs.count(org_id=uuid.UUID(int=1)) == 500


def test_driver_rows_read_back_as_core_rows_do(store: Store) -> None:
    """Off PostgreSQL the writer hands the driver tuples made with Core's bind processors;
    every column must read back exactly as one written by the repository (through Core)."""
    org, app, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    when = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    fields = {
        "application_id": app,
        "user_id": user,
        "request_id": "req-ü-1",
        "created_at": when,
        "details": {"ip": "10.0.0.1", "nested": {"ok": True, "n": [1, 2.5, None]}},
    }
    with store.unit_of_work() as uow:
        uow.audit_logs.add(AuditLog(**{**entry(org, 1), **fields}))
    with AuditWriter(store, flush_interval=3600) as writer:
        assert (writer._statement is None) == (store.dialect == "postgresql")  # COPY there
        writer.write({**entry(org, 2), **fields})
    columns = [
        c.name
        for c in AuditLog.__table__.columns
        if c.name not in {"id", "resource_id", "updated_at"}
    ]
    first, second = sorted(stored(store, org), key=lambda r: str(r.resource_id))
    assert [getattr(first, c) for c in columns] == [getattr(second, c) for c in columns]
    assert second.created_at == when and second.application_id == app


def test_a_driver_taking_named_parameters_gets_the_rows_through_core(store: Store) -> None:
    """The driver-tuple path needs positional parameters; an engine set to named ones takes
    Core's insert instead, and stores the same entries."""
    if store.dialect != "sqlite" or store.is_memory:
        pytest.skip("needs a second engine on the same SQLite file")
    engine = create_engine(store.url, paramstyle="named")
    org = uuid.uuid4()
    try:
        with AuditWriter(engine, flush_interval=3600) as writer:
            assert writer._statement is None
            ids = [writer.write(entry(org, n)) for n in range(3)]
    finally:
        engine.dispose()
    rows = {r.id: r for r in stored(store, org)}
    assert set(rows) == set(ids)
    assert rows[ids[2]].details == {"n": 2} and rows[ids[2]].resource_id == "dep-2"
