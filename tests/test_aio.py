"""The async face (flowstore.aio): every repository method and domain extra awaited, errors,
savepoints, many concurrent tasks and cancellation, on aiosqlite (memory and file) and on
PostgreSQL through psycopg's async driver.

Each test body is a coroutine run with ``asyncio.run`` on a fresh ``AsyncStore`` (an async
engine belongs to one event loop); entities that only set the scene are made by the shared
builders, run through ``uow.run`` on the async unit of work's session.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from flowstore import (
    AlreadyExistsError,
    ConcurrencyError,
    ConnectionFailedError,
    FlowstoreError,
    InvalidInputError,
    NotFoundError,
    Settings,
    Store,
    UnitOfWork,
    where,
)
from flowstore.aio import AsyncStore, AsyncUnitOfWork, async_repository_class
from flowstore.aio.engine import GatedStaticPool
from flowstore.models import (
    Deployment,
    DeploymentStatus,
    InferenceRequest,
    Machine,
    MachineStatus,
    Organization,
    Policy,
    PolicyType,
    Request,
    RequestStatus,
    Template,
    User,
)
from flowstore.repositories import DeploymentRepository, DeploymentStats
from flowstore.schema import head_revision
from tests import builders as b
from tests.backends import selected_backends
from tests.conftest import empty_tables, server_database

R = TypeVar("R")
T = TypeVar("T")

AIO_BACKENDS = [
    name for name in selected_backends() if name in {"sqlite", "sqlite_file", "postgresql"}
]
REPOSITORY_NAMES = sorted(b.BUILDERS)


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once through ``AsyncStore.upgrade``; tests get copies of it."""
    path = tmp_path_factory.mktemp("aio") / "migrated.sqlite3"

    async def migrate() -> None:
        async with AsyncStore(f"sqlite:///{path}") as store:
            await store.upgrade()

    asyncio.run(migrate())
    return path


@pytest.fixture(params=AIO_BACKENDS)
def aio_url(
    request: pytest.FixtureRequest,
    server_stores: dict[str, Store],
    migrated_sqlite_file: Path,
    tmp_path: Path,
) -> str:
    """The URL of a ready, empty database for one async test (driverless, as users write it)."""
    if request.param == "sqlite":
        return "sqlite://"
    if request.param == "sqlite_file":
        copy = tmp_path / "aio.sqlite3"
        shutil.copyfile(migrated_sqlite_file, copy)
        return f"sqlite:///{copy}"
    shared = server_stores["postgresql"]
    empty_tables(shared)
    return shared.url.set(drivername="postgresql").render_as_string(hide_password=False)


def arun(url: str, body: Callable[[AsyncStore], Awaitable[R]], **store_options: Any) -> R:
    """Run ``body(store)`` on a fresh ``AsyncStore(url)`` in a new event loop."""

    async def main() -> R:
        async with AsyncStore(url, **store_options) as store:
            return await body(store)

    return asyncio.run(main())


def _sync_view(session: Session) -> Any:
    """The sync repositories on ``session``, shaped like a unit of work for the builders."""
    return SimpleNamespace(
        **{name: getattr(UnitOfWork, name).repository_class(session) for name in REPOSITORY_NAMES}
    )


async def build(uow: AsyncUnitOfWork, name: str, **kw: Any) -> Any:
    """A valid entity of repository ``name`` (with its parents), added in ``uow``."""
    maker = b.BUILDERS[name][0]
    return await uow.run(lambda session: maker(_sync_view(session), **kw))


def checked_out(store: AsyncStore) -> int:
    """Connections handed out by the pool now (the in-memory gate counts as one)."""
    pool = store.engine.sync_engine.pool
    if isinstance(pool, GatedStaticPool):
        return int(pool.gate.held)
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


# -- the face is built from the sync classes ----------------------------------------------


