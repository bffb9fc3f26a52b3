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

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import factory.random
from factory import declarations
from factory.alchemy import SQLAlchemyModelFactory
from factory.faker import Faker as _Faker
from sqlalchemy.orm import Session

from flowstore.errors import InvalidInputError, translating
from flowstore.models import (
    Application,
    AuditLog,
    Deployment,
    DeploymentNode,
    DeploymentStatus,
    InferenceRequest,
    Job,
    JobStatus,
    Machine,
    MachineStatus,
    Organization,
    Policy,
    PolicyType,
    Request,
    RequestStatus,
    Template,
    User,
    utcnow,
    uuid7,
)
from flowstore.repositories.application import generate_api_key, hash_api_key
from flowstore.testing.binding import bind_session, current_session, current_settings, using_session

__all__ = [
    "ApplicationFactory",
    "AuditLogFactory",
    "DeploymentFactory",
    "DeploymentNodeFactory",
    "EntityFactory",
    "FlowstoreFactory",
    "InferenceRequestFactory",
    "JobFactory",
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

# factory-boy's declarations are untyped; typed names for them keep this module --strict clean.
Dict: Callable[..., Any] = declarations.Dict
Faker: Callable[..., Any] = _Faker
LazyAttribute: Callable[..., Any] = declarations.LazyAttribute
LazyAttributeSequence: Callable[..., Any] = declarations.LazyAttributeSequence
LazyFunction: Callable[..., Any] = declarations.LazyFunction
SelfAttribute: Callable[..., Any] = declarations.SelfAttribute
Sequence: Callable[..., Any] = declarations.Sequence

# Mixed into sequence-made identifiers so that two test processes writing to one persistent
# database (factories used outside the rolled-back fixtures) do not collide either.
_RUN = secrets.randbits(40)


def _rand() -> Any:
    """factory-boy's random generator (seeded by ``factory.random.reseed_random``)."""
    return factory.random.randgen


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "org"


class Parent(declarations.SubFactory):
    """A required parent made by its factory, unless the call passes the parent's id (or
    another field named in ``unless``): ``UserFactory(org_id=o.id)`` makes no organization."""

    def __init__(self, parent_factory: Any, *, unless: tuple[str, ...], **defaults: Any) -> None:
        super().__init__(parent_factory, **defaults)  # type: ignore[no-untyped-call]
        self.unless = unless

    def evaluate(self, instance: Any, step: Any, extra: Any) -> Any:
        # ``step.builder.extras``: the keyword arguments of this (sub)factory call.
        if any(name in step.builder.extras for name in self.unless):
            return None
        return super().evaluate(instance, step, extra)  # type: ignore[no-untyped-call]


ModelT = TypeVar("ModelT")


class FlowstoreFactory(SQLAlchemyModelFactory, Generic[ModelT]):
    """Base of the factories: the bound session, and each insert flushed in its own savepoint
    (a failed one leaves the session usable and raises the flowstore error). Subclasses name
    their model twice: ``Meta.model`` for factory-boy, the type argument for type checkers
    (``create()`` and ``build()`` return it; a bare call is factory-boy's, untyped)."""

    class Meta:
        abstract = True
        sqlalchemy_session_factory = current_session
        sqlalchemy_session_persistence = "flush"

    @classmethod
    def build(cls, **kwargs: Any) -> ModelT:
        """An unsaved instance (parents unsaved too); needs no session."""
        built: ModelT = super().build(**kwargs)
        return built

    @classmethod
    def create(cls, **kwargs: Any) -> ModelT:
        """A saved instance, flushed through the bound session (same as calling the factory;
        typed, for tests checked with ``mypy --strict``)."""
        created: ModelT = super().create(**kwargs)
        return created

    @classmethod
    def _create(cls, model_class: type[Any], *args: Any, **kwargs: Any) -> Any:
        # Looked up per call, not stored on ``_meta`` as factory-boy does, so that subclasses
        # defined after a first use still declare cleanly and a rebinding takes effect at once.
        meta: Any = cls._meta
        session_factory = meta.sqlalchemy_session_factory
        session = session_factory() if session_factory else meta.sqlalchemy_session
        if session is None:
            raise InvalidInputError(f"{cls.__name__} has no session to write to")
        if meta.sqlalchemy_get_or_create:
            return cls._get_or_create(model_class, session, args, kwargs)  # type: ignore[no-untyped-call]
        return cls._save(model_class, session, args, kwargs)

    @classmethod
    def _save(
        cls, model_class: type[Any], session: Session, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        instance = model_class(*args, **kwargs)
        with translating():
            with session.begin_nested():
                session.add(instance)
            if getattr(cls._meta, "sqlalchemy_session_persistence", None) == "commit":
                session.commit()
        return instance


class EntityFactory(FlowstoreFactory[ModelT]):
    """Models with the ``Entity`` columns: the id is made up front, so ``build()`` has one too."""

    class Meta:
        abstract = True

    id = LazyFunction(uuid7)


def _org_id_of(resolver: Any, *owners: str) -> uuid.UUID:
    """The organization of the first owner given (org, application, user), or of the one whose
    id was passed (looked up in the bound session)."""
    for owner in owners:
        parent = getattr(resolver, owner, None)
        if parent is not None:
            owner_id: uuid.UUID = parent.id if isinstance(parent, Organization) else parent.org_id
            return owner_id
    session = current_session()
    application_id = getattr(resolver, "application_id", None) if "application" in owners else None
    application = session.get(Application, application_id) if application_id else None
    if application is not None:
        return application.org_id
    user_id = getattr(resolver, "user_id", None) if "user" in owners else None
    user = session.get(User, user_id) if user_id else None
    if user is not None:
        return user.org_id
    raise InvalidInputError(f"cannot tell the organization: pass org_id or one of {owners}")


# -- deployments -------------------------------------------------------------------------------

SERVICES = ("api-gateway", "billing", "checkout", "search", "auth", "inference-router", "notifier")


class DeploymentFactory(EntityFactory[Deployment]):
    class Meta:
        model = Deployment

    name = Faker("random_element", elements=SERVICES)
    version = LazyFunction(
        lambda: f"{_rand().randint(0, 4)}.{_rand().randint(0, 20)}.{_rand().randint(0, 30)}"
    )
    status = DeploymentStatus.PENDING
    config = LazyAttribute(
        lambda o: {
            "image": f"registry.example.com/{o.name}:{o.version}",
            "replicas": 2,
            "port": 8080,
        }
    )


class DeploymentNodeFactory(FlowstoreFactory[DeploymentNode]):
    class Meta:
        model = DeploymentNode
        exclude = ("deployment",)

    deployment = Parent(DeploymentFactory, unless=("deployment_id",))
    deployment_id = SelfAttribute("deployment.id")
    node_id = LazyFunction(lambda: f"node-{_rand().randint(1, 64):02d}")


# -- host factory: templates, requests, machines --------------------------------------------

PROVIDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aws": (("t3.medium", "m5.large", "c6i.xlarge"), ("us-east-1", "eu-west-1")),
    "gcp": (("e2-standard-4", "n2-highmem-8"), ("us-central1", "europe-west4")),
    "azure": (("Standard_D4s_v5", "Standard_E8s_v5"), ("eastus", "westeurope")),
}


class TemplateFactory(EntityFactory[Template]):
    class Meta:
        model = Template

    class Params:
        instance_type = LazyAttribute(lambda o: _rand().choice(PROVIDERS[o.provider_type][0]))
        region = LazyAttribute(lambda o: _rand().choice(PROVIDERS[o.provider_type][1]))

    provider_type = Faker("random_element", elements=sorted(PROVIDERS))
    name = LazyAttribute(lambda o: f"{o.provider_type}-{o.instance_type}-{o.region}")
    max_number = Faker("pyint", min_value=1, max_value=20)
    attributes = LazyAttribute(
        lambda o: {
            "instance_type": o.instance_type,
            "region": o.region,
            "image_id": f"img-{_rand().getrandbits(64):016x}",
        }
    )


class RequestFactory(EntityFactory[Request]):
    class Meta:
        model = Request
        exclude = ("template",)

    template = Parent(TemplateFactory, unless=("template_id",))
    template_id = SelfAttribute("template.id")
    machine_count = Faker("pyint", min_value=1, max_value=3)
    status = RequestStatus.PENDING


class MachineFactory(EntityFactory[Machine]):
    class Meta:
        model = Machine
        exclude = ("request",)

    request = Parent(RequestFactory, unless=("request_id",))
    request_id = SelfAttribute("request.id")
    instance_id = Sequence(lambda n: f"i-{_RUN:010x}{n:07x}")
    status = MachineStatus.PENDING


# -- tenants: organizations, applications, users, policies ----------------------------------


class OrganizationFactory(EntityFactory[Organization]):
    class Meta:
        model = Organization

    name = Faker("company")
    slug = LazyAttributeSequence(lambda o, n: f"{_slugify(o.name)}-{n}")


APPLICATION_NAMES = ("web-app", "mobile-app", "batch-jobs", "support-bot", "analytics")


class ApplicationFactory(EntityFactory[Application]):
    """``raw_api_key="..."`` sets the key the row's hash is made from (default: a fresh one),
    so a test can authenticate with ``uow.applications.get_by_api_key(raw)``."""

    class Meta:
        model = Application
        exclude = ("org",)

    class Params:
        raw_api_key = LazyFunction(generate_api_key)

    org = Parent(OrganizationFactory, unless=("org_id",))
    org_id = SelfAttribute("org.id")
    name = Faker("random_element", elements=APPLICATION_NAMES)
    api_key_hash = LazyAttribute(
        lambda o: hash_api_key(o.raw_api_key, current_settings().api_key_secret.get_secret_value())
    )


def _email(o: Any, n: int) -> str:
    local = ".".join(re.sub(r"[^a-z0-9]", "", part.lower()) for part in (o.first_name, o.last_name))
    return f"{local}{n}@example.com"


class UserFactory(EntityFactory[User]):
    class Meta:
        model = User
        exclude = ("org",)

    class Params:
        first_name = Faker("first_name")
        last_name = Faker("last_name")

    org = Parent(OrganizationFactory, unless=("org_id",))
    org_id = SelfAttribute("org.id")
    email = LazyAttributeSequence(_email)
    external_id = Sequence(lambda n: f"auth0|{_RUN:010x}{n:014x}")


POLICY_CONFIGS: dict[PolicyType, dict[str, Any]] = {
    PolicyType.RATE_LIMIT: {"requests_per_minute": 600, "burst": 100},
    PolicyType.BUDGET: {"monthly_limit_usd": "500.00", "alert_at_percent": 80},
    PolicyType.MODEL_ACCESS: {"allowed_models": ["gpt-4o-mini", "claude-3-5-haiku"]},
}


class PolicyFactory(EntityFactory[Policy]):
    """Org-level by default; ``application=app`` or ``user=u`` makes it app or user level (its
    organization then follows from that parent)."""

    class Meta:
        model = Policy
        exclude = ("org", "application", "user")

    org = Parent(
        OrganizationFactory,
        unless=("org_id", "application", "user", "application_id", "user_id"),
    )
    application = None
    user = None
    org_id = LazyAttribute(lambda o: _org_id_of(o, "org", "application", "user"))
    application_id = LazyAttribute(lambda o: o.application.id if o.application else None)
    user_id = LazyAttribute(lambda o: o.user.id if o.user else None)
    policy_type = PolicyType.RATE_LIMIT
    config = LazyAttribute(lambda o: dict(POLICY_CONFIGS[PolicyType(o.policy_type)]))
    priority = 0
    enabled = True


# -- audit trail and LLM usage -------------------------------------------------------------

AUDIT_EVENTS = (
    ("application.created", "application"),
    ("api_key.rotated", "application"),
    ("policy.updated", "policy"),
    ("user.invited", "user"),
)


class AuditLogFactory(EntityFactory[AuditLog]):
    class Meta:
        model = AuditLog
        exclude = ("org",)

    class Params:
        event = Faker("random_element", elements=AUDIT_EVENTS)

    org = Parent(OrganizationFactory, unless=("org_id",))
    org_id = SelfAttribute("org.id")
    action = LazyAttribute(lambda o: o.event[0])
    resource_type = LazyAttribute(lambda o: o.event[1])
    resource_id = LazyFunction(lambda: str(uuid7()))
    request_id = LazyFunction(lambda: f"req_{_rand().getrandbits(96):024x}")
    details = Dict({"ip": Faker("ipv4_public"), "user_agent": Faker("user_agent")})


MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b-instruct")
_PROMPT_PRICE = Decimal("0.000003")  # per token, USD
_COMPLETION_PRICE = Decimal("0.000015")


class InferenceRequestFactory(EntityFactory[InferenceRequest]):
    """One successful call of a made application; ``cost`` follows from the token counts."""

    class Meta:
        model = InferenceRequest
        exclude = ("application",)

    application = Parent(ApplicationFactory, unless=("application_id",))
    application_id = SelfAttribute("application.id")
    org_id = LazyAttribute(lambda o: _org_id_of(o, "application"))
    model = Faker("random_element", elements=MODELS)
    status = "success"
    prompt_tokens = Faker("pyint", min_value=20, max_value=4000)
    completion_tokens = Faker("pyint", min_value=10, max_value=1200)
    cost = LazyAttribute(
        lambda o: (
            o.prompt_tokens * _PROMPT_PRICE + o.completion_tokens * _COMPLETION_PRICE
        ).quantize(Decimal("0.000001"))
    )
    latency_ms = Faker("pyint", min_value=120, max_value=6000)


# -- the job queue ---------------------------------------------------------------------------

JOB_TASKS = (
    ("emails", {"task": "send_invoice_email"}),
    ("billing", {"task": "close_billing_period"}),
    ("provisioning", {"task": "launch_machines"}),
)
_FINISHED = (JobStatus.DONE, JobStatus.DEAD)


class JobFactory(FlowstoreFactory[Job]):
    """A queued job, due now. ``status=JobStatus.RUNNING`` gives it a lease and a claim token
    (as a worker holding it would have); ``DONE`` or ``DEAD`` sets ``finished_at``, which the
    schema demands of finished jobs."""

    class Meta:
        model = Job

    class Params:
        task = Faker("random_element", elements=JOB_TASKS)

    id = LazyFunction(uuid7)
    queue = LazyAttribute(lambda o: o.task[0])
    payload = LazyAttribute(lambda o: {**o.task[1], "reference": str(uuid7())})
    status = JobStatus.QUEUED
    priority = 0
    run_at = LazyFunction(utcnow)
    max_attempts = 5
    attempts = LazyAttribute(
        lambda o: {JobStatus.QUEUED: 0, JobStatus.DEAD: o.max_attempts}.get(o.status, 1)
    )
    last_error = LazyAttribute(
        lambda o: "TimeoutError: provider did not answer" if o.status == JobStatus.DEAD else None
    )
    lease_expires_at = LazyAttribute(
        lambda o: utcnow() + timedelta(seconds=30) if o.status == JobStatus.RUNNING else None
    )
    claim_token = LazyAttribute(lambda o: uuid7() if o.status == JobStatus.RUNNING else None)
    locked_by = LazyAttribute(lambda o: "worker-1" if o.status == JobStatus.RUNNING else None)
    finished_at = LazyAttribute(lambda o: utcnow() if o.status in _FINISHED else None)
