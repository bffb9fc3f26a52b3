"""Tenant scope: ``store.unit_of_work(org_id=...)`` sees and changes only that organization.

The property test builds several organizations with data, then runs random operations through
a unit of work scoped to one of them (reads, filters, updates, deletes, inserts, bulk
statements, domain lookups, aimed at its own rows and at foreign ones) and checks that no
foreign row is ever returned and that, after the commit, every row outside the organization
is exactly as it was.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, delete, select, text, update
from sqlalchemy.orm import aliased, make_transient_to_detached

from flowstore import Store, where
from flowstore.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    FlowstoreError,
    InvalidInputError,
    NotFoundError,
    TenantScopeError,
)
from flowstore.models import (
    EVENTS,
    FLOWSTORE_TABLES,
    Application,
    AuditLog,
    Base,
    Deployment,
    DeploymentStatus,
    InferenceRequest,
    Organization,
    Policy,
    PolicyType,
    User,
    tenant_column,
)
from flowstore.tenancy import scope_session, session_org_id
from flowstore.uow import UnitOfWork

ORG_REPOS = (
    "organizations",
    "applications",
    "users",
    "policies",
    "audit_logs",
    "inference_requests",
)
PLATFORM_REPOS = ("deployments", "templates", "requests", "machines")
MODELS: dict[str, type[Any]] = {
    "organizations": Organization,
    "applications": Application,
    "users": User,
    "policies": Policy,
    "audit_logs": AuditLog,
    "inference_requests": InferenceRequest,
}
TEXT_FIELD = {
    "organizations": "name",
    "applications": "name",
    "users": "email",
    "policies": None,
    "audit_logs": "action",
    "inference_requests": "model",
}
_seq = itertools.count(1)
WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@dataclass
class Tenant:
    """One organization's rows, as loaded right after they were created (detached copies)."""

    org: Organization
    rows: dict[str, list[Any]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    @property
    def id(self) -> uuid.UUID:
        return self.org.id

    def ids(self, repo: str) -> list[uuid.UUID]:
        return [self.org.id] if repo == "organizations" else [r.id for r in self.rows[repo]]


def populate(store: Store, count: int = 3) -> list[Tenant]:
    """``count`` organizations, each with two rows of every org-owned model."""
    tenants = []
    with store.unit_of_work() as uow:
        for _ in range(count):
            n = next(_seq)
            org = uow.organizations.add(
                Organization(name=f"org {n}", slug=f"org-{n}-{uuid.uuid4()}")
            )
            tenant = Tenant(org)
            apps = []
            for i in range(2):
                app, key = uow.applications.create_with_api_key(org.id, f"app {n}.{i}")
                apps.append(app)
                tenant.keys.append(key)
            users = uow.users.add_many(
                User(
                    org_id=org.id,
                    email=f"u{i}@org{n}.test",
                    external_id=f"idp|{n}|{i}|{uuid.uuid4()}",
                )
                for i in range(2)
            )
            policies = [
                uow.policies.add(
                    Policy(org_id=org.id, policy_type=PolicyType.BUDGET, application_id=apps[0].id)
                ),
                uow.policies.add(
                    Policy(org_id=org.id, policy_type=PolicyType.RATE_LIMIT, user_id=users[0].id)
                ),
            ]
            entries = [
                uow.audit_logs.record(org.id, f"act{i}", "thing", application_id=apps[i].id)
                for i in range(2)
            ]
            usage = uow.inference_requests.add_many(
                InferenceRequest(
                    org_id=org.id,
                    application_id=apps[i].id,
                    model=f"model-{i}",
                    prompt_tokens=10 + i,
                    completion_tokens=5,
                    cost=Decimal("0.25"),
                    latency_ms=100,
                )
                for i in range(2)
            )
            tenant.rows = {
                "applications": apps,
                "users": users,
                "policies": policies,
                "audit_logs": entries,
                "inference_requests": usage,
            }
            tenants.append(tenant)
        # platform-level rows, which a scoped unit of work must leave alone
        uow.deployments.add(
            Deployment(name=f"svc-{next(_seq)}", version="1", status=DeploymentStatus.RUNNING)
        )
    return tenants


def snapshot(store: Store, excluded_org: uuid.UUID) -> dict[str, list[str]]:
    """Every row of every table except those of ``excluded_org``, as sorted strings."""
    rows: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in FLOWSTORE_TABLES:
                continue
            column = tenant_column(table)
            if table is EVENTS:
                column = "org_id"  # the organization's own events are its rows too
            found = []
            for row in conn.execute(select(table)).mappings():
                if (
                    column is not None
                    and row[column] is not None
                    and _uuid(row[column]) == excluded_org
                ):
                    continue
                found.append(repr(sorted(row.items())))
            rows[table.name] = sorted(found)
    return rows


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def owner(entity: Any) -> uuid.UUID:
    return entity.id if isinstance(entity, Organization) else entity.org_id


def expect(uow: UnitOfWork, error: type[BaseException], work: Any) -> None:
    """``work()`` inside a savepoint must raise ``error``; the savepoint is rolled back."""
    with pytest.raises(error), uow.savepoint():
        work()


def attempt(uow: UnitOfWork, work: Any, *allowed: type[FlowstoreError]) -> Any:
    """``work()`` inside a savepoint; the listed errors are acceptable outcomes."""
    try:
        with uow.savepoint():
            return work()
    except allowed:
        return None


OPS = (
    "list",
    "count",
    "get",
    "filter",
    "update",
    "delete",
    "add",
    "move",
    "bulk_update",
    "bulk_delete",
    "domain",
    "platform",
    "raw",
)


def run_op(uow: UnitOfWork, me: Tenant, target: Tenant, op: str, repo_name: str, k: int) -> None:
    """One operation in the scoped unit of work, with what must hold for it."""
    mine = target.id == me.id
    repo = getattr(uow, repo_name)
    model = MODELS[repo_name]
    ident = target.ids(repo_name)[k % len(target.ids(repo_name))]
    if op == "list":
        assert all(owner(e) == me.id for e in repo.list())
    elif op == "count":
        listed = repo.list()
        assert repo.count() == len(listed)
        assert all(owner(e) == me.id for e in listed)
    elif op == "get":
        found = repo.get_or_none(ident)
        if mine:
            assert found is None or owner(found) == me.id
        else:
            assert found is None
            assert not repo.exists(ident)
            with pytest.raises(NotFoundError):
                repo.get(ident)
    elif op == "filter":
        column = tenant_column(model.__table__)
        assert column is not None
        found = repo.list(where(column, "==", target.id)) + repo.list(**{column: target.id})
        assert all(owner(e) == me.id for e in found)
        if not mine:
            assert found == []
            assert repo.count(where(column, "in", [target.id])) == 0
    elif op == "update":
        copy = target.org if repo_name == "organizations" else target.rows[repo_name][k % 2]
        if repo_name == "audit_logs":
            expect(uow, InvalidInputError, lambda: repo.update(copy))
        elif mine:
            attempt(uow, lambda: repo.update(copy), NotFoundError, ConcurrencyError)
        else:
            expect(uow, NotFoundError, lambda: repo.update(copy))
    elif op == "delete":
        if repo_name == "audit_logs":
            expect(uow, InvalidInputError, lambda: repo.delete(ident))
        elif mine:
            attempt(uow, lambda: repo.delete(ident), NotFoundError)
        else:
            expect(uow, NotFoundError, lambda: repo.delete(ident))
    elif op == "add":
        entity = _new_entity(repo_name, target)
        if mine:
            # may fail if an earlier operation deleted the organization itself
            added = attempt(uow, lambda: repo.add(entity), AlreadyExistsError, InvalidInputError)
            assert added is None or owner(added) == me.id
        else:
            expect(uow, TenantScopeError, lambda: repo.add(entity))
    elif op == "move":
        if repo_name == "organizations" or mine:
            return
        own = repo.list(limit=1)
        if own:

            def move() -> None:
                own[0].org_id = target.id
                uow.session.flush()

            expect(uow, TenantScopeError, move)
    elif op == "bulk_update":
        name = TEXT_FIELD[repo_name]
        if name is None:
            statement = update(model).values(priority=7)
        else:
            statement = update(model).values({name: f"bulk{k}"})
        if repo_name == "audit_logs":
            expect(uow, InvalidInputError, lambda: uow.session.execute(statement))
        else:
            before = repo.count()
            result = attempt(uow, lambda: uow.session.execute(statement), AlreadyExistsError)
            assert result is None or getattr(result, "rowcount", None) == before
    elif op == "bulk_delete":
        if repo_name == "audit_logs":
            expect(uow, InvalidInputError, lambda: uow.session.execute(delete(model)))
        else:
            before = repo.count()
            result = attempt(uow, lambda: uow.session.execute(delete(model)))
            assert result is None or getattr(result, "rowcount", None) == before
    elif op == "domain":
        _domain(uow, me, target, repo_name, k)
    elif op == "platform":
        platform = getattr(uow, PLATFORM_REPOS[k % len(PLATFORM_REPOS)])
        expect(uow, TenantScopeError, platform.list)
        expect(uow, TenantScopeError, lambda: platform.count())
    elif op == "raw":
        expect(
            uow,
            TenantScopeError,
            lambda: uow.session.execute(text(f"SELECT * FROM {model.__tablename__}")),
        )
        core = model.__table__
        assert isinstance(core, Table)
        expect(uow, TenantScopeError, lambda: uow.session.execute(select(core)).all())


def _new_entity(repo_name: str, target: Tenant) -> Any:
    n = next(_seq)
    org = target.id
    if repo_name == "organizations":
        return Organization(id=org, name="again", slug=f"again-{n}")
    if repo_name == "applications":
        return Application(org_id=org, name=f"new {n}")
    if repo_name == "users":
        return User(org_id=org, email=f"new{n}@x.test")
    if repo_name == "policies":
        return Policy(org_id=org, policy_type=PolicyType.MODEL_ACCESS)
    if repo_name == "audit_logs":
        return AuditLog(org_id=org, action="new", resource_type="thing")
    return InferenceRequest(org_id=org, application_id=target.ids("applications")[0], model="m")


def _domain(uow: UnitOfWork, me: Tenant, target: Tenant, repo_name: str, k: int) -> None:
    mine = target.id == me.id
    if repo_name == "organizations":
        org = uow.organizations.get_by_slug(target.org.slug)
        assert (org is None) if not mine else (org is None or org.id == me.id)
    elif repo_name == "applications":
        app = uow.applications.get_by_api_key(target.keys[k % 2])
        assert app is None if not mine else (app is None or app.org_id == me.id)
        app_id = target.ids("applications")[k % 2]
        if mine:
            attempt(uow, lambda: uow.applications.rotate_api_key(app_id), NotFoundError)
        else:
            expect(uow, NotFoundError, lambda: uow.applications.rotate_api_key(app_id))
            expect(
                uow, TenantScopeError, lambda: uow.applications.create_with_api_key(target.id, "x")
            )
    elif repo_name == "users":
        user = target.rows["users"][k % 2]
        by_email = uow.users.get_by_email(target.id, user.email)
        by_external = uow.users.get_by_external_id(user.external_id)
        for person in (by_email, by_external):
            assert person is None if not mine else (person is None or person.org_id == me.id)
    elif repo_name == "policies":
        app_id, user_id = target.ids("applications")[0], target.ids("users")[0]
        policies = uow.policies.get_applicable_policies(target.id, app_id, user_id)
        assert all(p.org_id == me.id for p in policies)
        if not mine:
            assert policies == []
            foreign = Policy(org_id=me.id, policy_type=PolicyType.BUDGET, user_id=user_id)
            expect(uow, TenantScopeError, lambda: uow.policies.add(foreign))
    elif repo_name == "audit_logs":
        entries = uow.audit_logs.query(target.id)
        assert all(e.org_id == me.id for e in entries)
        if not mine:
            assert entries == []
            expect(uow, TenantScopeError, lambda: uow.audit_logs.record(target.id, "x", "y"))
    else:
        metrics = uow.inference_requests.metrics(target.id, *WINDOW)
        if not mine:
            assert metrics.total_requests == 0
            assert metrics.total_cost == Decimal("0")


operations = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.sampled_from(ORG_REPOS),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=1),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(me_index=st.integers(min_value=0, max_value=2), ops=operations)
def test_a_scoped_unit_of_work_never_sees_or_changes_a_foreign_row(
    store: Store, me_index: int, ops: list[tuple[str, str, int, int]]
) -> None:
    tenants = populate(store)
    me = tenants[me_index]
    before = snapshot(store, excluded_org=me.id)
    with store.unit_of_work(org_id=me.id) as uow:
        for op, repo_name, target, k in ops:
            run_op(uow, me, tenants[target], op, repo_name, k)
    assert snapshot(store, excluded_org=me.id) == before


