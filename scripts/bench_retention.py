"""Retention of a month of history, measured on PostgreSQL: ``flowstore db prune`` on a
partitioned ``inference_requests`` (the month's partition is dropped) against what a user
would otherwise run on today's unpartitioned table, one ``DELETE ... WHERE created_at < ...``
of the same rows, and flowstore's own batched DELETE there (what ``prune`` does on an
unpartitioned table), beside a table of the same size holding a second month that stays.
Also the conversion itself (``flowstore db partition``) of the two-month table.

    python scripts/bench_retention.py [ROWS_PER_MONTH]     (default 5,000,000)

Ids are made like flowstore's (UUIDv7: the creation time's milliseconds first). Each case
gets a throwaway database on 127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from flowstore import Store
from flowstore.partitions import partition_table
from flowstore.retention import prune_table

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
OLD_MONTH = datetime(2026, 9, 1, tzinfo=UTC)
NEW_MONTH = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 20, tzinfo=UTC)
FILL = """
INSERT INTO inference_requests (id, org_id, application_id, model, status, prompt_tokens,
    completion_tokens, cost, latency_ms, created_at, updated_at, lock_version)
SELECT CAST(lpad(to_hex(CAST(extract(epoch FROM at) * 1000 AS bigint)), 12, '0') || '7'
            || substr(md5(i::text || :salt), 1, 3) || '8' || substr(md5(i::text || :salt), 4, 15)
            AS uuid),
       :org, :org, 'gpt', 'success', i % 1000, i % 300, 0.000123, i % 900, at, now(), 1
FROM (SELECT i, :start + (i * CAST(:step AS double precision)) * interval '1 second' AS at
      FROM generate_series(0, CAST(:rows AS integer) - 1) i) AS made
"""


def _database(name: str) -> str:
    admin = create_engine(f"{SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return f"{SERVER}/{name}"


def _drop(name: str) -> None:
    admin = create_engine(f"{SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def _filled(name: str, rows: int, partitioned: bool) -> tuple[Store, float]:
    """A store whose inference_requests holds ``rows`` rows in each of two months; the
    seconds the conversion to partitions took (0 when not partitioned)."""
    store = Store(_database(name))
    store.upgrade()
    org = uuid.uuid4()
    with store.engine.begin() as conn:
        for start in (OLD_MONTH, NEW_MONTH):
            step = (timedelta(days=28).total_seconds()) / rows
            conn.execute(
                text(FILL),
                {"org": org, "start": start, "rows": rows, "step": step, "salt": str(start)},
            )
    converted = 0.0
    if partitioned:
        began = time.perf_counter()
        with store.engine.begin() as conn:
            partition_table(conn, "inference_requests", now=NOW, months_ahead=1)
        converted = time.perf_counter() - began
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE inference_requests")
    return store, converted


def _timed(name: str, rows: int, partitioned: bool, prune: Callable[[Store], None]) -> float:
    store, _ = _filled(name, rows, partitioned)
    try:
        began = time.perf_counter()
        prune(store)
        took = time.perf_counter() - began
        with store.engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM inference_requests").scalar_one()
        assert left == rows, f"{name}: {left} rows left, wanted {rows}"
        return took
    finally:
        store.close()
        _drop(name)


def _plain_delete(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM inference_requests WHERE created_at < :c"), {"c": NEW_MONTH})


def _flowstore_prune(store: Store) -> None:
    prune_table(store.engine, "inference_requests", NEW_MONTH)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
    store, converted = _filled("fs_bench_retention_convert", rows, partitioned=True)
    store.close()
    _drop("fs_bench_retention_convert")
    dropped = _timed("fs_bench_retention_part", rows, True, _flowstore_prune)
    deleted = _timed("fs_bench_retention_delete", rows, False, _plain_delete)
    batched = _timed("fs_bench_retention_batches", rows, False, _flowstore_prune)
    print(f"one month of {rows:,} inference rows (beside another month that stays), PostgreSQL 15")
    print("| case | seconds | vs one DELETE |\n|---|---|---|")
    for label, seconds in (
        ("`flowstore db prune`, partitioned (DROP of the month)", dropped),
        ("one `DELETE ... WHERE created_at < cutoff`, unpartitioned", deleted),
        ("`flowstore db prune`, unpartitioned (batches of 5,000)", batched),
    ):
        print(f"| {label} | {seconds:.3f} | {seconds / deleted:.4f}x |")
    print(f"conversion of {2 * rows:,} rows (`flowstore db partition`): {converted:.1f} s")


if __name__ == "__main__":
    main()
