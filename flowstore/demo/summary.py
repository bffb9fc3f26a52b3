"""What one run of the demo did, returned beside the printed report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


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
