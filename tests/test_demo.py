"""``flowstore demo``: the story runs end to end, twice on the same file, and what it reports
is what the database holds afterwards."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flowstore import Store
from flowstore.demo import DEMO_QUEUE, ORG_SLUG, TRAFFIC, mask_key, run_demo
from flowstore.models import DeploymentNode, DeploymentStatus, Job, JobStatus
from flowstore.schema import head_revision
from tests.conftest import BACKENDS
from tests.test_cli import assert_ok, cli_env, run_cli, server_database_url

RAW_KEY = re.compile(r"fs_[A-Za-z0-9_-]{20,}")


def counts(store: Store) -> dict[str, int]:
    with store.unit_of_work() as uow:
        org = uow.organizations.get_by_slug(ORG_SLUG)
        assert org is not None
        return {
            "organizations": uow.organizations.count(),
            "applications": uow.applications.count(org_id=org.id),
            "users": uow.users.count(org_id=org.id),
            "policies": uow.policies.count(org_id=org.id),
            "templates": uow.templates.count(),
            "requests": uow.requests.count(),
            "machines": uow.machines.count(),
            "deployments": uow.deployments.count(),
            "running": uow.deployments.count(status=DeploymentStatus.RUNNING),
            "inference": uow.inference_requests.count(org_id=org.id),
            "audit": uow.audit_logs.count(org_id=org.id),
            "nodes": int(uow.session.scalar(select(func.count()).select_from(DeploymentNode)) or 0),
            "jobs_done": int(
                uow.session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.queue == DEMO_QUEUE, Job.status == JobStatus.DONE)
                )
                or 0
            ),
            "jobs": int(uow.session.scalar(select(func.count()).select_from(Job)) or 0),
        }


def reported_metrics(output: str, label: str) -> tuple[int, int, str]:
    match = re.search(rf"{label}\s+(\d+) requests,\s+([\d,]+) tokens, \$([\d.]+)", output)
    assert match, output
    return int(match[1]), int(match[2].replace(",", "")), match[3]


def test_the_demo_runs_twice_on_the_default_file(tmp_path: Path) -> None:
    first = run_cli("demo", cwd=tmp_path)
    out1 = assert_ok(first)
    database = tmp_path / "flowstore-demo.sqlite3"
    assert database.is_file()
    assert f"migrated from an empty database to {head_revision()} (head)" in out1
    assert "Acme Robotics (acme-robotics) created" in out1

    second = run_cli("demo", cwd=tmp_path)
    out2 = assert_ok(second)
    assert f"already at {head_revision()} (head)" in out2
    assert "found (made by an earlier run)" in out2
    for output in (out1, out2):
        assert not RAW_KEY.search(output), "a raw API key was printed"
        assert "old key rejected" in output and "(!)" not in output
        assert "Traceback" not in first.stderr + second.stderr

    with Store(f"sqlite:///{database}") as store:
        facts = counts(store)
        with store.unit_of_work() as uow:
            org = uow.organizations.get_by_slug(ORG_SLUG)
            assert org is not None
            all_time = uow.inference_requests.metrics(
                org.id, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
            )
    # Found, not duplicated: the organization and what belongs to it.
    assert facts["organizations"] == 2  # acme-robotics and its neighbour
    assert facts["applications"] == 2
    assert facts["users"] == 2
    assert facts["policies"] == 5
    assert facts["templates"] == 2
    # New events each run: two requests (three machines), one deployment rolled out by its job;
    # the cancelled canary and its job left nothing behind.
    assert facts["requests"] == 4
    assert facts["machines"] == 6
    assert facts["deployments"] == facts["running"] == facts["nodes"] == 2
    assert facts["jobs"] == facts["jobs_done"] == 2
    assert facts["inference"] == 2 * len(TRAFFIC)
    # The report's "all runs" line is what the database says.
    assert reported_metrics(out2, "all runs") == (
        all_time.total_requests,
        all_time.total_tokens,
        f"{all_time.total_cost:.6f}",
    )
    assert f"{facts['audit']} entries for {ORG_SLUG}" in out2


def test_the_demo_follows_the_configured_url(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.sqlite3"
    env = cli_env(FLOWSTORE_DATABASE_URL=f"sqlite:///{target}")
    assert_ok(run_cli("demo", env=env, cwd=tmp_path))
    assert target.is_file()
    assert not (tmp_path / "flowstore-demo.sqlite3").exists()


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    if "postgresql" not in BACKENDS:
        pytest.skip("postgresql is not among FLOWSTORE_TEST_BACKENDS")
    yield from server_database_url("postgresql", "demo")


def test_the_demo_on_postgresql(postgresql_url: str, tmp_path: Path) -> None:
    output = assert_ok(run_cli("demo", "--url", postgresql_url, cwd=tmp_path))
    assert "flowstore demo on postgresql+psycopg://" in output
    with Store(postgresql_url) as store:
        facts = counts(store)
    assert facts["deployments"] == facts["running"] == facts["jobs_done"] == 1
    assert facts["inference"] == len(TRAFFIC)


def test_run_demo_in_process_reports_the_policy_order_and_the_job() -> None:
    out = io.StringIO()
    with Store() as store:
        summary = run_demo(store, out=out)
        assert summary.job_id is not None
        with store.unit_of_work() as uow:
            deployment = uow.deployments.get(summary.deployment_id)
            node = uow.deployments.get_node_id(deployment.id)
        job = store.queue(DEMO_QUEUE).get(summary.job_id)
    assert summary.organization_created
    assert summary.applicable_policies == [
        "user:rate_limit",
        "application:model_access",
        "org:rate_limit",
        "org:budget",
    ]
    assert deployment.status == DeploymentStatus.RUNNING
    assert node == "node-us-east-1a"
    assert job.status == JobStatus.DONE
    assert summary.jobs_processed == 1
    assert f"deployment {deployment.name}: running on {node}" in out.getvalue()


def test_mask_key_hides_all_but_a_recognisable_prefix() -> None:
    key = "fs_" + "A" * 43
    shown = mask_key(key)
    assert shown.startswith("fs_")
    assert len(shown.rstrip("…")) < 10
    assert key not in shown


def test_demo_help_names_the_default_file() -> None:
    text = " ".join(assert_ok(run_cli("demo", "--help")).split())
    assert "else sqlite:///flowstore-demo.sqlite3" in text
