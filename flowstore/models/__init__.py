"""The declarative models and enums of flowstore, one module per aggregate."""

from flowstore.models.application import Application
from flowstore.models.audit_log import AuditLog
from flowstore.models.base import NAMING_CONVENTION, Base, CopyOf, Entity, utcnow, uuid7
from flowstore.models.deployment import Deployment, DeploymentNode
from flowstore.models.enums import (
    ACTIVE_REQUEST_STATUSES,
    DeploymentStatus,
    JobStatus,
    MachineStatus,
    PolicyType,
    RequestStatus,
)
from flowstore.models.inference_request import InferenceRequest
from flowstore.models.job import Job
from flowstore.models.machine import Machine
from flowstore.models.organization import Organization
from flowstore.models.policy import Policy
from flowstore.models.request import Request
from flowstore.models.template import Template
from flowstore.models.user import User

__all__ = [
    "ACTIVE_REQUEST_STATUSES",
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
    "Job",
    "JobStatus",
    "Machine",
    "MachineStatus",
    "Organization",
    "Policy",
    "PolicyType",
    "Request",
    "RequestStatus",
    "Template",
    "User",
    "utcnow",
    "uuid7",
]