@pytest.mark.parametrize("name", REPOSITORY_NAMES)
def test_every_sync_method_has_an_awaitable_twin(name: str) -> None:
    repository_class = getattr(UnitOfWork, name).repository_class
    assert getattr(AsyncUnitOfWork, name).repository_class is repository_class
    proxy_class = async_repository_class(repository_class)
    assert proxy_class.__module__.startswith("flowstore.aio.generated.")  # the typed one
    public = {n for n, _ in inspect.getmembers(repository_class, inspect.isfunction)}
    public = {n for n in public if not n.startswith("_")} - {"cursor_for"}
    assert {"get", "get_or_none", "exists", "list", "count", "add", "add_many"} <= public
    for method_name in public:
        twin = getattr(proxy_class, method_name)
        assert inspect.iscoroutinefunction(twin), method_name
        sync_method = getattr(repository_class, method_name)
        twin_params = inspect.signature(twin).parameters.values()
        sync_params = inspect.signature(sync_method).parameters.values()
        assert [(p.name, p.kind, p.default) for p in twin_params] == [
            (p.name, p.kind, p.default) for p in sync_params
        ]
        assert inspect.getdoc(twin) == inspect.getdoc(sync_method)
    assert async_repository_class(repository_class) is proxy_class  # one class


def test_the_async_unit_of_work_has_every_repository() -> None:
    def repositories(cls: type[Any]) -> set[str]:
        return {n for n, v in vars(cls).items() if hasattr(v, "repository_class")}

    assert repositories(AsyncUnitOfWork) == repositories(UnitOfWork) == set(REPOSITORY_NAMES)


# -- Repository[T] on every repository -------------------------------------------------------


