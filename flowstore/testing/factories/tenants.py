"""Factories of the tenants' records: organizations, applications (with their API keys), users,
policies, audit entries and inference requests."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from flowstore.models import (
    Application,
    AuditLog,
    InferenceRequest,
    Organization,
    Policy,
    PolicyType,
    User,
    uuid7,
)
from flowstore.repositories.application import generate_api_key, hash_api_key
from flowstore.testing.binding import current_settings
from flowstore.testing.factories.base import (
    RUN_TAG,
    Dict,
    EntityFactory,
    Faker,
    LazyAttribute,
    LazyAttributeSequence,
    LazyFunction,
    Parent,
    SelfAttribute,
    Sequence,
    org_id_of,
    rand,
    slugify,
)

__all__ = [
    "ApplicationFactory",
    "AuditLogFactory",
    "InferenceRequestFactory",
    "OrganizationFactory",
    "PolicyFactory",
    "UserFactory",
]

# -- tenants: organizations, applications, users, policies ----------------------------------


class OrganizationFactory(EntityFactory[Organization]):
    class Meta:
        model = Organization

    name = Faker("company")
    slug = LazyAttributeSequence(lambda o, n: f"{slugify(o.name)}-{n}")


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
    external_id = Sequence(lambda n: f"auth0|{RUN_TAG:010x}{n:014x}")


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
    org_id = LazyAttribute(lambda o: org_id_of(o, "org", "application", "user"))
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
    request_id = LazyFunction(lambda: f"req_{rand().getrandbits(96):024x}")
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
    org_id = LazyAttribute(lambda o: org_id_of(o, "application"))
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
