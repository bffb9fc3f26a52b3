"""Every domain query is answered from an index on PostgreSQL, with 100,000 rows per table.

The repositories' own statements are captured as they run, then EXPLAINed (with their
parameters) on the same data; a plan that reads the whole table (``Seq Scan``) fails the test.
This checks plan shape, never time. The data is made by ``generate_series`` in one statement
per table, then ``VACUUM ANALYZE``: what a planner sees in production, not on an empty table.

A queue claim with 20,000 jobs in flight must read only the expired leases off their index.

Aggregates over a whole table (``DeploymentRepository.stats``) read every row by nature: they
must read it once (the table or an index), no more. A page of a status most rows share must
come off the ``(status, created_at, id)`` index in page order, not from a sort of every match.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from flowstore import Store
from flowstore.models import DeploymentStatus, MachineStatus, RequestStatus
from flowstore.uow import UnitOfWork
from tests.conftest import BACKENDS, server_database

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="query plans are checked on PostgreSQL"
)

ROWS = 100_000
ORGS = 1_000
NOW = datetime.now(UTC)  # the loader dates row i ``i`` seconds before the database's now()


def key(kind: str, n: int) -> uuid.UUID:
    """The deterministic id the loader gives row ``n`` of ``kind`` (md5 of ``kind || n``)."""
    return uuid.UUID(hashlib.md5(f"{kind}{n}".encode()).hexdigest())


def _id(kind: str, expr: str = "i") -> str:
    return f"md5('{kind}' || ({expr}))::uuid"


_ENTITY = "now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval, 1"
_ENTITY_COLUMNS = "created_at, updated_at, lock_version"

# One INSERT ... SELECT per table; statuses are skewed as in production (few rows are pending
# or failed, most have finished), so that looking for the rare ones is what an index is for.
LOAD = [
    f"""INSERT INTO organizations (id, name, slug, {_ENTITY_COLUMNS})
        SELECT {_id("org")}, 'org ' || i, 'org-' || i, {_ENTITY}
        FROM generate_series(1, {ORGS}) i""",
    f"""INSERT INTO applications (id, org_id, name, api_key_hash, {_ENTITY_COLUMNS})
        SELECT {_id("app")}, {_id("org", f"i % {ORGS} + 1")}, 'app ' || i,
               encode(sha256(('key' || i)::bytea), 'hex'), {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO users (id, org_id, email, external_id, {_ENTITY_COLUMNS})
        SELECT {_id("user")}, {_id("org", f"i % {ORGS} + 1")}, 'u' || i || '@example.com',
               'ext-' || i, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO policies (id, org_id, application_id, user_id, policy_type, config,
                              priority, enabled, {_ENTITY_COLUMNS})
        SELECT {_id("policy")}, {_id("org", f"i % {ORGS} + 1")},
               CASE WHEN i % 3 = 1 THEN {_id("app")} END,
               CASE WHEN i % 3 = 2 THEN {_id("user")} END,
               (ARRAY['rate_limit', 'budget', 'model_access'])[i % 3 + 1], '{{}}'::jsonb,
               i % 10, i % 5 <> 0, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO deployments (id, name, version, status, config, {_ENTITY_COLUMNS})
        SELECT {_id("dep")}, 'svc-' || i, '1.' || (i % 40), CASE
                 WHEN i % 100 = 0 THEN 'failed' WHEN i % 100 = 1 THEN 'pending'
                 WHEN i % 100 = 2 THEN 'deploying' WHEN i % 3 = 0 THEN 'stopped'
                 ELSE 'running' END, '{{}}'::jsonb, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO deployment_nodes (deployment_id, node_id, assigned_at)
        SELECT {_id("dep")}, 'node-' || (i % 5000), now()
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO templates (id, name, provider_type, max_number, attributes, {_ENTITY_COLUMNS})
        SELECT {_id("tpl")}, 'tpl ' || i, 'provider-' || (i % 1000), 10,
               jsonb_build_object('zone', 'z-' || (i % 2000), 'gpu', i % 7 = 0), {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO requests (id, template_id, machine_count, status, {_ENTITY_COLUMNS})
        SELECT {_id("req")}, {_id("tpl")}, 1, CASE
                 WHEN i % 100 = 0 THEN 'pending' WHEN i % 100 = 1 THEN 'in_progress'
                 WHEN i % 100 = 2 THEN 'failed' ELSE 'completed' END, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO machines (id, request_id, instance_id, status, {_ENTITY_COLUMNS})
        SELECT {_id("machine")}, {_id("req")}, 'i-' || i, CASE
                 WHEN i % 100 = 0 THEN 'pending' WHEN i % 100 = 1 THEN 'failed'
                 WHEN i % 2 = 0 THEN 'terminated' ELSE 'running' END, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO audit_logs (id, org_id, action, resource_type, resource_id, application_id,
                                user_id, request_id, details, {_ENTITY_COLUMNS})
        SELECT {_id("audit")}, {_id("org", f"i % {ORGS} + 1")},
               (ARRAY['create', 'update', 'delete', 'rotate'])[i % 4 + 1], 'deployment',
               'dep-' || i, {_id("app", f"i % {ROWS} + 1")}, {_id("user", f"i % {ROWS} + 1")},
               'req-' || i, '{{}}'::jsonb, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    f"""INSERT INTO inference_requests (id, org_id, application_id, user_id, model, status,
                                        prompt_tokens, completion_tokens, cost, latency_ms,
                                        {_ENTITY_COLUMNS})
        SELECT {_id("inf")}, {_id("org", f"i % {ORGS} + 1")}, {_id("app", f"i % {ROWS} + 1")},
               NULL, 'model-' || (i % 5), 'success', 100, 50, 0.001, 200, {_ENTITY}
        FROM generate_series(1, {ROWS}) i""",
    # a busy queue: most jobs done, 20,000 in flight (leases running), a few leases run out
    # (i % 1000 = 0), the rest queued
    f"""INSERT INTO jobs (id, queue, payload, status, priority, run_at, attempts, max_attempts,
                          lease_expires_at, claim_token, finished_at, created_at, updated_at)
        SELECT {_id("job")}, 'work', '{{}}'::jsonb, CASE
                 WHEN i % 1000 = 0 OR i % 10 IN (7, 8) THEN 'running'
                 WHEN i % 10 = 9 THEN 'queued' ELSE 'done' END, i % 3,
               now() - (i || ' seconds')::interval, 1, 5,
               CASE WHEN i % 1000 = 0 THEN now() - interval '1 minute'
                    WHEN i % 10 IN (7, 8) THEN now() + interval '1 hour' END,
               CASE WHEN i % 1000 = 0 OR i % 10 IN (7, 8) THEN {_id("token")} END,
               CASE WHEN i % 1000 <> 0 AND i % 10 < 7 THEN now() END, now(), now()
        FROM generate_series(1, {ROWS}) i""",
]


@pytest.fixture(scope="module")
def big_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated PostgreSQL database with the tables above loaded and analyzed."""
    database = server_database(request, "postgresql", "plans")
    store = Store(database.url)
    store.upgrade()
    with store.engine.begin() as conn:
        for statement in LOAD:
            conn.execute(text(statement))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    yield store
    store.close()


class Captured:
    """The statements (with parameters) a block of repository calls sends."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            self.statements.append((statement, params))


def plans_of(store: Store, work: Callable[[UnitOfWork], object]) -> list[tuple[str, Any]]:
    """Run ``work`` (rolled back) and return each statement it sent with its JSON plan."""
    captured = Captured()
    event.listen(store.engine, "before_cursor_execute", captured)
    try:
        with store.unit_of_work() as uow:
            work(uow)
            uow.rollback()
    finally:
        event.remove(store.engine, "before_cursor_execute", captured)
    assert captured.statements, "the call sent no statement"
    plans = []
    with store.engine.connect() as conn:
        for statement, params in captured.statements:
            row = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
            plan = row if isinstance(row, list) else json.loads(row)
            plans.append((statement, plan[0]["Plan"]))
        conn.rollback()
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def _path(plan: dict[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes from ``plan`` down to ``target``, both included (empty if not below)."""
    if plan is target:
        return [plan]
    for child in plan.get("Plans", []):
        below = _path(child, target)
        if below:
            return [plan, *below]
    return []


def assert_read_once(store: Store, work: Callable[[UnitOfWork], object]) -> None:
    """An aggregate over a whole table: one scan of it (of the table or of an index), no more."""
    for statement, plan in plans_of(store, work):
        scans = [n for n in nodes(plan) if "Scan" in n["Node Type"]]
        assert len(scans) == 1, f"not one scan:\n{statement}\n{json.dumps(plan, indent=1)[:3000]}"


def assert_indexed(store: Store, work: Callable[[UnitOfWork], object]) -> None:
    for statement, plan in plans_of(store, work):
        scans = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan"]
        assert not scans, (
            f"{[n['Relation Name'] for n in scans]} read whole:\n{statement}\n"
            f"{json.dumps(plan, indent=1)[:3000]}"
        )
        used = [n for n in nodes(plan) if "Index" in n["Node Type"]]
        assert used, f"no index used:\n{statement}\n{json.dumps(plan, indent=1)[:3000]}"


ORG = key("org", 7)
SINCE, UNTIL = NOW - timedelta(hours=3), NOW - timedelta(hours=1)

QUERIES: dict[str, Callable[[UnitOfWork], object]] = {
    "get": lambda uow: uow.deployments.get_or_none(key("dep", 5)),
    "exists": lambda uow: uow.machines.exists(key("machine", 5)),
    "count by status": lambda uow: uow.deployments.count(status=DeploymentStatus.FAILED),
    "Deployment.list_by_status": lambda uow: uow.deployments.list_by_status(
        DeploymentStatus.FAILED
    ),
    "Deployment.list_by_status, keyset page": lambda uow: uow.deployments.page(
        status=DeploymentStatus.PENDING,
        limit=20,
        after=uow.deployments.page(status=DeploymentStatus.PENDING, limit=20).next_cursor,
    ),
    "Deployment.set_node_id": lambda uow: uow.deployments.set_node_id(key("dep", 9), "node-x"),
    "Deployment.get_node_id": lambda uow: uow.deployments.get_node_id(key("dep", 9)),
    "Deployment.delete_node_id": lambda uow: uow.deployments.delete_node_id(key("dep", 9)),
    "Deployment.get_deployments_by_node_id": lambda uow: uow.deployments.get_deployments_by_node_id(
        "node-17"
    ),
    "Template.get_by_provider_type": lambda uow: uow.templates.get_by_provider_type("provider-3"),
    "Template.find_by_attributes": lambda uow: uow.templates.find_by_attributes(
        {"zone": "z-11", "gpu": True}
    ),
    "Request.get_by_status": lambda uow: uow.requests.get_by_status(RequestStatus.PENDING),
    "Request.get_active_requests": lambda uow: uow.requests.get_active_requests(),
    "Request.update_status": lambda uow: uow.requests.update_status(
        key("req", 3), RequestStatus.FAILED
    ),
    "Machine.get_by_request_id": lambda uow: uow.machines.get_by_request_id(key("req", 4)),
    "Machine.get_by_status": lambda uow: uow.machines.get_by_status(MachineStatus.FAILED),
    "Machine.get_by_instance_ids": lambda uow: uow.machines.get_by_instance_ids(
        ["i-5", "i-6", "i-nope"]
    ),
    "Machine.update_status": lambda uow: uow.machines.update_status(
        key("machine", 8), MachineStatus.STOPPED
    ),
    "Organization.get_by_slug": lambda uow: uow.organizations.get_by_slug("org-5"),
    "Application.get_by_api_key": lambda uow: uow.applications.get_by_api_key("fs_unknown"),
    "User.get_by_email": lambda uow: uow.users.get_by_email(ORG, "u7@example.com"),
    "User.get_by_external_id": lambda uow: uow.users.get_by_external_id("ext-5"),
    "Policy.get_applicable_policies": lambda uow: uow.policies.get_applicable_policies(
        ORG, application_id=key("app", 7), user_id=key("user", 7)
    ),
    "AuditLog.query": lambda uow: uow.audit_logs.query(ORG, since=SINCE, until=UNTIL),
    "AuditLog.query by application": lambda uow: uow.audit_logs.query(
        ORG, application_id=key("app", 7)
    ),
    "AuditLog.query by user": lambda uow: uow.audit_logs.query(ORG, user_id=key("user", 7)),
    "AuditLog.query by action": lambda uow: uow.audit_logs.query(ORG, action="update"),
    "AuditLog.query by request": lambda uow: uow.audit_logs.query(ORG, request_id="req-7"),
    "AuditLog.query, keyset page": lambda uow: uow.audit_logs.query_page(
        ORG, limit=20, after=uow.audit_logs.query_page(ORG, limit=20).next_cursor
    ),
    "InferenceRequest.metrics": lambda uow: uow.inference_requests.metrics(ORG, SINCE, UNTIL),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_domain_query_uses_an_index(big_store: Store, name: str) -> None:
    assert_indexed(big_store, QUERIES[name])


def test_stats_reads_the_table_once(big_store: Store) -> None:
    """Counting every status reads every row by nature: one pass, however the planner likes."""
    assert_read_once(big_store, lambda uow: uow.deployments.stats())


COMMON_STATUS_PAGES: dict[str, Callable[[UnitOfWork], object]] = {
    "deployments": lambda uow: uow.deployments.page(status=DeploymentStatus.RUNNING, limit=50),
    "requests": lambda uow: uow.requests.page(status=RequestStatus.COMPLETED, limit=50),
    "machines": lambda uow: uow.machines.page(status=MachineStatus.TERMINATED, limit=50),
}


@pytest.mark.parametrize("table", list(COMMON_STATUS_PAGES))
def test_a_page_of_a_common_status_comes_off_the_index_in_order(
    big_store: Store, table: str
) -> None:
    """Most rows share the status: the page must be read in (created_at, id) order from the
    (status, created_at, id) index and stop at the limit, not sort every match first."""
    [(statement, plan)] = plans_of(big_store, COMMON_STATUS_PAGES[table])
    kinds = [n["Node Type"] for n in nodes(plan)]
    assert "Sort" not in kinds and "Incremental Sort" not in kinds, (statement, kinds)
    assert kinds[0] == "Limit", kinds
    indexes = {n.get("Index Name") for n in nodes(plan)}
    assert f"ix_{table}_status_created_at_id" in indexes, (statement, indexes)


def test_a_claim_reads_only_the_expired_leases_of_the_jobs_in_flight(big_store: Store) -> None:
    """With 20,000 jobs running, taking back the expired leases is a range of ix_jobs_lease
    (queue, status, lease end): not a walk of every running job's entry in claim order."""
    [(statement, plan)] = plans_of(big_store, lambda uow: uow.queue("work").dequeue())
    assert not [n for n in nodes(plan) if n["Node Type"] == "Seq Scan"], statement
    running = [n for n in nodes(plan) if "'running'" in n.get("Index Cond", "")]
    assert [n["Index Name"] for n in running] == ["ix_jobs_lease"], json.dumps(plan)[:3000]
    assert "lease_expires_at <=" in running[0]["Index Cond"], running[0]
    # and in that index's order, so the arm stops at its limit: no sort of every expired lease
    kinds = [n["Node Type"] for n in _path(plan, running[0])]
    arm = kinds[max(i for i, kind in enumerate(kinds) if kind == "Limit") :]
    assert "Sort" not in arm and "Incremental Sort" not in arm, arm
    queued = [n for n in nodes(plan) if "'queued'" in n.get("Index Cond", "")]
    assert [n["Index Name"] for n in queued] == ["ix_jobs_claim"], json.dumps(plan)[:3000]


def test_a_query_without_an_index_is_caught(big_store: Store) -> None:
    """The check can fail: ``version`` has no index, so this list reads the whole table."""
    with pytest.raises(AssertionError, match="read whole"):
        assert_indexed(big_store, lambda uow: uow.deployments.list(version="1.3", limit=5))