def test_generic_methods_on_every_repository(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        for name in REPOSITORY_NAMES:
            async with store.unit_of_work() as uow:
                made = [await build(uow, name) for _ in range(3)]
            ids = [entity.id for entity in made]
            async with store.unit_of_work() as uow:
                repo = getattr(uow, name)
                assert (await repo.get(ids[0])).id == ids[0]
                assert (await repo.get_or_none(str(ids[1]))).id == ids[1]
                assert await repo.get_or_none(uuid.uuid4()) is None
                assert await repo.exists(ids[2]) is True
                assert await repo.exists("not-an-id") is False
                with pytest.raises(NotFoundError):
                    await repo.get(uuid.uuid4())
                assert await repo.count(where("id", "in", ids)) == 3
                listed = await repo.list(where("id", "in", ids), limit=2, offset=1)
                ordered = sorted(made, key=lambda e: (e.created_at, e.id))
                assert [e.id for e in listed] == [e.id for e in ordered[1:3]]
                if name == "audit_logs":
                    with pytest.raises(InvalidInputError):
                        await repo.delete(ids[0])
                    continue
                await repo.delete(ids[0])
                with pytest.raises(NotFoundError):
                    await repo.delete(ids[0])
            async with store.unit_of_work() as uow:
                assert await getattr(uow, name).count(where("id", "in", ids)) == 2

    arun(aio_url, body)


def test_add_update_and_list_options(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            first = await uow.deployments.add(Deployment(name="api", version="1.0.0"))
            batch = await uow.deployments.add_many(
                Deployment(name=f"web-{i}", version=f"2.{i}.0", status=DeploymentStatus.RUNNING)
                for i in range(3)
            )
            assert [d.name for d in batch] == ["web-0", "web-1", "web-2"]
            assert first.lock_version == 1
        async with store.unit_of_work() as uow:
            by_version = await uow.deployments.list(order_by="-version", limit=2)
            assert [d.version for d in by_version] == ["2.2.0", "2.1.0"]
            running = await uow.deployments.list(status="running", order_by="name")
            assert [d.name for d in running] == ["web-0", "web-1", "web-2"]
            assert await uow.deployments.count(where("name", "startswith", "web-")) == 3
            loaded = await uow.deployments.get(first.id)
            loaded.version = "1.0.1"
            updated = await uow.deployments.update(loaded)
            assert updated.lock_version == 2
        first.config = {"replicas": 3}  # detached, from the first unit of work: stale version
        async with store.unit_of_work() as uow:
            with pytest.raises(ConcurrencyError):
                await uow.deployments.update(first)
        async with store.unit_of_work() as uow:
            current = await uow.deployments.get(first.id)
            assert (current.version, current.config) == ("1.0.1", {})

    arun(aio_url, body)


def test_typed_run_makes_several_calls_in_one_step(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:

            def seed(repo: DeploymentRepository) -> DeploymentStats:
                repo.add(Deployment(name="a", version="1", status=DeploymentStatus.FAILED))
                repo.add(Deployment(name="b", version="1", status=DeploymentStatus.FAILED))
                return repo.stats()

            stats = await uow.deployments.run(seed)
            assert stats.total == 2 and stats.by_status[DeploymentStatus.FAILED] == 2
            rows = await uow.run(lambda s: s.execute(text("SELECT name FROM deployments")).all())
            assert sorted(r[0] for r in rows) == ["a", "b"]

    arun(aio_url, body)


# -- the domain extras, awaited --------------------------------------------------------------


def test_deployment_extras(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            one, two, three = await uow.deployments.add_many(
                Deployment(name=n, version="1", status=s)
                for n, s in [("a", "running"), ("b", "running"), ("c", "failed")]
            )
            await uow.deployments.set_node_id(one.id, "node-a")
            await uow.deployments.set_node_id(str(two.id), "node-a")
            await uow.deployments.set_node_id(three.id, "node-b")
        async with store.unit_of_work() as uow:
            deps = uow.deployments
            assert {d.name for d in await deps.list_by_status(DeploymentStatus.RUNNING)} == {
                "a",
                "b",
            }
            stats = await deps.stats()
            assert stats.total == 3 and stats.by_status == {"running": 2, "failed": 1}
            assert await deps.get_node_id(one.id) == "node-a"
            assert set(await deps.get_deployments_by_node_id("node-a")) == {one.id, two.id}
            assert await deps.delete_node_id(one.id) is True
            assert await deps.delete_node_id(one.id) is False
            with pytest.raises(NotFoundError):
                await deps.get_node_id(one.id)
            with pytest.raises(NotFoundError):
                await deps.set_node_id(uuid.uuid4(), "node-a")
            assert await deps.clear_node("node-a") == 1
            assert await deps.get_deployments_by_node_id("node-a") == []
            with pytest.raises(InvalidInputError):
                await deps.list_by_status("exploded")

    arun(aio_url, body)


def test_template_request_and_machine_extras(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            gpu = await uow.templates.add(
                Template(
                    name="gpu", provider_type="aws", attributes={"gpu": True, "zone": {"a": 1}}
                )
            )
            await uow.templates.add(
                Template(name="cpu", provider_type="gcp", attributes={"gpu": False})
            )
            pending = await uow.requests.add(
                Request(template_id=gpu.id, status=RequestStatus.PENDING)
            )
            done = await uow.requests.add(
                Request(template_id=gpu.id, status=RequestStatus.COMPLETED)
            )
            await uow.machines.add_many(
                Machine(request_id=pending.id, instance_id=f"i-{n}", status=MachineStatus.PENDING)
                for n in range(3)
            )
        async with store.unit_of_work() as uow:
            assert [t.name for t in await uow.templates.find_by_attributes({"gpu": True})] == [
                "gpu"
            ]
            found = await uow.templates.find_by_attributes({"zone": {"a": 1}})
            assert [t.id for t in found] == [gpu.id]
            assert [t.name for t in await uow.templates.get_by_provider_type("gcp")] == ["cpu"]
            assert [r.id for r in await uow.requests.get_active_requests()] == [pending.id]
            assert [r.id for r in await uow.requests.get_by_status("completed")] == [done.id]
            assert await uow.requests.update_status(pending.id, RequestStatus.IN_PROGRESS) is True
            assert await uow.requests.update_status(uuid.uuid4(), "failed") is False
            machines = await uow.machines.get_by_request_id(pending.id)
            assert sorted(m.instance_id for m in machines) == ["i-0", "i-1", "i-2"]
            assert await uow.machines.update_status(machines[0].id, MachineStatus.RUNNING) is True
            assert len(await uow.machines.get_by_status(MachineStatus.PENDING)) == 2
            hits = await uow.machines.get_by_instance_ids(["i-1", "i-9", "i-1"])
            assert [m.instance_id for m in hits] == ["i-1"]
            with pytest.raises(InvalidInputError):
                await uow.machines.get_by_instance_ids("i-1")
        async with store.unit_of_work() as uow:
            assert (await uow.requests.get(pending.id)).status is RequestStatus.IN_PROGRESS

    arun(aio_url, body)


def test_organization_application_user_and_policy_extras(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            org = await uow.organizations.add(Organization(name="Acme", slug="acme"))
            app, raw_key = await uow.applications.create_with_api_key(org.id, "billing")
            user = await uow.users.add(
                User(org_id=org.id, email="ada@acme.test", external_id="idp|1")
            )
            await uow.policies.add_many(
                [
                    Policy(org_id=org.id, policy_type=PolicyType.BUDGET, priority=1),
                    Policy(org_id=org.id, policy_type=PolicyType.RATE_LIMIT, priority=9),
                    Policy(org_id=org.id, application_id=app.id, policy_type=PolicyType.BUDGET),
                    Policy(org_id=org.id, user_id=user.id, policy_type=PolicyType.MODEL_ACCESS),
                    Policy(org_id=org.id, policy_type=PolicyType.BUDGET, enabled=False),
                ]
            )
        assert raw_key not in {app.api_key_hash, None}
        async with store.unit_of_work() as uow:
            assert present(await uow.organizations.get_by_slug("acme")).id == org.id
            assert await uow.organizations.get_by_slug("nope") is None
            assert present(await uow.applications.get_by_api_key(raw_key)).id == app.id
            new_key = await uow.applications.rotate_api_key(app.id)
            assert await uow.applications.get_by_api_key(raw_key) is None
            assert present(await uow.applications.get_by_api_key(new_key)).id == app.id
            assert present(await uow.users.get_by_email(org.id, "ada@acme.test")).id == user.id
            assert present(await uow.users.get_by_external_id("idp|1")).id == user.id
            assert await uow.users.get_by_external_id("idp|2") is None
            every = await uow.policies.get_applicable_policies(org.id, app.id, user.id)
            assert [(p.user_id, p.application_id, p.priority) for p in every] == [
                (user.id, None, 0),
                (None, app.id, 0),
                (None, None, 9),
                (None, None, 1),
            ]
            org_level = await uow.policies.get_applicable_policies(org.id)
            assert [p.priority for p in org_level] == [9, 1]
            await uow.organizations.delete(org.id)
        async with store.unit_of_work() as uow:
            assert await uow.applications.count() == 0
            assert await uow.users.count() == 0
            assert await uow.policies.count() == 0

    arun(aio_url, body)


def test_audit_and_inference_extras(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            app = await build(uow, "applications")
            org_id = app.org_id
            for action in ("create", "update", "delete"):
                await uow.audit_logs.record(org_id, action, "deployment", application_id=app.id)
            for tokens, cost, latency in [(10, "0.25", 100), (30, "0.50", 300)]:
                await uow.inference_requests.add(
                    InferenceRequest(
                        org_id=org_id,
                        application_id=app.id,
                        model="m",
                        prompt_tokens=tokens,
                        completion_tokens=5,
                        cost=Decimal(cost),
                        latency_ms=latency,
                    )
                )
        async with store.unit_of_work() as uow:
            entries = await uow.audit_logs.query(org_id)
            assert [e.action for e in entries] == ["delete", "update", "create"]
            assert [e.action for e in await uow.audit_logs.query(org_id, action="update")] == [
                "update"
            ]
            assert len(await uow.audit_logs.query(org_id, limit=2)) == 2
            with pytest.raises(InvalidInputError):
                await uow.audit_logs.update(entries[0])
            now = datetime.now(UTC)
            metrics = await uow.inference_requests.metrics(
                org_id, now - timedelta(hours=1), now + timedelta(hours=1)
            )
            assert metrics.total_requests == 2
            assert metrics.total_tokens == 50
            assert metrics.total_cost == Decimal("0.75")
            assert metrics.avg_latency_ms == pytest.approx(200.0)
            empty = await uow.inference_requests.metrics(
                uuid.uuid4(), now - timedelta(hours=1), now
            )
            assert (empty.total_requests, empty.total_cost) == (0, Decimal("0"))

    arun(aio_url, body)


# -- errors, transactions and savepoints -----------------------------------------------------


def test_errors_are_flowstore_errors(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            await uow.organizations.add(Organization(name="A", slug="taken"))
            with pytest.raises(AlreadyExistsError):
                await uow.organizations.add(Organization(name="B", slug="taken"))
            with pytest.raises(InvalidInputError):
                await uow.deployments.list(colour="blue")
            with pytest.raises(InvalidInputError):
                await uow.deployments.add(Organization(name="C", slug="c"))  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError):  # a broken foreign key
                await uow.users.add(User(org_id=uuid.uuid4(), email="x@y.z"))
            with pytest.raises(FlowstoreError) as raw:
                async with uow.savepoint():  # PostgreSQL aborts the transaction otherwise
                    await uow.run(lambda s: s.execute(text("SELECT * FROM no_such_table")))
            assert type(raw.value).__module__ == "flowstore.errors"
            assert await uow.organizations.count() == 1  # the unit of work is still usable
        async with store.unit_of_work() as uow:
            assert [o.slug for o in await uow.organizations.list()] == ["taken"]
        unused = store.unit_of_work()
        with pytest.raises(InvalidInputError):
            await unused.deployments.count()

    arun(aio_url, body)


def test_add_many_on_the_async_face_takes_the_driver_path(aio_url: str, copies: list[str]) -> None:
    """The sync bulk path runs inside the greenlet: COPY is awaited on async psycopg, aiosqlite
    takes the driver's executemany; a duplicate writes nothing and is AlreadyExistsError."""

    async def body(store: AsyncStore) -> None:
        items = [Deployment(name=f"a-{i}", version="1", config={"i": i}) for i in range(40)]
        async with store.unit_of_work() as uow:
            assert await uow.deployments.add_many(items) == items
        taken = Deployment(id=items[3].id, name="again", version="1")
        async with store.unit_of_work() as uow:
            with pytest.raises(AlreadyExistsError):
                await uow.deployments.add_many([Deployment(name="new", version="1"), taken])
            assert taken.created_at is None  # given back as it was
        async with store.unit_of_work() as uow:
            stored = {d.name: d for d in await uow.deployments.list(limit=100)}
        assert set(stored) == {d.name for d in items}
        assert stored["a-39"].config == {"i": 39} and stored["a-39"].id == items[39].id

    arun(aio_url, body)
    assert len(copies) == (2 if aio_url.startswith("postgresql") else 0)


def test_an_error_raised_while_committing_is_a_flowstore_error(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            await uow.organizations.add(Organization(name="A", slug="taken"))
        with pytest.raises(AlreadyExistsError):
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="lost", version="1"))
                # added without a flush: the duplicate key surfaces in the commit on exit
                await uow.run(lambda s: s.add(Organization(name="B", slug="taken")))
        async with store.unit_of_work() as uow:
            assert await uow.deployments.count() == 0
            await uow.run(lambda s: s.add(Organization(name="C", slug="taken")))
            with pytest.raises(AlreadyExistsError):
                await uow.commit()
            assert await uow.organizations.count() == 1  # rolled back, and usable again

    arun(aio_url, body)


def test_rollback_commit_and_savepoints(aio_url: str) -> None:
    async def names(store: AsyncStore) -> set[str]:
        async with store.unit_of_work() as uow:
            return {d.name for d in await uow.deployments.list()}

    async def body(store: AsyncStore) -> None:
        with pytest.raises(RuntimeError):
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="committed", version="1"))
                await uow.commit()
                await uow.deployments.add(Deployment(name="discarded", version="1"))
                await uow.rollback()
                await uow.deployments.add(Deployment(name="kept", version="1"))
                async with uow.savepoint():
                    await uow.deployments.add(Deployment(name="inner-kept", version="1"))
                with pytest.raises(ValueError):
                    async with uow.savepoint():
                        await uow.deployments.add(Deployment(name="inner-lost", version="1"))
                        raise ValueError
                assert {d.name for d in await uow.deployments.list()} == {
                    "committed",
                    "kept",
                    "inner-kept",
                }
                await uow.commit()
                await uow.deployments.add(Deployment(name="lost", version="1"))
                raise RuntimeError
        assert await names(store) == {"committed", "kept", "inner-kept"}
        async with store.unit_of_work() as uow:
            org = await uow.organizations.add(Organization(name="A", slug="a"))

            def add_duplicate(session: Session) -> None:
                session.add(Organization(name="B", slug="a"))
                session.flush()

            with pytest.raises(AlreadyExistsError):
                async with uow.savepoint():
                    await uow.deployments.add(Deployment(name="with-dup", version="1"))
                    await uow.run(add_duplicate)
            assert await uow.organizations.get(org.id) is not None
        assert await names(store) == {"committed", "kept", "inner-kept"}

    arun(aio_url, body)


def test_run_in_transaction_retries_lost_updates(aio_url: str) -> None:
    """Tasks that all increment one row: optimistic-lock conflicts are retried, none is lost."""
    tasks = 8

    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            counter = await uow.templates.add(Template(name="c", provider_type="x", max_number=0))

        async def increment(uow: AsyncUnitOfWork) -> None:
            row = await uow.templates.get(counter.id)
            row.max_number += 1
            await asyncio.sleep(0)  # let the others read the same version
            await uow.templates.update(row)

        await asyncio.gather(
            *(
                store.run_in_transaction(increment, attempts=tasks + 2, backoff=0.01)
                for _ in range(tasks)
            )
        )
        async with store.unit_of_work() as uow:
            assert (await uow.templates.get(counter.id)).max_number == tasks

    arun(aio_url, body)


# -- concurrency and cancellation ------------------------------------------------------------


def test_many_concurrent_units_of_work(aio_url: str) -> None:
    async def body(store: AsyncStore) -> None:
        async def worker(n: int) -> uuid.UUID:
            async with store.unit_of_work() as uow:
                made = await uow.deployments.add(Deployment(name=f"w{n}", version="1"))
                await asyncio.sleep(0)
                assert (await uow.deployments.get(made.id)).name == f"w{n}"
                assert await uow.deployments.count(name=f"w{n}") == 1
                ident: uuid.UUID = made.id
                return ident

        ids = await asyncio.gather(*(worker(n) for n in range(40)))
        assert len(set(ids)) == 40
        async with store.unit_of_work() as uow:
            assert await uow.deployments.count() == 40
        assert checked_out(store) == 0

    arun(aio_url, body, settings=Settings(pool_size=3, max_overflow=2))


async def _cancel_inside(store: AsyncStore, how: str) -> None:
    """Start a unit of work that writes, then cancel it: while it is idle, mid-statement, or
    twice (the second time during its clean-up)."""
    started = asyncio.Event()
    slow = how == "mid-statement"

    async def victim() -> None:
        async with store.unit_of_work() as uow:
            await uow.deployments.add(Deployment(name="cancelled", version="1"))
            started.set()
            if not slow:
                await asyncio.Event().wait()
            sql = (
                "SELECT pg_sleep(0.5)"
                if store.dialect == "postgresql"
                else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 300000) SELECT count(*) FROM c"
            )
            while True:
                await uow.run(lambda s: s.execute(text(sql)).all())

    task = asyncio.create_task(victim())
    await started.wait()
    await asyncio.sleep(0.05 if slow else 0)
    task.cancel()
    if how == "twice":
        await asyncio.sleep(0)  # the victim is now rolling back
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", ["idle", "mid-statement", "twice"])
def test_cancelling_a_task_rolls_back_its_unit_of_work(aio_url: str, how: str) -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            await uow.deployments.add(Deployment(name="before", version="1"))
        await _cancel_inside(store, how)
        assert checked_out(store) == 0  # the connection is back in the pool
        async with store.unit_of_work() as uow:  # and the store goes on working
            assert [d.name for d in await uow.deployments.list()] == ["before"]
            await uow.deployments.add(Deployment(name="after", version="1"))
        async with store.unit_of_work() as uow:
            assert await uow.deployments.count() == 2

    # a short pool timeout: a connection that never came back fails fast instead of hanging
    arun(aio_url, body, settings=Settings(pool_timeout=5))


def test_cancelling_a_task_that_waits_for_the_memory_database() -> None:
    async def body(store: AsyncStore) -> None:
        holding, release = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="held", version="1"))
                holding.set()
                await release.wait()

        async def waiter() -> None:
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="never", version="1"))

        first = asyncio.create_task(holder())
        await holding.wait()
        second = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        await first
        async with store.unit_of_work() as uow:
            assert [d.name for d in await uow.deployments.list()] == ["held"]

    arun("sqlite://", body)


