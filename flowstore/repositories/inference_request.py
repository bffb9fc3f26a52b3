"""Inference requests and their usage metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from flowstore.models import InferenceRequest
from flowstore.repositories.base import Repository, translated
from flowstore.spec import coerce_value


@dataclass(frozen=True)
class InferenceMetrics:
    """Usage of one organization over a time window."""

    total_requests: int
    total_tokens: int
    total_cost: Decimal
    avg_latency_ms: float


class InferenceRequestRepository(Repository[InferenceRequest]):
    model = InferenceRequest

    @translated
    def metrics(self, org_id: Any, start: datetime, end: datetime) -> InferenceMetrics:
        """Totals over ``[start, end)`` for ``org_id``, in one aggregate query."""
        ir = InferenceRequest
        org = coerce_value(ir.org_id, "org_id", org_id)
        start = coerce_value(ir.created_at, "start", start)
        end = coerce_value(ir.created_at, "end", end)
        row = self.session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(ir.prompt_tokens + ir.completion_tokens), 0),
                func.sum(ir.cost),
                func.avg(ir.latency_ms),
            ).where(ir.org_id == org, ir.created_at >= start, ir.created_at < end)
        ).one()
        count, tokens, cost, latency = row
        return InferenceMetrics(
            total_requests=int(count),
            total_tokens=int(tokens),
            total_cost=Decimal(cost) if cost is not None else Decimal("0"),
            avg_latency_ms=float(latency) if latency is not None else 0.0,
        )
