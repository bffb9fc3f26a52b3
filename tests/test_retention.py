"""Retention of the history tables on every backend (``flowstore.retention``, ``flowstore db
prune``): exactly the rows older than the cutoff go, in bounded batches; the audit log stays
append-only for every other DELETE and for UPDATE, during and after a prune."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from flowstore import InvalidInputError, Store
from flowstore.models import AuditLog, InferenceRequest
from flowstore.models.audit_log import RETENTION_VARIABLE
from flowstore.retention import prune_history, prune_table
from tests.test_cli import assert_ok, assert_one_line_error, cli_env, run_cli

NOW = datetime.now(UTC)
AGES = [timedelta(days=days) for days in (1, 5, 20, 29, 31, 45, 90, 400)]


def _fill(store: Store, org: uuid.UUID) -> None:
    with store.unit_of_work() as uow:
        for age in AGES:
            created = NOW - age
            uow.audit_logs.add(
                AuditLog(org_id=org, action="x", resource_type="r", created_at=created)
            )
            uow.inference_requests.add(
                InferenceRequest(org_id=org, application_id=org, model="m", created_at=created)
            )
        uow.commit()


def _ages(store: Store, model: type[AuditLog] | type[InferenceRequest]) -> list[int]:
    with store.engine.connect() as conn:
        created = conn.execute(select(model.created_at).order_by(model.created_at)).scalars()
        return [(NOW - moment).days for moment in created]


def _refused(store: Store, statement: str) -> bool:
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    except Exception as exc:
        return "append-only" in str(exc)
    return False


def test_prune_deletes_exactly_what_is_older_in_batches(store: Store) -> None:
    _fill(store, uuid.uuid4())
    done = prune_history(
        store.engine,
        audit_older_than=timedelta(days=30),
        inference_older_than=timedelta(days=60),
        batch_size=2,  # several batches, the last one short
    )
    assert [(p.table, p.rows) for p in done] == [("audit_logs", 4), ("inference_requests", 2)]
    assert _ages(store, AuditLog) == [29, 20, 5, 1]
    assert _ages(store, InferenceRequest) == [45, 31, 29, 20, 5, 1]
    again = prune_history(store.engine, audit_older_than=timedelta(days=30))
    assert again[0].rows == 0


def test_the_audit_log_stays_append_only_around_a_prune(store: Store) -> None:
    _fill(store, uuid.uuid4())
    prune_table(store.engine, "audit_logs", NOW - timedelta(days=30))
    assert _refused(store, "DELETE FROM audit_logs")
    assert _refused(store, "UPDATE audit_logs SET action = 'changed'")
    with store.engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(AuditLog)).scalar_one()
    assert left == 4
    if store.dialect in {"mysql", "mariadb"}:
        with store.engine.connect() as conn:  # the pooled connection prune used is clean
            assert conn.execute(text(f"SELECT {RETENTION_VARIABLE}")).scalar() is None


def test_retention_lets_only_older_rows_through_the_trigger(store: Store) -> None:
    """The cutoff a prune declares opens the trigger for older rows only: a DELETE of newer
    rows in the same transaction is still refused."""
    if store.dialect not in {"postgresql", "mysql", "mariadb"}:
        pytest.skip("SQLite's retention drops the trigger inside its own transaction")
    _fill(store, uuid.uuid4())
    cutoff = (NOW - timedelta(days=30)).isoformat()
    if store.dialect == "postgresql":
        opening = f"SELECT set_config('flowstore.audit_retention_before', '{cutoff}', true)"
    else:
        naive = (NOW - timedelta(days=30)).replace(tzinfo=None).isoformat(" ")
        opening = f"SET {RETENTION_VARIABLE} = '{naive}'"
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql(opening)
        conn.exec_driver_sql("DELETE FROM audit_logs")
    if store.dialect != "postgresql":
        with store.engine.connect() as conn:
            conn.exec_driver_sql(f"SET {RETENTION_VARIABLE} = NULL")
    assert len(_ages(store, AuditLog)) == len(AGES)


def test_prune_refuses_bad_arguments(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="retention covers"):
        prune_table(store.engine, "deployments", NOW)
    with pytest.raises(InvalidInputError, match="must not be negative"):
        prune_history(store.engine, audit_older_than=timedelta(days=-1))
    with pytest.raises(InvalidInputError, match="batch_size"):
        prune_table(store.engine, "audit_logs", NOW, batch_size=0)
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        prune_table(store.engine, "audit_logs", datetime(2026, 1, 1))


def test_the_prune_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    with Store(url) as store:
        store.upgrade()
        _fill(store, uuid.uuid4())
    env = cli_env(FLOWSTORE_DATABASE_URL=url)
    out = assert_ok(
        run_cli("db", "prune", "--audit-older-than", "30d", "--inference-older-than", "8w", env=env)
    )
    assert "audit_logs: 4 row(s) deleted" in out, out
    assert "inference_requests: 2 row(s) deleted" in out, out
    assert_one_line_error(run_cli("db", "prune", env=env))
    assert "like 30d" in assert_one_line_error(
        run_cli("db", "prune", "--audit-older-than", "a month", env=env)
    )
    with Store(url) as store:
        assert _ages(store, AuditLog) == [29, 20, 5, 1]
        assert _refused(store, "DELETE FROM audit_logs")
    refused = assert_one_line_error(run_cli("db", "partition", env=env))
    assert "PostgreSQL" in refused


def test_a_failed_batch_leaves_the_sqlite_trigger_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's retention drops the DELETE trigger inside its transaction: a batch that fails
    rolls the drop back with it."""
    import flowstore.retention

    def failing(*_args: object) -> int:
        raise RuntimeError("the batch failed")

    with Store(f"sqlite:///{tmp_path / 'history.sqlite3'}") as store:
        store.upgrade()
        _fill(store, uuid.uuid4())
        monkeypatch.setattr(flowstore.retention, "_delete_batch", failing)
        with pytest.raises(RuntimeError):
            prune_table(store.engine, "audit_logs", NOW)
        assert _refused(store, "DELETE FROM audit_logs")
        assert len(_ages(store, AuditLog)) == len(AGES)
