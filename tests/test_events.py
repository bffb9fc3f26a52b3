"""Change events: what each write records, in the same transaction, and reading them in
commit order with no gaps, also while transactions overlap (every backend)."""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text, update

from flowstore import AlreadyExistsError, InvalidInputError, Store, TenantScopeError, where
from flowstore.events import writer
from flowstore.models import (
    EVENTS,
    Deployment,
    DeploymentStatus,
    Job,
    Organization,
    Policy,
    PolicyType,
    User,
)
from flowstore.models.types import utcnow


def types(store: Store, after: int | None = None) -> list[str]:
    return [e.type for e in store.events.read(after=after, limit=1000)]


def last(store: Store) -> int:
    return store.events.last_id() or 0


def test_each_kind_of_write_records_its_event(store: Store) -> None:
    with store.unit_of_work() as uow:
        d = uow.deployments.add(Deployment(name="api", version="1.0", config={"replicas": 2}))
    [created] = store.events.read()
    assert (created.type, created.entity_id) == ("deployment.created", str(d.id))
    assert created.data["new"]["name"] == "api" and created.data["new"]["config"] == {"replicas": 2}
    assert created.org_id is None and created.created_at.tzinfo is not None

    with store.unit_of_work() as uow:
        found = uow.deployments.get(d.id)
        found.status = DeploymentStatus.RUNNING
        found.config["replicas"] = 5  # in place: recorded as changed, its old value unknown
    [updated] = store.events.read(after=created.id)
    assert updated.type == "deployment.updated"
    assert sorted(updated.data["changed"]) == ["config", "status"]
    assert updated.data["old"] == {"status": "pending"}
    assert updated.data["new"] == {"status": "running", "config": {"replicas": 5}}

    with store.unit_of_work() as uow:
        uow.deployments.delete(d.id)
    [deleted] = store.events.read(after=updated.id)
    assert (deleted.type, deleted.entity_id) == ("deployment.deleted", str(d.id))
    assert deleted.data["old"]["status"] == "running"


def test_an_update_that_changes_nothing_records_nothing(store: Store) -> None:
    with store.unit_of_work() as uow:
        d = uow.deployments.add(Deployment(name="api", version="1.0"))
    start = last(store)
    with store.unit_of_work() as uow:
        uow.deployments.get(d.id).name = "api"
    assert types(store, start) == []


def test_bulk_paths_record_per_row(store: Store) -> None:
    with store.unit_of_work() as uow:
        made = uow.deployments.add_many(
            [
                Deployment(name=f"d{i}", version="1", status=DeploymentStatus.PENDING)
                for i in range(5)
            ]
        )
    events = store.events.read()
    assert [e.type for e in events] == ["deployment.created"] * 5
    assert [e.entity_id for e in events] == [str(d.id) for d in made]
    start = events[-1].id

    with store.unit_of_work() as uow:
        assert uow.deployments.update_many(where("name", "in", ["d1", "d2"]), version="2") == 2
    updates = store.events.read(after=start)
    assert {e.entity_id for e in updates} == {str(made[1].id), str(made[2].id)}
    assert all(e.type == "deployment.updated" for e in updates)
    assert all(
        e.data["changed"] == ["version"] and e.data["new"] == {"version": "2"} for e in updates
    )
    start = updates[-1].id

    with store.unit_of_work() as uow:
        assert uow.deployments.delete_many(name="d3") == 1
    [gone] = store.events.read(after=start)
    assert (gone.type, gone.entity_id, gone.data["old"]["name"]) == (
        "deployment.deleted",
        str(made[3].id),
        "d3",
    )


def test_upsert_records_created_then_updated(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.upsert(Organization(name="Acme", slug="acme"), on="slug")
    with store.unit_of_work() as uow:
        uow.organizations.upsert(Organization(name="Acme Corp", slug="acme"), on="slug")
    first, second = store.events.read()
    assert (first.type, first.entity_id) == ("organization.created", str(org.id))
    assert (second.type, second.entity_id) == ("organization.updated", str(org.id))
    assert second.data["changed"] == ["name"]
    assert (second.data["old"], second.data["new"]) == ({"name": "Acme"}, {"name": "Acme Corp"})
    assert first.org_id == second.org_id == org.id  # an organization is its own tenant


def test_deleting_an_organization_records_what_the_database_cascades(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
        app, _key = uow.applications.create_with_api_key(org.id, "gateway")
        user = uow.users.add(User(org_id=org.id, email="a@acme.test"))
        policy = uow.policies.add(
            Policy(org_id=org.id, application_id=app.id, policy_type=PolicyType.BUDGET, config={})
        )
    start = last(store)
    with store.unit_of_work() as uow:
        uow.organizations.delete(org.id)
    deleted = {(e.type, e.entity_id) for e in store.events.read(after=start)}
    assert deleted == {
        ("organization.deleted", str(org.id)),
        ("application.deleted", str(app.id)),
        ("user.deleted", str(user.id)),
        ("policy.deleted", str(policy.id)),
    }


def test_a_rollback_records_nothing_and_a_savepoint_rollback_only_its_own(store: Store) -> None:
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="never", version="1"))
        uow.events.publish("never.published", {})
        raise RuntimeError("abandon")
    assert types(store) == []

    with store.unit_of_work() as uow:
        uow.deployments.add(Deployment(name="kept", version="1"))
        with pytest.raises(RuntimeError), uow.savepoint():
            uow.deployments.add(Deployment(name="dropped", version="1"))
            uow.events.publish("dropped.too", {})
            raise RuntimeError("undo the savepoint")
        uow.events.publish("kept.too", {"n": 1})
    events = store.events.read()
    assert [e.type for e in events] == ["deployment.created", "kept.too"]
    assert events[0].data["new"]["name"] == "kept"


