"""The job queue on every backend: the contract, claim order, leases, retries, transactions.

Time is a ``Clock`` the test moves by hand, so leases and backoffs run out without sleeping.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, update

from flowstore import (
    ConcurrencyError,
    InvalidInputError,
    NotFoundError,
    Store,
)
from flowstore.models import Deployment, Job, JobStatus
from flowstore.queue import JobQueue, LostClaimError
from flowstore.worker import resolve_handler, run_worker


class Clock:
    """A hand-driven UTC clock for queues."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_queue(store: Store, clock: Clock, name: str = "q", **options: Any) -> JobQueue:
    return JobQueue(store, name, clock=clock, **options)


# -- the contract ------------------------------------------------------------------------------


def test_enqueue_then_get_returns_the_queued_job(store: Store) -> None:
    queue = store.queue("emails")
    job_id = queue.enqueue({"to": "ada@example.com", "n": [1, 2]}, max_attempts=3)

    job = queue.get(job_id)

    assert isinstance(job_id, uuid.UUID)
    assert (job.id, job.queue, job.payload) == (
        job_id,
        "emails",
        {"to": "ada@example.com", "n": [1, 2]},
    )
    assert job.status is JobStatus.QUEUED
    assert (job.attempts, job.max_attempts, job.last_error) == (0, 3, None)
    for moment in (job.run_at, job.created_at, job.updated_at):
        assert moment.utcoffset() == timedelta(0)


def test_dequeue_claims_the_job_for_a_lease(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock, lease_seconds=30)
    job_id = queue.enqueue({"k": "v"})

    job = queue.dequeue()

    assert job is not None
    assert (job.id, job.status, job.attempts, job.payload) == (
        job_id,
        JobStatus.RUNNING,
        1,
        {"k": "v"},
    )
    assert job.claim_token is not None
    assert job.lease_expires_at == clock.now + timedelta(seconds=30)
    assert queue.dequeue() is None  # the only job is held
    assert queue.get(job_id).status is JobStatus.RUNNING


