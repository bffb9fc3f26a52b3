"""``AuditWriter``: background batches that lose nothing, on every backend.

No timing is asserted: "write() returns at once" is shown by entries not being stored until
the writer's thread gets to them, and failures are injected at the writer's insert step.
"""

from __future__ import annotations

import logging
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

from flowstore import Store, audit_batches
from flowstore.audit_batches import AuditBatches
from flowstore.audit_writer import AuditWriteError, AuditWriter, AuditWriterStats, FailedEntry
from flowstore.errors import FlowstoreError, InvalidInputError
from flowstore.models import AuditLog
from tests.conftest import BACKENDS

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
    # at most 10 a batch, so at least 3; the thread may take a batch before the tenth write
    # arrives (CI saw 4 under load), so more is no fault
    assert 3 <= stats.batches <= 25
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


def answer_lost(
    monkeypatch: pytest.MonkeyPatch, writer: AuditWriter, landed: slice = slice(None)
) -> list[int]:
    """Make the writer's first insert commit ``rows[landed]`` and then fail as a connection
    lost before the COMMIT's answer came back would."""
    from sqlalchemy.exc import OperationalError

    real = writer._insert
    calls: list[int] = []

    def insert(rows: list[Any]) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            real(rows[landed])
            raise OperationalError("COMMIT", None, Exception("server closed the connection"))
        real(rows)

    monkeypatch.setattr(writer, "_insert", insert)
    return calls


