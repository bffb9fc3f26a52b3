"""Factories of the platform's records: deployments and their nodes, templates, requests and
machines, and the job queue's jobs."""

from __future__ import annotations

from datetime import timedelta

from flowstore.models import (
    Deployment,
    DeploymentNode,
    DeploymentStatus,
    Job,
    JobSchedule,
    JobStatus,
    Machine,
    MachineStatus,
    Request,
    RequestStatus,
    Template,
    utcnow,
    uuid7,
)
from flowstore.testing.factories.base import (
    RUN_TAG,
    EntityFactory,
    Faker,
    FlowstoreFactory,
    LazyAttribute,
    LazyFunction,
    Parent,
    SelfAttribute,
    Sequence,
    rand,
)

__all__ = [
    "DeploymentFactory",
    "DeploymentNodeFactory",
    "JobFactory",
    "JobScheduleFactory",
    "MachineFactory",
    "RequestFactory",
    "TemplateFactory",
]

# -- deployments -------------------------------------------------------------------------------

SERVICES = ("api-gateway", "billing", "checkout", "search", "auth", "inference-router", "notifier")


class DeploymentFactory(EntityFactory[Deployment]):
    class Meta:
        model = Deployment

    name = Faker("random_element", elements=SERVICES)
    version = LazyFunction(
        lambda: f"{rand().randint(0, 4)}.{rand().randint(0, 20)}.{rand().randint(0, 30)}"
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
    node_id = LazyFunction(lambda: f"node-{rand().randint(1, 64):02d}")


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
        instance_type = LazyAttribute(lambda o: rand().choice(PROVIDERS[o.provider_type][0]))
        region = LazyAttribute(lambda o: rand().choice(PROVIDERS[o.provider_type][1]))

    provider_type = Faker("random_element", elements=sorted(PROVIDERS))
    name = LazyAttribute(lambda o: f"{o.provider_type}-{o.instance_type}-{o.region}")
    max_number = Faker("pyint", min_value=1, max_value=20)
    attributes = LazyAttribute(
        lambda o: {
            "instance_type": o.instance_type,
            "region": o.region,
            "image_id": f"img-{rand().getrandbits(64):016x}",
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
    instance_id = Sequence(lambda n: f"i-{RUN_TAG:010x}{n:07x}")
    status = MachineStatus.PENDING


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


class JobScheduleFactory(FlowstoreFactory[JobSchedule]):
    """A periodic job (``JobQueue.schedule`` makes these), every five minutes and due now:
    ``queue.enqueue_scheduled()`` turns it into a job at once. Pass ``next_run_at`` for a
    later tick."""

    class Meta:
        model = JobSchedule

    class Params:
        task = Faker("random_element", elements=JOB_TASKS)

    queue = LazyAttribute(lambda o: o.task[0])
    name = Sequence(lambda n: f"every-five-minutes-{RUN_TAG}-{n}")
    cron = "*/5 * * * *"
    payload = LazyAttribute(lambda o: dict(o.task[1]))
    next_run_at = LazyFunction(utcnow)
