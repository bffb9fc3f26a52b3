"""Faults: the server kills connections, the database is read-only, the disk is full.

* A connection killed by the server (``pg_terminate_backend``, MariaDB ``KILL``) in the middle
  of a unit of work fails it with ``ConnectionFailedError`` and nothing of it is written; the
  next unit of work gets a fresh connection and succeeds. A pooled connection killed while
  idle is noticed by ``pool_pre_ping`` before it is used.
* A read-only database (a SQLite file opened ``mode=ro``, a PostgreSQL or MariaDB session in
  read-only mode) answers reads and refuses writes with a clear flowstore error.
* A full disk (SQLite with a small ``max_page_count``) is a clear flowstore error, the unit of
  work is rolled back, and what was committed before is intact.
* A worker settles its jobs through a database outage for as long as their lease lasts (the
  outage is injected at the queue core, so these run on every backend), and what it logs
  about a job is what became of it.

The fault suite (``make test-faults``, tests/faults/) breaks servers of its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session

from flowstore import Settings, Store
from flowstore.errors import ConnectionFailedError, FlowstoreError
from flowstore.models import Job, JobStatus, Organization
from flowstore.queue import JobQueue, QueueCore
from flowstore.uow import UnitOfWork
from flowstore.worker import run_worker
from tests.backends import ADMIN_URLS, SERVER_BACKENDS
from tests.pgbouncer import DROP_HIDDEN, skip_behind_pgbouncer


def _slug(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _count(store: Store, slug: str) -> int:
    with store.unit_of_work() as uow:
        return uow.organizations.count(slug=slug)


# -- the server kills connections ------------------------------------------------------------


@pytest.fixture
def server(backend: str, server_stores: dict[str, Store]) -> Iterator[tuple[str, Store, Engine]]:
    """The backend name, a store with its own pool on the suite's database, and an admin
    engine on the same server that can kill its connections."""
    if backend not in SERVER_BACKENDS:
        pytest.skip("only a server can kill a connection")
    shared = server_stores[backend]
    own = Store(shared.url)
    admin = create_engine(make_url(ADMIN_URLS[backend]), isolation_level="AUTOCOMMIT")
    try:
        yield backend, own, admin
    finally:
        own.close()
        admin.dispose()


def _connection_id(uow: UnitOfWork, backend: str) -> int:
    query = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    return int(uow.session.execute(text(query)).scalar_one())


def _kill(admin: Engine, backend: str, connection_id: int) -> None:
    """Kill a session from another connection, and wait until the server has dropped it."""
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": connection_id})
            alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        else:
            conn.execute(text(f"KILL {int(connection_id)}"))
            alive = text("SELECT count(*) FROM information_schema.processlist WHERE id = :pid")
        for _ in range(500):  # the kill is asynchronous: poll until the session is gone
            if not conn.execute(alive, {"pid": connection_id}).scalar_one():
                return
            conn.execute(
                text("SELECT pg_sleep(0.01)" if backend == "postgresql" else "DO SLEEP(0.01)")
            )
    raise AssertionError(f"connection {connection_id} was not killed")


def test_a_connection_killed_mid_unit_of_work_fails_it_and_writes_nothing(
    server: tuple[str, Store, Engine],
) -> None:
    backend, store, admin = server
    first, second = _slug("killed-a"), _slug("killed-b")
    with pytest.raises(ConnectionFailedError), store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="written before the kill", slug=first))
        _kill(admin, backend, _connection_id(uow, backend))
        uow.organizations.add(Organization(name="after the kill", slug=second))
    # nothing of the failed unit of work is there, and the next one works
    assert _count(store, first) == 0
    assert _count(store, second) == 0
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="next", slug=second))
    assert _count(store, second) == 1


def test_a_connection_killed_at_commit_fails_the_commit(server: tuple[str, Store, Engine]) -> None:
    backend, store, admin = server
    slug = _slug("commit")
    with pytest.raises(ConnectionFailedError), store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="never committed", slug=slug))
        _kill(admin, backend, _connection_id(uow, backend))
    assert _count(store, slug) == 0


def test_an_idle_pooled_connection_killed_is_replaced_by_pre_ping(
    server: tuple[str, Store, Engine],
) -> None:
    backend, shared, admin = server
    with Store(shared.url, settings=Settings(pool_pre_ping_idle=0)) as store:
        with store.unit_of_work() as uow:
            pooled = _connection_id(uow, backend)
        _kill(admin, backend, pooled)  # the connection now sits dead in the pool
        slug = _slug("after-idle-kill")
        with store.unit_of_work() as uow:
            assert _connection_id(uow, backend) != pooled
            uow.organizations.add(Organization(name="fine", slug=slug))
        assert _count(store, slug) == 1


def test_without_pre_ping_one_unit_of_work_fails_then_the_pool_recovers(
    server: tuple[str, Store, Engine],
) -> None:
    backend, store, admin = server
    skip_behind_pgbouncer(backend, DROP_HIDDEN)
    with Store(store.url, pool_pre_ping=False) as unpinged:
        with unpinged.unit_of_work() as uow:
            pooled = _connection_id(uow, backend)
        _kill(admin, backend, pooled)
        with pytest.raises(ConnectionFailedError), unpinged.unit_of_work() as uow:
            uow.organizations.count()
        with unpinged.unit_of_work() as uow:
            assert _connection_id(uow, backend) != pooled


# -- a read-only database --------------------------------------------------------------------


@pytest.fixture
def read_only(backend: str, server_stores: dict[str, Store], tmp_path: Path) -> Iterator[Store]:
    """A store whose database refuses writes, with one organization in it."""
    skip_behind_pgbouncer(backend, "PgBouncer refuses the `options` startup parameter")
    slug = _slug("existing")
    if backend in SERVER_BACKENDS:
        writable = server_stores[backend]
        with writable.unit_of_work() as uow:
            uow.organizations.add(Organization(name="existing", slug=slug))
        if backend == "postgresql":  # merged with flowstore's connection arguments
            store = Store(
                writable.url, connect_args={"options": "-c default_transaction_read_only=on"}
            )
        else:
            store = Store(writable.url)

            @event.listens_for(store.engine, "connect")
            def _read_only(dbapi_connection: Any, record: Any) -> None:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SET SESSION TRANSACTION READ ONLY")

    else:
        path = tmp_path / "read-only.sqlite3"
        with Store(f"sqlite:///{path}") as writable:
            writable.upgrade()
            with writable.unit_of_work() as uow:
                uow.organizations.add(Organization(name="existing", slug=slug))
        store = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    with store:
        yield store


def test_a_read_only_database_reads_and_refuses_writes_clearly(read_only: Store) -> None:
    with read_only.unit_of_work() as uow:
        assert uow.organizations.count() >= 1
    with (
        pytest.raises(FlowstoreError, match="read-only") as refused,
        read_only.unit_of_work() as uow,
    ):
        uow.organizations.add(Organization(name="new", slug=_slug("refused")))
    assert not isinstance(refused.value, ConnectionFailedError)
    with read_only.unit_of_work() as uow:  # still usable for reads
        assert uow.organizations.count() >= 1


# -- a full disk -----------------------------------------------------------------------------


def test_a_full_disk_is_a_clear_error_and_loses_nothing_committed(
    backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite_file":
        pytest.skip("simulated with SQLite's max_page_count on a file")
    path = tmp_path / "full.sqlite3"
    with Store(f"sqlite:///{path}") as setup:
        setup.upgrade()
        with setup.unit_of_work() as uow:
            uow.organizations.add(Organization(name="kept", slug="kept"))
        with setup.engine.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    store = Store(f"sqlite:///{path}")

    @event.listens_for(store.engine, "connect")
    def _small_disk(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    with store:
        with pytest.raises(FlowstoreError, match="out of space"), store.unit_of_work() as uow:
            uow.organizations.add_many(
                Organization(name="x" * 250, slug=f"bulk-{i}") for i in range(400)
            )
        with pytest.raises(FlowstoreError, match="out of space"), store.unit_of_work() as uow:
            for i in range(400):  # one flush at a time, each in its own SAVEPOINT
                uow.organizations.add(Organization(name="y" * 250, slug=f"one-{i}"))
        with store.unit_of_work() as uow:
            assert [o.slug for o in uow.organizations.list()] == ["kept"]
            uow.organizations.add(Organization(name="small", slug="small"))
        with store.unit_of_work() as uow:
            assert uow.organizations.count() == 2


# -- a worker settling its jobs through an outage --------------------------------------------


def _outage(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    *,
    failures: int | None = None,
    for_seconds: float | None = None,
    lands: bool = False,
    thread: str | None = None,
) -> list[str]:
    """Make ``QueueCore.<method>`` fail as a lost connection does: its first ``failures``
    calls, or those of the first ``for_seconds``, or every call (of ``thread`` only, when
    given). With ``lands``, the call commits first, in a transaction of its own: only its
    answer is lost. Returns what each call did ("failed", "landed", "ok")."""
    real = getattr(QueueCore, method)
    calls: list[str] = []
    started = time.monotonic()

    def patched(core: QueueCore, session: Session, *args: Any, **kwargs: Any) -> Any:
        mine = thread is None or threading.current_thread().name == thread
        failing = mine and (
            (failures is None or len(calls) < failures)
            and (for_seconds is None or time.monotonic() - started < for_seconds)
        )
        if not failing:
            calls.append("ok")
            return real(core, session, *args, **kwargs)
        if lands:
            with Session(session.get_bind()) as own, own.begin():
                real(core, own, *args, **kwargs)
        calls.append("landed" if lands else "failed")
        raise ConnectionFailedError("database connection failed: server closed the connection")

    monkeypatch.setattr(QueueCore, method, patched)
    return calls


def _worker_says(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("flowstore") and r.levelno >= level
    ]


def test_a_worker_settles_a_job_through_an_outage_longer_than_five_tries(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to give up after five tries (about 6 s), whatever the lease: the job ran again."""
    job_id = store.queue("work").enqueue({})
    calls = _outage(monkeypatch, "acknowledge", failures=6)
    caplog.set_level(logging.INFO, logger="flowstore")
    assert run_worker(store, "work", lambda job: None, max_jobs=1, poll_interval=0.05) == 1
    assert calls == ["failed"] * 6 + ["ok"]
    job = store.queue("work").get(job_id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)
    assert not [m for m in _worker_says(caplog, logging.ERROR)]
    assert not [m for m in _worker_says(caplog) if "run again" in m or "runs again" in m]


