"""``flowstore demo``: a control-plane story told through flowstore's public API.

An LLM platform team onboards an organization: applications with API keys, users, a policy
hierarchy, machine templates and capacity requests, a model deployment rolled out by a
background worker, an audit trail and inference metrics. Each step prints a few lines.

The story can run again on the same database: the organization, its applications, users,
policies and templates are found rather than created twice, while requests, deployments,
jobs and inference traffic are new events each run, so their totals grow.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from flowstore.errors import InvalidInputError, NotFoundError
from flowstore.models import (
    Deployment,
    DeploymentStatus,
    InferenceRequest,
    Job,
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
)
from flowstore.store import Store
from flowstore.worker import run_worker

__all__ = ["DEMO_QUEUE", "DemoSummary", "mask_key", "run_demo"]

ORG_SLUG = "acme-robotics"
NEIGHBOUR_SLUG = "globex-labs"
DEMO_QUEUE = "demo-rollouts"
NODE_ID = "node-us-east-1a"
SHOWN_KEY_CHARS = 7
WORKER_TIME_LIMIT_S = 60.0

# (model, prompt tokens, completion tokens, cost in USD, latency in ms, status, user email)
TRAFFIC: tuple[tuple[str, int, int, str, int, str, str], ...] = (
    ("llama-3-8b-instruct", 412, 128, "0.000540", 380, "success", "ada@acme-robotics.example"),
    ("llama-3-8b-instruct", 1024, 512, "0.001536", 910, "success", "ada@acme-robotics.example"),
    ("mistral-7b-instruct", 256, 64, "0.000224", 240, "success", "grace@acme-robotics.example"),
    ("llama-3-8b-instruct", 2048, 0, "0.001434", 1500, "timeout", "grace@acme-robotics.example"),
    ("mistral-7b-instruct", 96, 300, "0.000396", 310, "success", "ada@acme-robotics.example"),
)


def mask_key(raw_key: str) -> str:
    """The first few characters of an API key, enough to recognise it, never enough to use it."""
    return raw_key[:SHOWN_KEY_CHARS] + "…"


@dataclass
class DemoSummary:
    """What one run did, for callers (and tests) that want more than the printed report."""

    organization_id: uuid.UUID
    organization_created: bool
    applications: int = 0
    users: int = 0
    applicable_policies: list[str] = field(default_factory=list)
    requests_created: int = 0
    deployment_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    jobs_processed: int = 0
    audit_entries: int = 0
    inference_requests: int = 0


class _Report:
    """Numbered steps with indented lines, written as the story goes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        print(f"\n{self.number}. {title}", file=self.out)

    def line(self, text: str) -> None:
        print(f"   {text}", file=self.out)


