"""Chapter 4: a policy hierarchy at org, application and user level, and which ones apply."""

from __future__ import annotations

import uuid
from typing import Any

from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.models import Policy, PolicyType


def policies(story: Story, summary: DemoSummary) -> None:
    """Add the policies an earlier run did not, then show what applies to ada's chatbot calls."""
    report = story.report
    report.step("Policy hierarchy")
    org_id = story.org_id
    ada = story.user_ids["ada@acme-robotics.example"]
    chatbot = story.app_ids["support-chatbot"]
    wanted: list[
        tuple[uuid.UUID | None, uuid.UUID | None, PolicyType, dict[str, Any], int, bool]
    ] = [
        (None, None, PolicyType.RATE_LIMIT, {"requests_per_minute": 600}, 10, True),
        (None, None, PolicyType.BUDGET, {"monthly_usd": "2500.00"}, 5, True),
        (None, None, PolicyType.MODEL_ACCESS, {"allow": ["*"]}, 100, False),
        (
            chatbot,
            None,
            PolicyType.MODEL_ACCESS,
            {"allow": ["llama-3-8b-instruct", "mistral-7b-instruct"]},
            50,
            True,
        ),
        (None, ada, PolicyType.RATE_LIMIT, {"requests_per_minute": 60}, 0, True),
    ]
    created = 0
    with story.store.unit_of_work() as uow:
        for app_id, user_id, policy_type, config, priority, enabled in wanted:
            exists = uow.policies.count(
                org_id=org_id,
                application_id=app_id,
                user_id=user_id,
                policy_type=policy_type,
            )
            if not exists:
                uow.policies.add(
                    Policy(
                        org_id=org_id,
                        application_id=app_id,
                        user_id=user_id,
                        policy_type=policy_type,
                        config=config,
                        priority=priority,
                        enabled=enabled,
                    )
                )
                created += 1
        total = uow.policies.count(org_id=org_id)
        applicable = uow.policies.get_applicable_policies(org_id, chatbot, ada)
        org_only = uow.policies.get_applicable_policies(org_id)
        uow.audit_logs.record(
            org_id,
            "policy.evaluated",
            "policy",
            application_id=chatbot,
            user_id=ada,
            details={"applicable": len(applicable)},
        )
    report.line(
        f"{total} policies ({created} created this run): org, application and user level, "
        "one org-level policy disabled"
    )
    report.line("applicable when ada calls support-chatbot, in order:")
    for policy in applicable:
        level = "user" if policy.user_id else "application" if policy.application_id else "org"
        summary.applicable_policies.append(f"{level}:{policy.policy_type}")
        report.line(
            f"  {level:<11} {policy.policy_type:<12} priority {policy.priority:>3}  {policy.config}"
        )
    limit = next(p for p in applicable if p.policy_type == PolicyType.RATE_LIMIT)
    report.line(
        f"effective rate limit: {limit.config['requests_per_minute']} requests/min "
        f"(the most specific level wins); org-level only: {len(org_only)} policies"
    )
