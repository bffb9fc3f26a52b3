"""``AuditWriter``: audit logging off the request path, stored in batches by a background thread.

``write(entry)`` checks the entry, gives it its id and time (UUIDv7, UTC, as an ``AuditLog``
row gets them) and returns at once; a background thread stores what has been written in
batches, in its own transactions: ``COPY`` on PostgreSQL (psycopg), a multi-row ``INSERT``
elsewhere.
``flush()`` waits until everything written so far is stored; ``close()`` (also run at
interpreter exit) stores the rest and stops the thread.

Nothing is dropped silently. A batch that fails for a passing reason (connection lost,
deadlock) is retried with backoff; one that the database refuses (a bad value, a duplicate
id) is split until the refused entries are isolated, so the good ones are still stored. What
cannot be stored is kept in ``failed``, counted in ``stats``, logged, passed to ``on_error``,
and raised (``AuditWriteError``) by the next ``flush()`` or ``close()``.

Make one writer per process and keep it (each has a thread and takes a pooled connection per
batch): ``uow.audit_logs.writer()`` or ``AuditWriter(store)``. Entries are committed by the
writer, not by a unit of work: rolling a unit of work back does not take them back. On the
in-memory SQLite database, whose one connection is shared by turns, the writer waits for its
turn, so do not ``flush()`` while holding a unit of work there.
"""

from __future__ import annotations

import atexit
import json
import logging
import operator
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Dialect, Engine, Table, Text, column, insert, table

from flowstore.driver import (
    Processors,
    bind_processors,
    copy_rows,
    copy_statement,
    positional_insert,
    process_columns,
)
from flowstore.errors import (
    AlreadyExistsError,
    FlowstoreError,
    InvalidInputError,
    translate,
)
from flowstore.models import AuditLog, utcnow, uuid7
from flowstore.spec import column_checks

__all__ = ["AuditWriteError", "AuditWriter", "AuditWriterStats", "FailedEntry"]

log = logging.getLogger("flowstore.audit")

_TABLE: Table = AuditLog.__table__  # type: ignore[assignment]
_COLUMNS: tuple[str, ...] = tuple(c.name for c in _TABLE.columns)
_INDEX = {name: i for i, name in enumerate(_COLUMNS)}
_FIELDS = frozenset({"id", "created_at"} | (set(_COLUMNS) - {"updated_at", "lock_version"}))


_REQUIRED = ("org_id", "action", "resource_type")
# The checks every repository write makes (spec.column_checks), for the ids and the text
# fields; details and created_at are checked in write() on their own terms.
_CHECKS = {name: check for name, check, _new, _existing in column_checks(AuditLog)}
_CHECKED = tuple(
    (name, _CHECKS[name])
    for name in (
        "id", "org_id", "application_id", "user_id",
        "action", "resource_type", "resource_id", "request_id",
    )
)  # fmt: skip
# Where the writer does not COPY, the rows take Core's type handling (its bind processors,
# see _driver_statement); ``details`` arrives already as JSON text, checked and encoded once
# in write().
_CORE_TABLE = table(
    _TABLE.name,
    *(column(c.name, Text() if c.name == "details" else c.type) for c in _TABLE.columns),
)
_BLANK: dict[str, Any] = dict.fromkeys(_COLUMNS)
_ROW = operator.itemgetter(*_COLUMNS)
_JSON = json.JSONEncoder(allow_nan=False)  # made once: json.dumps(allow_nan=...) makes one a call
# updated_at is created_at's very value (_row): converted once, for created_at
_TWINS = ((_INDEX["updated_at"], _INDEX["created_at"]),)

Row = tuple[Any, ...]


