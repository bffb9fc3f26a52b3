"""Every domain extra of DESIGN.md's domain table, on every backend."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flowstore import InvalidInputError, NotFoundError, Store
from flowstore.models import (
    AuditLog,
    DeploymentStatus,
    Entity,
    InferenceRequest,
    MachineStatus,
    PolicyType,
    RequestStatus,
    Template,
)
from flowstore.repositories import DeploymentStats, InferenceMetrics
from tests import builders as b


def id_of(entity: Entity | None) -> uuid.UUID | None:
    """The id of what a lookup found, or ``None`` when it found nothing."""
    return None if entity is None else entity.id


# -- deployments -------------------------------------------------------------------------


def test_list_by_status_and_stats(store: Store) -> None:
    with store.unit_of_work() as uow:
        assert uow.deployments.stats() == DeploymentStats(total=0, by_status=Counter())
        for status in ["running", "running", "failed", "pending"]:
            b.deployment(uow, status=DeploymentStatus(status))
    with store.unit_of_work() as uow:
        running = uow.deployments.list_by_status(DeploymentStatus.RUNNING)
        assert len(running) == 2 and all(d.status is DeploymentStatus.RUNNING for d in running)
        assert len(uow.deployments.list_by_status("failed")) == 1
        assert uow.deployments.list_by_status("stopped") == []
        with pytest.raises(InvalidInputError):
            uow.deployments.list_by_status("exploded")
        stats = uow.deployments.stats()
        assert stats.total == 4
        assert stats.by_status == {"running": 2, "failed": 1, "pending": 1}
        assert stats.by_status[DeploymentStatus.RUNNING] == 2
        assert stats.by_status[DeploymentStatus.STOPPED] == 0


def test_node_mapping(store: Store) -> None:
    with store.unit_of_work() as uow:
        one, two, three = (b.deployment(uow) for _ in range(3))
        uow.deployments.set_node_id(one.id, "node-a")
        uow.deployments.set_node_id(str(two.id), "node-a")
        uow.deployments.set_node_id(three.id, "node-b")
    with store.unit_of_work() as uow:
        assert uow.deployments.get_node_id(one.id) == "node-a"
        assert set(uow.deployments.get_deployments_by_node_id("node-a")) == {one.id, two.id}
        assert uow.deployments.get_deployments_by_node_id("node-z") == []
        uow.deployments.set_node_id(one.id, "node-b")  # moving replaces the mapping
        assert uow.deployments.get_node_id(one.id) == "node-b"
        assert set(uow.deployments.get_deployments_by_node_id("node-b")) == {one.id, three.id}
        assert uow.deployments.delete_node_id(one.id) is True
        assert uow.deployments.delete_node_id(one.id) is False
        with pytest.raises(NotFoundError):
            uow.deployments.get_node_id(one.id)
        with pytest.raises(NotFoundError):
            uow.deployments.set_node_id(uuid.uuid4(), "node-a")
        with pytest.raises(NotFoundError):
            uow.deployments.get_node_id("garbage")
        with pytest.raises(InvalidInputError):
            uow.deployments.set_node_id(two.id, "")
        # moving a deployment does not bump the deployment's own version
        assert uow.deployments.get(one.id).lock_version == 1
    with store.unit_of_work() as uow:
        uow.deployments.delete(three.id)  # its mapping goes with it
    with store.unit_of_work() as uow:
        assert uow.deployments.get_deployments_by_node_id("node-b") == []


# -- templates ---------------------------------------------------------------------------


def test_templates_by_provider_and_attributes(store: Store) -> None:
    with store.unit_of_work() as uow:
        gpu = b.template(
            uow,
            provider_type="aws",
            attributes={
                "gpu": True,
                "cpu": 8,
                "region": "eu-west-1",
                "tags": {"team": "ml", "tier": 1},
            },
        )
        cpu = b.template(uow, provider_type="aws", attributes={"gpu": False, "cpu": 8})
        gcp = b.template(uow, provider_type="gcp", attributes={"gpu": 1, "labels": ["a", "b"]})
    with store.unit_of_work() as uow:
        templates = uow.templates

        def names(found: list[Template]) -> set[uuid.UUID]:
            return {t.id for t in found}

        assert names(templates.get_by_provider_type("aws")) == {gpu.id, cpu.id}
        assert templates.get_by_provider_type("azure") == []
        assert names(templates.find_by_attributes({"gpu": True})) == {gpu.id}
        assert names(templates.find_by_attributes({"gpu": 1})) == {gcp.id}  # true is not 1
        assert names(templates.find_by_attributes({"cpu": 8})) == {gpu.id, cpu.id}
        assert names(templates.find_by_attributes({"cpu": 8, "region": "eu-west-1"})) == {gpu.id}
        assert names(templates.find_by_attributes({"tags": {"team": "ml"}})) == {gpu.id}
        assert names(templates.find_by_attributes({"labels": ["b"]})) == {gcp.id}
        assert templates.find_by_attributes({"region": "us-east-1"}) == []
        assert templates.find_by_attributes({"missing": None}) == []
        assert len(templates.find_by_attributes({})) == 3
        with pytest.raises(InvalidInputError):
            templates.find_by_attributes({"bad": object()})
        with pytest.raises(InvalidInputError):
            templates.find_by_attributes(["gpu"])  # type: ignore[arg-type]


# -- requests and machines ---------------------------------------------------------------


def test_requests_by_status_and_active(store: Store) -> None:
    with store.unit_of_work() as uow:
        reqs = {s: b.request(uow, status=s) for s in RequestStatus}
    with store.unit_of_work() as uow:
        active = uow.requests.get_active_requests()
        assert {r.id for r in active} == {
            reqs[RequestStatus.PENDING].id,
            reqs[RequestStatus.IN_PROGRESS].id,
        }
        done = uow.requests.get_by_status(RequestStatus.COMPLETED)
        assert [r.id for r in done] == [reqs[RequestStatus.COMPLETED].id]
        target = reqs[RequestStatus.PENDING].id
        assert uow.requests.update_status(target, RequestStatus.COMPLETED) is True
        assert uow.requests.update_status(uuid.uuid4(), "completed") is False
        assert uow.requests.update_status("nope", "completed") is False
        with pytest.raises(InvalidInputError):
            uow.requests.update_status(target, "exploded")
    with store.unit_of_work() as uow:
        assert uow.requests.get(target).status is RequestStatus.COMPLETED
        assert len(uow.requests.get_active_requests()) == 1


def test_machines(store: Store) -> None:
    with store.unit_of_work() as uow:
        req = b.request(uow)
        other = b.request(uow)
        m1 = b.machine(uow, request_id=req.id, instance_id="i-aaa")
        m2 = b.machine(uow, request_id=req.id, instance_id="i-bbb", status=MachineStatus.RUNNING)
        m3 = b.machine(uow, request_id=other.id, instance_id="i-ccc")
    with store.unit_of_work() as uow:
        assert {m.id for m in uow.machines.get_by_request_id(req.id)} == {m1.id, m2.id}
        assert [m.id for m in uow.machines.get_by_status("running")] == [m2.id]
        found = uow.machines.get_by_instance_ids(["i-ccc", "i-aaa", "i-zzz", "i-aaa"])
        assert {m.id for m in found} == {m1.id, m3.id}
        assert uow.machines.get_by_instance_ids([]) == []
        with pytest.raises(InvalidInputError):
            uow.machines.get_by_instance_ids("i-aaa")
        assert uow.machines.update_status(m1.id, MachineStatus.TERMINATED) is True
        assert uow.machines.update_status(uuid.uuid4(), MachineStatus.TERMINATED) is False
    with store.unit_of_work() as uow:
        assert uow.machines.get(m1.id).status is MachineStatus.TERMINATED
        assert uow.machines.get(m1.id).lock_version == 2


def test_request_needs_an_existing_template(store: Store) -> None:
    with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
        b.request(uow, template_id=uuid.uuid4())
    with store.unit_of_work() as uow:
        assert uow.requests.count() == 0


# -- organizations, applications, users --------------------------------------------------


def test_org_slug_and_cascade(store: Store) -> None:
    with store.unit_of_work() as uow:
        acme = b.org(uow, slug="acme")
        other = b.org(uow, slug="other")
        app = b.application(uow, org_id=acme.id)
        u = b.user(uow, org_id=acme.id)
        b.policy(uow, org_id=acme.id)
        b.policy(uow, org_id=acme.id, application_id=app.id)
        b.policy(uow, org_id=acme.id, user_id=u.id)
        kept_app = b.application(uow, org_id=other.id)
        b.audit_log(uow, org_id=acme.id)
    with store.unit_of_work() as uow:
        assert id_of(uow.organizations.get_by_slug("acme")) == acme.id
        assert uow.organizations.get_by_slug("nope") is None
        uow.organizations.delete(acme.id)
    with store.unit_of_work() as uow:
        assert uow.applications.count(org_id=acme.id) == 0
        assert uow.users.count(org_id=acme.id) == 0
        assert uow.policies.count(org_id=acme.id) == 0
        assert uow.applications.exists(kept_app.id)
        assert uow.audit_logs.count(org_id=acme.id) == 1  # the trail outlives the org


def test_api_keys(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = b.org(uow)
        app, raw_key = uow.applications.create_with_api_key(org.id, "gateway")
        other, other_key = uow.applications.create_with_api_key(org.id, "batch")
        assert raw_key != other_key and len(raw_key) >= 32
        assert raw_key not in (app.api_key_hash or "")
    with store.unit_of_work() as uow:
        assert id_of(uow.applications.get_by_api_key(raw_key)) == app.id
        assert id_of(uow.applications.get_by_api_key(other_key)) == other.id
        assert uow.applications.get_by_api_key(raw_key + "x") is None
        assert uow.applications.get_by_api_key("") is None
        stored = uow.applications.get(app.id).api_key_hash
        assert stored and raw_key not in stored
        new_key = uow.applications.rotate_api_key(app.id)
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw_key) is None
        assert id_of(uow.applications.get_by_api_key(new_key)) == app.id


def test_users(store: Store) -> None:
    with store.unit_of_work() as uow:
        org1, org2 = b.org(uow), b.org(uow)
        alice = b.user(uow, org_id=org1.id, email="alice@example.com", external_id="idp|alice")
        alice2 = b.user(uow, org_id=org2.id, email="alice@example.com", external_id="idp|alice2")
    with store.unit_of_work() as uow:
        assert id_of(uow.users.get_by_email(org1.id, "alice@example.com")) == alice.id
        assert id_of(uow.users.get_by_email(org2.id, "alice@example.com")) == alice2.id
        assert uow.users.get_by_email(org1.id, "bob@example.com") is None
        assert id_of(uow.users.get_by_external_id("idp|alice")) == alice.id
        assert uow.users.get_by_external_id("idp|nobody") is None


# -- policies ----------------------------------------------------------------------------


def test_applicable_policies_hierarchy(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = b.org(uow)
        app = b.application(uow, org_id=org.id)
        app_other = b.application(uow, org_id=org.id)
        user = b.user(uow, org_id=org.id)
        p = {
            "org_low": b.policy(uow, org_id=org.id, priority=1, policy_type=PolicyType.BUDGET),
            "org_high": b.policy(uow, org_id=org.id, priority=9),
            "org_off": b.policy(uow, org_id=org.id, priority=50, enabled=False),
            "app": b.policy(uow, org_id=org.id, application_id=app.id, priority=3),
            "app_other": b.policy(uow, org_id=org.id, application_id=app_other.id),
            "user_low": b.policy(uow, org_id=org.id, user_id=user.id, priority=0),
            "user_high": b.policy(
                uow, org_id=org.id, user_id=user.id, priority=5, policy_type=PolicyType.MODEL_ACCESS
            ),
        }
        foreign = b.org(uow)
        b.policy(uow, org_id=foreign.id, priority=100)

    def ids(*names: str) -> list[uuid.UUID]:
        return [p[n].id for n in names]

    with store.unit_of_work() as uow:
        got = uow.policies.get_applicable_policies(org.id, application_id=app.id, user_id=user.id)
        assert [x.id for x in got] == ids("user_high", "user_low", "app", "org_high", "org_low")
        got = uow.policies.get_applicable_policies(org.id, application_id=app.id)
        assert [x.id for x in got] == ids("app", "org_high", "org_low")
        got = uow.policies.get_applicable_policies(org.id, user_id=user.id)
        assert [x.id for x in got] == ids("user_high", "user_low", "org_high", "org_low")
        got = uow.policies.get_applicable_policies(org.id)
        assert [x.id for x in got] == ids("org_high", "org_low")
        with pytest.raises(InvalidInputError):
            uow.policies.get_applicable_policies("not-an-id")


# -- audit log ---------------------------------------------------------------------------


def test_audit_query_filters_order_and_limit(store: Store) -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with store.unit_of_work() as uow:
        org, other = b.org(uow), b.org(uow)
        app, user = b.application(uow, org_id=org.id), b.user(uow, org_id=org.id)
        entries = []
        for i in range(6):
            entries.append(
                uow.audit_logs.add(
                    AuditLog(
                        org_id=org.id,
                        action="update" if i % 2 else "create",
                        resource_type="deployment",
                        resource_id=f"dep-{i}",
                        application_id=app.id if i < 3 else None,
                        user_id=user.id if i >= 3 else None,
                        request_id=f"req-{i}",
                        details={"i": i},
                        created_at=t0 + timedelta(minutes=i),
                    )
                )
            )
        uow.audit_logs.record(other.id, "create", "deployment")
    with store.unit_of_work() as uow:
        q = uow.audit_logs.query
        assert [e.details["i"] for e in q(org.id)] == [5, 4, 3, 2, 1, 0]  # newest first
        assert [e.details["i"] for e in q(org.id, limit=2)] == [5, 4]
        assert [e.details["i"] for e in q(org.id, limit=2, offset=2)] == [3, 2]
        assert [e.details["i"] for e in q(org.id, application_id=app.id)] == [2, 1, 0]
        assert [e.details["i"] for e in q(org.id, user_id=user.id)] == [5, 4, 3]
        assert [e.details["i"] for e in q(org.id, action="update")] == [5, 3, 1]
        assert [e.details["i"] for e in q(org.id, request_id="req-4")] == [4]
        window = q(org.id, since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=4))
        assert [e.details["i"] for e in window] == [3, 2, 1]  # since inclusive, until exclusive
        assert q(uuid.uuid4()) == []
        assert len(q(other.id)) == 1
        with pytest.raises(InvalidInputError):
            q(org.id, limit=-5)
        with pytest.raises(InvalidInputError):
            q(org.id, since=datetime(2026, 1, 1))  # naive datetimes are ambiguous


def test_audit_default_limit_is_100(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = b.org(uow)
        uow.audit_logs.add_many(
            [AuditLog(org_id=org.id, action="a", resource_type="r") for _ in range(105)]
        )
    with store.unit_of_work() as uow:
        assert len(uow.audit_logs.query(org.id)) == 100
        assert len(uow.audit_logs.query(org.id, limit=200)) == 105


def test_audit_is_append_only(store: Store) -> None:
    with store.unit_of_work() as uow:
        entry = b.audit_log(uow)
    with store.unit_of_work() as uow:
        loaded = uow.audit_logs.get(entry.id)
        loaded.action = "tampered"
        with pytest.raises(InvalidInputError):
            uow.audit_logs.update(loaded)
        with pytest.raises(InvalidInputError):
            uow.audit_logs.delete(entry.id)
        uow.rollback()
    with store.unit_of_work() as uow:
        assert uow.audit_logs.get(entry.id).action == "create"


# -- inference metrics -------------------------------------------------------------------


def test_inference_metrics(store: Store) -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    with store.unit_of_work() as uow:
        app = b.application(uow)
        other = b.application(uow)
        rows = [
            (10, 5, "0.000100", 100, 0),
            (20, 10, "0.000200", 300, 1),
            (1, 1, "0.333333", 50, 2),
            (7, 7, "1.000000", 999, 60),  # outside the window
        ]
        for prompt, completion, cost, latency, minute in rows:
            uow.inference_requests.add(
                InferenceRequest(
                    org_id=app.org_id,
                    application_id=app.id,
                    model="m",
                    status="success",
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost=Decimal(cost),
                    latency_ms=latency,
                    created_at=t0 + timedelta(minutes=minute),
                )
            )
        b.inference_request(uow, org_id=other.org_id, application_id=other.id, created_at=t0)
    with store.unit_of_work() as uow:
        m = uow.inference_requests.metrics(app.org_id, t0, t0 + timedelta(minutes=60))
        assert m == InferenceMetrics(
            total_requests=3,
            total_tokens=47,
            total_cost=Decimal("0.333633"),
            avg_latency_ms=150.0,
        )
        assert isinstance(m.total_cost, Decimal)
        empty = uow.inference_requests.metrics(uuid.uuid4(), t0, t0 + timedelta(days=1))
        assert empty == InferenceMetrics(0, 0, Decimal("0"), 0.0)
        loaded = uow.inference_requests.list(org_id=app.org_id, order_by="created_at")[2]
        assert loaded.cost == Decimal("0.333333")
