"""The gateway's unit of work: flowstore's repositories and its own."""

from __future__ import annotations

from flowstore import UnitOfWork, repository

from gateway.repositories import RegionRepository, RouteRepository


class GatewayUnitOfWork(UnitOfWork):
    routes = repository(RouteRepository)
    regions = repository(RegionRepository)
