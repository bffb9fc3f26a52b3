"""Chapter 7: a batch of inference traffic, and its metrics for this run and for all runs."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flowstore.demo.cast import TRAFFIC
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.models import InferenceRequest, utcnow


def inference(story: Story, summary: DemoSummary) -> None:
    """Record ``TRAFFIC`` against the chatbot, then report token, cost and latency totals."""
    report = story.report
    report.step("Inference traffic and metrics")
    started = utcnow()
    org_id = story.org_id
    chatbot = story.app_ids["support-chatbot"]
    request_id = f"req-{secrets.token_hex(6)}"
    with story.store.unit_of_work() as uow:
        uow.inference_requests.add_many(
            [
                InferenceRequest(
                    org_id=org_id,
                    application_id=chatbot,
                    user_id=story.user_ids[email],
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
            org_id,
            "inference.batch",
            "inference_request",
            application_id=chatbot,
            request_id=request_id,
            details={"requests": len(TRAFFIC)},
        )
    end = utcnow() + timedelta(seconds=1)
    with story.store.unit_of_work() as uow:
        this_run = uow.inference_requests.metrics(org_id, started, end)
        all_time = uow.inference_requests.metrics(org_id, datetime(2000, 1, 1, tzinfo=UTC), end)
        summary.inference_requests = uow.inference_requests.count(org_id=org_id)
    for label, metrics in (("this run", this_run), ("all runs", all_time)):
        report.line(
            f"{label:<9} {metrics.total_requests:>3} requests, "
            f"{metrics.total_tokens:>6,} tokens, ${metrics.total_cost:.6f}, "
            f"average latency {metrics.avg_latency_ms:.0f} ms"
        )
