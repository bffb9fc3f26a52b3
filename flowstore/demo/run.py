"""The whole demo: migrate the store, tell the chapters in order, and time the run."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from flowstore.demo.audit import audit
from flowstore.demo.capacity import capacity
from flowstore.demo.inference import inference
from flowstore.demo.onboarding import applications, organization, users
from flowstore.demo.policies import policies
from flowstore.demo.rollout import deployment
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.store import Store


def run_demo(store: Store, out: TextIO | None = None) -> DemoSummary:
    """Migrate ``store`` to head and tell the story on it, printing to ``out`` (stdout)."""
    out = out or sys.stdout
    started = time.perf_counter()
    before = store.current_revision()
    store.upgrade()
    after = store.current_revision()
    print(f"flowstore demo on {store.safe_url}", file=out)
    if before == after:
        print(f"schema: already at {after} (head)", file=out)
    else:
        print(f"schema: migrated from {before or 'an empty database'} to {after} (head)", file=out)
    story = Story(store, out)
    summary = organization(story)
    applications(story, summary)
    users(story, summary)
    policies(story, summary)
    capacity(story, summary)
    deployment(story, summary)
    inference(story, summary)
    audit(story, summary)
    elapsed = time.perf_counter() - started
    print(
        f"\ndone in {elapsed:.1f} s; run it again to add another round on the same database",
        file=out,
    )
    return summary
