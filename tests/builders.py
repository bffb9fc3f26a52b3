"""Small builders that make a valid entity of each model (with its parents) inside a unit of
work, so that generic contract tests can run over every repository."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from flowstore.models import (
    Application,
    AuditLog,
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
from flowstore.uow import UnitOfWork

_seq = itertools.count(1)


def org(uow: UnitOfWork, **kw: Any) -> Organization:
    n = next(_seq)
    return uow.organizations.add(Organization(**{"name": f"Org {n}", "slug": f"org-{n}", **kw}))


def template(uow: UnitOfWork, **kw: Any) -> Template:
    n = next(_seq)
    values = {"name": f"tpl-{n}", "provider_type": "aws", "max_number": 3, "attributes": {}}
    return uow.templates.add(Template(**{**values, **kw}))


def request(uow: UnitOfWork, **kw: Any) -> Request:
    values: dict[str, Any] = {"machine_count": 2, "status": RequestStatus.PENDING}
    if "template_id" not in kw:
        values["template_id"] = template(uow).id
    return uow.requests.add(Request(**{**values, **kw}))


def machine(uow: UnitOfWork, **kw: Any) -> Machine:
    values: dict[str, Any] = {"instance_id": f"i-{next(_seq):08x}", "status": MachineStatus.PENDING}
    if "request_id" not in kw:
        values["request_id"] = request(uow).id
    return uow.machines.add(Machine(**{**values, **kw}))


def deployment(uow: UnitOfWork, **kw: Any) -> Deployment:
    n = next(_seq)
    values = {
        "name": f"svc-{n}",
        "version": "1.4.2",
        "status": DeploymentStatus.PENDING,
        "config": {},
    }
    return uow.deployments.add(Deployment(**{**values, **kw}))


def application(uow: UnitOfWork, **kw: Any) -> Application:
    values: dict[str, Any] = {"name": f"app-{next(_seq)}"}
    if "org_id" not in kw:
        values["org_id"] = org(uow).id
    return uow.applications.add(Application(**{**values, **kw}))


def user(uow: UnitOfWork, **kw: Any) -> User:
    n = next(_seq)
    values: dict[str, Any] = {"email": f"user{n}@example.com", "external_id": f"idp|{n}"}
    if "org_id" not in kw:
        values["org_id"] = org(uow).id
    return uow.users.add(User(**{**values, **kw}))


def policy(uow: UnitOfWork, **kw: Any) -> Policy:
    values: dict[str, Any] = {"policy_type": PolicyType.RATE_LIMIT, "config": {"rpm": 60}}
    if "org_id" not in kw:
        values["org_id"] = org(uow).id
    return uow.policies.add(Policy(**{**values, **kw}))


def audit_log(uow: UnitOfWork, **kw: Any) -> AuditLog:
    values: dict[str, Any] = {"action": "create", "resource_type": "deployment", "details": {}}
    if "org_id" not in kw:
        values["org_id"] = org(uow).id
    return uow.audit_logs.add(AuditLog(**{**values, **kw}))


def inference_request(uow: UnitOfWork, **kw: Any) -> InferenceRequest:
    values: dict[str, Any] = {
        "model": "gpt-x",
        "status": "success",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": Decimal("0.000150"),
        "latency_ms": 120,
    }
    if "org_id" not in kw or "application_id" not in kw:
        app = application(uow)
        values.update(org_id=app.org_id, application_id=app.id)
    return uow.inference_requests.add(InferenceRequest(**{**values, **kw}))


# repository attribute name -> (builder, a mutable str field, a filterable field)
BUILDERS: dict[str, tuple[Callable[..., Any], str, str]] = {
    "deployments": (deployment, "name", "version"),
    "templates": (template, "name", "provider_type"),
    "requests": (request, "status", "status"),
    "machines": (machine, "status", "status"),
    "organizations": (org, "name", "name"),
    "applications": (application, "name", "name"),
    "users": (user, "email", "email"),
    "policies": (policy, "priority", "policy_type"),
    "audit_logs": (audit_log, "action", "action"),
    "inference_requests": (inference_request, "model", "model"),
}