# -- the same guarantees, one by one ---------------------------------------------------------


@pytest.fixture
def two(store: Store) -> tuple[Tenant, Tenant]:
    first, second = populate(store, 2)
    return first, second


def test_reads_see_only_the_scope(store: Store, two: tuple[Tenant, Tenant]) -> None:
    mine, other = two
    with store.unit_of_work(org_id=mine.id) as uow:
        assert [o.id for o in uow.organizations.list()] == [mine.id]
        assert {a.id for a in uow.applications.list()} == set(mine.ids("applications"))
        assert uow.users.count() == 2
        assert uow.applications.get_or_none(other.ids("applications")[0]) is None
        assert uow.applications.get_by_api_key(other.keys[0]) is None
        assert uow.applications.get_by_api_key(mine.keys[0]) is not None
        # joins and subqueries are scoped too
        slugs = uow.session.scalars(
            select(Organization.slug).where(Organization.id.in_(select(Application.org_id)))
        ).all()
        assert slugs == [mine.org.slug]
        alias = aliased(Application)
        assert {a.org_id for a in uow.session.scalars(select(alias))} == {mine.id}
    with store.unit_of_work() as uow:  # unscoped: administration sees everything
        assert uow.organizations.count() == 2
        assert uow.applications.count() == 4


def test_writes_to_another_organization_are_refused(
    store: Store, two: tuple[Tenant, Tenant]
) -> None:
    mine, other = two
    with store.unit_of_work(org_id=mine.id) as uow:
        with pytest.raises(TenantScopeError):
            uow.applications.add(Application(org_id=other.id, name="intruder"))
        with pytest.raises(TenantScopeError):
            uow.organizations.add(Organization(name="new", slug=f"new-{uuid.uuid4()}"))
        with pytest.raises(NotFoundError):
            uow.users.delete(other.ids("users")[0])
        with pytest.raises(NotFoundError):
            uow.applications.update(other.rows["applications"][0])
        # an entity loaded elsewhere, without the scope, cannot be attached
        with pytest.raises(TenantScopeError):
            uow.session.add(other.rows["applications"][0])
        # a bulk UPDATE touches only the scope's rows and cannot move them away
        renamed = uow.session.execute(update(Application).values(name="renamed"))
        assert getattr(renamed, "rowcount", None) == 2
        with pytest.raises(TenantScopeError):
            uow.session.execute(update(Application).values(org_id=other.id))
    with store.unit_of_work() as uow:
        names = {a.org_id: a.name for a in uow.applications.list()}
        assert names[mine.id] == "renamed"
        assert names[other.id] != "renamed"


