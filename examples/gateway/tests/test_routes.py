"""The gateway's tests, on flowstore's pytest plugin: ``uow`` is a GatewayUnitOfWork on a
database migrated with flowstore's revisions and the gateway's, rolled back after each test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from flowstore import InvalidInputError, Store, TenantScopeError
from flowstore.testing.factories import OrganizationFactory

from gateway.factories import RegionFactory, RouteFactory
from gateway.models import Route
from gateway.uow import GatewayUnitOfWork


def test_the_fixture_is_the_services_unit_of_work(uow: GatewayUnitOfWork) -> None:
    assert isinstance(uow, GatewayUnitOfWork)
    assert uow.routes.count() == 0  # every test starts from the migrated, empty database


def test_a_request_goes_to_the_longest_matching_prefix(uow: GatewayUnitOfWork) -> None:
    org = OrganizationFactory.create()
    RouteFactory.create(org=org, path_prefix="/v1/")
    chat = RouteFactory.create(org=org, path_prefix="/v1/chat/")
    RouteFactory.create(org=org, path_prefix="/v1/chat/legacy", enabled=False)
    found = uow.routes.match(org.id, "/v1/chat/legacy/completions")
    assert found is not None and found.id == chat.id
    assert uow.routes.match(org.id, "/v2/embeddings") is None


def test_in_place_settings_edits_are_saved(uow: GatewayUnitOfWork) -> None:
    route = RouteFactory.create(settings={"retry": {"attempts": 2}})
    route.settings["retry"]["attempts"] = 5
    uow.commit()  # inside the test's transaction: rolled back afterwards
    uow.session.expire_all()
    assert uow.routes.get(route.id).settings == {"retry": {"attempts": 5}}
    assert uow.routes.get(route.id).lock_version == 2


def test_budgets_are_exact(uow: GatewayUnitOfWork) -> None:
    route = RouteFactory.create(monthly_budget=Decimal("199.99"))
    assert uow.routes.get(route.id).monthly_budget == Decimal("199.99")
    with pytest.raises(InvalidInputError, match="decimal places"):
        RouteFactory.create(monthly_budget=Decimal("0.0000001"))


def test_an_organizations_unit_of_work_sees_only_its_routes(
    uow: GatewayUnitOfWork, flowstore_store: Store[GatewayUnitOfWork]
) -> None:
    mine, theirs = OrganizationFactory.create(), OrganizationFactory.create()
    region = RegionFactory.create()
    RouteFactory.create(org=mine, home=region)
    RouteFactory.create(org=theirs, home=region)
    uow.scope_to(mine.id)  # say, once the request's API key is known
    assert [r.org_id for r in uow.routes.in_region(region.code)] == [mine.id]
    with pytest.raises(TenantScopeError):
        uow.regions.list()  # platform data: not for an organization's unit of work
    with pytest.raises(TenantScopeError):
        uow.routes.add(
            Route(org_id=theirs.id, name="x", path_prefix="/x", upstream_url="u", region="r")
        )