def test_a_failed_duplicate_add_leaves_the_other_events(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="A", slug="a"))
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="B", slug="b"))
        with pytest.raises(AlreadyExistsError):
            uow.organizations.add(Organization(name="A again", slug="a"))
    assert types(store) == ["organization.created", "organization.created"]


def test_secret_fields_never_leave_the_database(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
        app, _raw = uow.applications.create_with_api_key(org.id, "gateway")
    with store.unit_of_work() as uow:
        uow.applications.rotate_api_key(app.id)
        rotated = uow.applications.get(app.id).api_key_hash
    events = store.events.read()
    assert [e.type for e in events] == [
        "organization.created",
        "application.created",
        "application.updated",
    ]
    assert events[2].data == {"changed": ["api_key_hash"], "old": {}, "new": {}}
    hashes = {app.api_key_hash, rotated}
    with store.engine.connect() as conn:
        stored = " ".join(str(row) for row in conn.execute(text("SELECT data FROM events")))
    assert all(h and h not in stored for h in hashes)


def test_jobs_record_no_events(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.queue("work").enqueue({"n": 1})
        uow.session.add(Job(queue="work", payload={}))  # even through a flush
    store.queue("work").dequeue()
    assert types(store) == []


def test_published_domain_events(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
    start = last(store)
    with store.unit_of_work(org_id=org.id) as uow:
        uow.events.publish("invoice.sent", {"amount": "12.50"}, entity_id=42)
        with pytest.raises(TenantScopeError):
            uow.events.publish("invoice.sent", {}, org_id=uuid.uuid4())
    [sent] = store.events.read(after=start)
    assert (sent.type, sent.entity_id, sent.org_id, sent.data) == (
        "invoice.sent",
        "42",
        org.id,
        {"amount": "12.50"},
    )
    with store.unit_of_work() as uow:
        for bad in ("", 7, "x" * 300):
            with pytest.raises(InvalidInputError):
                uow.events.publish(bad, {})  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            uow.events.publish("ok", [1, 2])  # type: ignore[arg-type]


def test_read_checks_its_arguments(store: Store) -> None:
    bad: list[tuple[Any, Any]] = [(-1, 10), ("3", 10), (None, 0), (None, 10_001), (True, 5)]
    for after, limit in bad:
        with pytest.raises(InvalidInputError):
            store.events.read(after=after, limit=limit)


def test_read_pages_in_order(store: Store) -> None:
    with store.unit_of_work() as uow:
        for i in range(7):
            uow.events.publish("tick", {"i": i})
    seen: list[int] = []
    after = None
    while page := store.events.read(after=after, limit=3):
        seen += [e.data["i"] for e in page]
        after = page[-1].id
    assert seen == list(range(7))


def test_events_can_be_turned_off(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    off = Store(store.url, events=False)
    try:
        with off.unit_of_work() as uow:
            uow.organizations.add(Organization(name="Quiet", slug="quiet"))
            uow.events.publish("ignored", {})
        assert off.events.enabled is False
        assert types(store) == []
    finally:
        if not store.is_memory:
            off.close()
    monkeypatch.setenv("FLOWSTORE_EVENTS", "false")
    assert Store(store.url).events.enabled is False


def test_a_database_without_the_events_table_is_told_what_to_do(tmp_path: Any) -> None:
    with Store(f"sqlite:///{tmp_path / 'old.sqlite3'}") as old:
        old.upgrade("0007")
        with (
            pytest.raises(InvalidInputError, match="flowstore db upgrade"),
            old.unit_of_work() as uow,
        ):
            uow.organizations.add(Organization(name="A", slug="a"))


def test_prune_deletes_old_events_only(store: Store) -> None:
    with store.unit_of_work() as uow:
        for i in range(4):
            uow.events.publish("tick", {"i": i})
    ids = [e.id for e in store.events.read()]
    with store.engine.begin() as conn:
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(ids[:3]))
            .values(created_at=utcnow() - timedelta(days=40))
        )
    assert store.events.prune(timedelta(days=30)) == 3
    assert [e.id for e in store.events.read()] == ids[3:]
    with pytest.raises(InvalidInputError):
        store.events.prune(timedelta(days=-1))


# -- commit order ---------------------------------------------------------------------------


def _block_commit_of(
    store: Store, thread: threading.Thread, until: threading.Event, reached: threading.Event
) -> Any:
    """An engine listener that holds ``thread``'s COMMIT (after its events are written) until
    ``until`` is set; ``reached`` says it is held."""

    def hold(_conn: Any) -> None:
        if threading.current_thread() is thread:
            reached.set()
            until.wait(10)

    event.listen(store.engine, "commit", hold)
    return hold


def _overlap(store: Store) -> tuple[list[int], list[int]]:
    """T1 writes its events and stalls in COMMIT; T2 writes and commits meanwhile; a reader
    reads, T1 finishes, the reader reads on after the last id it saw. Returns (what the reader
    saw, every id in the log)."""
    release, reached = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            with store.unit_of_work() as uow:
                uow.events.publish(name, {})
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=write, args=("first",))
    hold = _block_commit_of(store, first, release, reached)
    try:
        first.start()
        assert reached.wait(10), "T1 never reached its commit"
        second = threading.Thread(target=write, args=("second",))
        second.start()
        second.join(1.0)  # it commits now, or waits for T1 (the lock)
        seen = [e.id for e in store.events.read()]
        release.set()
        first.join(10)
        second.join(10)
        seen += [e.id for e in store.events.read(after=seen[-1] if seen else None)]
    finally:
        release.set()
        event.remove(store.engine, "commit", hold)
    assert not errors, errors
    return seen, [e.id for e in store.events.read()]


@pytest.mark.parametrize("backend", ["sqlite_file", "postgresql", "mysql"], indirect=True)
def test_a_transaction_that_commits_later_is_not_skipped(store: Store) -> None:
    seen, everything = _overlap(store)
    assert len(everything) == 2 and seen == everything


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_the_overlap_check_can_fail_without_the_commit_lock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids taken without the lock are sequence order, not commit order: the reader skips T1."""
    monkeypatch.setattr(writer, "lock_event_log", lambda _connection: None)
    unlocked = functools.partial(writer.locked_insert, lock=False)
    monkeypatch.setattr(writer, "locked_insert", unlocked)
    seen, everything = _overlap(store)
    assert len(everything) == 2 and set(everything) - set(seen)


def test_overlapping_writers_and_a_polling_reader_miss_nothing(store: Store) -> None:
    """Writers in threads commit at random moments (their COMMITs delayed at random), while a
    reader follows the log: it sees every event once, in increasing id order."""
    writers, per_writer = (4, 12) if not store.is_memory else (2, 8)
    rng = random.Random(7)

    def jitter(_conn: Any) -> None:
        time.sleep(rng.random() * 0.01)

    event.listen(store.engine, "commit", jitter)
    done = threading.Event()
    seen: list[int] = []
    failures: list[BaseException] = []

    def follow() -> None:
        after = None
        try:
            while True:
                finished = done.is_set()
                page = store.events.read(after=after, limit=50)
                seen.extend(e.id for e in page)
                if page:
                    after = page[-1].id
                elif finished:
                    return
                else:
                    time.sleep(0.002)
        except BaseException as exc:
            failures.append(exc)

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                with store.unit_of_work() as uow:
                    uow.deployments.add(Deployment(name=f"w{n}-{i}", version="1"))
                    uow.events.publish("written", {"writer": n, "i": i})
        except BaseException as exc:
            failures.append(exc)

    reader = threading.Thread(target=follow)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    try:
        reader.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        done.set()
        reader.join(60)
    finally:
        done.set()
        event.remove(store.engine, "commit", jitter)
    assert not failures, failures
    everything = [e.id for e in store.events.read(limit=10_000)]
    assert len(everything) == 2 * writers * per_writer
    assert seen == everything  # each once, in order, none skipped


@pytest.fixture
def file_store(tmp_path: Any) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'f.sqlite3'}") as made:
        made.upgrade()
        yield made


def test_ids_are_not_reused_after_the_newest_events_are_pruned(file_store: Store) -> None:
    with file_store.unit_of_work() as uow:
        uow.events.publish("a", {})
    first = last(file_store)
    assert file_store.events.prune(utcnow() + timedelta(seconds=1)) == 1
    with file_store.unit_of_work() as uow:
        uow.events.publish("b", {})
    assert last(file_store) > first


def test_a_scoped_unit_of_work_records_its_statement_writes(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
    start = last(store)
    with store.unit_of_work(org_id=org.id) as uow:
        user = uow.users.upsert(User(org_id=org.id, email="a@acme.test"), on=["org_id", "email"])
        uow.users.upsert(
            User(org_id=org.id, email="a@acme.test", external_id="x"), on=["org_id", "email"]
        )
        uow.users.update_many(where("email", "==", "a@acme.test"), external_id="y")
        uow.users.delete_many(email="a@acme.test")
    assert [(e.type, e.entity_id, e.org_id) for e in store.events.read(after=start)] == [
        ("user.created", str(user.id), org.id),
        ("user.updated", str(user.id), org.id),
        ("user.updated", str(user.id), org.id),
        ("user.deleted", str(user.id), org.id),
    ]
