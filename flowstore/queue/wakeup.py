"""Prompt wake-up of idle workers on PostgreSQL: LISTEN/NOTIFY, with polling underneath.

A trigger on ``jobs`` (migration 0007) sends ``NOTIFY flowstore_jobs, '<queue>'`` for every
statement that inserts jobs, delivered when its transaction commits (``requeue`` sends one too).
``Wakeup`` keeps one connection per worker process that LISTENs on the channel, in a thread of
its own; worker threads wait on it for at most their poll interval, so a job committed while
they wait starts at once rather than at the next poll.

When the listening connection drops (a restart, a partition), the thread logs one warning and
tries again with a growing pause (at most 30 s); meanwhile workers poll as before, and once it
listens again they look once at the queue, for what was committed in the gap. Nothing is lost
either way: a notification only shortens a wait.

Behind PgBouncer in *transaction* pooling, LISTEN does not reach a session that keeps it (the
server connection goes back to the pool after the statement), so no notification arrives and
workers wake at their poll interval, with no error. Point ``listen_url`` at PostgreSQL itself
(or a PgBouncer pool in session mode) to keep the prompt wake-up there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from flowstore.queue.maintenance import NOTIFY_CHANNEL

__all__ = ["Wakeup"]

log = logging.getLogger("flowstore.worker")

#: The longest pause between two attempts to listen again.
MAX_RETRY_PAUSE = 30.0
#: How often an idle listening connection is checked (a ``SELECT 1``), so a dead one is found.
CHECK_EVERY = 15.0
#: The longest a waiting thread sleeps before it looks at its stop flag again.
STOP_CHECK = 0.25


class Wakeup:
    """The notifications of one queue, counted; ``wait`` returns early when one arrives.

    On a database other than PostgreSQL (or with ``listen=False``) nothing listens and
    ``wait`` simply waits out its timeout (or the stop flag).
    """

    def __init__(
        self,
        engine: Engine,
        queue: str,
        stop: threading.Event,
        *,
        listen: bool = True,
        listen_url: str | None = None,
    ) -> None:
        self.queue = queue
        self.stop = stop
        self.generation = 0
        self.notified = 0  # wake-ups by notification, for tests and logs
        self.listening = threading.Event()
        self._changed = threading.Condition()
        self._engine = engine
        self._listen_url = listen_url
        self._thread: threading.Thread | None = None
        if listen and engine.dialect.name == "postgresql":
            self._thread = threading.Thread(
                target=self._listen_loop, name="flowstore-listen", daemon=True
            )

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the waiting side ------------------------------------------------------------------

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait until a notification newer than ``seen`` (a ``generation``), the stop flag or
        ``timeout``; whether a notification ended it."""
        waited = 0.0
        with self._changed:
            while self.generation == seen and waited < timeout and not self.stop.is_set():
                step = min(STOP_CHECK, timeout - waited)
                self._changed.wait(step)
                waited += step
            return self.generation != seen

    def _bump(self, notified: bool) -> None:
        with self._changed:
            self.generation += 1
            if notified:
                self.notified += 1
            self._changed.notify_all()

    # -- the listening thread --------------------------------------------------------------

    def _connect(self) -> Any:
        """A psycopg connection of its own (out of the pool, which never sees it again)."""
        if self._listen_url is not None:
            engine = create_engine(self._listen_url, poolclass=NullPool)
            raw = engine.raw_connection()
        else:
            raw = self._engine.raw_connection()
        driver: Any = raw.driver_connection
        raw.detach()
        driver.autocommit = True
        driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return driver

    def _listen_loop(self) -> None:
        pause, reported = 1.0, False
        while not self.stop.is_set():
            driver = None
            try:
                driver = self._connect()
                if not self.listening.is_set():
                    log.info("queue %r: listening for new jobs (NOTIFY)", self.queue)
                self.listening.set()
                pause = 1.0
                self._bump(notified=False)  # look once: jobs may have come in the gap
                self._receive(driver)
            except Exception as exc:  # the driver's, or the pool's: all mean "not listening"
                if self.stop.is_set():
                    break
                if self.listening.is_set() or not reported:  # once per outage
                    reported = True
                    log.warning(
                        "queue %r: the notification channel dropped (%s); polling until it is back",
                        self.queue,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
                    )
                self.listening.clear()
                self.stop.wait(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
            finally:
                if driver is not None:
                    with contextlib.suppress(Exception):  # it is being dropped anyway
                        driver.close()
        self.listening.clear()

    def _receive(self, driver: Any) -> None:
        """Count the notifications for this queue until stopped (raises when the connection
        fails)."""
        idle = 0.0
        while not self.stop.is_set():
            got = False
            for notice in driver.notifies(timeout=1.0, stop_after=64):
                got = True
                if notice.payload == self.queue:
                    log.debug("queue %r: woken by a notification", self.queue)
                    self._bump(notified=True)
            idle = 0.0 if got else idle + 1.0
            if idle >= CHECK_EVERY:
                driver.execute("SELECT 1")
                idle = 0.0