class AuditWriteError(FlowstoreError):
    """Audit entries could not be stored (after retries); ``failed`` holds them and why."""

    def __init__(self, message: str, failed: list[FailedEntry]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class FailedEntry:
    """An entry the writer could not store: its column values and the error."""

    values: dict[str, Any]
    error: FlowstoreError


@dataclass(frozen=True)
class AuditWriterStats:
    """Counters since the writer started."""

    written: int  # entries stored
    failed: int  # entries given up on (see ``AuditWriter.failed``)
    pending: int  # entries written but not yet stored or failed
    batches: int  # batches stored
    retries: int  # batch attempts repeated after a passing failure


class AuditWriter:
    """Buffers audit entries and stores them in batches from a background thread.

    ``batch_size`` entries at most per batch; a batch is started as soon as that many wait, or
    ``flush_interval`` seconds after the last one. ``write()`` blocks only while
    ``max_pending`` entries are waiting (back-pressure instead of unbounded memory). A batch
    failing for a passing reason is tried ``retries`` more times, ``retry_delay`` seconds
    apart, doubling. ``on_error(error, entries)`` is called (in the writer's thread) for
    entries given up on. ``org_id`` scopes the writer to one organization: entries without
    one get it, entries of another are refused.
    """

    def __init__(
        self,
        target: Any,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        retries: int = 3,
        retry_delay: float = 0.2,
        on_error: Callable[[FlowstoreError, list[FailedEntry]], object] | None = None,
        org_id: uuid.UUID | None = None,
    ) -> None:
        engine = getattr(target, "engine", target)
        if not isinstance(engine, Engine):
            raise InvalidInputError("AuditWriter takes a Store or an Engine")
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("max_pending", max_pending, 1),
            ("retries", retries, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInputError(f"{name} must be an integer >= {least}")
        if flush_interval <= 0 or retry_delay < 0:
            raise InvalidInputError("flush_interval must be > 0 and retry_delay >= 0")
        self._engine = engine
        dialect = engine.dialect
        # COPY where psycopg is the driver; elsewhere the driver's executemany, or Core's
        copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self._copy_sql = copy_statement(dialect, _TABLE, _COLUMNS) if copy else None
        self._statement = None if copy else _driver_statement(dialect)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_pending = max(max_pending, batch_size)
        self._retries = retries
        self._retry_delay = retry_delay
        self._on_error = on_error
        self._org_id = org_id
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # entries taken, stored or failed
        self._wakeup = threading.Event()
        self._queue: deque[Row] = deque()
        self._appended = 0
        self._done = 0
        self._written = self._failed_count = self._batches = self._retried = 0
        self._closed = self._stopping = False
        self._unreported: list[FailedEntry] = []
        self.failed: list[FailedEntry] = []
        self._thread = threading.Thread(
            target=self._run, name="flowstore-audit-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self._close_at_exit)

    # -- the caller's side -----------------------------------------------------------------

    def write(self, entry: AuditLog | Mapping[str, Any]) -> uuid.UUID:
        """Queue one entry (an ``AuditLog`` or a mapping of its fields) and return its id.

        Fields are checked here, so a bad entry is ``InvalidInputError`` at once. An
        ``AuditLog`` object is given its ``id`` and ``created_at`` but stays out of any session.
        """
        row = self._row(entry)
        with self._lock:
            if self._closed:
                raise InvalidInputError("the audit writer is closed")
            while len(self._queue) >= self._max_pending and self._thread.is_alive():
                self._wakeup.set()
                self._changed.wait(1.0)
            self._queue.append(row)
            self._appended += 1
            if len(self._queue) >= self._batch_size:
                self._wakeup.set()
        if isinstance(entry, AuditLog):
            entry.id = row[_INDEX["id"]]
            entry.created_at = entry.updated_at = row[_INDEX["created_at"]]
        identifier: uuid.UUID = row[_INDEX["id"]]
        return identifier

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every entry written so far is stored (or given up on), then raise
        ``AuditWriteError`` for those given up on since the last report; ``timeout`` seconds
        at most (``FlowstoreError`` when they run out)."""
        self._wait(timeout)
        self._raise_unreported()

    def close(self, timeout: float | None = None) -> None:
        """Store everything written and stop the thread, then raise ``AuditWriteError`` for
        entries given up on and not yet reported. Writing afterwards is refused."""
        with self._lock:
            self._closed = True
        try:
            self._wait(timeout)
        finally:
            with self._lock:
                self._stopping = True
                self._wakeup.set()
                self._changed.notify_all()
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)
            atexit.unregister(self._close_at_exit)
            self._strand_leftovers()
        self._raise_unreported()

    def _strand_leftovers(self) -> None:
        """Entries still queued once the thread is gone: reported as failed, never lost."""
        if self._thread.is_alive():
            return
        with self._lock:
            leftovers = list(self._queue)
            self._queue.clear()
            self._done += len(leftovers)
        if leftovers:
            stopped = FlowstoreError("the audit writer's thread stopped before storing these")
            self._give_up(leftovers, stopped)

    def _wait(self, timeout: float | None) -> None:
        if threading.current_thread() is self._thread:
            raise InvalidInputError("the audit writer cannot wait for itself (in on_error)")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._appended
            self._wakeup.set()
            while self._done < target and self._thread.is_alive():
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    break
                self._changed.wait(left)  # woken per batch; the second is for a dead thread
            if self._done >= target:
                return
        if self._thread.is_alive():
            raise FlowstoreError(f"audit entries still being stored after {timeout}s")
        raise FlowstoreError("the audit writer's thread has stopped")

    @property
    def stats(self) -> AuditWriterStats:
        """The writer's counters, read together."""
        with self._lock:
            return AuditWriterStats(
                written=self._written,
                failed=self._failed_count,
                pending=self._appended - self._done,
                batches=self._batches,
                retries=self._retried,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _close_at_exit(self) -> None:
        try:
            self.close(timeout=30)
        except Exception:
            log.exception("audit writer: entries lost at interpreter exit")

    def _raise_unreported(self) -> None:
        with self._lock:
            failed, self._unreported = self._unreported, []
        if failed:
            raise AuditWriteError(
                f"{len(failed)} audit entries could not be stored; first error: {failed[0].error}",
                failed,
            )

    # -- checking an entry -----------------------------------------------------------------

    def _row(self, entry: AuditLog | Mapping[str, Any]) -> Row:
        """The entry's column values, checked, in table order (``details`` as JSON text)."""
        if type(entry) is dict or isinstance(entry, Mapping):
            if not _FIELDS.issuperset(entry):
                unknown = ", ".join(sorted(str(k) for k in set(entry) - _FIELDS))
                raise InvalidInputError(f"unknown audit fields: {unknown}")
            values = {**_BLANK, **entry}
        elif isinstance(entry, AuditLog):
            values = {**_BLANK, **{name: getattr(entry, name) for name in _FIELDS}}
        else:
            raise InvalidInputError("an audit entry is an AuditLog or a mapping of its fields")
        if self._org_id is not None:
            given = self._org_id if values["org_id"] is None else values["org_id"]
            # kept coerced, so the UUID check below does not coerce it again
            values["org_id"] = _CHECKS["org_id"](given)
            if values["org_id"] != self._org_id:
                raise InvalidInputError("this audit writer writes one organization's entries")
        for name in _REQUIRED:
            if values[name] is None:
                raise InvalidInputError(f"an audit entry needs {name}")
        for name, check in _CHECKED:
            value = values[name]
            if value is not None:
                values[name] = check(value)
        values["details"] = _details_json(values["details"])
        created = values["created_at"]
        if created is None:
            created = utcnow()
        elif isinstance(created, datetime) and created.utcoffset() is not None:
            created = created.astimezone(UTC)
        else:
            raise InvalidInputError("created_at must be a timezone-aware datetime")
        values["created_at"] = values["updated_at"] = created
        if values["id"] is None:
            values["id"] = uuid7()
        values["lock_version"] = 1
        row: Row = _ROW(values)
        return row

    # -- the writer's thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wakeup.wait(self._flush_interval)
            self._wakeup.clear()
            while True:
                with self._lock:
                    count = min(len(self._queue), self._batch_size)
                    batch = [self._queue.popleft() for _ in range(count)]
                    if count:
                        self._changed.notify_all()  # room for writers held back
                    elif self._stopping:
                        return
                if not batch:
                    break
                try:
                    self._store(batch)
                except BaseException as exc:  # not a database error: report, then stop
                    self._give_up(batch, translate(exc))
                    raise
                finally:
                    with self._lock:
                        self._done += len(batch)
                        self._changed.notify_all()

    def _store(self, rows: list[Row]) -> None:
        """Store ``rows``: retry passing failures, split refused batches, report the rest."""
        attempt = 0
        while True:
            try:
                self._insert(rows)
            except Exception as exc:
                error = translate(exc)
                refused = isinstance(error, InvalidInputError | AlreadyExistsError)
                if refused and len(rows) > 1:
                    middle = len(rows) // 2
                    self._store(rows[:middle])
                    self._store(rows[middle:])
                    return
                if refused or attempt >= self._retries:
                    self._give_up(rows, error)
                    return
                attempt += 1
                with self._lock:
                    self._retried += 1
                log.warning("audit writer: batch failed (%s), retry %d", error, attempt)
                time.sleep(self._retry_delay * 2 ** (attempt - 1))
            else:
                with self._lock:
                    self._written += len(rows)
                    self._batches += 1
                return

    def _insert(self, rows: list[Row]) -> None:
        with self._engine.begin() as conn:
            if self._copy_sql is not None:
                copy_rows(conn, self._copy_sql, rows)
                return
            statement = self._statement
            if statement is None:  # a dialect with named parameters: Core makes the rows
                conn.execute(
                    insert(_CORE_TABLE), [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
                )
                return
            sql, processors = statement
            values: list[Sequence[Any]] = list(zip(*rows, strict=True))
            process_columns(values, processors, _TWINS)  # _row makes them one value
            conn.exec_driver_sql(sql, list(zip(*values, strict=True)))  # one executemany

    def _give_up(self, rows: list[Row], error: FlowstoreError) -> None:
        failed = [FailedEntry(dict(zip(_COLUMNS, row, strict=True)), error) for row in rows]
        with self._lock:
            self._failed_count += len(rows)
            self.failed.extend(failed)
            self._unreported.extend(failed)
        log.error("audit writer: %d entries could not be stored: %s", len(rows), error)
        if self._on_error is not None:
            try:
                self._on_error(error, failed)
            except Exception:
                log.exception("audit writer: on_error callback failed")


def _driver_statement(dialect: Dialect) -> tuple[str, Processors] | None:
    """The INSERT as the driver takes it, with positional parameters in table order, and the
    columns' bind processors; ``None`` for a driver without positional parameters. Handing
    the driver ready tuples spares Core's per-row parameter dicts: the rows are already
    checked and in table order."""
    sql = positional_insert(dialect, _TABLE, _COLUMNS)
    if sql is None:
        return None
    types = [col.type for col in _CORE_TABLE.columns]
    return sql, bind_processors(dialect, types)


def _details_json(details: Any) -> str:
    """``details`` as JSON text; it must be a JSON object every backend can store."""
    if details is None:
        return "{}"
    if type(details) is not dict and not isinstance(details, Mapping):
        raise InvalidInputError("details must be a dict")
    try:
        text = _JSON.encode(details)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"details must be JSON values: {exc}") from None
    if "\\u0000" in text:
        raise InvalidInputError("details may not contain NUL characters")
    return text
