"""Reading the event log costs the same at a million events as at a thousand (PostgreSQL).

``read(after, limit)`` must be a range of the primary key, read in its order and stopped at
the limit: no sort, no scan of the table. The check is on the plan and on the pages it
touches (``EXPLAIN (ANALYZE, BUFFERS)``), which grow with the depth of the index only, never
on time. Retention (``prune``) deletes off the ``created_at`` index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from flowstore import Store
from flowstore.events.log import prune_batch_statement, read_statement
from flowstore.models.types import utcnow
from tests.conftest import BACKENDS, server_database
from tests.test_query_plans import nodes

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="query plans are checked on PostgreSQL"
)

LOAD = """
INSERT INTO events (type, entity_id, org_id, data, created_at)
SELECT 'deployment.updated', md5(i::text), NULL,
       jsonb_build_object('changed', jsonb_build_array('status'), 'i', i),
       now() - ((CAST(:total AS integer) - i) || ' seconds')::interval
FROM generate_series(CAST(:start AS integer), CAST(:total AS integer)) i
"""


@pytest.fixture(scope="module")
def log_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    database = server_database(request, "postgresql", "eventplans")
    store = Store(database.url)
    store.upgrade()
    yield store
    store.close()


def _fill(store: Store, start: int, total: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(LOAD), {"start": start, "total": total})
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))


def _explain(store: Store, statement: Any) -> dict[str, Any]:
    compiled = statement.compile(
        dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}"
        ).scalar_one()
        conn.rollback()
    plan = row if isinstance(row, list) else json.loads(row)
    return plan[0]["Plan"]  # type: ignore[no-any-return]


def _pages(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


def _check_shape(plan: dict[str, Any]) -> None:
    kinds = [n["Node Type"] for n in nodes(plan)]
    assert kinds[0] == "Limit", kinds
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    scans = [n for n in nodes(plan) if "Index" in n["Node Type"]]
    assert [n["Index Name"] for n in scans] == ["pk_events"], json.dumps(plan)[:2000]


def test_a_page_of_the_log_costs_the_same_at_a_million_events(log_store: Store) -> None:
    _fill(log_store, 1, 1_000)
    small = _explain(log_store, read_statement(500, 100))
    _check_shape(small)
    assert small["Actual Rows"] == 100
    _fill(log_store, 1_001, 1_000_000)
    large = _explain(log_store, read_statement(900_000, 100))
    _check_shape(large)
    assert large["Actual Rows"] == 100
    assert _pages(large) <= _pages(small) + 3, (_pages(small), _pages(large))  # one more level

    # retention: the oldest events, off the created_at index
    with log_store.engine.connect() as conn:
        statement = prune_batch_statement(conn, utcnow() - timedelta(days=3))
    plan = _explain(log_store, statement)
    assert "Seq Scan" not in [n["Node Type"] for n in nodes(plan)]
    assert "ix_events_created_at" in {n.get("Index Name") for n in nodes(plan)}
