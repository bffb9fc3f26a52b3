"""The declarative models and enums of flowstore, one module per aggregate.

A service's own models subclass ``Entity`` (UUIDv7 id, timestamps, ``lock_version``) or
``Base`` (any single-column primary key) and share flowstore's metadata and types.
"""

from flowstore.models.application import Application
from flowstore.models.audit_log import AuditLog
from flowstore.models.base import NAMING_CONVENTION, Base, Entity, tenant_column
from flowstore.models.deployment import Deployment, DeploymentNode
from flowstore.models.enums import (
    ACTIVE_REQUEST_STATUSES,
    DeploymentStatus,
    JobStatus,
    MachineStatus,
    PolicyType,
    RequestStatus,
)
from flowstore.models.event import EVENTS
from flowstore.models.inference_request import InferenceRequest
from flowstore.models.job import Job
from flowstore.models.job_schedule import JobSchedule
from flowstore.models.machine import Machine
from flowstore.models.mutable_json import TrackedDict, TrackedList
from flowstore.models.organization import Organization
from flowstore.models.policy import Policy
from flowstore.models.request import Request
from flowstore.models.template import Template
from flowstore.models.types import GUID, CopyOf, JSONType, Money, UTCDateTime, utcnow, uuid7
from flowstore.models.user import User

#: The tables of flowstore's own models (a service's models share ``Base.metadata``); its
#: migrations create exactly these.
FLOWSTORE_TABLES = frozenset(Base.metadata.tables)

__all__ = [
    "ACTIVE_REQUEST_STATUSES",
    "EVENTS",
    "FLOWSTORE_TABLES",
    "GUID",
    "NAMING_CONVENTION",
    "Application",
    "AuditLog",
    "Base",
    "CopyOf",
    "Deployment",
    "DeploymentNode",
    "DeploymentStatus",
    "Entity",
    "InferenceRequest",
    "JSONType",
    "Job",
    "JobSchedule",
    "JobStatus",
    "Machine",
    "MachineStatus",
    "Money",
    "Organization",
    "Policy",
    "PolicyType",
    "Request",
    "RequestStatus",
    "Template",
    "TrackedDict",
    "TrackedList",
    "UTCDateTime",
    "User",
    "tenant_column",
    "utcnow",
    "uuid7",
]
