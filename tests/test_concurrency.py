"""Concurrency with real threads: no lost update under the optimistic version check, deadlocks,
serialization failures and lock timeouts surface as ``TransactionFailedError``, and
``Store.run_in_transaction`` re-runs a unit of work on those a bounded number of times.

Interleavings are forced with events, so outcomes do not depend on timing; a thread that
waits too long fails its test instead of hanging the suite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from flowstore import (
    ConcurrencyError,
    FlowstoreError,
    NotFoundError,
    Store,
    TransactionFailedError,
    UnitOfWork,
)
from flowstore.models import Template
from tests.backends import SERVER_BACKENDS
from tests.conftest import BACKENDS

WAIT = 30  # seconds a thread waits for its partner before giving up (a hang guard)
SERVERS = [b for b in BACKENDS if b in SERVER_BACKENDS]
SEPARATE_CONNECTIONS = [b for b in BACKENDS if b != "sqlite"]  # memory: one shared connection


def _new_template(store: Store, name: str = "counter", max_number: int = 0) -> Any:
    with store.unit_of_work() as uow:
        return uow.templates.add(
            Template(name=name, provider_type="aws", max_number=max_number, attributes={})
        ).id


def _max_number(store: Store, template_id: Any) -> int:
    with store.unit_of_work() as uow:
        return uow.templates.get(template_id).max_number


def _increment(template_id: Any) -> Callable[[UnitOfWork], None]:
    def work(uow: UnitOfWork) -> None:
        template = uow.templates.get(template_id)
        template.max_number += 1

    return work


def _run_threads(*targets: Callable[[], None]) -> list[BaseException | None]:
    """Run each target in its own thread; return what each raised (``None``: it returned)."""
    outcomes: list[BaseException | None] = [None] * len(targets)

    def runner(index: int, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            outcomes[index] = exc

    threads = [
        threading.Thread(target=runner, args=(i, t), daemon=True) for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return outcomes


def _wait(event: threading.Event) -> None:
    if not event.wait(WAIT):
        raise AssertionError("the other thread never reached its step")


@pytest.fixture
def isolated_store(store: Store) -> Iterator[Callable[..., Store]]:
    """Make extra stores on the same database (other engine options); closed afterwards."""
    made: list[Store] = []

    def make(**engine_options: Any) -> Store:
        extra = Store(store.url, settings=store.settings, **engine_options)
        made.append(extra)
        return extra

    yield make
    for extra in made:
        extra.close()


# -- no lost update -----------------------------------------------------------------------------


def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    threads, increments = 4, 5
    template_id = _new_template(store)

    def worker() -> None:
        for _ in range(increments):
            store.run_in_transaction(_increment(template_id), attempts=200, backoff=0.002)

    outcomes = _run_threads(*[worker] * threads)
    assert outcomes == [None] * threads
    assert _max_number(store, template_id) == threads * increments


@pytest.mark.parametrize("backend", SEPARATE_CONNECTIONS, indirect=True)
def test_a_write_based_on_a_stale_read_is_refused(store: Store) -> None:
    """A reads, B updates and commits, A writes: A's unit of work fails instead of silently
    overwriting B (ConcurrencyError from the version check; SQLite refuses the stale snapshot
    with "database is locked", a TransactionFailedError)."""
    template_id = _new_template(store)
    a_read, b_done = threading.Event(), threading.Event()

    def writer_a() -> None:
        with store.unit_of_work() as uow:
            template = uow.templates.get(template_id)
            a_read.set()
            _wait(b_done)
            template.max_number = 100

    def writer_b() -> None:
        _wait(a_read)
        try:
            store.run_in_transaction(_increment(template_id))
        finally:
            b_done.set()

    outcome_a, outcome_b = _run_threads(writer_a, writer_b)
    assert outcome_b is None
    expected = TransactionFailedError if store.dialect == "sqlite" else ConcurrencyError
    assert isinstance(outcome_a, expected), repr(outcome_a)
    assert _max_number(store, template_id) == 1


@pytest.mark.parametrize("backend", SEPARATE_CONNECTIONS, indirect=True)
def test_run_in_transaction_re_runs_the_stale_writer(store: Store) -> None:
    template_id = _new_template(store)
    a_read, b_done = threading.Event(), threading.Event()
    calls_a: list[int] = []

    def work_a(uow: UnitOfWork) -> None:
        calls_a.append(1)
        template = uow.templates.get(template_id)
        if len(calls_a) == 1:
            a_read.set()
            _wait(b_done)
        template.max_number += 1

    def writer_b() -> None:
        _wait(a_read)
        try:
            store.run_in_transaction(_increment(template_id))
        finally:
            b_done.set()

    outcomes = _run_threads(lambda: store.run_in_transaction(work_a, backoff=0), writer_b)
    assert outcomes == [None, None]
    assert len(calls_a) == 2
    assert _max_number(store, template_id) == 2


# -- deadlocks, serialization failures, lock timeouts (servers) --------------------------------


def _lock_both(
    store: Store, first: Any, second: Any, mine: threading.Event, theirs: threading.Event
) -> Callable[[UnitOfWork], None]:
    """Work that updates ``first``, waits until the partner holds ``second``, then updates it."""

    def work(uow: UnitOfWork) -> None:
        row = uow.templates.get(first)
        row.max_number += 1
        uow.templates.update(row)  # flushed: the row lock is held from here on
        if not mine.is_set():
            mine.set()
            _wait(theirs)
        other = uow.templates.get(second)
        other.max_number += 1
        uow.templates.update(other)

    return work


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_deadlock_is_transaction_failed(store: Store) -> None:
    one, two = _new_template(store, "one"), _new_template(store, "two")
    a_locked, b_locked = threading.Event(), threading.Event()

    def run(work: Callable[[UnitOfWork], None]) -> Callable[[], None]:
        def target() -> None:
            with store.unit_of_work() as uow:
                work(uow)

        return target

    outcomes = _run_threads(
        run(_lock_both(store, one, two, a_locked, b_locked)),
        run(_lock_both(store, two, one, b_locked, a_locked)),
    )
    failures = [o for o in outcomes if o is not None]
    assert len(failures) == 1, outcomes  # the server picks one victim; the other commits
    (victim,) = failures
    assert isinstance(victim, TransactionFailedError), repr(victim)
    assert isinstance(victim.__cause__, sa_exc.DBAPIError)
    assert "deadlock" in str(victim).lower()
    assert (_max_number(store, one), _max_number(store, two)) == (1, 1)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_run_in_transaction_recovers_from_a_deadlock(store: Store) -> None:
    one, two = _new_template(store, "one"), _new_template(store, "two")
    a_locked, b_locked = threading.Event(), threading.Event()
    calls: list[str] = []

    def counted(name: str, work: Callable[[UnitOfWork], None]) -> Callable[[], None]:
        def run(uow: UnitOfWork) -> None:
            calls.append(name)
            work(uow)

        return lambda: store.run_in_transaction(run, attempts=3, backoff=0)

    outcomes = _run_threads(
        counted("a", _lock_both(store, one, two, a_locked, b_locked)),
        counted("b", _lock_both(store, two, one, b_locked, a_locked)),
    )
    assert outcomes == [None, None]
    # The survivor ran once; the victim re-ran (a second time too when its re-run read the row
    # before the survivor committed: that stale write is a ConcurrencyError, retried as well).
    runs = sorted(calls.count(name) for name in "ab")
    assert runs[0] == 1 and runs[1] in (2, 3), calls
    assert (_max_number(store, one), _max_number(store, two)) == (2, 2)


@pytest.mark.parametrize("backend", [b for b in SERVERS if b == "postgresql"], indirect=True)
def test_a_repeatable_read_conflict_is_transaction_failed(
    store: Store, isolated_store: Callable[..., Store]
) -> None:
    """Under REPEATABLE READ, updating a row another transaction changed since the snapshot is
    PostgreSQL's serialization failure (40001)."""
    snapshot_store = isolated_store(isolation_level="REPEATABLE READ")
    template_id = _new_template(store)
    a_read, b_done = threading.Event(), threading.Event()

    def reader_then_writer() -> None:
        with snapshot_store.unit_of_work() as uow:
            template = uow.templates.get(template_id)
            a_read.set()
            _wait(b_done)
            template.max_number += 10
            uow.templates.update(template)

    def writer() -> None:
        _wait(a_read)
        try:
            store.run_in_transaction(_increment(template_id))
        finally:
            b_done.set()

    outcome_a, outcome_b = _run_threads(reader_then_writer, writer)
    assert outcome_b is None
    assert isinstance(outcome_a, TransactionFailedError), repr(outcome_a)
    assert getattr(getattr(outcome_a.__cause__, "orig", None), "sqlstate", None) == "40001"
    assert _max_number(store, template_id) == 1


