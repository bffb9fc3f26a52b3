"""factory-boy factories for the gateway's models, on flowstore's test kit: they write through
the test's session (the ``uow`` fixture) like flowstore's own factories."""

from __future__ import annotations

import factory
from flowstore.testing.factories import EntityFactory, FlowstoreFactory, OrganizationFactory, Parent

from gateway.models import Region, Route


class RegionFactory(FlowstoreFactory[Region]):
    class Meta:
        model = Region

    code = factory.Sequence(lambda n: f"region-{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())


class RouteFactory(EntityFactory[Route]):
    class Meta:
        model = Route
        exclude = ("org", "home")

    org = Parent(OrganizationFactory, unless=("org_id",))
    org_id = factory.SelfAttribute("org.id")
    home = Parent(RegionFactory, unless=("region",))
    region = factory.SelfAttribute("home.code")
    name = factory.Sequence(lambda n: f"route-{n}")
    path_prefix = factory.Sequence(lambda n: f"/v1/service-{n}")
    upstream_url = "http://upstream.internal:8080"
