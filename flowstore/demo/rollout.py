"""Chapter 6: a deployment and its rollout job committed together, and rolled out by the worker.

A second unit of work that fails shows that its deployment and job are both rolled back.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from flowstore.demo.cast import DEMO_QUEUE, NODE_ID
from flowstore.demo.report import counts, short
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.demo.worker_run import run_worker_until_empty
from flowstore.errors import NotFoundError
from flowstore.models import Deployment, DeploymentStatus, Job
from flowstore.store import Store


def deployment(story: Story, summary: DemoSummary) -> None:
    """Commit a deployment with its job, lose a canary to a rollback, then run the worker."""
    report = story.report
    store = story.store
    report.step("A deployment and its rollout job, in one unit of work")
    with store.unit_of_work() as uow:
        deployment = uow.deployments.add(
            Deployment(
                name="support-chatbot-llm",
                version="1.4.2",
                status=DeploymentStatus.PENDING,
                config={
                    "model": "llama-3-8b-instruct",
                    "replicas": 2,
                    "template": "gpu-a10g-spot",
                },
            )
        )
        job_id = uow.queue(DEMO_QUEUE).enqueue(
            {
                "deployment_id": str(deployment.id),
                "node_id": NODE_ID,
                "org_id": str(story.org_id),
            }
        )
    summary.deployment_id, summary.job_id = deployment.id, job_id
    report.line(
        f"deployment {deployment.name} {deployment.version} (pending) and job {short(job_id)} "
        f"on queue {DEMO_QUEUE!r} committed together"
    )

    lost_id: uuid.UUID | None = None
    lost_job: Any = None
    try:
        with store.unit_of_work() as uow:
            lost = uow.deployments.add(Deployment(name="canary-llm", version="1.5.0-rc1"))
            lost_id = lost.id
            lost_job = uow.queue(DEMO_QUEUE).enqueue({"deployment_id": str(lost.id)})
            raise _Abandon("the release manager cancels the canary before commit")
    except _Abandon as why:
        with store.unit_of_work() as uow:
            kept = uow.deployments.exists(lost_id)
        job_kept = _job_exists(store, lost_job)
        report.line(f"a second unit of work fails ({why}):")
        report.line(
            f"  its deployment {'survived (!)' if kept else 'is gone'}, "
            f"its job {'survived (!)' if job_kept else 'is gone'}"
        )

    processed = run_worker_until_empty(store, functools.partial(roll_out, store))
    summary.jobs_processed = processed
    job = store.queue(DEMO_QUEUE).get(job_id)
    with store.unit_of_work() as uow:
        rolled = uow.deployments.get(deployment.id)
        node = uow.deployments.get_node_id(deployment.id)
        on_node = uow.deployments.get_deployments_by_node_id(NODE_ID)
        stats = uow.deployments.stats()
    report.line(
        f"the worker processed {processed} job(s); job {short(job_id)} is {job.status} "
        f"after {job.attempts} attempt(s)"
    )
    report.line(f"deployment {rolled.name}: {rolled.status} on {node}")
    report.line(f"{len(on_node)} deployment(s) on {NODE_ID}")
    by_status = {str(s): n for s, n in stats.by_status.items()}
    report.line(f"deployment stats: {stats.total} in all ({counts(by_status)})")


def roll_out(store: Store, job: Job) -> None:
    """The job handler: walk the deployment to running and place it on its node."""
    payload = job.payload
    with store.unit_of_work() as uow:
        deployment_id = payload["deployment_id"]
        deployment = uow.deployments.get(deployment_id)
        deployment.status = DeploymentStatus.DEPLOYING
        uow.deployments.update(deployment)
        uow.deployments.set_node_id(deployment_id, payload["node_id"])
        deployment.status = DeploymentStatus.RUNNING
        uow.deployments.update(deployment)
        uow.audit_logs.record(
            uuid.UUID(payload["org_id"]),
            "deployment.rolled_out",
            "deployment",
            resource_id=deployment_id,
            details={"node_id": payload["node_id"]},
        )


class _Abandon(Exception):
    """Raised inside a unit of work to show that everything in it is rolled back."""


def _job_exists(store: Store, job_id: Any) -> bool:
    try:
        store.queue(DEMO_QUEUE).get(job_id)
    except NotFoundError:
        return False
    return True
