"""Monthly partitioned history tables on PostgreSQL (``flowstore.partitions``, ``flowstore db
partition|maintain|prune``): the conversion keeps every row, every month has the indexes and
the append-only trigger, the months ahead are made by ``db maintain`` and by the worker, the
queries read only the months in their range, and retention drops whole months."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text

from flowstore import InvalidInputError, Store
from flowstore.models import AuditLog, InferenceRequest
from flowstore.partitions import (
    HISTORY_TABLES,
    ensure_partitions,
    month_start,
    partition_table,
    partitions_of,
)
from flowstore.retention import prune_table
from flowstore.schema_check import compare_schema
from tests.conftest import BACKENDS, server_database
from tests.test_cli import assert_ok, cli_env, run_cli
from tests.test_query_plans import nodes

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="partitioned history is PostgreSQL's"
)

NOW = datetime.now(UTC)
THIS_MONTH = month_start(NOW)
ORG = uuid.UUID("01900000-0000-7000-8000-000000000001")
OTHER_ORG = uuid.UUID("01900000-0000-7000-8000-000000000002")


def _month(offset: int) -> datetime:
    """The first instant of the month ``offset`` months from this one."""
    index = THIS_MONTH.year * 12 + THIS_MONTH.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


@pytest.fixture
def history(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated store of its own, with rows in the history tables over the last 7 months."""
    database = server_database(request, "postgresql", "partitions")
    with Store(database.url) as store:
        store.upgrade()
        with store.unit_of_work() as uow:
            for back in range(7):
                for day in (0, 9, 18):
                    created = _month(-back) + timedelta(days=day, hours=back)
                    _add(uow, created, ORG)
                    _add(uow, created, OTHER_ORG)
            uow.commit()
        yield store


def _add(uow: Any, created: datetime, org: uuid.UUID) -> None:
    uow.audit_logs.add(
        AuditLog(
            org_id=org,
            action="deployment.created",
            resource_type="deployment",
            resource_id=str(created),
            details={"when": created.isoformat(), "nested": [1, {"x": None}]},
            created_at=created,
        )
    )
    uow.inference_requests.add(
        InferenceRequest(
            org_id=org,
            application_id=org,
            model="m",
            prompt_tokens=created.day,
            completion_tokens=3,
            cost=Decimal("0.000123"),
            latency_ms=created.hour,
            created_at=created,
        )
    )


def _fingerprint(store: Store, table: str) -> tuple[int, int]:
    """The row count and a sum of hashes of every row's text: equal only if every value is."""
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {table} t"
        ).one()
    return int(row[0]), int(row[1])


def _partition(store: Store, *tables: str) -> None:
    with store.engine.begin() as conn:
        for table in tables or tuple(HISTORY_TABLES):
            partition_table(conn, table, now=NOW, months_ahead=3)


def test_partitioning_keeps_every_row_and_the_schema_matches(history: Store) -> None:
    before = {table: _fingerprint(history, table) for table in HISTORY_TABLES}
    assert before["audit_logs"][0] == 42
    _partition(history)
    assert {table: _fingerprint(history, table) for table in HISTORY_TABLES} == before
    with history.engine.connect() as conn:
        for table in HISTORY_TABLES:
            months = [p.start for p in partitions_of(conn, table)]
            assert months == [_month(offset) for offset in range(-6, 4)]  # 6 back, 3 ahead
            key = conn.exec_driver_sql(
                f"SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_{table}'"
            ).scalar_one()
            assert key == "PRIMARY KEY (id, created_at)"
        assert partition_table(conn, "audit_logs", now=NOW, months_ahead=3) is None
    comparison = compare_schema(history.engine)
    assert comparison.matches, comparison.differences
    with history.unit_of_work() as uow:  # the repositories read as before
        entries = uow.audit_logs.query(ORG, since=THIS_MONTH)
        assert len(entries) == 3 and entries[0].details["nested"] == [1, {"x": None}]
        assert uow.audit_logs.get(entries[0].id).id == entries[0].id
    out = assert_ok(run_cli("db", "partition", "--url", str(history.url), env=cli_env()))
    assert "audit_logs: already partitioned" in out