class _Story:
    """One run of the demo on one store."""

    def __init__(self, store: Store, out: TextIO) -> None:
        self.store = store
        self.report = _Report(out)
        self.org_id = uuid.UUID(int=0)
        self.neighbour_id = uuid.UUID(int=0)
        self.app_ids: dict[str, uuid.UUID] = {}
        self.user_ids: dict[str, uuid.UUID] = {}
        self.template_ids: dict[str, uuid.UUID] = {}

    # -- 1. organization ---------------------------------------------------------------------

    def organization(self) -> DemoSummary:
        self.report.step("Organization")
        with self.store.unit_of_work() as uow:
            org = uow.organizations.get_by_slug(ORG_SLUG)
            created = org is None
            if org is None:
                org = uow.organizations.add(Organization(name="Acme Robotics", slug=ORG_SLUG))
                uow.audit_logs.record(
                    org.id, "organization.created", "organization", resource_id=str(org.id)
                )
            neighbour = uow.organizations.get_by_slug(NEIGHBOUR_SLUG)
            if neighbour is None:
                neighbour = uow.organizations.add(
                    Organization(name="Globex Labs", slug=NEIGHBOUR_SLUG)
                )
            self.org_id, self.neighbour_id = org.id, neighbour.id
            total = uow.organizations.count()
        how = "created" if created else "found (made by an earlier run)"
        self.report.line(f"{org.name} ({org.slug}) {how}")
        self.report.line(
            f"{total} organizations share the database: {neighbour.name} ({neighbour.slug}) "
            "is a neighbour"
        )
        return DemoSummary(organization_id=self.org_id, organization_created=created)

    # -- 2. applications and API keys ------------------------------------------------------

    def applications(self, summary: DemoSummary) -> None:
        self.report.step("Applications and API keys")
        keys: dict[str, str] = {}
        with self.store.unit_of_work() as uow:
            for name in ("support-chatbot", "batch-summarizer"):
                found = uow.applications.list(org_id=self.org_id, name=name, limit=1)
                if found:
                    app = found[0]
                    keys[name] = uow.applications.rotate_api_key(app.id)
                    how = "found; its key was rotated to show a fresh one"
                else:
                    app, keys[name] = uow.applications.create_with_api_key(self.org_id, name)
                    how = "created"
                self.app_ids[name] = app.id
                self.report.line(f"{name:<17} key {mask_key(keys[name])}  {how}")
            summary.applications = uow.applications.count(org_id=self.org_id)
        self.report.line("the raw keys are shown once; the table keeps only their HMAC-SHA-256")

        chatbot = self.app_ids["support-chatbot"]
        with self.store.unit_of_work() as uow:
            by_key = uow.applications.get_by_api_key(keys["support-chatbot"])
            old_key = keys["support-chatbot"]
            keys["support-chatbot"] = uow.applications.rotate_api_key(chatbot)
            uow.audit_logs.record(
                self.org_id,
                "api_key.rotated",
                "application",
                resource_id=str(chatbot),
                application_id=chatbot,
            )
        with self.store.unit_of_work() as uow:
            old_works = uow.applications.get_by_api_key(old_key) is not None
            new_app = uow.applications.get_by_api_key(keys["support-chatbot"])
        found_name = by_key.name if by_key else "nothing"
        self.report.line(f"lookup by key {mask_key(old_key)} -> {found_name}")
        self.report.line(
            f"after rotation: old key {'still accepted (!)' if old_works else 'rejected'}, "
            f"new key {mask_key(keys['support-chatbot'])} "
            f"{'accepted' if new_app is not None and new_app.id == chatbot else 'rejected (!)'}"
        )

    # -- 3. users --------------------------------------------------------------------------

    def users(self, summary: DemoSummary) -> None:
        self.report.step("Users")
        people = (
            ("ada@acme-robotics.example", "okta|00u1ada"),
            ("grace@acme-robotics.example", "okta|00u1grace"),
        )
        with self.store.unit_of_work() as uow:
            for email, external_id in people:
                user = uow.users.get_by_email(self.org_id, email)
                how = "found"
                if user is None:
                    user = uow.users.add(
                        User(org_id=self.org_id, email=email, external_id=external_id)
                    )
                    how = "created"
                self.user_ids[email] = user.id
                self.report.line(f"{email:<28} (SSO {external_id}) {how}")
            by_sso = uow.users.get_by_external_id("okta|00u1grace")
            summary.users = uow.users.count(org_id=self.org_id)
        self.report.line(
            f"SSO login okta|00u1grace resolves to {by_sso.email if by_sso else 'nobody'}"
        )

    # -- 4. policies -----------------------------------------------------------------------

    def policies(self, summary: DemoSummary) -> None:
        self.report.step("Policy hierarchy")
        ada = self.user_ids["ada@acme-robotics.example"]
        chatbot = self.app_ids["support-chatbot"]
        wanted: list[
            tuple[uuid.UUID | None, uuid.UUID | None, PolicyType, dict[str, Any], int, bool]
        ] = [
            (None, None, PolicyType.RATE_LIMIT, {"requests_per_minute": 600}, 10, True),
            (None, None, PolicyType.BUDGET, {"monthly_usd": "2500.00"}, 5, True),
            (None, None, PolicyType.MODEL_ACCESS, {"allow": ["*"]}, 100, False),
            (
                chatbot,
                None,
                PolicyType.MODEL_ACCESS,
                {"allow": ["llama-3-8b-instruct", "mistral-7b-instruct"]},
                50,
                True,
            ),
            (None, ada, PolicyType.RATE_LIMIT, {"requests_per_minute": 60}, 0, True),
        ]
        created = 0
        with self.store.unit_of_work() as uow:
            for app_id, user_id, policy_type, config, priority, enabled in wanted:
                exists = uow.policies.count(
                    org_id=self.org_id,
                    application_id=app_id,
                    user_id=user_id,
                    policy_type=policy_type,
                )
                if not exists:
                    uow.policies.add(
                        Policy(
                            org_id=self.org_id,
                            application_id=app_id,
                            user_id=user_id,
                            policy_type=policy_type,
                            config=config,
                            priority=priority,
                            enabled=enabled,
                        )
                    )
                    created += 1
            total = uow.policies.count(org_id=self.org_id)
            applicable = uow.policies.get_applicable_policies(self.org_id, chatbot, ada)
            org_only = uow.policies.get_applicable_policies(self.org_id)
            uow.audit_logs.record(
                self.org_id,
                "policy.evaluated",
                "policy",
                application_id=chatbot,
                user_id=ada,
                details={"applicable": len(applicable)},
            )
        self.report.line(
            f"{total} policies ({created} created this run): org, application and user level, "
            "one org-level policy disabled"
        )
        self.report.line("applicable when ada calls support-chatbot, in order:")
        for policy in applicable:
            level = "user" if policy.user_id else "application" if policy.application_id else "org"
            summary.applicable_policies.append(f"{level}:{policy.policy_type}")
            self.report.line(
                f"  {level:<11} {policy.policy_type:<12} priority {policy.priority:>3}  "
                f"{policy.config}"
            )
        limit = next(p for p in applicable if p.policy_type == PolicyType.RATE_LIMIT)
        self.report.line(
            f"effective rate limit: {limit.config['requests_per_minute']} requests/min "
            f"(the most specific level wins); org-level only: {len(org_only)} policies"
        )

    # -- 5. templates, requests and machines -----------------------------------------------

    def capacity(self, summary: DemoSummary) -> None:
        self.report.step("Templates, capacity requests and machines")
        catalogue = (
            (
                "gpu-a10g-spot",
                "aws",
                4,
                {"instance_type": "g5.xlarge", "gpu": "a10g", "region": "us-east-1", "spot": True},
            ),
            (
                "cpu-general",
                "gcp",
                8,
                {"machine_type": "e2-standard-4", "region": "europe-west4", "spot": False},
            ),
        )
        with self.store.unit_of_work() as uow:
            for name, provider, max_number, attributes in catalogue:
                found = uow.templates.list(name=name, provider_type=provider, limit=1)
                template = (
                    found[0]
                    if found
                    else uow.templates.add(
                        Template(
                            name=name,
                            provider_type=provider,
                            max_number=max_number,
                            attributes=attributes,
                        )
                    )
                )
                self.template_ids[name] = template.id
            gpu_matches = uow.templates.find_by_attributes({"gpu": "a10g", "region": "us-east-1"})
            on_aws = uow.templates.get_by_provider_type("aws")
        self.report.line(
            f"templates matching {{gpu: a10g, region: us-east-1}}: "
            f"{', '.join(t.name for t in gpu_matches) or 'none'}; on aws: {len(on_aws)}"
        )

        # A GPU request that is fulfilled, and a CPU request whose only machine fails to boot.
        with self.store.unit_of_work() as uow:
            gpu = uow.requests.add(
                Request(template_id=self.template_ids["gpu-a10g-spot"], machine_count=2)
            )
            cpu = uow.requests.add(
                Request(template_id=self.template_ids["cpu-general"], machine_count=1)
            )
            active_before = len(uow.requests.get_active_requests())
        with self.store.unit_of_work() as uow:
            uow.requests.update_status(gpu.id, RequestStatus.IN_PROGRESS)
            uow.requests.update_status(cpu.id, RequestStatus.IN_PROGRESS)
            machines = uow.machines.add_many(
                [Machine(request_id=gpu.id, instance_id=_instance_id()) for _ in range(2)]
                + [Machine(request_id=cpu.id, instance_id=_instance_id())]
            )
        instance_ids = [m.instance_id for m in machines]
        with self.store.unit_of_work() as uow:
            for machine in uow.machines.get_by_instance_ids(instance_ids):
                outcome = (
                    MachineStatus.RUNNING if machine.request_id == gpu.id else MachineStatus.FAILED
                )
                uow.machines.update_status(machine.id, outcome)
            uow.requests.update_status(gpu.id, RequestStatus.COMPLETED)
            uow.requests.update_status(cpu.id, RequestStatus.FAILED)
            uow.audit_logs.record(
                self.org_id,
                "request.completed",
                "request",
                resource_id=str(gpu.id),
                details={"machines": instance_ids[:2]},
            )
            running = len(uow.machines.get_by_request_id(gpu.id))
            states = Counter(str(r.status) for r in uow.requests.list())
            active_after = len(uow.requests.get_active_requests())
        summary.requests_created = 2
        self.report.line(
            f"gpu request {_short(gpu.id)}: pending -> in_progress -> completed, "
            f"{running} machines running:"
        )
        self.report.line(f"  {', '.join(instance_ids[:2])}")
        self.report.line(
            f"cpu request {_short(cpu.id)}: pending -> in_progress -> failed "
            f"(machine {instance_ids[2]} failed to boot)"
        )
        self.report.line(
            f"active requests: {active_before} while provisioning, {active_after} now; "
            f"all requests by status: {_counts(states)}"
        )

    # -- 6. deployment + job, worker ---------------------------------------------------------

    def deployment(self, summary: DemoSummary) -> None:
        self.report.step("A deployment and its rollout job, in one unit of work")
        with self.store.unit_of_work() as uow:
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
                    "org_id": str(self.org_id),
                }
            )
        summary.deployment_id, summary.job_id = deployment.id, job_id
        self.report.line(
            f"deployment {deployment.name} {deployment.version} (pending) and job {_short(job_id)} "
            f"on queue {DEMO_QUEUE!r} committed together"
        )

        lost_id: uuid.UUID | None = None
        lost_job: Any = None
        try:
            with self.store.unit_of_work() as uow:
                lost = uow.deployments.add(Deployment(name="canary-llm", version="1.5.0-rc1"))
                lost_id = lost.id
                lost_job = uow.queue(DEMO_QUEUE).enqueue({"deployment_id": str(lost.id)})
                raise _Abandon("the release manager cancels the canary before commit")
        except _Abandon as why:
            with self.store.unit_of_work() as uow:
                kept = uow.deployments.exists(lost_id)
            job_kept = _job_exists(self.store, lost_job)
            self.report.line(f"a second unit of work fails ({why}):")
            self.report.line(
                f"  its deployment {'survived (!)' if kept else 'is gone'}, "
                f"its job {'survived (!)' if job_kept else 'is gone'}"
            )

        processed = _run_worker(self.store, self._roll_out)
        summary.jobs_processed = processed
        job = self.store.queue(DEMO_QUEUE).get(job_id)
        with self.store.unit_of_work() as uow:
            rolled = uow.deployments.get(deployment.id)
            node = uow.deployments.get_node_id(deployment.id)
            on_node = uow.deployments.get_deployments_by_node_id(NODE_ID)
            stats = uow.deployments.stats()
        self.report.line(
            f"the worker processed {processed} job(s); job {_short(job_id)} is {job.status} "
            f"after {job.attempts} attempt(s)"
        )
        self.report.line(f"deployment {rolled.name}: {rolled.status} on {node}")
        self.report.line(f"{len(on_node)} deployment(s) on {NODE_ID}")
        by_status = {str(s): n for s, n in stats.by_status.items()}
        self.report.line(f"deployment stats: {stats.total} in all ({_counts(by_status)})")

    def _roll_out(self, job: Job) -> None:
        """The job handler: walk the deployment to running and place it on its node."""
        payload = job.payload
        with self.store.unit_of_work() as uow:
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

    # -- 7. inference metrics ----------------------------------------------------------------

    def inference(self, summary: DemoSummary) -> None:
        self.report.step("Inference traffic and metrics")
        started = utcnow()
        chatbot = self.app_ids["support-chatbot"]
        request_id = f"req-{secrets.token_hex(6)}"
        with self.store.unit_of_work() as uow:
            uow.inference_requests.add_many(
                [
                    InferenceRequest(
                        org_id=self.org_id,
                        application_id=chatbot,
                        user_id=self.user_ids[email],
                        model=model,
                        status=status,
                        prompt_tokens=prompt,
                        completion_tokens=completion,
                        cost=Decimal(cost),
                        latency_ms=latency,
                    )
                    for model, prompt, completion, cost, latency, status, email in TRAFFIC
                ]
            )
            uow.audit_logs.record(
                self.org_id,
                "inference.batch",
                "inference_request",
                application_id=chatbot,
                request_id=request_id,
                details={"requests": len(TRAFFIC)},
            )
        end = utcnow() + timedelta(seconds=1)
        with self.store.unit_of_work() as uow:
            this_run = uow.inference_requests.metrics(self.org_id, started, end)
            all_time = uow.inference_requests.metrics(
                self.org_id, datetime(2000, 1, 1, tzinfo=UTC), end
            )
            summary.inference_requests = uow.inference_requests.count(org_id=self.org_id)
        for label, metrics in (("this run", this_run), ("all runs", all_time)):
            self.report.line(
                f"{label:<9} {metrics.total_requests:>3} requests, "
                f"{metrics.total_tokens:>6,} tokens, ${metrics.total_cost:.6f}, "
                f"average latency {metrics.avg_latency_ms:.0f} ms"
            )

    # -- 8. audit trail ----------------------------------------------------------------------

    def audit(self, summary: DemoSummary) -> None:
        self.report.step("Audit trail, read through a unit of work scoped to the organization")
        ada = self.user_ids["ada@acme-robotics.example"]
        with self.store.unit_of_work(org_id=self.org_id) as uow:
            latest = uow.audit_logs.query(self.org_id, limit=5)
            rollouts = uow.audit_logs.query(self.org_id, action="deployment.rolled_out")
            by_ada = uow.audit_logs.query(self.org_id, user_id=ada)
            summary.audit_entries = uow.audit_logs.count()
            try:
                uow.audit_logs.delete(latest[0].id)
                refusal = "deleted (!)"
            except InvalidInputError as exc:
                refusal = f"refused: {exc}"
        self.report.line(
            f"{summary.audit_entries} entries for {ORG_SLUG}; the newest {len(latest)} (UTC):"
        )
        for entry in latest:
            when = entry.created_at.strftime("%H:%M:%S.%f")[:-3]
            self.report.line(f"  {when}  {entry.action:<22} {entry.resource_type}")
        self.report.line(f"rollouts recorded: {len(rollouts)}; entries about ada: {len(by_ada)}")
        self.report.line(f"deleting an entry is {refusal}")

        with self.store.unit_of_work(org_id=self.neighbour_id) as neighbour:
            seen = neighbour.audit_logs.count()
            by_id = neighbour.audit_logs.get_or_none(latest[0].id)
            try:
                with neighbour.savepoint():
                    neighbour.audit_logs.record(self.org_id, "forged.entry", "organization")
                forged = "written (!)"
            except InvalidInputError as exc:
                forged = f"refused ({type(exc).__name__})"
        self.report.line(
            f"scoped to {NEIGHBOUR_SLUG}: {seen} of them visible, reading one by id gives "
            f"{'a row (!)' if by_id is not None else 'nothing'},"
        )
        self.report.line(f"  and writing an entry into {ORG_SLUG} is {forged}")