def test_the_memory_database_refuses_a_second_hold_by_one_task() -> None:
    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            await uow.deployments.add(Deployment(name="a", version="1"))
            with pytest.raises(InvalidInputError, match="already holds"):
                async with store.unit_of_work() as nested:
                    await nested.deployments.count()
            assert await uow.deployments.count() == 1  # the outer transaction is intact
            await uow.commit()  # the next step takes the connection again, in a helper task
            await uow.deployments.add(Deployment(name="b", version="1"))
            with pytest.raises(InvalidInputError, match="already holds"):
                await store.ping()
            with pytest.raises(InvalidInputError, match="already holds"):
                await store.queue().enqueue({"n": 1})
        async with store.unit_of_work() as uow:
            assert await uow.deployments.count() == 2

    arun("sqlite://", body)


def test_a_busy_memory_database_times_out_as_a_flowstore_error() -> None:
    async def body(store: AsyncStore) -> None:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def holder() -> None:
            async with store.unit_of_work():
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        with pytest.raises(FlowstoreError, match="busy"):
            async with store.unit_of_work() as uow:
                await uow.deployments.count()
        release.set()
        await task

    arun("sqlite://", body, settings=Settings(pool_timeout=0.2))


# -- the store ---------------------------------------------------------------------------


def test_default_store_is_in_memory_aiosqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWSTORE_DATABASE_URL", raising=False)

    async def main() -> None:
        store = AsyncStore()
        assert store.url.drivername == "sqlite+aiosqlite" and store.is_memory
        assert isinstance(store.session_factory, async_sessionmaker)
        async with store.unit_of_work() as uow:  # ready at once: the schema appears on first use
            await uow.deployments.add(Deployment(name="a", version="1"))
        async with store.session_factory() as session:  # plain sessions see the same database
            assert isinstance(session, AsyncSession)
            assert (await session.execute(text("SELECT count(*) FROM deployments"))).scalar() == 1
        await store.ping()
        assert await store.current_revision() == head_revision()
        await store.close()

    asyncio.run(main())