def test_a_new_row_gets_the_scope_organization(store: Store, two: tuple[Tenant, Tenant]) -> None:
    mine, _ = two
    with store.unit_of_work(org_id=str(mine.id)) as uow:
        app = uow.applications.add(Application(name="implicit"))
        assert app.org_id == mine.id


def test_an_object_smuggled_in_is_checked_against_the_database(
    store: Store, two: tuple[Tenant, Tenant]
) -> None:
    """A detached object that claims to be ours but is a foreign row is refused at flush."""
    mine, other = two
    foreign = other.rows["applications"][0]
    with store.unit_of_work(org_id=mine.id) as uow:
        forged = Application(id=foreign.id, org_id=mine.id, name="forged")
        forged.lock_version = foreign.lock_version
        forged.created_at, forged.updated_at = foreign.created_at, foreign.updated_at
        make_transient_to_detached(forged)
        uow.session.add(forged)
        forged.name = "hijacked"
        expect(uow, TenantScopeError, uow.session.flush)
        uow.session.expunge(forged)
    with store.unit_of_work() as uow:
        assert uow.applications.get(foreign.id).name == foreign.name


def test_references_must_stay_inside_the_scope(store: Store, two: tuple[Tenant, Tenant]) -> None:
    mine, other = two
    with store.unit_of_work(org_id=mine.id) as uow:
        with pytest.raises(TenantScopeError):
            uow.policies.add(
                Policy(org_id=mine.id, policy_type=PolicyType.BUDGET, user_id=other.ids("users")[0])
            )
        own = uow.policies.add(
            Policy(org_id=mine.id, policy_type=PolicyType.BUDGET, user_id=mine.ids("users")[0])
        )
        assert own.user_id == mine.ids("users")[0]