@pytest.mark.parametrize("backend", [b for b in SERVERS if b == "postgresql"], indirect=True)
def test_serializable_write_skew_is_transaction_failed(
    store: Store, isolated_store: Callable[..., Store]
) -> None:
    """Two SERIALIZABLE transactions each check that no "skew" template exists, then add one:
    PostgreSQL aborts one of them, and that is TransactionFailedError (at insert or commit)."""
    serializable = isolated_store(isolation_level="SERIALIZABLE")
    both_read = threading.Barrier(2, timeout=WAIT)

    def check_then_insert() -> None:
        with serializable.unit_of_work() as uow:
            assert uow.templates.count(provider_type="skew") == 0
            both_read.wait()
            uow.templates.add(Template(name="x", provider_type="skew", attributes={}))

    outcomes = _run_threads(check_then_insert, check_then_insert)
    failures = [o for o in outcomes if o is not None]
    assert failures, "both serializable transactions committed a write skew"
    assert all(isinstance(f, TransactionFailedError) for f in failures), outcomes
    with store.unit_of_work() as uow:
        assert uow.templates.count(provider_type="skew") == 2 - len(failures)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_lock_timeout_is_transaction_failed(
    store: Store, isolated_store: Callable[..., Store]
) -> None:
    waiting_store = isolated_store()
    template_id = _new_template(store)
    with store.unit_of_work() as holder:
        row = holder.templates.get(template_id)
        row.max_number = 5
        holder.templates.update(row)  # holds the row lock until this block ends
        with pytest.raises(TransactionFailedError) as caught:  # noqa: SIM117
            with waiting_store.unit_of_work() as waiter:
                if waiting_store.dialect == "postgresql":
                    waiter.session.execute(text("SET LOCAL lock_timeout = '100ms'"))
                else:
                    waiter.session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                blocked = waiter.templates.get(template_id)
                blocked.max_number = 7
                waiter.templates.update(blocked)
        assert isinstance(caught.value.__cause__, sa_exc.DBAPIError)
    assert _max_number(store, template_id) == 5


