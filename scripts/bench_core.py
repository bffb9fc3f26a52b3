"""The benchmark machinery behind ``make bench``: timing, throwaway databases, the machine's
description, and rendering result rows as Markdown tables.

It holds nothing about what is measured (that is ``bench.py``), so the other ``bench_*``
modules may use it too.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402
from sqlalchemy import text  # noqa: E402

from flowstore import Store  # noqa: E402
from tests.backends import create_database  # noqa: E402

#: The backends ``make bench`` knows: a SQLite file, and the two servers.
BACKENDS = ("sqlite", "postgresql", "mysql")


# -- timing -------------------------------------------------------------------------------


def measure(
    run: Callable[[], object],
    *,
    repeats: int,
    setup: Callable[[], object] | None = None,
    per: int = 1,
) -> float:
    """The median wall time of ``run()`` over ``repeats`` runs, divided by ``per``.

    ``setup`` runs (untimed) before each run, e.g. to empty a table. A garbage collection runs
    before each timed run, so one run's garbage is not charged to the next.
    """
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / per


@dataclass
class Case:
    """One way of doing the work of a group: a name and a zero-argument callable; ``setup``
    (untimed, before each run, after the group's) prepares its input."""

    name: str
    run: Callable[[], object]
    per: int = 1
    note: str = ""
    setup: Callable[[], object] | None = None


@dataclass
class Group:
    """Several ways of doing the same work, timed side by side; the first case is the baseline
    (plain SQLAlchemy Core) that ratios are taken against."""

    title: str
    unit: str  # "ms" per run, or "us" per operation
    cases: list[Case]
    setup: Callable[[], object] | None = None
    note: str = ""
    compare: tuple[str, str] | None = None  # (case, reference): throughput of one vs the other
    teardown: Callable[[], object] | None = None


@dataclass
class Results:
    """Medians per group, case and backend (seconds), in the order they were measured."""

    groups: dict[str, Group] = field(default_factory=dict)
    seconds: dict[tuple[str, str, str], float] = field(default_factory=dict)
    skipped: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def run_group(self, backend: str, group: Group, repeats: int) -> None:
        """Time every case of ``group``, interleaving cases run by run to share out drift."""
        known = self.groups.setdefault(group.title, group)
        for case in group.cases:
            if case.name not in {c.name for c in known.cases}:
                known.cases.append(case)
        samples: dict[str, list[float]] = {case.name: [] for case in group.cases}
        for _ in range(repeats):
            for case in group.cases:
                samples[case.name].append(
                    measure(case.run, repeats=1, setup=_setups(group, case), per=case.per)
                )
        for case in group.cases:
            self.seconds[(group.title, case.name, backend)] = statistics.median(samples[case.name])
            print(
                f"  {backend:<10} {group.title[:44]:<44} {case.name[:40]:<40}"
                f" {format_time(self.seconds[(group.title, case.name, backend)], group.unit):>10}",
                flush=True,
            )

    def skip(self, backend: str, group: Group, case: str, reason: str) -> None:
        known = self.groups.setdefault(group.title, group)
        if case not in {c.name for c in known.cases}:
            known.cases.append(Case(case, lambda: None))
        self.skipped[(group.title, case, backend)] = reason


def _setups(group: Group, case: Case) -> Callable[[], None] | None:
    if group.setup is None and case.setup is None:
        return None

    def setup() -> None:
        for step in (group.setup, case.setup):
            if step is not None:
                step()

    return setup


def format_time(seconds: float, unit: str) -> str:
    if unit == "us":
        return f"{seconds * 1e6:,.1f} µs"
    return f"{seconds * 1e3:,.1f} ms"


# -- databases ------------------------------------------------------------------------------


@contextmanager
def throwaway_store(backend: str, tag: str = "bench") -> Iterator[Store]:
    """A migrated store on a new, empty database of ``backend`` (``throwaway_url``), dropped
    afterwards."""
    cleanups: list[Callable[[], None]] = []
    try:
        store = Store(throwaway_url(backend, tag, cleanups))
        try:
            yield store
        finally:
            store.close()
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def throwaway_url(backend: str, tag: str, keep: list[Callable[[], None]]) -> str:
    """The URL of a new, migrated database on ``backend``; its cleanup is appended to ``keep``."""
    if backend == "sqlite":
        directory = tempfile.TemporaryDirectory(prefix="flowstore-bench-")
        keep.append(directory.cleanup)
        url = f"sqlite:///{Path(directory.name) / 'bench.sqlite3'}"
    else:
        database = create_database(backend, tag)
        keep.append(database.drop)
        url = database.url.render_as_string(hide_password=False)
    store = Store(url)
    try:
        store.upgrade()
    finally:
        store.close()
    return url


def server_version(store: Store) -> str:
    """The database's own version string."""
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            return "SQLite " + str(conn.execute(text("select sqlite_version()")).scalar_one())
        if store.dialect == "postgresql":
            return str(conn.execute(text("show server_version")).scalar_one()).join(
                ("PostgreSQL ", "")
            )
        return "MySQL/MariaDB " + str(conn.execute(text("select version()")).scalar_one())


# -- the machine ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(servers: dict[str, str]) -> list[str]:
    """Markdown bullet lines describing where and when the run happened."""
    import psycopg
    import pymysql

    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    lines = [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start: {load}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"psycopg {psycopg.__version__}, PyMySQL {pymysql.__version__}",
    ]
    lines += [f"- {backend}: {version}" for backend, version in servers.items()]
    return lines


# -- rendering ------------------------------------------------------------------------------


def group_table(results: Results, group: Group, backends: Sequence[str]) -> list[str]:
    """One Markdown table: a row per case, a column per backend, each cell ``time (ratio)``."""
    baseline = group.cases[0].name
    head = f"| {group.title} | " + " | ".join(backends) + " |"
    lines = [head, "|---|" + "---:|" * len(backends)]
    for case in group.cases:
        cells = []
        for backend in backends:
            key = (group.title, case.name, backend)
            base = results.seconds.get((group.title, baseline, backend))
            if key in results.skipped:
                cells.append(f"n/a ({results.skipped[key]})")
            elif key not in results.seconds:
                cells.append("-")
            else:
                value = results.seconds[key]
                ratio = f" ({value / base:.2f}x)" if base else ""
                cells.append(format_time(value, group.unit) + ratio)
        label = case.name + (f" [{case.note}]" if case.note else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if group.compare is not None:
        subject, reference = group.compare
        shares = []
        for backend in backends:
            mine = results.seconds.get((group.title, subject, backend))
            theirs = results.seconds.get((group.title, reference, backend))
            if mine and theirs:
                shares.append(f"{backend} {theirs / mine:.0%}")
        if shares:
            lines += [
                "",
                f"Throughput of {subject} as a share of {reference}: " + ", ".join(shares),
            ]
    return lines


def rows_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A Markdown table of arbitrary dict rows: the columns are the keys, first seen first."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    if not columns:
        return ["(no rows)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")
