"""Read replicas: where a read-only unit of work reads, and how it sees this store's writes.

A store with ``replica_urls`` keeps an engine per replica. A read-only unit of work
(``unit_of_work(read_only=True)``) takes the replicas in turn and reads from the first that
answers and has caught up with this store; when none does, it reads from the primary.

Read-your-writes on PostgreSQL: after each commit of one of its (read-write) units of work, the
store reads the primary's WAL insert position (one more round trip, only on a store with
replicas). A read-only unit of work then waits, up to ``replica_max_lag`` seconds, until the
replica has replayed that far (``pg_last_wal_replay_lsn()``, polled on one connection); past
that, or when the replica does not answer, the replica rests for ``replica_retry_after``
seconds and the next one is tried. A replica URL that is not in recovery (a primary) counts as
caught up. Where the position cannot be read (a commit whose position read failed, or a
replica of another backend after this store wrote anything), the primary serves the read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from flowstore.errors import InvalidInputError, mask_secrets
from flowstore.read_only import READ_ONLY
from flowstore.sessions import FlowstoreSession

__all__ = ["REPLICAS", "Replica", "ReplicaSet", "parse_lsn", "replica_urls"]

logger = logging.getLogger("flowstore.replicas")

#: ``Session.info`` key of the store's :class:`ReplicaSet` (its commits are noted there).
REPLICAS = "flowstore.replicas"

_PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
_REPLICA_POSITION = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
_FIRST_PAUSE = 0.002  # seconds between two looks at a lagging replica, doubling...
_LONGEST_PAUSE = 0.05  # ...up to this
_UNKNOWN = math.inf  # the last commit's position could not be read: the primary serves reads


def parse_lsn(text: str) -> int:
    """A PostgreSQL WAL position (``"16/B374D848"``) as a number, for comparing."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(eq=False)
class Replica:
    """One replica: its engine, what read-only sessions bind to, and when it may serve again."""

    label: str  # its URL, password masked
    engine: Engine  # the sync engine (an AsyncEngine's sync_engine on the async face)
    bind: Any  # the read-only engine (sync or async) every use of the replica goes through:
    # psycopg would begin READ WRITE on the plain engine, which a standby refuses
    resting_until: float = 0.0


class ReplicaSet:
    """The replicas of one store and the position of the store's last commit."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        primary: Engine,
        *,
        max_lag: float,
        retry_after: float,
    ) -> None:
        self.replicas = list(replicas)
        self.primary = primary
        self.max_lag = max_lag
        self.retry_after = retry_after
        self._positions = primary.dialect.name == "postgresql"
        self._written: float = 0  # the WAL position this store's last commit reached
        self._wrote = False  # whether this store committed anything (other backends)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplicaSet({[r.label for r in self.replicas]!r})"

    # -- the primary's side: what a read must see ------------------------------------------

    def note_commit(self) -> None:
        """After a read-write unit of work committed: remember how far the primary's WAL
        reached, for the reads that begin from now on."""
        if not self._positions:
            self._wrote = True
            return
        try:
            with self.primary.connect() as connection:
                position = parse_lsn(connection.exec_driver_sql(_PRIMARY_POSITION).scalar_one())
        except sa_exc.SQLAlchemyError as exc:  # the commit stands; reads go to the primary
            logger.warning("could not read the primary's WAL position: %s", _first_line(exc))
            with self._lock:
                self._written = _UNKNOWN
            return
        with self._lock:  # positions only grow: a later one covers every earlier commit
            self._written = position if self._written == _UNKNOWN else max(self._written, position)

    # -- the replicas' side: who may serve a read ------------------------------------------

    def _turns(self) -> list[Replica]:
        """The replicas not resting, starting with the next one's turn."""
        if not self.replicas or (not self._positions and self._wrote):
            return []
        if self._written == _UNKNOWN:
            return []
        start = next(self._turn) % len(self.replicas)
        now = time.monotonic()
        turn = self.replicas[start:] + self.replicas[:start]
        return [replica for replica in turn if replica.resting_until <= now]

    def _rest(self, replica: Replica, why: str) -> None:
        replica.resting_until = time.monotonic() + self.retry_after
        logger.warning("replica %s skipped for %.0f s: %s", replica.label, self.retry_after, why)

    def _caught_up(self, row: Any, needed: float) -> bool:
        if not self._positions:
            return True  # nothing written yet by this store (else _turns gave no replica)
        in_recovery, replayed = row
        if not in_recovery:
            return True  # not a standby: it has every commit it will ever have
        return replayed is not None and parse_lsn(replayed) >= needed

    def choose(self) -> Replica | None:
        """The replica a read-only unit of work beginning now reads from, or ``None`` (the
        primary)."""
        for replica in self._turns():
            needed = self._written
            try:
                with replica.bind.connect() as connection:  # READ ONLY: a standby takes it
                    if self._wait(connection, needed):
                        return replica
                self._rest(replica, f"not caught up within {self.max_lag} s")
            except sa_exc.SQLAlchemyError as exc:
                self._rest(replica, _first_line(exc))
        return None

    def _wait(self, connection: Connection, needed: float) -> bool:
        deadline, pause = time.monotonic() + self.max_lag, _FIRST_PAUSE
        while True:
            if self._caught_up(connection.exec_driver_sql(self._probe).one(), needed):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    @property
    def _probe(self) -> str:
        """What a replica is asked: its replay position (PostgreSQL), else only that it answers."""
        return _REPLICA_POSITION if self._positions else "SELECT 1"

    async def choose_async(self) -> Replica | None:
        """:meth:`choose` for the async face (each replica's ``bind`` an ``AsyncEngine``)."""
        for replica in self._turns():
            needed = self._written
            engine: AsyncEngine = replica.bind
            try:
                async with engine.connect() as connection:
                    if await self._wait_async(connection, needed):
                        return replica
                self._rest(replica, f"not caught up within {self.max_lag} s")
            except sa_exc.SQLAlchemyError as exc:
                self._rest(replica, _first_line(exc))
        return None

    async def _wait_async(self, connection: Any, needed: float) -> bool:
        deadline, pause = time.monotonic() + self.max_lag, _FIRST_PAUSE
        while True:
            row = (await connection.exec_driver_sql(self._probe)).one()
            if self._caught_up(row, needed):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def dispose(self) -> None:
        """Close every replica's pooled connections (sync engines)."""
        for replica in self.replicas:
            replica.engine.dispose()


def replica_urls(
    given: Sequence[str | URL] | None, configured: Sequence[str], primary: URL
) -> list[str | URL]:
    """The replica URLs a store uses: ``given`` (its argument), else the configured ones;
    ``InvalidInputError`` for a primary that cannot have replicas (the in-memory database)."""
    if isinstance(given, str | URL):
        raise InvalidInputError("replica_urls takes a list of URLs, not one URL")
    urls: list[str | URL] = list(given if given is not None else configured)
    memory = primary.get_backend_name() == "sqlite" and primary.database in {None, "", ":memory:"}
    if urls and memory:
        raise InvalidInputError("the in-memory database has no replicas: drop replica_urls")
    return urls


@event.listens_for(FlowstoreSession, "after_commit")
def _note_commit(session: Session) -> None:
    found: ReplicaSet | None = session.info.get(REPLICAS)
    if found is None or session.info.get(READ_ONLY) or isinstance(session.bind, Connection):
        return  # no replicas; nothing written; a test's lent connection (flowstore.testing)
    found.note_commit()


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return mask_secrets(text.splitlines()[0] if text else type(error).__name__)
