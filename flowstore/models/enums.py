"""Status and type enums: ``str`` enums with lower-case values, stored as their value."""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class RequestStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_REQUEST_STATUSES = (RequestStatus.PENDING, RequestStatus.IN_PROGRESS)


class MachineStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    FAILED = "failed"


class PolicyType(StrEnum):
    RATE_LIMIT = "rate_limit"
    BUDGET = "budget"
    MODEL_ACCESS = "model_access"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"