def test_acknowledge_marks_the_job_done(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    job_id = queue.enqueue({})
    claimed = queue.dequeue()
    assert claimed is not None

    assert queue.acknowledge(job_id) is True

    done = queue.get(job_id)
    assert done.status is JobStatus.DONE
    assert done.finished_at == clock.now
    assert done.lease_expires_at is None
    assert queue.acknowledge(claimed) is True  # again, under the same claim: nothing to do
    assert queue.dequeue() is None


def test_store_queue_and_unit_of_work_queue_are_job_queues(store: Store) -> None:
    assert isinstance(store.queue("a"), JobQueue)
    assert store.queue("a", lease_seconds=5).lease_seconds == 5
    with store.unit_of_work() as uow:
        assert isinstance(uow.queue("a"), JobQueue)


def test_queues_are_separate(store: Store) -> None:
    mail, sms = store.queue("mail"), store.queue("sms")
    mail_id = mail.enqueue({"via": "mail"})

    assert sms.dequeue() is None
    job = mail.dequeue()
    assert job is not None and job.id == mail_id


def test_counts_by_status(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    for n in range(3):
        queue.enqueue({"n": n})
    held = queue.dequeue()
    assert held is not None
    queue.acknowledge(held)
    queue.dequeue()

    assert queue.counts() == {
        JobStatus.QUEUED: 1,
        JobStatus.RUNNING: 1,
        JobStatus.DONE: 1,
        JobStatus.DEAD: 0,
        JobStatus.CANCELLED: 0,
    }


# -- order and scheduling ----------------------------------------------------------------------


def test_highest_priority_first_then_oldest_due(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    queue.enqueue({"name": "low"}, priority=-1)
    queue.enqueue({"name": "newer"}, run_at=clock.now - timedelta(minutes=1))
    queue.enqueue({"name": "older"}, run_at=clock.now - timedelta(minutes=2))
    queue.enqueue({"name": "urgent"}, priority=10)

    order = []
    while (job := queue.dequeue()) is not None:
        order.append(job.payload["name"])

    assert order == ["urgent", "older", "newer", "low"]


def test_dequeue_many_claims_up_to_n_in_claim_order(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    for n in range(5):
        queue.enqueue({"n": n}, priority=n % 2, run_at=clock.now - timedelta(seconds=10 - n))

    first = queue.dequeue_many(3)
    rest = queue.dequeue_many(10)

    assert [job.payload["n"] for job in first] == [1, 3, 0]
    assert [job.payload["n"] for job in rest] == [2, 4]
    assert {job.status for job in first + rest} == {JobStatus.RUNNING}
    assert len({job.claim_token for job in first} | {job.claim_token for job in rest}) == 2
    assert queue.dequeue_many(0) == []


def test_a_job_is_not_claimed_before_its_run_at(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    job_id = queue.enqueue({}, run_at=clock.now + timedelta(minutes=5))
    delayed_id = queue.enqueue({}, run_at=timedelta(minutes=10))

    assert queue.dequeue() is None
    clock.advance(minutes=5)
    job = queue.dequeue()
    assert job is not None and job.id == job_id
    assert queue.get(delayed_id).run_at == clock.now + timedelta(minutes=5)


def test_run_at_in_another_timezone_is_stored_as_utc(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    plus_two = datetime(2030, 1, 1, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    job_id = queue.enqueue({}, run_at=plus_two)

    assert queue.get(job_id).run_at == datetime(2030, 1, 1, 14, 0, tzinfo=UTC)
    assert queue.get(job_id).run_at.tzinfo is not None


# -- failures, retries and dead jobs ----------------------------------------------------------


def test_fail_retries_with_exponential_backoff_then_the_job_is_dead(
    store: Store, clock: Clock
) -> None:
    queue = make_queue(store, clock, backoff_base=10)
    job_id = queue.enqueue({}, max_attempts=3)

    waits = []
    for attempt in (1, 2):
        job = queue.dequeue()
        assert job is not None and job.attempts == attempt
        assert queue.fail(job_id, f"boom {attempt}") is JobStatus.QUEUED
        retried = queue.get(job_id)
        assert (retried.status, retried.last_error) == (JobStatus.QUEUED, f"boom {attempt}")
        waits.append(retried.run_at - clock.now)
        assert queue.dequeue() is None  # backing off
        clock.advance(seconds=waits[-1].total_seconds())

    last = queue.dequeue()
    assert last is not None and last.attempts == 3
    assert queue.fail(last, ValueError("for good")) is JobStatus.DEAD

    dead = queue.get(job_id)
    assert waits == [timedelta(seconds=10), timedelta(seconds=20)]
    assert (dead.status, dead.attempts, dead.last_error) == (
        JobStatus.DEAD,
        3,
        "ValueError: for good",
    )
    assert dead.finished_at == clock.now
    clock.advance(days=1)
    assert queue.dequeue() is None  # dead jobs stay dead, and stay


def test_fail_without_retry_kills_the_job_at_once(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    job_id = queue.enqueue({}, max_attempts=5)
    assert queue.dequeue() is not None

    assert queue.fail(job_id, "bad payload", retry=False) is JobStatus.DEAD
    assert (queue.get(job_id).status, queue.get(job_id).attempts) == (JobStatus.DEAD, 1)


def test_backoff_is_capped(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock, backoff_base=1, backoff_max=60)
    assert queue.core.backoff(1) == timedelta(seconds=1)
    assert queue.core.backoff(4) == timedelta(seconds=8)
    assert queue.core.backoff(30) == timedelta(seconds=60)


def test_long_errors_keep_their_end(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    job_id = queue.enqueue({}, max_attempts=1)
    assert queue.dequeue() is not None

    queue.fail(job_id, "x" * 20_000 + "the cause")

    error = queue.get(job_id).last_error
    assert error is not None and error.endswith("the cause") and len(error) < 20_000


# -- leases ------------------------------------------------------------------------------------


def test_a_job_whose_lease_ran_out_is_claimed_again_with_attempts_counted(
    store: Store, clock: Clock
) -> None:
    first_worker = make_queue(store, clock, lease_seconds=30)
    second_worker = make_queue(store, clock, lease_seconds=30)
    job_id = first_worker.enqueue({"n": 1})
    first = first_worker.dequeue()
    assert first is not None

    clock.advance(seconds=29)
    assert second_worker.dequeue() is None
    clock.advance(seconds=1)
    second = second_worker.dequeue()

    assert second is not None and second.id == job_id
    assert second.attempts == 2
    assert second.claim_token != first.claim_token


def test_expired_leases_come_back_in_the_order_they_ran_out(store: Store, clock: Clock) -> None:
    """Jobs whose lease ran out come back first-expired first (the jobs of one claim, which
    share a lease end, in their claim order), a claim's worth at a time; each candidate then
    competes with the queued jobs by claim order (priority, then oldest due)."""
    crashed = make_queue(store, clock, lease_seconds=60)
    crashed.enqueue({"name": "a"}, priority=0)
    assert crashed.dequeue() is not None  # a's lease ends first
    clock.advance(seconds=10)
    crashed.enqueue({"name": "c"}, priority=1)
    crashed.enqueue({"name": "b"}, priority=5)
    assert len(crashed.dequeue_many(2)) == 2  # b and c: one lease end, 10 s after a's
    crashed.enqueue({"name": "queued"}, priority=3)
    clock.advance(seconds=61)  # every lease has run out

    other = make_queue(store, clock)
    order = []
    while (job := other.dequeue()) is not None:
        order.append((job.payload["name"], job.attempts))

    # first claim: a (first expired) against the queued job, which has the higher priority
    assert order == [("queued", 1), ("a", 2), ("b", 2), ("c", 2)]


def test_on_sqlite_the_claim_reads_expired_leases_off_their_index(store: Store) -> None:
    """However many jobs are in flight, a claim reads only the entries of expired leases:
    the lease arm is a range of ix_jobs_lease, not a filtered walk of the running jobs."""
    if store.dialect != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL's plan: test_query_plans.py")
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("WITH"):
            sent.append((statement, parameters))

    queue = store.queue("plans")
    queue.enqueue({})
    event.listen(store.engine, "before_cursor_execute", record)
    try:
        queue.dequeue()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    [(statement, parameters)] = sent
    with store.engine.connect() as conn:
        plan = " | ".join(
            row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        )
    assert "ix_jobs_lease (queue=? AND status=? AND lease_expires_at<?)" in plan, plan
    assert "ix_jobs_claim (queue=? AND status=?)" in plan, plan
    # the lease arm comes off the index in its order: it stops at its limit, no sort
    lease_arm = plan.split("ix_jobs_lease", 1)[1].split("| SCAN", 1)[0]
    assert "TEMP B-TREE" not in lease_arm, plan


def test_a_stale_acknowledge_does_not_finish_the_new_run(store: Store, clock: Clock) -> None:
    first_worker = make_queue(store, clock, lease_seconds=10)
    second_worker = make_queue(store, clock, lease_seconds=10)
    job_id = first_worker.enqueue({})
    stale = first_worker.dequeue()
    assert stale is not None
    clock.advance(seconds=11)
    current = second_worker.dequeue()
    assert current is not None

    # a lost lease is reported, not raised, and leaves the other worker's run alone
    assert first_worker.acknowledge(job_id) is False  # by id: this queue remembers its claim
    assert first_worker.acknowledge(stale) is False
    assert first_worker.fail(stale, "late failure") is JobStatus.RUNNING
    with pytest.raises(ConcurrencyError):
        first_worker.heartbeat(stale)  # a worker must stop working on a job it lost
    with pytest.raises(LostClaimError):
        first_worker.release(stale)
    assert first_worker.acknowledge(job_id) is False  # again: the lost claim is remembered

    still = second_worker.get(job_id)
    assert (still.status, still.claim_token, still.last_error) == (
        JobStatus.RUNNING,
        current.claim_token,
        None,
    )
    assert second_worker.acknowledge(job_id) is True
    assert second_worker.get(job_id).status is JobStatus.DONE


def test_a_stale_acknowledge_many_settles_only_the_jobs_still_held(
    store: Store, clock: Clock
) -> None:
    worker = make_queue(store, clock, lease_seconds=10)
    other = make_queue(store, clock, lease_seconds=10)
    lost_id = worker.enqueue({"n": 1}, priority=1)
    kept_id = worker.enqueue({"n": 2})
    lost = worker.dequeue()
    clock.advance(seconds=11)
    assert other.dequeue() is not None  # takes over the expired job
    kept = worker.dequeue()
    assert lost is not None and kept is not None

    assert worker.acknowledge_many([lost, kept]) == 1

    assert worker.get(kept_id).status is JobStatus.DONE
    assert worker.get(lost_id).status is JobStatus.RUNNING


def test_acknowledge_by_id_from_another_queue_object_trusts_the_current_claim(
    store: Store, clock: Clock
) -> None:
    job_id = make_queue(store, clock).enqueue({})
    assert make_queue(store, clock).dequeue() is not None

    make_queue(store, clock).acknowledge(str(job_id))

    assert store.queue("q").get(job_id).status is JobStatus.DONE


def test_acknowledging_a_job_that_was_never_claimed_is_refused(store: Store) -> None:
    queue = store.queue("q")
    job_id = queue.enqueue({})

    assert queue.acknowledge(job_id) is False
    assert queue.get(job_id).status is JobStatus.QUEUED


def test_heartbeat_extends_the_lease(store: Store, clock: Clock) -> None:
    worker = make_queue(store, clock, lease_seconds=10)
    other = make_queue(store, clock, lease_seconds=10)
    job_id = worker.enqueue({})
    job = worker.dequeue()
    assert job is not None

    clock.advance(seconds=8)
    until = worker.heartbeat(job)
    clock.advance(seconds=8)  # past the first lease, within the extended one

    assert until == clock.now + timedelta(seconds=2)
    assert other.dequeue() is None
    assert worker.extend_lease(job_id, lease_seconds=60) == clock.now + timedelta(seconds=60)
    clock.advance(seconds=61)
    again = other.dequeue()
    assert again is not None and again.attempts == 2


def test_a_lease_that_runs_out_on_the_last_attempt_makes_the_job_dead(
    store: Store, clock: Clock
) -> None:
    queue = make_queue(store, clock, lease_seconds=5)
    job_id = queue.enqueue({}, max_attempts=1)
    assert queue.dequeue() is not None
    clock.advance(seconds=6)

    assert queue.dequeue() is None

    dead = queue.get(job_id)
    assert (dead.status, dead.attempts) == (JobStatus.DEAD, 1)
    assert dead.last_error is not None and "lease" in dead.last_error


def test_release_gives_a_job_back_without_counting_the_attempt(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock)
    job_id = queue.enqueue({})
    job = queue.dequeue()
    assert job is not None

    queue.release(job)

    released = queue.get(job_id)
    assert (released.status, released.attempts, released.claim_token) == (
        JobStatus.QUEUED,
        0,
        None,
    )
    again = queue.dequeue()
    assert again is not None and again.attempts == 1


# -- transactions ------------------------------------------------------------------------------


def test_enqueue_in_a_unit_of_work_commits_with_it(store: Store) -> None:
    with store.unit_of_work() as uow:
        deployment = uow.deployments.add(Deployment(name="api", version="1.0.0"))
        job_id = uow.queue("rollouts").enqueue({"deployment": str(deployment.id)})
        if not store.is_memory:  # another connection does not see it before the commit
            assert store.queue("rollouts").counts()[JobStatus.QUEUED] == 0

    job = store.queue("rollouts").get(job_id)
    assert job.payload == {"deployment": str(deployment.id)}
    with store.unit_of_work() as uow:
        assert uow.deployments.exists(deployment.id)


def test_enqueue_in_a_unit_of_work_rolls_back_with_it(store: Store) -> None:
    job_ids = []
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="api", version="1.0.0"))
        job_ids.append(uow.queue("rollouts").enqueue({"n": 1}))
        raise RuntimeError("the service failed after enqueueing")

    with pytest.raises(NotFoundError):
        store.queue("rollouts").get(job_ids[0])
    assert store.queue("rollouts").dequeue() is None
    with store.unit_of_work() as uow:
        assert uow.deployments.count() == 0


def test_claim_and_acknowledge_in_a_unit_of_work(store: Store) -> None:
    job_id = store.queue("q").enqueue({})
    with store.unit_of_work() as uow:
        queue = uow.queue("q")
        job = queue.dequeue()
        assert job is not None and job.id == job_id
        queue.acknowledge(job)
        assert queue.get(job_id).status is JobStatus.DONE

    assert store.queue("q").get(job_id).status is JobStatus.DONE


def test_a_claim_in_a_rolled_back_unit_of_work_is_undone(store: Store) -> None:
    job_id = store.queue("q").enqueue({})
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        assert uow.queue("q").dequeue() is not None
        raise RuntimeError

    job = store.queue("q").get(job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


# -- purge -------------------------------------------------------------------------------------


def test_purge_deletes_old_finished_jobs_only(store: Store, clock: Clock) -> None:
    queue = make_queue(store, clock, lease_seconds=30 * 86400)
    other_queue = make_queue(store, clock, "other")
    old_done = queue.enqueue({}, priority=3)
    old_dead = queue.enqueue({}, priority=2, max_attempts=1)
    running = queue.enqueue({}, priority=1)
    first, second, third = queue.dequeue_many(3)
    queue.acknowledge(first)
    queue.fail(second, "boom")
    waiting = queue.enqueue({})
    foreign = other_queue.enqueue({})
    other_queue.acknowledge_many(other_queue.dequeue_many(1))
    clock.advance(days=8)
    recent = queue.enqueue({}, priority=10)
    queue.acknowledge_many(queue.dequeue_many(1))

    assert queue.purge(older_than=timedelta(days=7), include_dead=False) == 1
    assert queue.purge(older_than=clock.now - timedelta(days=7), batch_size=1) == 1

    assert (first.id, second.id, third.id) == (old_done, old_dead, running)
    for gone in (old_done, old_dead):
        with pytest.raises(NotFoundError):
            queue.get(gone)
    assert queue.get(running).status is JobStatus.RUNNING
    assert queue.get(waiting).status is JobStatus.QUEUED
    assert queue.get(recent).status is JobStatus.DONE
    assert other_queue.get(foreign).status is JobStatus.DONE


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"when": datetime.now(UTC)}, {"x": object()}, {"nan": math.nan}, {"s": {1, 2}}, ["a"], "x"],
    ids=["datetime", "object", "nan", "set", "list", "str"],
)
def test_a_payload_that_is_not_a_json_object_is_invalid(store: Store, payload: Any) -> None:
    queue = store.queue("q")
    with pytest.raises(InvalidInputError):
        queue.enqueue(payload)
    assert queue.counts()[JobStatus.QUEUED] == 0


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 2.5},
        {"priority": "high"},
        {"priority": True},
        {"priority": 2**40},
        {"run_at": datetime(2030, 1, 1)},  # naive
        {"run_at": "2030-01-01"},
    ],
    ids=str,
)
def test_bad_enqueue_options_are_invalid(store: Store, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        store.queue("q").enqueue({}, **options)


def test_unknown_job_ids_are_not_found(store: Store) -> None:
    queue = store.queue("q")
    for unknown in (uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFoundError):
            queue.get(unknown)
        with pytest.raises(NotFoundError):
            queue.acknowledge(unknown)
        with pytest.raises(NotFoundError):
            queue.fail(unknown, "boom")
        with pytest.raises(NotFoundError):
            queue.heartbeat(unknown)
    with pytest.raises(NotFoundError):
        queue.acknowledge_many([uuid.uuid4()])


@pytest.mark.parametrize(
    "make",
    [
        lambda store: store.queue(""),
        lambda store: store.queue("x" * 101),
        lambda store: store.queue("q", lease_seconds=-1),
        lambda store: store.queue("q").dequeue_many(-1),
        lambda store: store.queue("q").purge(older_than=timedelta(days=-1)),
        lambda store: store.queue("q").purge(older_than=datetime(2020, 1, 1)),
        lambda store: store.queue("q").purge(older_than=timedelta(0), batch_size=0),
    ],
    ids=["empty name", "long name", "lease", "n", "negative age", "naive cutoff", "batch size"],
)
def test_bad_queue_arguments_are_invalid(store: Store, make: Any) -> None:
    with pytest.raises(InvalidInputError):
        make(store)


def test_fail_wants_a_message_or_an_exception(store: Store) -> None:
    queue = store.queue("q")
    queue.enqueue({})
    job = queue.dequeue()
    assert job is not None
    with pytest.raises(InvalidInputError):
        queue.fail(job, 42)  # type: ignore[arg-type]
    assert queue.get(job.id).status is JobStatus.RUNNING


def test_a_job_edited_behind_the_queue_is_read_fresh(store: Store) -> None:
    queue = store.queue("q")
    job_id = queue.enqueue({})
    with store.unit_of_work() as uow:
        assert uow.queue("q").get(job_id).priority == 0
        uow.session.execute(update(Job).where(Job.id == job_id).values(priority=7))
        assert uow.queue("q").get(job_id).priority == 7


# -- the worker, in this process ---------------------------------------------------------------


def test_run_worker_acknowledges_and_fails_jobs_until_empty(store: Store) -> None:
    queue = store.queue("work")
    ok_ids = queue.enqueue_many([{"n": n} for n in range(6)])
    bad_id = queue.enqueue({"n": "bad"}, max_attempts=1)
    seen: list[Any] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        if job.payload["n"] == "bad":
            raise ValueError("cannot do this one")
        with lock:
            seen.append(job.payload["n"])

    processed = run_worker(
        store, "work", handler, concurrency=2, batch=2, poll_interval=0.05, until_empty=True
    )

    assert processed == 7
    assert sorted(seen) == list(range(6))
    assert {queue.get(job_id).status for job_id in ok_ids} == {JobStatus.DONE}
    dead = queue.get(bad_id)
    assert dead.status is JobStatus.DEAD
    assert dead.last_error is not None
    assert "ValueError: cannot do this one" in dead.last_error
    assert "Traceback" in dead.last_error


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_a_lease_lost_during_a_run_is_logged_once_and_leaves_the_new_run_alone(
    store: Store, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler outlives its lease and another worker claims the job: settling it must not
    touch the other run, and the loss is one warning (the worker's), not one per layer."""
    job_id = store.queue("work").enqueue({})
    later = datetime.now(UTC) + timedelta(hours=1)  # past the worker's 30 s lease
    thief = JobQueue(store, "work", clock=lambda: later, worker_id="thief")

    def handler(job: Job) -> None:
        stolen = thief.dequeue()
        assert stolen is not None and stolen.id == job.id
        if outcome == "failed":
            raise RuntimeError("too slow")

    caplog.set_level(logging.INFO, logger="flowstore")
    processed = run_worker(store, "work", handler, max_jobs=1, poll_interval=0.05)

    assert processed == 1
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert lost[0].name == "flowstore.worker" and lost[0].levelno == logging.WARNING
    assert str(job_id) in lost[0].getMessage()
    job = store.queue("work").get(job_id)
    assert job.status is JobStatus.RUNNING and job.locked_by == "thief"
    assert thief.acknowledge(job_id)  # the new run settles as usual


def test_a_stopped_worker_finishes_its_job_and_releases_the_rest_of_its_batch(
    store: Store,
) -> None:
    queue = store.queue("work")
    queue.enqueue_many([{"n": n} for n in range(5)])
    stop = threading.Event()
    handled: list[int] = []

    def handler(job: Job) -> None:
        handled.append(job.payload["n"])
        stop.set()  # as a SIGTERM would, while this job is in hand

    processed = run_worker(store, "work", handler, batch=3, stop_event=stop, poll_interval=0.05)

    counts = queue.counts()
    assert processed == 1 and len(handled) == 1
    assert counts == {
        JobStatus.QUEUED: 4,
        JobStatus.RUNNING: 0,
        JobStatus.DONE: 1,
        JobStatus.DEAD: 0,
        JobStatus.CANCELLED: 0,
    }
    assert {job.attempts for job in queue.dequeue_many(10)} == {1}  # released: not counted


def test_the_worker_heartbeats_a_long_job(store: Store) -> None:
    queue = store.queue("work")
    job_id = queue.enqueue({})
    extended: list[bool] = []

    def handler(job: Job) -> None:
        first_lease = job.lease_expires_at
        assert first_lease is not None
        observer = store.queue("work")
        deadline = threading.Event()
        for _ in range(400):  # until the heartbeat shows, at most ~20 s
            current = observer.get(job.id).lease_expires_at
            if current is not None and current > first_lease:
                extended.append(True)
                return
            deadline.wait(0.05)

    run_worker(store, "work", handler, lease_seconds=0.3, max_jobs=1, poll_interval=0.05)

    assert extended == [True]
    assert queue.get(job_id).status is JobStatus.DONE


def test_max_jobs_stops_the_worker(store: Store) -> None:
    queue = store.queue("work")
    queue.enqueue_many([{"n": n} for n in range(5)])

    assert run_worker(store, "work", lambda job: None, batch=2, max_jobs=3, poll_interval=0.05) == 3
    assert queue.counts()[JobStatus.DONE] == 3


@pytest.mark.parametrize(
    "reference",
    ["no_colon", "tests.queue_handlers:missing", "tests.no_such_module:f", ":f", 42],
)
def test_bad_handler_references_are_invalid(reference: Any) -> None:
    with pytest.raises(InvalidInputError):
        resolve_handler(reference)


def test_handler_reference_resolves() -> None:
    from tests import queue_handlers

    assert resolve_handler("tests.queue_handlers:record") is queue_handlers.record


def test_bad_worker_options_are_invalid(store: Store) -> None:
    bad: list[dict[str, Any]] = [
        {"concurrency": 0},
        {"batch": 0},
        {"lease_seconds": 0},
        {"max_jobs": -1},
    ]
    for options in bad:
        with pytest.raises(InvalidInputError):
            run_worker(store, "work", lambda job: None, **options)