@pytest.mark.parametrize("repo_name", PLATFORM_REPOS)
def test_platform_data_is_refused_in_a_scoped_unit_of_work(
    store: Store, two: tuple[Tenant, Tenant], repo_name: str
) -> None:
    mine, _ = two
    with store.unit_of_work(org_id=mine.id) as uow:
        repo = getattr(uow, repo_name)
        with pytest.raises(TenantScopeError):
            repo.list()
        with pytest.raises(TenantScopeError):
            repo.count()


def test_raw_sql_and_core_statements_are_refused(store: Store, two: tuple[Tenant, Tenant]) -> None:
    mine, _ = two
    core = Application.__table__
    assert isinstance(core, Table)
    with store.unit_of_work(org_id=mine.id) as uow:
        for statement in (
            text("SELECT * FROM applications"),
            select(core),
            select(Organization).join(core, core.c.org_id == Organization.id),
        ):
            with pytest.raises(TenantScopeError):
                uow.session.execute(statement)
        with pytest.raises(TenantScopeError):
            uow.session.execute(
                update(Application),
                [{"id": mine.ids("applications")[0], "name": "x", "lock_version": 1}],
            )


def test_org_id_must_be_a_uuid(store: Store) -> None:
    for bad in ("not-a-uuid", 42, b"bytes", ["x"]):
        with pytest.raises(InvalidInputError):
            store.unit_of_work(org_id=bad)


