"""Deployments: status queries, stats, and the deployment -> node mapping."""

from __future__ import annotations

import builtins
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select

from flowstore.errors import InvalidInputError, NotFoundError, describe
from flowstore.models import Deployment, DeploymentNode, DeploymentStatus
from flowstore.models.base import utcnow
from flowstore.repositories.base import Repository, coerce_id, translated
from flowstore.spec import coerce_value


@dataclass(frozen=True)
class DeploymentStats:
    """``total`` deployments and their count per status (a missing status counts 0)."""

    total: int
    by_status: Counter[DeploymentStatus] = field(default_factory=Counter)


class DeploymentRepository(Repository[Deployment]):
    model = Deployment

    @translated
    def list_by_status(self, status: DeploymentStatus | str) -> builtins.list[Deployment]:
        """Deployments in ``status``, oldest first."""
        return self.list(status=status)

    @translated
    def stats(self) -> DeploymentStats:
        """Total and per-status counts, in one grouped query."""
        rows = self.session.execute(
            select(Deployment.status, func.count()).group_by(Deployment.status)
        ).all()
        by_status: Counter[DeploymentStatus] = Counter({status: n for status, n in rows})
        return DeploymentStats(total=sum(by_status.values()), by_status=by_status)

    @translated
    def set_node_id(self, deployment_id: Any, node_id: str) -> None:
        """Place the deployment on ``node_id`` (replacing any earlier node)."""
        node_id = coerce_value(DeploymentNode.node_id, "node_id", node_id)
        if not node_id:
            raise InvalidInputError("node_id must be a non-empty string")
        deployment = self.get(deployment_id)
        mapping = self.session.get(DeploymentNode, deployment.id)
        if mapping is None:
            self.session.add(DeploymentNode(deployment_id=deployment.id, node_id=node_id))
        else:
            mapping.node_id = node_id
            mapping.assigned_at = utcnow()
        self.session.flush()

    @translated
    def get_node_id(self, deployment_id: Any) -> str:
        """The node the deployment is on; ``NotFoundError`` when it has none."""
        key = coerce_id(deployment_id)
        mapping = self.session.get(DeploymentNode, key) if key is not None else None
        if mapping is None:
            raise NotFoundError(f"deployment {describe(deployment_id)} is not mapped to a node")
        return mapping.node_id

    @translated
    def delete_node_id(self, deployment_id: Any) -> bool:
        """Remove the deployment's node mapping; ``False`` when there was none."""
        key = coerce_id(deployment_id)
        if key is None:
            return False
        mapping = self.session.get(DeploymentNode, key)
        if mapping is None:
            return False
        self.session.delete(mapping)
        self.session.flush()
        return True

    @translated
    def get_deployments_by_node_id(self, node_id: str) -> builtins.list[uuid.UUID]:
        """Ids of the deployments placed on ``node_id``."""
        node_id = coerce_value(DeploymentNode.node_id, "node_id", node_id)
        stmt = (
            select(DeploymentNode.deployment_id)
            .where(DeploymentNode.node_id == node_id)
            .order_by(DeploymentNode.assigned_at, DeploymentNode.deployment_id)
        )
        return builtins.list(self.session.scalars(stmt).all())

    @translated
    def clear_node(self, node_id: str) -> int:
        """Remove every mapping to ``node_id`` (the node is gone); returns how many."""
        result = self.session.execute(
            delete(DeploymentNode).where(DeploymentNode.node_id == node_id),
            execution_options={"synchronize_session": "fetch"},
        )
        return int(getattr(result, "rowcount", 0) or 0)
