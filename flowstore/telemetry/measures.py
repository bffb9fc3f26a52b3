"""Metrics: the pool (connections by state, overflow, waits and timeouts), the queues (depth
and the age of the oldest due job) and an ``AuditWriter`` (backlog and retries)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, event, func, select
from sqlalchemy.exc import SQLAlchemyError

from flowstore.errors import FlowstoreError
from flowstore.telemetry.base import (
    SCOPE,
    CallbackOptions,
    Instrumentation,
    Observation,
    log,
    metrics,
    remover,
    require,
)

if TYPE_CHECKING:
    from flowstore.audit_writer import AuditWriter
    from flowstore.store import Store

__all__ = ["measure_pool", "measure_queues", "observe_audit_writer", "queue_depths"]


@dataclass
class _PoolWaits:
    pending: int = 0
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def measure_pool(done: Instrumentation) -> None:
    engine, meter = done.engine, done.meter
    pool = engine.pool
    waits = _PoolWaits()
    common = {"db.client.connection.pool.name": engine.url.render_as_string(hide_password=True)}
    wait_time = meter.create_histogram(
        "db.client.connection.wait_time", unit="s", description="time to get a connection"
    )
    connect = pool.connect

    def timed_connect() -> Any:
        with waits.lock:
            waits.pending += 1
        started = time.perf_counter()
        try:
            return connect()
        except Exception as exc:
            if type(exc).__name__ == "TimeoutError":
                with waits.lock:
                    waits.timeouts += 1
            raise
        finally:
            with waits.lock:
                waits.pending -= 1
            wait_time.record(time.perf_counter() - started, common)

    pool.connect = timed_connect  # type: ignore[method-assign]
    done.removers.append(lambda: vars(pool).pop("connect", None))

    in_use = [0]

    def checked_out(*_: Any) -> None:
        in_use[0] += 1

    def checked_in(*_: Any) -> None:
        in_use[0] -= 1

    for name, listener in (("checkout", checked_out), ("checkin", checked_in)):
        event.listen(pool, name, listener)
        done.removers.append(remover(pool, name, listener))

    def connections(_options: CallbackOptions) -> Iterable[Observation]:
        used = max(0, in_use[0])
        idle = int(getattr(pool, "checkedin", lambda: 0)())
        yield Observation(used, {**common, "db.client.connection.state": "used"})
        yield Observation(idle, {**common, "db.client.connection.state": "idle"})

    def overflow(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(max(0, int(getattr(pool, "overflow", lambda: 0)())), common)

    def pending(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(waits.pending, common)

    def timeouts(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(waits.timeouts, common)

    meter.create_observable_up_down_counter(
        "db.client.connection.count", [connections], description="connections by state"
    )
    meter.create_observable_gauge(
        "flowstore.pool.overflow", [overflow], description="connections beyond pool_size"
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests", [pending], description="waiting for one"
    )
    meter.create_observable_counter(
        "db.client.connection.timeouts", [timeouts], description="waits that timed out"
    )


def queue_depths(store: Store[Any]) -> list[tuple[str, int, float]]:
    """Per queue: its queued jobs and the age in seconds of the oldest one due (0 if none)."""
    from flowstore.models import Job, JobStatus, utcnow

    now = utcnow()
    due_since = func.min(case((Job.run_at <= now, Job.run_at)))  # FILTER is not portable
    statement = (
        select(Job.queue, func.count(), due_since)
        .where(Job.status == JobStatus.QUEUED)
        .group_by(Job.queue)
    )
    with store.session_factory() as session:
        rows = session.execute(statement).all()
    found = []
    for name, count, oldest in rows:
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        found.append((str(name), int(count), max(0.0, age)))
    return found


def measure_queues(done: Instrumentation, store: Any) -> None:
    reading: dict[str, list[tuple[str, int, float]]] = {}

    def depths() -> list[tuple[str, int, float]]:
        try:
            return queue_depths(store)
        except (FlowstoreError, SQLAlchemyError) as exc:  # the database is busy or down
            log.warning("flowstore.telemetry: queue depths not read: %s", exc)
            return []

    def read(_options: CallbackOptions) -> Iterable[Observation]:
        reading["now"] = depths()
        for name, count, _age in reading["now"]:
            yield Observation(count, {"messaging.destination.name": name})

    def oldest(_options: CallbackOptions) -> Iterable[Observation]:
        rows = reading.pop("now", None)
        for name, _count, age in rows if rows is not None else depths():
            yield Observation(age, {"messaging.destination.name": name})

    done.meter.create_observable_gauge(
        "flowstore.queue.depth", [read], description="queued jobs per queue"
    )
    done.meter.create_observable_gauge(
        "flowstore.queue.oldest_due_age",
        [oldest],
        unit="s",
        description="age of the oldest job due and not yet claimed, per queue",
    )


def observe_audit_writer(writer: AuditWriter, *, meter_provider: Any = None) -> None:
    """Report ``writer``'s backlog (entries written but not yet stored) and its retries."""
    require()
    meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
    ref = weakref.ref(writer)

    def backlog(_options: CallbackOptions) -> Iterable[Observation]:
        alive = ref()
        if alive is not None:
            yield Observation(alive.stats.pending)

    def retries(_options: CallbackOptions) -> Iterable[Observation]:
        alive = ref()
        if alive is not None:
            yield Observation(alive.stats.retries)

    meter.create_observable_gauge(
        "flowstore.audit_writer.backlog", [backlog], description="entries not yet stored"
    )
    meter.create_observable_counter(
        "flowstore.audit_writer.retries", [retries], description="batch attempts repeated"
    )