def test_every_month_has_the_indexes_and_the_append_only_trigger(history: Store) -> None:
    _partition(history)
    with history.engine.begin() as conn:
        created = ensure_partitions(conn, now=NOW, months_ahead=5)
    assert created == [f"{t}_p{_month(n):%Y%m}" for t in HISTORY_TABLES for n in (4, 5)]
    newest = f"audit_logs_p{_month(5):%Y%m}"
    with history.engine.connect() as conn:
        indexes = conn.exec_driver_sql(
            f"SELECT count(*) FROM pg_indexes WHERE tablename = '{newest}'"
        ).scalar_one()
    assert indexes == len(HISTORY_TABLES["audit_logs"].indexes) + 1  # and the primary key
    with history.unit_of_work() as uow:
        _add(uow, _month(5) + timedelta(days=2), ORG)
        uow.commit()
    for statement in (f"UPDATE {newest} SET action = 'x'", f"DELETE FROM {newest}"):
        with pytest.raises(Exception, match="append-only"), history.engine.begin() as conn:
            conn.exec_driver_sql(statement)


def test_a_month_without_a_partition_is_refused_naming_the_way_out(history: Store) -> None:
    _partition(history, "inference_requests")
    late = InferenceRequest(org_id=ORG, application_id=ORG, model="m", created_at=_month(30))
    with (
        pytest.raises(InvalidInputError, match="flowstore db maintain"),
        history.unit_of_work() as uow,
    ):
        uow.inference_requests.add(late)
        uow.commit()
    out = assert_ok(
        run_cli("db", "maintain", "--months-ahead", "31", "--url", str(history.url), env=cli_env())
    )
    assert f"inference_requests_p{_month(30):%Y%m}" in out


def test_maintain_from_several_processes_at_once_makes_each_month_once(history: Store) -> None:
    _partition(history)
    made: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def maintain() -> None:
        try:
            start.wait()
            with history.engine.begin() as conn:
                made.extend(ensure_partitions(conn, now=NOW, months_ahead=12))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=maintain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(made) == sorted(
        f"{t}_p{_month(n):%Y%m}" for t in HISTORY_TABLES for n in range(4, 13)
    )


