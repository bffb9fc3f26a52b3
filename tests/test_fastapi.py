"""flowstore.ext.fastapi: problem details for every flowstore error, a unit of work that commits
before the response (a failed commit is the error response, on every backend and both faces),
the tenant-scoped and read-only variants, a service's own unit-of-work class, and the store
closed at shutdown.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from sqlalchemy import text

from flowstore import (
    AlreadyExistsError,
    ConcurrencyError,
    ConnectionFailedError,
    FlowstoreError,
    InvalidInputError,
    NotFoundError,
    StatementTimeoutError,
    Store,
    TenantScopeError,
    TransactionFailedError,
    UnitOfWork,
    repository,
)
from flowstore.aio import AsyncStore, AsyncUnitOfWork
from flowstore.ext.fastapi import install, unit_of_work
from flowstore.ext.problems import STATUSES
from flowstore.models import Application, Organization, Policy, PolicyType
from flowstore.repositories import OrganizationRepository
from tests.test_timeouts import SLOW, aio_url  # noqa: F401 (a fixture)

PROBLEM = "application/problem+json"


def _sync_app(store: Store[Any], **options: Any) -> FastAPI:
    app = FastAPI()
    install(app, store)
    UoW = Annotated[UnitOfWork, unit_of_work(store, **options)]

    @app.post("/orgs/{slug}", status_code=201)
    def create_at_commit(slug: str, uow: UoW) -> dict[str, str]:
        org = Organization(name=slug, slug=slug)
        uow.session.add(org)  # not flushed: a duplicate shows only at commit
        return {"slug": slug}

    @app.post("/orgs/{slug}/fail")
    def create_then_fail(slug: str, uow: UoW) -> dict[str, str]:
        uow.organizations.add(Organization(name=slug, slug=slug))
        raise ValueError("the endpoint failed after writing")

    @app.get("/orgs/{key}")
    def read(key: str, uow: UoW) -> dict[str, str]:
        return {"slug": uow.organizations.get(key).slug}

    @app.post("/apps/{org_id}")
    def create_app(org_id: str, uow: UoW) -> dict[str, str]:
        uow.session.add(Application(org_id=uuid.UUID(org_id), name="x", api_key_hash="h"))
        return {}

    @app.get("/slow")
    def slow(uow: UoW) -> dict[str, str]:
        uow.session.execute(SLOW)
        return {}

    return app


def _count(store: Store[Any], slug: str) -> int:
    with store.unit_of_work() as uow:
        return int(uow.organizations.count(slug=slug))


def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The problem details body of ``response`` (TestClient's or httpx's), checked."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == status
    for leak in ("UUID(", "SELECT", "INSERT", "Decimal(", "sqlalchemy", "psycopg", "pymysql"):
        assert leak not in body["detail"], body
    return dict(body)


# -- the commit comes before the response ---------------------------------------------------


def test_a_duplicate_found_at_commit_is_the_error_response(store: Store[Any]) -> None:
    client = TestClient(_sync_app(store))
    assert client.post("/orgs/acme").status_code == 201
    body = _assert_problem(client.post("/orgs/acme"), 409)
    assert body["detail"] == "an organization with this slug already exists"
    assert _count(store, "acme") == 1


def test_an_exception_in_the_endpoint_rolls_the_work_back(store: Store[Any]) -> None:
    client = TestClient(_sync_app(store), raise_server_exceptions=False)
    assert client.post("/orgs/gone/fail").status_code == 500
    assert _count(store, "gone") == 0


def test_a_broken_reference_names_the_field_not_the_sql(store: Store[Any]) -> None:
    client = TestClient(_sync_app(store))
    body = _assert_problem(client.post(f"/apps/{uuid.uuid4()}"), 422)
    if store.dialect != "sqlite":  # SQLite does not say which reference failed
        assert body["detail"] == "org_id does not refer to an existing organization"


def test_async_endpoints_commit_before_the_response(aio_url: str) -> None:  # noqa: F811
    async def main() -> None:
        async with AsyncStore(aio_url) as store:
            app = FastAPI()
            install(app, store)
            UoW = Annotated[AsyncUnitOfWork, unit_of_work(store)]

            @app.post("/orgs/{slug}", status_code=201)
            async def create(slug: str, uow: UoW) -> dict[str, str]:
                uow.session.add(Organization(name=slug, slug=slug))
                return {"slug": slug}

            @app.get("/orgs/{key}")
            async def read(key: str, uow: UoW) -> dict[str, str]:
                return {"slug": (await uow.organizations.get(key)).slug}

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.post("/orgs/acme")).status_code == 201
                body = _assert_problem(await client.post("/orgs/acme"), 409)
                assert "slug" in body["detail"]
                assert (await client.get("/orgs/acme-id")).status_code == 404
            async with store.unit_of_work() as uow:
                assert await uow.organizations.count(slug="acme") == 1

    asyncio.run(main())


# -- every error, its status and a detail a client can show ----------------------------------

ERRORS: list[tuple[FlowstoreError, int]] = [
    (NotFoundError(f"Deployment {uuid.UUID(int=7)!r} not found"), 404),
    (AlreadyExistsError("Organization 'acme' already exists"), 409),
    (ConcurrencyError("the row was changed"), 409),
    (TenantScopeError("tenant-scoped unit of work: another organization"), 403),
    (InvalidInputError("'since' must be a timezone-aware date and time (UTC)"), 422),
    (ConnectionFailedError("database postgresql://app:hunter2@db.internal/x did not answer"), 503),
    (StatementTimeoutError("cut off"), 504),
    (TransactionFailedError("deadlock detected"), 503),
    (FlowstoreError("database error: relation secret_table does not exist"), 500),
]


@pytest.mark.parametrize(("error", "status"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_every_error_maps_to_its_status(error: FlowstoreError, status: int) -> None:
    app = FastAPI()
    with Store() as store:
        install(app, store)

        @app.get("/")
        def fail() -> None:
            raise error

        body = _assert_problem(TestClient(app).get("/"), status)
    assert STATUSES[type(error)] == status
    assert "hunter2" not in body["detail"] and "db.internal" not in body["detail"]
    assert "secret_table" not in body["detail"] and "deadlock" not in body["detail"]
    if isinstance(error, NotFoundError):
        assert body["detail"] == f"Deployment {uuid.UUID(int=7)} not found"
    if type(error) is InvalidInputError:
        assert "since" in body["detail"]


def test_an_unreachable_database_is_503_without_its_address() -> None:
    url = "postgresql://app:hunter2@127.0.0.1:9/orders"
    with Store(url) as store:
        body = _assert_problem(TestClient(_sync_app(store)).get(f"/orgs/{uuid.uuid4()}"), 503)
    assert "hunter2" not in body["detail"] and "127.0.0.1" not in body["detail"]


def test_a_statement_timeout_is_504() -> None:
    with Store() as store:
        client = TestClient(_sync_app(store, timeout=0.3))
        body = _assert_problem(client.get("/slow"), 504)
    assert "too long" in body["detail"]


# -- the variants ----------------------------------------------------------------------------


def test_the_tenant_scoped_variant_takes_the_organization_from_the_request(
    store: Store[Any],
) -> None:
    with store.unit_of_work() as uow:
        acme = uow.organizations.add(Organization(name="Acme", slug="acme"))
        globex = uow.organizations.add(Organization(name="Globex", slug="globex"))

    def caller_org(x_org: Annotated[str | None, Header()] = None) -> uuid.UUID | None:
        return uuid.UUID(x_org) if x_org else None

    app = FastAPI()
    install(app, store)
    Scoped = Annotated[UnitOfWork, unit_of_work(store, org_id=caller_org)]

    @app.post("/policies/{org}", status_code=201)
    def add_policy(org: str, uow: Scoped) -> dict[str, str]:
        policy = Policy(org_id=uuid.UUID(org), policy_type=PolicyType.BUDGET, config={})
        return {"id": str(uow.policies.add(policy).id)}

    client = TestClient(app)
    assert client.post(f"/policies/{acme.id}", headers={"X-Org": str(acme.id)}).status_code == 201
    _assert_problem(client.post(f"/policies/{globex.id}", headers={"X-Org": str(acme.id)}), 403)
    _assert_problem(client.post(f"/policies/{acme.id}"), 403)  # no organization: refused
    with store.unit_of_work() as uow:
        assert uow.policies.count() == 1


def test_the_read_only_variant_reads_and_refuses_writes_never_answering_ok(
    store: Store[Any],
) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Seen", slug="seen"))
    client = TestClient(_sync_app(store, read_only=True))
    assert client.get(f"/orgs/{org.id}").json() == {"slug": "seen"}
    refused = client.post("/orgs/kept")  # pending at the end: refused, not dropped unsaid
    assert refused.status_code == 503
    assert refused.json()["type"].endswith("read-only")
    assert client.post("/orgs/gone/fail").status_code == 503  # refused at its flush
    assert _count(store, "kept") == 0 and _count(store, "gone") == 0


class AcmeUnitOfWork(UnitOfWork):
    orgs = repository(OrganizationRepository)


def test_a_services_own_unit_of_work_class_is_what_the_endpoint_gets() -> None:
    with Store(unit_of_work_class=AcmeUnitOfWork) as store:
        app = FastAPI()
        install(app, store)

        @app.post("/")
        def create(uow: Annotated[AcmeUnitOfWork, unit_of_work(store)]) -> dict[str, str]:
            assert isinstance(uow, AcmeUnitOfWork)
            return {"id": str(uow.orgs.add(Organization(name="A", slug="a")).id)}

        assert TestClient(app).post("/").status_code == 200
        assert _count(store, "a") == 1


def test_a_plain_value_is_refused() -> None:
    with pytest.raises(TypeError, match="Store or AsyncStore"):
        unit_of_work("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Store or AsyncStore"):
        install(FastAPI(), None)  # type: ignore[arg-type]


# -- the store is closed at shutdown, after the app's own lifespan -----------------------------


def _closing(close: Callable[[], Any], events: list[str]) -> Callable[[], Any]:
    def spy() -> Any:
        events.append("store closed")
        return close()

    return spy


def test_the_store_is_closed_when_the_app_shuts_down() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        events.append("app started")
        yield
        events.append("app stopped")

    store = Store()
    store.close = _closing(store.close, events)  # type: ignore[method-assign]
    app = FastAPI(lifespan=lifespan)
    install(app, store)
    with TestClient(app):
        assert events == ["app started"]
    assert events == ["app started", "app stopped", "store closed"]


def test_the_async_store_is_closed_when_the_app_shuts_down() -> None:
    events: list[str] = []
    store = AsyncStore()

    async def close() -> None:
        events.append("store closed")

    store.close = close  # type: ignore[method-assign]
    app = FastAPI()
    install(app, store)
    with TestClient(app):
        pass
    assert events == ["store closed"]


def test_the_store_answers_plain_sql_inside_the_dependency(store: Store[Any]) -> None:
    app = FastAPI()
    install(app, store)

    @app.get("/")
    def one(uow: Annotated[UnitOfWork, unit_of_work(store)]) -> int:
        one: int = uow.session.execute(text("SELECT 1")).scalar_one()
        return one

    assert TestClient(app).get("/").json() == 1
