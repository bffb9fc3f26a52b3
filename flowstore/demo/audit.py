"""Chapter 8: the audit trail, read through units of work scoped to one organization or another.

It shows the log is append-only and that a neighbour can neither read nor forge its entries.
"""

from __future__ import annotations

from flowstore.demo.cast import NEIGHBOUR_SLUG, ORG_SLUG
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.errors import InvalidInputError


def audit(story: Story, summary: DemoSummary) -> None:
    """Query the organization's entries, try to delete one, then look from the neighbour's side."""
    report = story.report
    report.step("Audit trail, read through a unit of work scoped to the organization")
    org_id = story.org_id
    ada = story.user_ids["ada@acme-robotics.example"]
    with story.store.unit_of_work(org_id=org_id) as uow:
        latest = uow.audit_logs.query(org_id, limit=5)
        rollouts = uow.audit_logs.query(org_id, action="deployment.rolled_out")
        by_ada = uow.audit_logs.query(org_id, user_id=ada)
        summary.audit_entries = uow.audit_logs.count()
        try:
            uow.audit_logs.delete(latest[0].id)
            refusal = "deleted (!)"
        except InvalidInputError as exc:
            refusal = f"refused: {exc}"
    report.line(f"{summary.audit_entries} entries for {ORG_SLUG}; the newest {len(latest)} (UTC):")
    for entry in latest:
        when = entry.created_at.strftime("%H:%M:%S.%f")[:-3]
        report.line(f"  {when}  {entry.action:<22} {entry.resource_type}")
    report.line(f"rollouts recorded: {len(rollouts)}; entries about ada: {len(by_ada)}")
    report.line(f"deleting an entry is {refusal}")

    with story.store.unit_of_work(org_id=story.neighbour_id) as neighbour:
        seen = neighbour.audit_logs.count()
        by_id = neighbour.audit_logs.get_or_none(latest[0].id)
        try:
            with neighbour.savepoint():
                neighbour.audit_logs.record(org_id, "forged.entry", "organization")
            forged = "written (!)"
        except InvalidInputError as exc:
            forged = f"refused ({type(exc).__name__})"
    report.line(
        f"scoped to {NEIGHBOUR_SLUG}: {seen} of them visible, reading one by id gives "
        f"{'a row (!)' if by_id is not None else 'nothing'},"
    )
    report.line(f"  and writing an entry into {ORG_SLUG} is {forged}")