def test_scope_session_is_reusable_on_a_plain_session(
    store: Store, two: tuple[Tenant, Tenant]
) -> None:
    mine, other = two
    with store.session_factory() as session:
        scope_session(session, mine.id)
        assert session_org_id(session) == mine.id
        scope_session(session, mine.id)  # idempotent
        with pytest.raises(TenantScopeError):
            scope_session(session, other.id)
        assert {a.org_id for a in session.scalars(select(Application))} == {mine.id}
        assert session.get(Application, other.ids("applications")[0]) is None


def test_scope_session_scopes_an_async_session(tmp_path: Any) -> None:
    """The same function confines an ``AsyncSession`` (through its sync session)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    path = tmp_path / "tenants.sqlite3"
    sync_store = Store(f"sqlite:///{path}")
    sync_store.upgrade()
    mine, other = populate(sync_store, 2)
    sync_store.close()

    async def scoped_ids() -> tuple[set[uuid.UUID], Any]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with async_sessionmaker(engine)() as session:
                scope_session(session.sync_session, mine.id)
                found = set((await session.scalars(select(Application.org_id))).all())
                foreign = await session.get(Application, other.ids("applications")[0])
                return found, foreign
        finally:
            await engine.dispose()

    found, foreign = asyncio.run(scoped_ids())
    assert found == {mine.id}
    assert foreign is None


def test_audit_query_window_is_scoped_as_well(store: Store, two: tuple[Tenant, Tenant]) -> None:
    mine, other = two
    since = datetime.now(UTC) - timedelta(days=1)
    with store.unit_of_work(org_id=mine.id) as uow:
        assert len(uow.audit_logs.query(mine.id, since=since)) == 2
        assert uow.audit_logs.query(other.id, since=since) == []