class _Abandon(Exception):
    """Raised inside a unit of work to show that everything in it is rolled back."""


def _job_exists(store: Store, job_id: Any) -> bool:
    try:
        store.queue(DEMO_QUEUE).get(job_id)
    except NotFoundError:
        return False
    return True


def _run_worker(store: Store, handler: Callable[[Job], None]) -> int:
    """Run flowstore's worker in this process until the demo queue is drained; how many jobs.

    The timer only bounds a run whose handler keeps failing (its retries wait for backoff).
    """
    stop = threading.Event()
    timer = threading.Timer(WORKER_TIME_LIMIT_S, stop.set)
    timer.start()
    try:
        return run_worker(
            store, DEMO_QUEUE, handler, until_empty=True, poll_interval=0.1, stop_event=stop
        )
    finally:
        timer.cancel()


def _instance_id() -> str:
    return "i-0" + secrets.token_hex(8)


def _short(value: Any) -> str:
    return str(value)[-8:]


def _counts(counts: dict[str, int] | Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def run_demo(store: Store, out: TextIO | None = None) -> DemoSummary:
    """Migrate ``store`` to head and tell the story on it, printing to ``out`` (stdout)."""
    out = out or sys.stdout
    started = time.perf_counter()
    before = store.current_revision()
    store.upgrade()
    after = store.current_revision()
    print(f"flowstore demo on {store.safe_url}", file=out)
    if before == after:
        print(f"schema: already at {after} (head)", file=out)
    else:
        print(f"schema: migrated from {before or 'an empty database'} to {after} (head)", file=out)
    story = _Story(store, out)
    summary = story.organization()
    story.applications(summary)
    story.users(summary)
    story.policies(summary)
    story.capacity(summary)
    story.deployment(summary)
    story.inference(summary)
    story.audit(summary)
    elapsed = time.perf_counter() - started
    print(
        f"\ndone in {elapsed:.1f} s; run it again to add another round on the same database",
        file=out,
    )
    return summary
