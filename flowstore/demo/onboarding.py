"""Chapters 1-3: the organization and its neighbour, applications with API keys, and users.

Each is found when an earlier run made it, so the story can run again on the same database.
"""

from __future__ import annotations

from flowstore.demo.cast import NEIGHBOUR_SLUG, ORG_SLUG
from flowstore.demo.report import mask_key
from flowstore.demo.story import Story
from flowstore.demo.summary import DemoSummary
from flowstore.models import Organization, User


def organization(story: Story) -> DemoSummary:
    """Find or create the organization (and a neighbour in the same database)."""
    report = story.report
    report.step("Organization")
    with story.store.unit_of_work() as uow:
        org = uow.organizations.get_by_slug(ORG_SLUG)
        created = org is None
        if org is None:
            org = uow.organizations.add(Organization(name="Acme Robotics", slug=ORG_SLUG))
            uow.audit_logs.record(
                org.id, "organization.created", "organization", resource_id=str(org.id)
            )
        neighbour = uow.organizations.get_by_slug(NEIGHBOUR_SLUG)
        if neighbour is None:
            neighbour = uow.organizations.add(Organization(name="Globex Labs", slug=NEIGHBOUR_SLUG))
        story.org_id, story.neighbour_id = org.id, neighbour.id
        total = uow.organizations.count()
    how = "created" if created else "found (made by an earlier run)"
    report.line(f"{org.name} ({org.slug}) {how}")
    report.line(
        f"{total} organizations share the database: {neighbour.name} ({neighbour.slug}) "
        "is a neighbour"
    )
    return DemoSummary(organization_id=story.org_id, organization_created=created)


def applications(story: Story, summary: DemoSummary) -> None:
    """Applications with API keys: issue or rotate, look up by key, rotate and retry the old."""
    report = story.report
    report.step("Applications and API keys")
    keys: dict[str, str] = {}
    with story.store.unit_of_work() as uow:
        for name in ("support-chatbot", "batch-summarizer"):
            found = uow.applications.list(org_id=story.org_id, name=name, limit=1)
            if found:
                app = found[0]
                keys[name] = uow.applications.rotate_api_key(app.id)
                how = "found; its key was rotated to show a fresh one"
            else:
                app, keys[name] = uow.applications.create_with_api_key(story.org_id, name)
                how = "created"
            story.app_ids[name] = app.id
            report.line(f"{name:<17} key {mask_key(keys[name])}  {how}")
        summary.applications = uow.applications.count(org_id=story.org_id)
    report.line("the raw keys are shown once; the table keeps only their HMAC-SHA-256")

    chatbot = story.app_ids["support-chatbot"]
    with story.store.unit_of_work() as uow:
        by_key = uow.applications.get_by_api_key(keys["support-chatbot"])
        old_key = keys["support-chatbot"]
        keys["support-chatbot"] = uow.applications.rotate_api_key(chatbot)
        uow.audit_logs.record(
            story.org_id,
            "api_key.rotated",
            "application",
            resource_id=str(chatbot),
            application_id=chatbot,
        )
    with story.store.unit_of_work() as uow:
        old_works = uow.applications.get_by_api_key(old_key) is not None
        new_app = uow.applications.get_by_api_key(keys["support-chatbot"])
    found_name = by_key.name if by_key else "nothing"
    report.line(f"lookup by key {mask_key(old_key)} -> {found_name}")
    report.line(
        f"after rotation: old key {'still accepted (!)' if old_works else 'rejected'}, "
        f"new key {mask_key(keys['support-chatbot'])} "
        f"{'accepted' if new_app is not None and new_app.id == chatbot else 'rejected (!)'}"
    )


def users(story: Story, summary: DemoSummary) -> None:
    """Users with SSO identities, found by email and resolved from an SSO login."""
    report = story.report
    report.step("Users")
    people = (
        ("ada@acme-robotics.example", "okta|00u1ada"),
        ("grace@acme-robotics.example", "okta|00u1grace"),
    )
    with story.store.unit_of_work() as uow:
        for email, external_id in people:
            user = uow.users.get_by_email(story.org_id, email)
            how = "found"
            if user is None:
                user = uow.users.add(
                    User(org_id=story.org_id, email=email, external_id=external_id)
                )
                how = "created"
            story.user_ids[email] = user.id
            report.line(f"{email:<28} (SSO {external_id}) {how}")
        by_sso = uow.users.get_by_external_id("okta|00u1grace")
        summary.users = uow.users.count(org_id=story.org_id)
    report.line(f"SSO login okta|00u1grace resolves to {by_sso.email if by_sso else 'nobody'}")
