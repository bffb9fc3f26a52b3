"""factory-boy factories for every flowstore model, bound to the current test's session.

Inside a test that uses the ``uow`` fixture, ``OrganizationFactory()`` writes through that
unit of work's session (flushed in a savepoint, so ids and defaults are set and a duplicate is
``AlreadyExistsError``), and the row vanishes with the test's rollback. Elsewhere, bind a
session explicitly::

    with store.unit_of_work() as uow, using_session(uow.session):
        machine = MachineFactory()  # and its request, and that request's template

Required parents are made on demand: ``MachineFactory()`` creates a request and a template;
pass a parent (``MachineFactory(request=req)``) or its id (``request_id=req.id``) to reuse one.
Values unique in the schema (slug, instance_id, email per org, external_id, api_key_hash) come
from sequences, so batches never collide; ``factory.random.reseed_random(seed)`` makes the rest
repeatable.
"""

from flowstore.testing.binding import bind_session, current_session, using_session
from flowstore.testing.factories.base import EntityFactory, FlowstoreFactory, Parent
from flowstore.testing.factories.fleet import (
    DeploymentFactory,
    DeploymentNodeFactory,
    JobFactory,
    JobScheduleFactory,
    MachineFactory,
    RequestFactory,
    TemplateFactory,
)
from flowstore.testing.factories.tenants import (
    ApplicationFactory,
    AuditLogFactory,
    InferenceRequestFactory,
    OrganizationFactory,
    PolicyFactory,
    UserFactory,
)

__all__ = [
    "ApplicationFactory",
    "AuditLogFactory",
    "DeploymentFactory",
    "DeploymentNodeFactory",
    "EntityFactory",
    "FlowstoreFactory",
    "InferenceRequestFactory",
    "JobFactory",
    "JobScheduleFactory",
    "MachineFactory",
    "OrganizationFactory",
    "Parent",
    "PolicyFactory",
    "RequestFactory",
    "TemplateFactory",
    "UserFactory",
    "bind_session",
    "current_session",
    "using_session",
]
