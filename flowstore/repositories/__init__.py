"""Repositories: ``Repository[T]`` and one repository per aggregate."""

from flowstore.repositories.application import ApplicationRepository
from flowstore.repositories.audit_log import AuditLogRepository
from flowstore.repositories.base import Repository, RepositoryContext
from flowstore.repositories.deployment import DeploymentRepository, DeploymentStats
from flowstore.repositories.inference_request import InferenceMetrics, InferenceRequestRepository
from flowstore.repositories.machine import MachineRepository
from flowstore.repositories.organization import OrganizationRepository
from flowstore.repositories.policy import PolicyRepository
from flowstore.repositories.request import RequestRepository
from flowstore.repositories.template import TemplateRepository
from flowstore.repositories.user import UserRepository

__all__ = [
    "ApplicationRepository",
    "AuditLogRepository",
    "DeploymentRepository",
    "DeploymentStats",
    "InferenceMetrics",
    "InferenceRequestRepository",
    "MachineRepository",
    "OrganizationRepository",
    "PolicyRepository",
    "Repository",
    "RepositoryContext",
    "RequestRepository",
    "TemplateRepository",
    "UserRepository",
]
