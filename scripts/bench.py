"""``make bench``: what flowstore costs on top of the database, on every backend, in one run.

Each group does one piece of work several ways on the same rows: plain SQLAlchemy Core first
(the baseline every ratio is taken against), then the raw driver where that is what a user
would write (COPY on PostgreSQL), then flowstore, then the naive ORM where it applies. Every
figure is the median of several runs; timings include what each way needs to turn the same
source rows into its input (dicts, tuples or model objects), ids and timestamps included.

The other engineers' benchmarks are run too when present: ``bench_queue.run(backends)``,
``bench_async.run(backends)`` and ``bench_fixtures.run()``. ``backends`` is a dict from
backend name (``sqlite``, ``postgresql``, ``mysql``) to the URL of a new, migrated throwaway
database (iterate it for the names); each returns a list of dict rows, rendered as a table.

    .venv/bin/python scripts/bench.py [--backends sqlite,postgresql,mysql] [--quick]
                                      [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench_core import (
    BACKENDS,
    ROOT,
    Case,
    Group,
    Results,
    group_table,
    machine_lines,
    rows_table,
    server_version,
    throwaway_store,
    throwaway_url,
)
from sqlalchemy import Table, bindparam, func, insert, select, text

from flowstore import Store
from flowstore.models import AuditLog, Deployment, DeploymentStatus, utcnow, uuid7

OTHER_MODULES = (
    ("bench_queue", "Job queue", True),
    ("bench_async", "Async face", True),
    (
        "bench_gateway",
        "Gateway workload: flowstore against the same service on plain SQLAlchemy",
        True,
    ),
    ("bench_fixtures", "Test kit fixtures", False),
    ("bench_events", "Change events and the read cache", True),
)

STATUS_WEIGHTS = {
    DeploymentStatus.RUNNING: 70,
    DeploymentStatus.STOPPED: 20,
    DeploymentStatus.FAILED: 5,
    DeploymentStatus.PENDING: 3,
    DeploymentStatus.DEPLOYING: 2,
}
PAGE = 50


@dataclass(frozen=True)
class Sizes:
    insert: int
    gets: int
    table: int
    audit: int
    calls: int  # query calls per timed run
    repeats: int


FULL = Sizes(insert=20_000, gets=2_000, table=100_000, audit=20_000, calls=10, repeats=5)
QUICK = Sizes(insert=2_000, gets=200, table=10_000, audit=2_000, calls=5, repeats=3)


# -- source rows ----------------------------------------------------------------------------

SourceDeployment = tuple[str, str, DeploymentStatus, dict[str, Any]]
SourceAudit = tuple[uuid.UUID, str, str, str, dict[str, Any]]


def deployment_source(n: int, seed: int) -> list[SourceDeployment]:
    rng = random.Random(seed)
    statuses = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()), k=n)
    return [
        (f"svc-{seed}-{i}", f"1.{i % 40}.{i % 7}", status, {"replicas": i % 5, "region": "eu-1"})
        for i, status in enumerate(statuses)
    ]


def audit_source(n: int, orgs: Sequence[uuid.UUID], seed: int) -> list[SourceAudit]:
    rng = random.Random(seed)
    actions = ("deployment.create", "deployment.update", "key.rotate", "policy.change")
    return [
        (
            rng.choice(orgs),
            actions[i % len(actions)],
            "deployment",
            f"dep-{i}",
            {"ip": "10.0.0.1", "n": i},
        )
        for i in range(n)
    ]


# -- inserting ------------------------------------------------------------------------------

DEPLOYMENT_COLUMNS = "id, name, version, status, config, created_at, updated_at, lock_version"
AUDIT_COLUMNS = (
    "id, org_id, action, resource_type, resource_id, details, created_at, updated_at, lock_version"
)


def _db_uuid(dialect: str, value: uuid.UUID) -> Any:
    return value if dialect == "postgresql" else value.hex


def _db_time(dialect: str, value: datetime) -> Any:
    if dialect == "postgresql":
        return value
    naive = value.replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds") if dialect == "sqlite" else naive


def raw_insert(store: Store, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    """What a user of the bare driver writes: COPY on PostgreSQL, executemany elsewhere."""
    raw = store.engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        if store.dialect == "postgresql":
            with driver.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            driver.commit()
            return
        marks = ", ".join(["?" if store.dialect == "sqlite" else "%s"] * len(rows[0]))
        cur = driver.cursor()
        if store.dialect == "sqlite":
            cur.execute("BEGIN")
        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        driver.commit()
        cur.close()
    finally:
        raw.close()


def insert_group(store: Store, source: list[SourceDeployment]) -> Group:
    """Each way gets its input built beforehand (untimed): what is timed is the call that
    stores it, commit included. One more row times add_many with building the objects."""
    table: Table = Deployment.__table__  # type: ignore[assignment]
    dialect = store.dialect
    inputs: dict[str, Any] = {}

    def dicts() -> None:
        inputs["core"] = [
            {"name": n, "version": v, "status": s, "config": c, "lock_version": 1}
            for n, v, s, c in source
        ]

    def tuples() -> None:
        rows = []
        for n, v, s, c in source:
            now = _db_time(dialect, utcnow())
            rows.append((_db_uuid(dialect, uuid7()), n, v, s.value, json.dumps(c), now, now, 1))
        inputs["raw"] = rows

    def objects() -> None:
        inputs["objects"] = build_deployments(source)

    def core() -> None:
        with store.engine.begin() as conn:
            conn.execute(insert(table), inputs["core"])

    def raw() -> None:
        raw_insert(store, "deployments", DEPLOYMENT_COLUMNS, inputs["raw"])

    def add_many() -> None:
        with store.unit_of_work() as uow:
            uow.deployments.add_many(inputs["objects"])

    def add_many_building() -> None:
        with store.unit_of_work() as uow:
            uow.deployments.add_many(build_deployments(source))

    def naive_orm() -> None:
        with store.session_factory() as session, session.begin():
            session.add_all(inputs["objects"])
            session.flush()

    def clear() -> None:
        inputs.clear()
        empty(store, "deployments")

    raw_note = "COPY" if dialect == "postgresql" else "executemany"
    return Group(
        f"insert {len(source):,} deployments",
        "ms",
        [
            Case("Core insert() executemany", core, setup=dicts),
            Case("raw driver", raw, note=raw_note + "; ids, timestamps made untimed", setup=tuples),
            Case("flowstore add_many", add_many, setup=objects),
            Case("naive ORM add_all + flush", naive_orm, setup=objects),
            Case("flowstore add_many, building the objects too", add_many_building),
        ],
        setup=clear,
        note="Each way's input is built before the timing: dicts for Core, complete tuples "
        "(ids, timestamps, JSON text) for the raw driver, model objects for the ORM ways; the "
        "timed part is the call that stores them, commit included. The last row builds the "
        "objects inside the timing too.",
    )


def build_deployments(source: list[SourceDeployment]) -> list[Deployment]:
    return [Deployment(name=n, version=v, status=s, config=c) for n, v, s, c in source]


def empty(store: Store, table: str) -> None:
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(text(f"DELETE FROM {table}"))
        elif store.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE TABLE {table} CASCADE"))
        else:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            conn.execute(text(f"TRUNCATE TABLE {table}"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))


def load(store: Store, model: type[Any], values: list[dict[str, Any]]) -> None:
    """Rows of ``model`` from ``values``, created over the last 30 days in order (untimed)."""
    start = utcnow() - timedelta(days=30)
    step = timedelta(days=30) / len(values)
    rows = []
    for i, row in enumerate(values):
        at = start + step * i
        rows.append({**row, "id": uuid7(), "created_at": at, "updated_at": at, "lock_version": 1})
    with store.engine.begin() as conn:
        for chunk in range(0, len(rows), 10_000):
            conn.execute(insert(model), rows[chunk : chunk + 10_000])
    analyze(store)


def load_deployments(store: Store, n: int) -> None:
    fields = ("name", "version", "status", "config")
    load(store, Deployment, [dict(zip(fields, d, strict=True)) for d in deployment_source(n, 7)])


def load_audit(store: Store, n: int, orgs: Sequence[uuid.UUID]) -> None:
    fields = ("org_id", "action", "resource_type", "resource_id", "details")
    entries = audit_source(n, orgs, seed=11)
    load(store, AuditLog, [dict(zip(fields, e, strict=True)) for e in entries])


def analyze(store: Store) -> None:
    with store.engine.begin() as conn:
        if store.dialect in {"postgresql", "sqlite"}:
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE TABLE deployments, audit_logs"))


# -- reading --------------------------------------------------------------------------------


def get_group(store: Store, ids: list[uuid.UUID]) -> Group:
    table: Table = Deployment.__table__  # type: ignore[assignment]
    stmt = select(table).where(table.c.id == bindparam("key"))

    def core() -> None:
        with store.engine.connect() as conn:
            for key in ids:
                conn.execute(stmt, {"key": key}).one()

    def session_get() -> None:
        with store.session_factory() as session:
            for key in ids:
                session.get(Deployment, key)

    def repository_get() -> None:
        with store.unit_of_work() as uow:
            for key in ids:
                uow.deployments.get(key)

    return Group(
        f"{len(ids):,} gets by id (one session)",
        "us",
        [
            Case("Core select by id", core, per=len(ids)),
            Case("Session.get", session_get, per=len(ids)),
            Case("flowstore get", repository_get, per=len(ids)),
        ],
    )


def list_group(store: Store, calls: int, table_size: int) -> Group:
    table: Table = Deployment.__table__  # type: ignore[assignment]
    running = DeploymentStatus.RUNNING
    with store.engine.connect() as conn:
        matching = conn.execute(
            select(func.count()).select_from(table).where(table.c.status == running)
        ).scalar_one()
    deep = (matching * 9 // 10) // PAGE * PAGE
    order = (table.c.created_at, table.c.id)
    core_stmt = select(table).where(table.c.status == running).order_by(*order).limit(PAGE)
    orm_stmt = (
        select(Deployment)
        .where(Deployment.status == running)
        .order_by(Deployment.created_at, Deployment.id)
        .limit(PAGE)
    )

    def repeat(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                fn()

        return run

    def core() -> None:
        with store.engine.connect() as conn:
            conn.execute(core_stmt).all()

    def session_select() -> None:
        with store.session_factory() as session:
            session.scalars(orm_stmt).all()

    def repository_list(offset: int) -> Callable[[], None]:
        def run() -> None:
            with store.unit_of_work() as uow:
                uow.deployments.list(status=running, limit=PAGE, offset=offset)

        return run

    cases = [
        Case("Core select, first page", repeat(core), per=calls),
        Case("Session select, first page", repeat(session_select), per=calls),
        Case("flowstore list, first page", repeat(repository_list(0)), per=calls),
        Case(f"flowstore list, offset {deep:,}", repeat(repository_list(deep)), per=calls),
    ]
    with store.unit_of_work() as uow:
        last = uow.deployments.list(status=running, limit=1, offset=deep - 1)[0]
        cursor = uow.deployments.cursor_for(last)

    def keyset() -> None:
        with store.unit_of_work() as uow:
            uow.deployments.list(status=running, limit=PAGE, after=cursor)

    cases.append(Case(f"flowstore list, keyset after row {deep:,}", repeat(keyset), calls))
    return Group(
        f"list: status = running, page of {PAGE}, {table_size:,} rows ({matching:,} match)",
        "us",
        cases,
    )


def count_group(store: Store, calls: int) -> Group:
    table: Table = Deployment.__table__  # type: ignore[assignment]
    running = DeploymentStatus.RUNNING
    stmt = select(func.count()).select_from(table).where(table.c.status == running)

    def core() -> None:
        for _ in range(calls):
            with store.engine.connect() as conn:
                conn.execute(stmt).scalar_one()

    def repository() -> None:
        for _ in range(calls):
            with store.unit_of_work() as uow:
                uow.deployments.count(status=running)

    return Group(
        "count: status = running",
        "us",
        [Case("Core select count(*)", core, per=calls), Case("flowstore count", repository, calls)],
    )


def stats_group(store: Store, calls: int) -> Group:
    table: Table = Deployment.__table__  # type: ignore[assignment]
    stmt = select(table.c.status, func.count()).group_by(table.c.status)

    def core() -> None:
        for _ in range(calls):
            with store.engine.connect() as conn:
                conn.execute(stmt).all()

    def repository() -> None:
        for _ in range(calls):
            with store.unit_of_work() as uow:
                uow.deployments.stats()

    return Group(
        "deployments stats() (count per status)",
        "us",
        [Case("Core group by", core, per=calls), Case("flowstore stats()", repository, calls)],
    )


def audit_query_group(store: Store, calls: int, org: uuid.UUID, total: int) -> Group:
    table: Table = AuditLog.__table__  # type: ignore[assignment]
    until = utcnow() - timedelta(days=10)
    since = until - timedelta(days=10)
    stmt = (
        select(table)
        .where(table.c.org_id == org, table.c.created_at >= since, table.c.created_at < until)
        .order_by(table.c.created_at.desc(), table.c.id.desc())
        .limit(100)
    )
    with store.engine.connect() as conn:
        matching = conn.execute(
            select(func.count()).select_from(stmt.limit(None).order_by(None).subquery())
        ).scalar_one()

    def core() -> None:
        for _ in range(calls):
            with store.engine.connect() as conn:
                conn.execute(stmt).all()

    def repository(offset: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                with store.unit_of_work() as uow:
                    uow.audit_logs.query(org, since=since, until=until, offset=offset)

        return run

    deep = (matching * 9 // 10) // 100 * 100
    orm_stmt = (
        select(AuditLog)
        .where(AuditLog.org_id == org, AuditLog.created_at >= since, AuditLog.created_at < until)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .limit(100)
    )

    def session_select() -> None:
        for _ in range(calls):
            with store.session_factory() as session:
                session.scalars(orm_stmt).all()

    cases = [
        Case("Core select, newest 100", core, per=calls),
        Case("Session select, newest 100", session_select, per=calls),
        Case("flowstore query, newest 100", repository(0), per=calls),
        Case(f"flowstore query, offset {deep:,}", repository(deep), per=calls),
    ]
    with store.unit_of_work() as uow:
        last = uow.audit_logs.query(org, since=since, until=until, limit=1, offset=deep - 1)[0]
        cursor = uow.audit_logs.cursor_for(last)

    def keyset() -> None:
        for _ in range(calls):
            with store.unit_of_work() as uow:
                uow.audit_logs.query(org, since=since, until=until, after=cursor)

    cases.append(Case(f"flowstore query, keyset after row {deep:,}", keyset, calls))
    return Group(
        f"audit query: one org, 10-day range ({matching:,} of {total:,} rows), 100 per page",
        "us",
        cases,
    )


# -- the audit writer -----------------------------------------------------------------------


def audit_write_group(store: Store, source: list[SourceAudit]) -> Group:
    table: Table = AuditLog.__table__  # type: ignore[assignment]
    dialect = store.dialect

    def core() -> None:
        rows = [
            {
                "org_id": org,
                "action": action,
                "resource_type": rtype,
                "resource_id": rid,
                "details": details,
                "lock_version": 1,
            }
            for org, action, rtype, rid, details in source
        ]
        with store.engine.begin() as conn:
            conn.execute(insert(table), rows)

    def raw() -> None:
        rows = []
        for org, action, rtype, rid, details in source:
            now = _db_time(dialect, utcnow())
            rows.append(
                (
                    _db_uuid(dialect, uuid7()),
                    _db_uuid(dialect, org),
                    action,
                    rtype,
                    rid,
                    json.dumps(details),
                    now,
                    now,
                    1,
                )
            )
        raw_insert(store, "audit_logs", AUDIT_COLUMNS, rows)

    def add_many() -> None:
        with store.unit_of_work() as uow:
            uow.audit_logs.add_many(
                AuditLog(org_id=org, action=action, resource_type=rtype, resource_id=rid, details=d)
                for org, action, rtype, rid, d in source
            )

    writers: list[Any] = []

    def open_writer() -> None:
        close_writer()
        with store.unit_of_work() as uow:
            writers.append(uow.audit_logs.writer())

    def close_writer() -> None:
        while writers:
            writers.pop().close()

    def writer() -> None:
        w = writers[0]
        for org, action, rtype, rid, details in source:
            w.write(
                {
                    "org_id": org,
                    "action": action,
                    "resource_type": rtype,
                    "resource_id": rid,
                    "details": details,
                }
            )
        w.flush()

    raw_note = "COPY" if dialect == "postgresql" else "executemany"
    cases = [
        Case("Core insert() executemany", core, setup=close_writer),
        Case("raw driver", raw, note=raw_note, setup=close_writer),
        Case("flowstore audit_logs.add_many", add_many, setup=close_writer),
        Case("flowstore AuditWriter: write() each, then flush()", writer, setup=open_writer),
    ]
    return Group(
        f"write {len(source):,} audit entries",
        "ms",
        cases,
        note="Every way starts from the same entries (org, action, resource, details) and makes "
        "the ids, timestamps and JSON itself, inside the timing. The writer is started before "
        "the timing; its time runs from the first write() to the end of flush().",
        compare=("flowstore AuditWriter: write() each, then flush()", "raw driver"),
        teardown=close_writer,
    )


# -- the run --------------------------------------------------------------------------------


def bench_backend(backend: str, sizes: Sizes, results: Results, servers: dict[str, str]) -> None:
    print(f"\n== {backend}", flush=True)
    with throwaway_store(backend) as store:
        servers[backend] = server_version(store)
        repeats = sizes.repeats
        results.run_group(backend, insert_group(store, deployment_source(sizes.insert, 1)), repeats)
        empty(store, "deployments")
        load_deployments(store, sizes.table)
        with store.engine.connect() as conn:
            all_ids = list(conn.execute(select(Deployment.id)).scalars())
        ids = random.Random(3).sample(all_ids, sizes.gets)
        results.run_group(backend, get_group(store, ids), repeats)
        results.run_group(backend, list_group(store, sizes.calls, sizes.table), repeats)
        results.run_group(backend, count_group(store, sizes.calls), repeats)
        results.run_group(backend, stats_group(store, sizes.calls), repeats)
        orgs = [uuid.UUID(int=i + 1) for i in range(20)]
        load_audit(store, sizes.table, orgs)
        results.run_group(
            backend, audit_query_group(store, sizes.calls, orgs[0], sizes.table), repeats
        )
        writes = audit_write_group(store, audit_source(sizes.audit, orgs, seed=5))
        try:
            results.run_group(backend, writes, repeats)
        finally:
            if writes.teardown is not None:
                writes.teardown()


def run_others(backends: Sequence[str]) -> list[str]:
    """Run the other ``bench_*`` modules; their tables as Markdown."""
    lines: list[str] = []
    for module_name, title, takes_backends in OTHER_MODULES:
        lines += ["", f"## {title} (`scripts/{module_name}.py`)", ""]
        module = importlib.import_module(module_name)
        cleanups: list[Callable[[], None]] = []
        started = time.perf_counter()
        try:
            if takes_backends:
                urls = {b: throwaway_url(b, module_name.split("_")[1], cleanups) for b in backends}
                rows = module.run(urls)
            else:
                rows = module.run()
            lines += rows_table(list(rows))
            lines += ["", f"_({time.perf_counter() - started:.0f} s)_"]
        except Exception as exc:
            traceback.print_exc()
            lines.append(
                f"_Failed: {type(exc).__name__}: {exc or 'no message'} (see the run's log)_"
            )
        finally:
            for cleanup in reversed(cleanups):
                cleanup()
    return lines


# (goal, part of the group's title, case, reference case, limit, the backends it is set for
# (None: all)): the goal holds when time(case) / time(reference) <= limit; a negative limit
# is a throughput share instead: time(reference) / time(case) >= -limit.
Goal = tuple[str, str, str, str, float, tuple[str, ...] | None]
GOALS: tuple[Goal, ...] = (
    (
        "add_many at most 1.0x of Core executemany",
        "insert ",
        "flowstore add_many",
        "Core insert() executemany",
        1.0,
        None,
    ),
    (
        "list within 1.1x of the same Session select",
        "list:",
        "flowstore list, first page",
        "Session select, first page",
        1.1,
        None,
    ),
    (
        "audit query within 1.1x of the same Session select",
        "audit query",
        "flowstore query, newest 100",
        "Session select, newest 100",
        1.1,
        None,
    ),
    (
        "repository get within 1.15x of Session.get",
        "gets by id",
        "flowstore get",
        "Session.get",
        1.15,
        None,
    ),
    (
        "deep keyset page of list within 1.25x of its first page",
        "list:",
        "flowstore list, keyset",
        "flowstore list, first page",
        1.25,
        None,
    ),
    (
        "deep keyset page of audit query within 1.25x of its first page",
        "audit query",
        "flowstore query, keyset",
        "flowstore query, newest 100",
        1.25,
        None,
    ),
    (
        "AuditWriter at least 60% of raw COPY throughput on PostgreSQL (elsewhere: measured)",
        "write ",
        "flowstore AuditWriter",
        "raw driver",
        -0.60,
        ("postgresql",),
    ),
)


def goal_table(results: Results, backends: Sequence[str]) -> list[str]:
    """The issue's goals, each with its figure per backend and whether it held."""
    lines = ["| goal | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
    for label, prefix, case, reference, limit, only in GOALS:
        cells = []
        for backend in backends:
            mine = _find(results, prefix, case, backend)
            base = _find(results, prefix, reference, backend)
            if mine is None or base is None:
                cells.append("-")
                continue
            held = base / mine >= -limit if limit < 0 else mine / base <= limit
            figure = f"{base / mine:.0%}" if limit < 0 else f"{mine / base:.2f}x"
            if only is not None and backend not in only:
                cells.append(f"{figure} (no goal)")
            else:
                cells.append(f"{figure} " + ("held" if held else "missed"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _find(results: Results, prefix: str, case: str, backend: str) -> float | None:
    for (title, name, where), seconds in results.seconds.items():
        if prefix in title and name.startswith(case) and where == backend:
            return seconds
    return None


def render(
    results: Results,
    backends: Sequence[str],
    sizes: Sizes,
    servers: dict[str, str],
    quick: bool,
    elapsed: float,
    others: list[str],
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`scripts/bench.py`"
        + (" --quick" if quick else "")
        + f") in {elapsed / 60:.1f} min. Do not edit by hand: run it again.",
        "",
        *machine_lines(servers),
        "",
        f"Each figure is the median of {sizes.repeats} runs; the ratio in brackets is against "
        "the first row of its table (plain SQLAlchemy Core on the same backend). `sqlite` is "
        "a SQLite file in WAL mode. Transactions and commits are inside the timings; what "
        "each group's ways start from is said under its title. Queries open a unit of work "
        "(or a session, or a connection) per call. Change events are off in these groups (Core "
        "records none); their cost is in the last section.",
        "",
        "## Goals",
        "",
        *goal_table(results, backends),
        "",
    ]
    for group in results.groups.values():
        lines += [f"### {group.title}", ""]
        if group.note:
            lines += [group.note, ""]
        lines += group_table(results, group, backends)
        lines.append("")
    lines += others
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-others", action="store_true", help="skip the bench_* modules")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    results = Results()
    servers: dict[str, str] = {}
    # The groups above compare flowstore with Core and the driver, which record no change
    # events: they run with events off. bench_events.py measures what events cost.
    os.environ["FLOWSTORE_EVENTS"] = "false"
    try:
        for backend in backends:
            bench_backend(backend, sizes, results, servers)
    finally:
        os.environ.pop("FLOWSTORE_EVENTS", None)
    others = [] if args.no_others else run_others(backends)
    report = render(
        results, backends, sizes, servers, args.quick, time.perf_counter() - started, others
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(f"\nwrote {output} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