def test_a_batch_whose_commit_answer_was_lost_is_counted_stored_not_failed(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    org = uuid.uuid4()
    reported: list[FailedEntry] = []
    caplog.set_level(logging.WARNING, logger="flowstore")
    with AuditWriter(
        store, flush_interval=3600, retry_delay=0, on_error=lambda e, f: reported.extend(f)
    ) as writer:
        calls = answer_lost(monkeypatch, writer)
        ids = [writer.write(entry(org, n)) for n in range(40)]
        writer.flush()  # nothing to raise: every entry is stored
    assert calls == [40, 40]  # one retry, which finds them all there: no split to single rows
    assert writer.stats == AuditWriterStats(
        written=40, failed=0, pending=0, batches=0, retries=1, already_stored=40
    )
    assert reported == [] and writer.failed == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(r.id for r in stored(store, org)) == sorted(ids)


def test_a_retry_stores_the_rest_of_a_batch_partly_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    with AuditWriter(store, flush_interval=3600, retry_delay=0) as writer:
        calls = answer_lost(monkeypatch, writer, landed=slice(0, 15))
        ids = [writer.write(entry(org, n)) for n in range(40)]
        writer.flush()
    assert calls == [40, 40, 25]  # the retry meets 15 duplicates: the other 25 go in
    assert writer.stats.written == 40 and writer.stats.already_stored == 15
    assert writer.stats.failed == 0 and writer.stats.batches == 1
    assert sorted(r.id for r in stored(store, org)) == sorted(ids)


def test_a_writer_retries_through_an_outage_of_many_tries_by_default(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default budget is time (retry_for, 30 s), not a count of three retries."""
    org = uuid.uuid4()
    with AuditWriter(store, flush_interval=3600, retry_delay=0) as writer:
        calls = failing_insert(monkeypatch, writer, failures=12)
        for n in range(5):
            writer.write(entry(org, n))
        writer.flush()
        assert writer.stats.retries == 12 and writer.stats.written == 5
    assert calls == [5] * 13
    assert len(stored(store, org)) == 5


def test_past_its_budget_an_outage_fails_batches_without_holding_writers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    writer = AuditWriter(store, batch_size=2, flush_interval=3600, retry_for=0)
    calls = failing_insert(monkeypatch, writer, failures=1)
    for n in range(6):
        writer.write(entry(org, n))
    with pytest.raises(AuditWriteError, match="6 audit entries"):
        writer.flush()
    assert calls == [2]  # the first batch is tried; the next two are given up on at once
    assert [str(f.error).split(":")[0] for f in writer.failed[2:]] == ["not tried"] * 4
    assert "server closed the connection" in str(writer.failed[2].error)  # the last error
    threading.Event().wait(audit_batches.PROBE_INTERVAL)  # then a batch is tried again ...
    later = writer.write(entry(org, 6))
    writer.close()
    assert calls == [2, 1]  # ... and the database answers: the outage is over
    assert [r.id for r in stored(store, org)] == [later]
    assert writer.stats.written == 1 and writer.stats.failed == 6


def test_a_failed_entry_is_written_again_as_it_is(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    writer = AuditWriter(store, flush_interval=3600, retry_for=0)
    failing_insert(monkeypatch, writer, failures=1)
    first = writer.write(entry(org, 1, details={"ip": "10.0.0.1", "tags": ["a", "b"]}))
    with pytest.raises(AuditWriteError) as caught:
        writer.close()
    (failed,) = caught.value.failed
    assert failed.values["details"] == {"ip": "10.0.0.1", "tags": ["a", "b"]}
    assert failed.values["id"] == first
    with AuditWriter(store, flush_interval=3600) as again:
        assert again.write(failed.values) == first
        again.flush()
        assert again.write(failed.values) == first  # once stored, a second time is a no-op
    assert again.stats.written == 2 and again.stats.already_stored == 1
    (row,) = stored(store, org)
    assert row.id == first and row.details == {"ip": "10.0.0.1", "tags": ["a", "b"]}
    assert row.created_at == failed.values["created_at"]


def test_an_id_taken_by_another_entry_is_still_refused(store: Store) -> None:
    """A duplicate id is "already stored" only when it is the same entry (same time too)."""
    org = uuid.uuid4()
    with AuditWriter(store, flush_interval=3600) as writer:
        taken = writer.write(entry(org, 1))
        writer.flush()
        writer.write(entry(org, 2, id=taken))
        with pytest.raises(AuditWriteError, match="duplicate"):
            writer.flush()
    assert writer.stats.already_stored == 0 and writer.stats.failed == 1
    assert [r.resource_id for r in stored(store, org)] == ["dep-1"]


def test_a_dead_writer_thread_is_reported_not_waited_for(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the crash is expected
    reported: list[FailedEntry] = []
    writer = AuditWriter(
        store,
        batch_size=10,
        max_pending=10,
        flush_interval=3600,
        on_error=lambda error, failed: reported.extend(failed),
    )

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
    assert len(reported) == 21  # the stranded entries are reported, not dropped
    # ... and the writer keeps the latest max_pending of them: its memory stays bounded
    assert [f.values for f in writer.failed] == [f.values for f in reported[-10:]]


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
        assert (AuditBatches(store.engine).statement is None) == (store.dialect == "postgresql")
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
            assert AuditBatches(engine).statement is None
            ids = [writer.write(entry(org, n)) for n in range(3)]
    finally:
        engine.dispose()
    rows = {r.id: r for r in stored(store, org)}
    assert set(rows) == set(ids)
    assert rows[ids[2]].details == {"n": 2} and rows[ids[2]].resource_id == "dep-2"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "mysql"], indirect=True)
def test_a_writer_made_before_the_first_connection_leaves_uuids_alone(store: Store) -> None:
    """On MariaDB a MySQL dialect learns at its first connection that ``uuid`` is native: a
    writer made before it must not fix the id column's handling for the engine's life (ids
    then read back as text)."""
    org = uuid.uuid4()
    with Store(store.url) as fresh:  # not connected yet
        with AuditWriter(fresh, flush_interval=3600) as writer:
            written = writer.write(entry(org, 1))
        with fresh.unit_of_work() as uow:
            (row,) = uow.audit_logs.query(org)
    assert row.id == written and isinstance(row.id, uuid.UUID)
