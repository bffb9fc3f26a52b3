"""What test isolation costs per test: the kit's ``uow`` (a savepoint rolled back on a shared,
migrated in-memory database) against creating the schema for every test.

Every way runs the same test body (add an organization, commit) between its set-up and its
tear-down. Figures are the median over several batches of the mean per test, wall-clock and
CPU time; the overhead (what a way adds to that body run in a plain unit of work; for the
empty test, all of it: the fixture alone, which the last column compares against) is taken
from CPU time, which a busy, shared machine disturbs much less than wall-clock time.

    .venv/bin/python scripts/bench_fixtures.py [--quick]

``run()`` returns the rows (``scripts/bench.py`` renders them in ``make bench``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import sessionmaker

from flowstore import schema
from flowstore.config import Settings
from flowstore.engine import build_engine
from flowstore.models import Base, Organization
from flowstore.store import Store
from flowstore.testing import isolated_unit_of_work, migrated_store
from flowstore.uow import UnitOfWork

_slugs = itertools.count()


def _body(uow: UnitOfWork) -> None:
    """The test every way runs: one insert through a repository, and a commit."""
    n = next(_slugs)
    uow.organizations.add(Organization(name=f"Org {n}", slug=f"org-{n}"))
    uow.commit()


def _per_test(
    ways: list[tuple[Callable[[], None], int]], batches: int
) -> list[tuple[float, float]]:
    """For each ``(test, tests)``: the median over ``batches`` of the mean wall-clock and CPU
    seconds per call. The ways take turns batch by batch, so a change in the machine's load
    hits them alike.
    """
    for test, _ in ways:
        test()  # warm-up
    walls: list[list[float]] = [[] for _ in ways]
    cpus: list[list[float]] = [[] for _ in ways]
    for _ in range(batches):
        for index, (test, tests) in enumerate(ways):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(tests):
                test()
            walls[index].append((time.perf_counter() - wall) / tests)
            cpus[index].append((time.process_time() - cpu) / tests)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus, strict=True)]


def _fresh_schema_test(make_schema: Callable[[Any], None]) -> Callable[[], None]:
    settings = Settings()

    def test() -> None:
        engine = build_engine("sqlite://", settings)
        try:
            make_schema(engine)
            with UnitOfWork(sessionmaker(engine, expire_on_commit=False)) as uow:
                _body(uow)
        finally:
            engine.dispose()

    return test


def run(quick: bool = False) -> list[dict[str, Any]]:
    """One row per way of isolating tests, with its time per test and overhead."""
    scale = 0.2 if quick else 1.0
    batches = 3 if quick else 5
    store: Store = migrated_store()
    try:

        def bare() -> None:
            with store.unit_of_work() as uow:
                _body(uow)

        def savepoint_rollback() -> None:
            with isolated_unit_of_work(store) as uow:
                _body(uow)

        def savepoint_rollback_empty() -> None:
            with isolated_unit_of_work(store):
                pass

        many, few = int(600 * scale), max(5, int(40 * scale))
        ways: list[tuple[str, Callable[[], None], int, bool]] = [
            ("test body alone (no isolation)", bare, many, True),
            ("uow fixture: savepoint rollback", savepoint_rollback, many, True),
            ("uow fixture around an empty test", savepoint_rollback_empty, many, False),
            (
                "create_all on a fresh in-memory DB",
                _fresh_schema_test(Base.metadata.create_all),
                few,
                True,
            ),
            (
                "Alembic migrations on a fresh in-memory DB",
                _fresh_schema_test(schema.upgrade),
                max(3, few // 3),
                True,
            ),
        ]
        medians = _per_test([(test, tests) for _, test, tests, _ in ways], batches)
        timings = [
            (name, way_seconds, tests, with_body)
            for (name, _, tests, with_body), way_seconds in zip(ways, medians, strict=True)
        ]
    finally:
        store.close()

    body = timings[0][1][1]
    fixture_alone = timings[2][1][1]
    rows: list[dict[str, Any]] = []
    for name, (wall, cpu), tests, with_body in timings:
        overhead = cpu - body if with_body else cpu
        rows.append(
            {
                "isolation per test": name,
                "ms per test": wall * 1e3,
                "CPU ms per test": cpu * 1e3,
                "CPU ms overhead": overhead * 1e3,
                "x the uow fixture": overhead / fixture_alone,
                "tests timed": tests * batches,
            }
        )
    rows[0]["CPU ms overhead"] = rows[0]["x the uow fixture"] = "-"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tests (a rough figure)")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    columns = list(rows[0])
    widths = [max(len(c), 12) for c in columns]
    widths[0] = max(len(str(r[columns[0]])) for r in rows)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