def _relations(store: Store, run: Any) -> set[str]:
    """The tables the PostgreSQL plan of the statement ``run`` sends reads (EXPLAIN of the
    very statement and parameters the repository sent)."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.unit_of_work() as uow:
            run(uow)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    statement, parameters = sent[-1]
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()
    found = plan if isinstance(plan, list) else json.loads(str(plan))
    return {node["Relation Name"] for node in nodes(found[0]["Plan"]) if "Relation Name" in node}


def test_queries_read_only_the_months_in_their_range(history: Store) -> None:
    _partition(history)
    day = _month(-2) + timedelta(days=9)
    audit = _relations(
        history, lambda uow: uow.audit_logs.query(ORG, since=day, until=day + timedelta(days=1))
    )
    assert audit == {f"audit_logs_p{_month(-2):%Y%m}"}
    week_start = _month(-1) - timedelta(days=3)  # a week across a month's end
    usage = _relations(
        history,
        lambda uow: uow.inference_requests.metrics(ORG, week_start, week_start + timedelta(7)),
    )
    assert usage == {
        f"inference_requests_p{_month(-2):%Y%m}",
        f"inference_requests_p{_month(-1):%Y%m}",
    }
    with history.unit_of_work() as uow:  # and the answers are the rows in range
        assert len(uow.audit_logs.query(ORG, since=day, until=day + timedelta(days=1))) == 1
        metrics = uow.inference_requests.metrics(ORG, week_start, week_start + timedelta(7))
        assert metrics.total_requests == 1


def test_prune_drops_whole_months_and_deletes_the_rest_in_batches(history: Store) -> None:
    _partition(history)
    cutoff = _month(-3) + timedelta(days=10)  # after 2 of that month's 3 days
    pruned = prune_table(history.engine, "audit_logs", cutoff, batch_size=3)
    assert pruned.partitions == tuple(f"audit_logs_p{_month(n):%Y%m}" for n in (-6, -5, -4))
    assert pruned.rows == 4  # days 0 and 9 of the cutoff's month, both organizations
    with history.engine.connect() as conn:
        oldest = conn.exec_driver_sql("SELECT min(created_at) FROM audit_logs").scalar_one()
        left = conn.exec_driver_sql("SELECT count(*) FROM audit_logs").scalar_one()
    assert oldest == _month(-3) + timedelta(days=18, hours=3)
    assert left == 42 - 6 * 3 - 4
    with pytest.raises(Exception, match="append-only"), history.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_logs")


def test_the_worker_creates_the_months_ahead(history: Store) -> None:
    _partition(history)
    with history.engine.begin() as conn:
        for table in HISTORY_TABLES:
            for offset in (1, 2, 3):
                conn.exec_driver_sql(f"DROP TABLE {table}_p{_month(offset):%Y%m}")
    env = cli_env(FLOWSTORE_PARTITIONS_AHEAD="2")
    assert_ok(
        run_cli(
            "worker",
            "--queue",
            "q",
            "--handler",
            "json:dumps",
            "--until-empty",
            "--url",
            str(history.url),
            env=env,
        )
    )
    with history.engine.connect() as conn:
        for table in HISTORY_TABLES:
            months = [p.start for p in partitions_of(conn, table)]
            assert months[-3:] == [_month(0), _month(1), _month(2)]


def test_partitioning_a_table_keeps_a_million_rows(request: pytest.FixtureRequest) -> None:
    """The migration path on a table of realistic size: every row kept, byte for byte."""
    database = server_database(request, "postgresql", "partitions_million")
    with Store(database.url) as store:
        store.upgrade()
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_logs (id, org_id, action, resource_type, resource_id, "
                    "details, created_at, updated_at, lock_version) "
                    "SELECT gen_random_uuid(), :org, 'a' || (i % 50), 'deployment', i::text, "
                    "jsonb_build_object('i', i), now() - (i || ' seconds')::interval * 30, "
                    "now(), 1 FROM generate_series(1, 1000000) i"
                ),
                {"org": ORG},
            )
        before = _fingerprint(store, "audit_logs")
        assert before[0] == 1_000_000
        with store.engine.begin() as conn:
            done = partition_table(conn, "audit_logs", now=NOW, months_ahead=3)
        assert done is not None and done.rows == 1_000_000
        assert len(done.partitions) >= 12  # 30 million seconds back: about a year of months
        assert _fingerprint(store, "audit_logs") == before


def test_the_write_paths_fill_a_partitioned_table(history: Store) -> None:
    """The AuditWriter (COPY on PostgreSQL), add_many's bulk INSERT and a flush all write
    into the partitioned parent, each row into its month."""
    _partition(history)
    with history.unit_of_work() as uow:
        writer = uow.audit_logs.writer()
    ids = [writer.write({"org_id": ORG, "action": "w", "resource_type": "r"}) for _ in range(50)]
    writer.close(timeout=30)
    with history.unit_of_work() as uow:
        uow.inference_requests.add_many(
            [
                InferenceRequest(org_id=ORG, application_id=ORG, model="b", created_at=_month(n))
                for n in (-1, 0, 1)
            ]
        )
        uow.commit()
    with history.engine.connect() as conn:
        written = conn.execute(
            text(f"SELECT count(*) FROM audit_logs_p{THIS_MONTH:%Y%m} WHERE action = 'w'")
        ).scalar_one()
        months = conn.execute(
            text(
                "SELECT tableoid::regclass::text FROM inference_requests WHERE model = 'b' "
                "ORDER BY created_at"
            )
        ).scalars()
        assert list(months) == [f"inference_requests_p{_month(n):%Y%m}" for n in (-1, 0, 1)]
    assert written == len(set(ids)) == 50