def test_driverless_urls_get_async_drivers() -> None:
    assert AsyncStore("postgresql://u@127.0.0.1/db").url.drivername == "postgresql+psycopg"
    assert AsyncStore("sqlite:///x.db").url.drivername == "sqlite+aiosqlite"
    assert AsyncStore("postgresql://u@127.0.0.1/db").engine.dialect.is_async


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/test", "nonsense://", "::"])
def test_urls_without_an_async_driver_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInputError):
        AsyncStore(url)


def test_an_unreachable_server_is_connection_failed_without_the_password() -> None:
    async def main() -> None:
        store = AsyncStore("postgresql://flow:s3cret-pw@127.0.0.1:1/db")
        assert "s3cret-pw" not in repr(store)
        with pytest.raises(ConnectionFailedError) as caught:
            await store.ping()
        assert "s3cret-pw" not in str(caught.value)
        with pytest.raises(ConnectionFailedError):
            async with store.unit_of_work() as uow:
                await uow.deployments.count()
        await store.close()

    asyncio.run(main())


@pytest.fixture(params=[b for b in AIO_BACKENDS if b != "sqlite"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that was never migrated."""
    if request.param == "sqlite_file":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        database = server_database(request, "postgresql", "aio")
        yield database.url.render_as_string(hide_password=False)


def test_migrations_through_the_async_engine(empty_database_url: str) -> None:
    async def main() -> None:
        async with AsyncStore(empty_database_url) as store:
            assert await store.current_revision() is None
            await store.upgrade()
            assert await store.current_revision() == head_revision()
            with pytest.raises(InvalidInputError):
                await store.downgrade("no-such-revision")
            async with store.unit_of_work() as uow:
                await uow.deployments.add(Deployment(name="a", version="1"))
            await store.downgrade("base")
            assert await store.current_revision() is None
            with pytest.raises(FlowstoreError):
                async with store.unit_of_work() as uow:
                    await uow.deployments.count()
            await store.upgrade()
            async with store.unit_of_work() as uow:
                assert await uow.deployments.count() == 0

    asyncio.run(main())


def test_a_scoped_async_unit_of_work_sees_only_its_organization(aio_url: str) -> None:
    from flowstore import TenantScopeError

    async def body(store: AsyncStore) -> None:
        async with store.unit_of_work() as admin:
            acme = await admin.organizations.add(Organization(name="Acme", slug="acme"))
            globex = await admin.organizations.add(Organization(name="Globex", slug="globex"))
            await admin.applications.create_with_api_key(globex.id, "globex-api")
        async with store.unit_of_work(org_id=acme.id) as uow:
            assert await uow.applications.count() == 0
            mine, _key = await uow.applications.create_with_api_key(acme.id, "acme-api")
            with pytest.raises(TenantScopeError):
                await uow.applications.create_with_api_key(globex.id, "not-yours")
            assert [o.id for o in await uow.organizations.list()] == [acme.id]
        async with store.unit_of_work() as admin:
            assert await admin.applications.count() == 2
            assert (await admin.applications.get(mine.id)).org_id == acme.id

    arun(aio_url, body)


async def _nothing(uow: AsyncUnitOfWork) -> None:
    return None


def test_run_in_transaction_refuses_bad_attempts_like_the_sync_face() -> None:
    from flowstore import InvalidInputError

    async def body() -> None:
        async with AsyncStore() as store:
            with pytest.raises(InvalidInputError):
                await store.run_in_transaction(_nothing, attempts=0)

    asyncio.run(body())


def present(found: T | None) -> T:
    """``found``, which the test expects to be there."""
    assert found is not None
    return found
