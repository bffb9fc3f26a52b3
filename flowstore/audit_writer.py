"""``AuditWriter``: audit logging off the request path, stored in batches by a background thread.

``write(entry)`` checks the entry, gives it its id and time (UUIDv7, UTC, as an ``AuditLog``
row gets them) and returns at once; a background thread stores what has been written in
batches, in its own transactions: ``COPY`` on PostgreSQL (psycopg), a multi-row ``INSERT``
elsewhere.
``flush()`` waits until everything written so far is stored; ``close()`` (also run at
interpreter exit) stores the rest and stops the thread.

Nothing is dropped silently, and nothing stored is reported failed. A batch that fails for a
passing reason (connection lost, deadlock, server restarting) is retried with backoff for as
long as the database has been failing for less than ``retry_for`` seconds. A retry that meets
its own entries already there (a COMMIT whose answer was lost) counts them stored. A batch the
database refuses (a bad value, an id taken by another entry) is split until the refused
entries are isolated, so the good ones are still stored. What cannot be stored is kept in
``failed`` (in the form ``write()`` takes), counted in ``stats``, logged, passed to
``on_error``, and raised (``AuditWriteError``) by the next ``flush()`` or ``close()``.

Make one writer per process and keep it (each has a thread and takes a pooled connection per
batch): ``uow.audit_logs.writer()`` or ``AuditWriter(store)``. Entries are committed by the
writer, not by a unit of work: rolling a unit of work back does not take them back. On the
in-memory SQLite database, whose one connection is shared by turns, the writer waits for its
turn, so do not ``flush()`` while holding a unit of work there.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from flowstore.audit_batches import AuditBatches, OutageBudget
from flowstore.audit_engine import writer_engine
from flowstore.audit_entries import INDEX, Row, entry_row, entry_values
from flowstore.config import Settings
from flowstore.errors import (
    AlreadyExistsError,
    FlowstoreError,
    InvalidInputError,
    translate,
)
from flowstore.models import AuditLog
from flowstore.telemetry.spans import audit_batch

__all__ = ["AuditWriteError", "AuditWriter", "AuditWriterStats", "FailedEntry"]

log = logging.getLogger("flowstore.audit")


class AuditWriteError(FlowstoreError):
    """Audit entries could not be stored (after retries); ``failed`` holds them and why."""

    def __init__(self, message: str, failed: list[FailedEntry]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class FailedEntry:
    """An entry the writer could not store: its fields as ``write()`` takes them (``id`` and
    ``created_at`` included, ``details`` a dict), and the error."""

    values: dict[str, Any]
    error: FlowstoreError


@dataclass(frozen=True)
class AuditWriterStats:
    """Counters since the writer started."""

    written: int  # entries stored (already_stored included)
    failed: int  # entries given up on (the latest are in ``AuditWriter.failed``)
    pending: int  # entries written but not yet stored or failed
    batches: int  # batches stored
    retries: int  # batch attempts repeated after a passing failure
    already_stored: int  # entries a retry found stored (a COMMIT whose answer was lost)


class AuditWriter:
    """Buffers audit entries and stores them in batches from a background thread.

    ``batch_size`` entries at most per batch; a batch is started as soon as that many wait, or
    ``flush_interval`` seconds after the last one. It holds at most ``max_pending`` entries
    waiting plus the batch being stored; ``write()`` blocks while ``max_pending`` wait
    (back-pressure instead of unbounded memory), until a batch is stored or given up on.

    A batch failing for a passing reason is tried again, ``retry_delay`` seconds later at
    first, doubling up to 2 s, while the database has been failing for less than
    ``retry_for`` seconds (counted from the first failure since the last batch stored; and at
    most ``retries`` times per batch when that is given). Past that, batches are given up on,
    one tried each second, until the database answers again. ``on_error(error, entries)`` is
    called (in the writer's thread) for entries given up on; ``failed`` keeps the last
    ``max_pending`` of them. ``org_id`` scopes the writer to one organization: entries
    without one get it, entries of another are refused.
    """

    def __init__(
        self,
        target: Any,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        retry_for: float = 30.0,
        retries: int | None = None,
        retry_delay: float = 0.2,
        on_error: Callable[[FlowstoreError, list[FailedEntry]], object] | None = None,
        org_id: uuid.UUID | None = None,
        settings: Settings | None = None,
    ) -> None:
        engine, self._owned_engine = writer_engine(target, settings)
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("max_pending", max_pending, 1),
            ("retries", 0 if retries is None else retries, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInputError(f"{name} must be an integer >= {least}")
        for name, number in (
            ("flush_interval", flush_interval),
            ("retry_for", retry_for),
            ("retry_delay", retry_delay),
        ):
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise InvalidInputError(f"{name} must be a number >= 0, got {number!r}")
        if flush_interval == 0:
            raise InvalidInputError("flush_interval must be > 0")
        self._batch = AuditBatches(engine)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_pending = max(max_pending, batch_size)
        self._budget = OutageBudget(float(retry_for), retries, retry_delay)
        self._on_error = on_error
        self._org_id = org_id
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # entries taken, stored or failed
        self._wakeup = threading.Event()
        self._queue: deque[Row] = deque()
        self._appended = 0
        self._done = 0
        self._written = self._failed_count = self._batches = self._retried = 0
        self._already = 0
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
        row = entry_row(entry, self._org_id)
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
            entry.id = row[INDEX["id"]]
            entry.created_at = entry.updated_at = row[INDEX["created_at"]]
        identifier: uuid.UUID = row[INDEX["id"]]
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
            if self._owned_engine and not self._thread.is_alive():
                self._batch.engine.dispose()
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
                already_stored=self._already,
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
            )  # at most max_pending: the latest ones

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
        """Store ``rows``: retry passing failures, count entries already stored as stored,
        split refused batches, report the rest."""
        attempt = 0
        while rows:
            if not self._budget.worth_a_try(attempt):
                self._give_up(rows, self._budget.not_tried())
                return
            try:
                self._insert(rows)
            except Exception as exc:
                error = translate(exc)
            else:
                self._count_stored(len(rows), batches=1)
                return
            if isinstance(error, AlreadyExistsError):
                try:  # our own entries, stored by an attempt whose answer was lost?
                    missing = self._batch.not_stored(rows)
                except Exception as exc:
                    error = translate(exc)  # a passing failure, as a rule: handled below
                else:
                    if len(missing) < len(rows):
                        self._count_stored(len(rows) - len(missing), already=True)
                        rows = missing
                        continue
            if isinstance(error, InvalidInputError | AlreadyExistsError):
                if len(rows) > 1:
                    middle = len(rows) // 2
                    self._store(rows[:middle])
                    self._store(rows[middle:])
                else:
                    self._give_up(rows, error)
                return
            pause = self._budget.failed(error, attempt)
            if pause is None:
                self._give_up(rows, error)
                return
            attempt += 1
            with self._lock:
                self._retried += 1
            log.warning("audit writer: batch failed (%s), retry %d", error, attempt)
            time.sleep(pause)

    def _count_stored(self, count: int, *, batches: int = 0, already: bool = False) -> None:
        self._budget.stored()
        with self._lock:
            self._written += count
            self._batches += batches
            if already:
                self._already += count

    def _insert(self, rows: list[Row]) -> None:
        with audit_batch(self._batch.engine, len(rows), copy=self._batch.copy_sql is not None):
            self._batch.insert(rows)

    def _give_up(self, rows: list[Row], error: FlowstoreError) -> None:
        failed = [FailedEntry(entry_values(row), error) for row in rows]
        with self._lock:
            self._failed_count += len(rows)
            for kept in (self.failed, self._unreported):
                kept.extend(failed)
                del kept[: -self._max_pending]  # bounded: the latest ones
        log.error("audit writer: %d entries could not be stored: %s", len(rows), error)
        if self._on_error is not None:
            try:
                self._on_error(error, failed)
            except Exception:
                log.exception("audit writer: on_error callback failed")