def test_a_job_being_settled_keeps_its_lease(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """While its acknowledgement fails, the heartbeat keeps the job's lease: no other worker
    can claim it, however long the outage lasts within the lease."""
    job_id = store.queue("work").enqueue({})
    thief = JobQueue(store, "work", worker_id="thief")
    stolen: list[Job] = []
    polls = [0]
    stop_polling = threading.Event()

    def poll() -> None:
        while not stop_polling.wait(0.05):
            polls[0] += 1
            job = thief.dequeue()
            if job is not None:
                stolen.append(job)

    calls = _outage(monkeypatch, "acknowledge", for_seconds=2.0)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        run_worker(
            store, "work", lambda job: None, lease_seconds=0.6, max_jobs=1, poll_interval=0.05
        )
    finally:
        stop_polling.set()
        poller.join(10)
    assert calls[-1] == "ok" and calls.count("failed") >= 5  # the outage outlasted 3 leases
    assert polls[0] > 10 and stolen == []
    assert store.queue("work").get(job_id).status is JobStatus.DONE


def test_a_failure_whose_answer_was_lost_is_not_reported_as_a_lost_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = store.queue("work").enqueue({})
    calls = _outage(monkeypatch, "fail", failures=1, lands=True)
    caplog.set_level(logging.INFO, logger="flowstore")

    def handler(job: Job) -> None:
        raise RuntimeError("no capacity")

    run_worker(store, "work", handler, max_jobs=1, poll_interval=0.05)
    assert calls[0] == "landed"
    job = store.queue("work").get(job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
    assert job.last_error is not None and "no capacity" in job.last_error
    assert not [m for m in _worker_says(caplog) if "lost" in m]
    assert [m for m in _worker_says(caplog, logging.INFO) if "answer was lost had landed" in m]


def test_acknowledgements_whose_answers_are_all_lost_are_found_done(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every answer is lost until the lease ends; reading the job back shows it done under
    this claim, which is what the worker says (it used to say "it will run again")."""
    job_id = store.queue("work").enqueue({})
    calls = _outage(monkeypatch, "acknowledge", lands=True)
    caplog.set_level(logging.INFO, logger="flowstore")
    run_worker(store, "work", lambda job: None, lease_seconds=1, max_jobs=1, poll_interval=0.05)
    assert set(calls) == {"landed"} and len(calls) >= 2
    job = store.queue("work").get(job_id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)
    assert not _worker_says(caplog, logging.ERROR)
    assert not [m for m in _worker_says(caplog) if "again" in m]
    done = [m for m in _worker_says(caplog, logging.INFO) if str(job_id) in m and "landed" in m]
    assert len(done) == 1 and "acknowledged" in done[0]


def test_a_stalled_worker_does_not_start_a_job_whose_lease_ran_out_in_its_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its heartbeats cannot reach the database while the first job of a batch of two runs
    past the lease; another worker claims both meanwhile. The stalled worker's acknowledgement
    of the first is refused, and it leaves the second alone."""
    queue = store.queue("work")
    first_id = queue.enqueue({"n": 1}, priority=1)
    second_id = queue.enqueue({"n": 2})
    _outage(monkeypatch, "heartbeat", thread="flowstore-heartbeat")
    thief = JobQueue(store, "work", worker_id="thief")
    handled: list[int] = []
    caplog.set_level(logging.INFO, logger="flowstore")

    def handler(job: Job) -> None:
        handled.append(job.payload["n"])
        if job.payload["n"] == 1:
            threading.Event().wait(1.0)  # past the 0.5 s lease of both jobs
            assert {j.id for j in thief.dequeue_many(2)} == {first_id, second_id}

    processed = run_worker(
        store, "work", handler, batch=2, max_jobs=2, lease_seconds=0.5, poll_interval=0.05
    )
    assert handled == [1] and processed == 1
    for job_id in (first_id, second_id):
        job = queue.get(job_id)
        assert (job.status, job.locked_by, job.attempts) == (JobStatus.RUNNING, "thief", 2)
    refused = [m for m in _worker_says(caplog) if str(first_id) in m and "lost" in m]
    assert len(refused) == 1 and "ran, but its lease was lost" in refused[0]
    skipped = [m for m in _worker_says(caplog) if str(second_id) in m and "heartbeat" not in m]
    assert len(skipped) == 1 and "not started" in skipped[0]
