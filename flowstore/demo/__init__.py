"""``flowstore demo``: a control-plane story told through flowstore's public API.

An LLM platform team onboards an organization: applications with API keys, users, a policy
hierarchy, machine templates and capacity requests, a model deployment rolled out by a
background worker, an audit trail and inference metrics. Each step prints a few lines.

The story can run again on the same database: the organization, its applications, users,
policies and templates are found rather than created twice, while requests, deployments,
jobs and inference traffic are new events each run, so their totals grow.

The modules, from the top: ``run`` (the whole story); the chapters ``onboarding``,
``policies``, ``capacity``, ``rollout``, ``inference`` and ``audit``; ``worker_run``;
``story`` (what the chapters share); ``report``, ``summary`` and ``cast``.
"""

from __future__ import annotations

from flowstore.demo.cast import DEMO_QUEUE, ORG_SLUG, TRAFFIC
from flowstore.demo.report import mask_key
from flowstore.demo.run import run_demo
from flowstore.demo.summary import DemoSummary

__all__ = ["DEMO_QUEUE", "ORG_SLUG", "TRAFFIC", "DemoSummary", "mask_key", "run_demo"]
