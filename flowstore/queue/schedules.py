"""Periodic jobs: cron expressions stored in ``job_schedules``, and enqueueing their due ticks.

A schedule's ``next_run_at`` is its next tick. ``enqueue_due`` reads the schedules whose tick
has come and, for each, moves ``next_run_at`` to the first tick after now with an UPDATE guarded
by the tick it read, then enqueues the job in the same transaction. Of any number of callers at
the same moment, exactly one UPDATE matches (the others find the row moved on once the first
commits), so each tick is enqueued once. Ticks missed while no worker ran are not made up: the
first call after them enqueues one job (for the latest missed tick's schedule) and moves on.

Cron expressions (5 fields, UTC) are read by ``cronsim`` (the ``cron`` extra:
``pip install 'flowstore[cron]'``), a kept parser, not one of flowstore's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, false, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from flowstore import arguments
from flowstore.errors import InvalidInputError
from flowstore.models.job_schedule import JobSchedule

__all__ = [
    "Schedule",
    "check_cron",
    "delete_schedule",
    "due_schedules",
    "list_schedules",
    "next_tick",
    "save_schedule",
    "schedule_name",
    "take_tick",
]

SCHEDULES = cast(Table, JobSchedule.__table__)
_s = SCHEDULES.c
MAX_SCHEDULE_NAME = 100


@dataclass(frozen=True)
class Schedule:
    """A periodic job as stored: its queue and name, cron expression, what it enqueues, and
    its next tick."""

    queue: str
    name: str
    cron: str
    payload: dict[str, Any]
    priority: int
    task: str | None
    max_attempts: int
    next_run_at: datetime
    last_run_at: datetime | None


def _cron_module() -> Any:
    try:
        return importlib.import_module("cronsim")
    except ImportError:
        raise InvalidInputError(
            "periodic jobs need a cron parser: pip install 'flowstore[cron]' (cronsim)"
        ) from None


def check_cron(cron: Any) -> str:
    """``cron`` if it is a valid 5-field cron expression, else ``InvalidInputError``."""
    if not isinstance(cron, str) or len(cron.split()) != 5 or len(cron) > 100:
        raise InvalidInputError(
            f"a schedule's cron is a 5-field expression (minute hour day month weekday), "
            f"got {cron!r}"
        )
    next_tick(cron, datetime(2000, 1, 1, tzinfo=UTC))
    return cron


def next_tick(cron: str, after: datetime) -> datetime:
    """The first tick of ``cron`` (read in UTC) strictly after ``after``."""
    module = _cron_module()
    try:
        ticks = module.CronSim(cron, arguments.aware("after", after))
        tick: datetime = next(ticks)
    except module.CronSimError as exc:
        raise InvalidInputError(f"invalid cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise InvalidInputError(f"cron expression {cron!r} never fires") from None
    return tick


def save_schedule(conn: Connection, values: dict[str, Any]) -> None:
    """Create the schedule ``values`` describes, or replace the one of its queue and name."""
    changed = {k: v for k, v in values.items() if k not in {"queue", "name", "created_at"}}
    name = conn.dialect.name
    statement: Any
    if name in {"mysql", "mariadb"}:
        statement = mysql.insert(SCHEDULES).values(values).on_duplicate_key_update(changed)
    elif name in {"postgresql", "sqlite"}:
        module: Any = postgresql if name == "postgresql" else sqlite
        statement = (
            module.insert(SCHEDULES)
            .values(values)
            .on_conflict_do_update(index_elements=[_s.queue, _s.name], set_=changed)
        )
    else:  # pragma: no cover - flowstore runs on the three
        conn.execute(
            delete(SCHEDULES).where(_s.queue == values["queue"], _s.name == values["name"])
        )
        statement = insert(SCHEDULES).values(values)
    conn.execute(statement)


def delete_schedule(conn: Connection, queue: str, name: str) -> bool:
    """Remove a schedule; whether there was one."""
    result = conn.execute(delete(SCHEDULES).where(_s.queue == queue, _s.name == name))
    return bool(result.rowcount)


def _schedule(row: Any) -> Schedule:
    return Schedule(
        queue=row.queue,
        name=row.name,
        cron=row.cron,
        payload=dict(row.payload),
        priority=row.priority,
        task=row.task,
        max_attempts=row.max_attempts,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
    )


def list_schedules(conn: Connection, queue: str | None = None) -> list[Schedule]:
    """The schedules (of ``queue``, or all), by queue and name."""
    statement = select(SCHEDULES).order_by(_s.queue, _s.name)
    if queue is not None:
        statement = statement.where(_s.queue == queue)
    return [_schedule(row) for row in conn.execute(statement)]


def due_schedules(conn: Connection, queue: str, now: datetime) -> list[Schedule]:
    """The schedules of ``queue`` whose next tick has come.

    On SQLite the transaction takes the write lock first (an UPDATE of no row): one that read
    first could not wait for the lock when it then writes, and would fail at once as busy."""
    if conn.dialect.name == "sqlite":
        conn.execute(update(SCHEDULES).where(false()).values(queue=_s.queue))
    rows = conn.execute(
        select(SCHEDULES).where(_s.queue == queue, _s.next_run_at <= now).order_by(_s.name)
    )
    return [_schedule(row) for row in rows]


def take_tick(conn: Connection, schedule: Schedule, now: datetime) -> bool:
    """Move ``schedule`` past its due tick (to the first tick after ``now``), if no other
    caller did meanwhile; whether this caller did, and so enqueues the tick's job."""
    result = conn.execute(
        update(SCHEDULES)
        .where(
            _s.queue == schedule.queue,
            _s.name == schedule.name,
            _s.next_run_at == schedule.next_run_at,
        )
        .values(
            next_run_at=next_tick(schedule.cron, now),
            last_run_at=schedule.next_run_at,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def schedule_name(name: Any) -> str:
    """``name`` if it can name a schedule."""
    return arguments.text("a schedule name", name, max_length=MAX_SCHEDULE_NAME)