# -- the retry helper ---------------------------------------------------------------------------


@pytest.mark.parametrize("error_class", [ConcurrencyError, TransactionFailedError])
@pytest.mark.parametrize("attempts", [1, 3, 5])
def test_run_in_transaction_gives_up_after_the_bound_with_the_last_error(
    store: Store, error_class: type[FlowstoreError], attempts: int
) -> None:
    raised: list[FlowstoreError] = []

    def always_fails(uow: UnitOfWork) -> None:
        uow.templates.add(Template(name="lost", provider_type="aws", attributes={}))
        raised.append(error_class(f"attempt {len(raised) + 1}"))
        raise raised[-1]

    with pytest.raises(error_class) as caught:
        store.run_in_transaction(always_fails, attempts=attempts, backoff=0)
    assert len(raised) == attempts
    assert caught.value is raised[-1]
    with store.unit_of_work() as uow:
        assert uow.templates.count() == 0  # every failed attempt was rolled back


def test_run_in_transaction_returns_the_result_of_the_attempt_that_succeeds(store: Store) -> None:
    calls: list[int] = []

    def flaky(uow: UnitOfWork) -> str:
        calls.append(1)
        template = uow.templates.add(
            Template(name=f"try {len(calls)}", provider_type="aws", attributes={})
        )
        if len(calls) < 3:
            raise TransactionFailedError("simulated deadlock")
        return template.name

    assert store.run_in_transaction(flaky, attempts=3, backoff=0) == "try 3"
    assert len(calls) == 3
    with store.unit_of_work() as uow:
        assert [t.name for t in uow.templates.list()] == ["try 3"]


def test_run_in_transaction_does_not_retry_other_errors(store: Store) -> None:
    calls: list[int] = []

    def missing(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.templates.get("00000000-0000-7000-8000-000000000000")

    with pytest.raises(NotFoundError):
        store.run_in_transaction(missing, attempts=5, backoff=0)
    assert len(calls) == 1

    with pytest.raises(NotFoundError):
        store.run_in_transaction(missing, attempts=2, backoff=0, retry_on=(NotFoundError,))
    assert len(calls) == 3  # retry_on chooses what is retried
