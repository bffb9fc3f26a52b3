"""Chapter 5: machine templates, capacity requests through their states, and their machines."""

from __future__ import annotations

import secrets
from collections import Counter

from flowstore.demo.report import counts, short
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.models import Machine, MachineStatus, Request, RequestStatus, Template

CATALOGUE = (
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


def capacity(story: Story, summary: DemoSummary) -> None:
    """Find or add the templates, then a GPU request that is fulfilled and a CPU one that fails."""
    report = story.report
    report.step("Templates, capacity requests and machines")
    with story.store.unit_of_work() as uow:
        for name, provider, max_number, attributes in CATALOGUE:
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
            story.template_ids[name] = template.id
        gpu_matches = uow.templates.find_by_attributes({"gpu": "a10g", "region": "us-east-1"})
        on_aws = uow.templates.get_by_provider_type("aws")
    report.line(
        f"templates matching {{gpu: a10g, region: us-east-1}}: "
        f"{', '.join(t.name for t in gpu_matches) or 'none'}; on aws: {len(on_aws)}"
    )

    # A GPU request that is fulfilled, and a CPU request whose only machine fails to boot.
    with story.store.unit_of_work() as uow:
        gpu = uow.requests.add(
            Request(template_id=story.template_ids["gpu-a10g-spot"], machine_count=2)
        )
        cpu = uow.requests.add(
            Request(template_id=story.template_ids["cpu-general"], machine_count=1)
        )
        active_before = len(uow.requests.get_active_requests())
    with story.store.unit_of_work() as uow:
        uow.requests.update_status(gpu.id, RequestStatus.IN_PROGRESS)
        uow.requests.update_status(cpu.id, RequestStatus.IN_PROGRESS)
        machines = uow.machines.add_many(
            [Machine(request_id=gpu.id, instance_id=_instance_id()) for _ in range(2)]
            + [Machine(request_id=cpu.id, instance_id=_instance_id())]
        )
    instance_ids = [m.instance_id for m in machines]
    with story.store.unit_of_work() as uow:
        for machine in uow.machines.get_by_instance_ids(instance_ids):
            outcome = (
                MachineStatus.RUNNING if machine.request_id == gpu.id else MachineStatus.FAILED
            )
            uow.machines.update_status(machine.id, outcome)
        uow.requests.update_status(gpu.id, RequestStatus.COMPLETED)
        uow.requests.update_status(cpu.id, RequestStatus.FAILED)
        uow.audit_logs.record(
            story.org_id,
            "request.completed",
            "request",
            resource_id=str(gpu.id),
            details={"machines": instance_ids[:2]},
        )
        running = len(uow.machines.get_by_request_id(gpu.id))
        states = Counter(str(r.status) for r in uow.requests.list())
        active_after = len(uow.requests.get_active_requests())
    summary.requests_created = 2
    report.line(
        f"gpu request {short(gpu.id)}: pending -> in_progress -> completed, "
        f"{running} machines running:"
    )
    report.line(f"  {', '.join(instance_ids[:2])}")
    report.line(
        f"cpu request {short(cpu.id)}: pending -> in_progress -> failed "
        f"(machine {instance_ids[2]} failed to boot)"
    )
    report.line(
        f"active requests: {active_before} while provisioning, {active_after} now; "
        f"all requests by status: {counts(states)}"
    )


def _instance_id() -> str:
    return "i-0" + secrets.token_hex(8)
