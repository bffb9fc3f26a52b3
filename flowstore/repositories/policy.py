"""Policies and the lookup of those that apply to a request."""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import case, select, true

from flowstore.errors import InvalidInputError
from flowstore.models import Policy
from flowstore.repositories.base import Repository, require_id, translated


def _level_id(name: str, value: Any) -> Any:
    return None if value is None else require_id(value, name)


class PolicyRepository(Repository[Policy]):
    model = Policy

    @translated
    def get_applicable_policies(
        self, org_id: Any, application_id: Any = None, user_id: Any = None
    ) -> builtins.list[Policy]:
        """Enabled policies that apply: user level, then application level, then org level,
        each by priority (highest first).

        A policy applies when each of its ``application_id``/``user_id`` is unset or equals the
        one asked for; with neither given, only org-level policies apply.
        """
        org = _level_id("org_id", org_id)
        if org is None:
            raise InvalidInputError("org_id is required")
        app, user = _level_id("application_id", application_id), _level_id("user_id", user_id)
        level = case(
            (Policy.user_id.is_not(None), 0),
            (Policy.application_id.is_not(None), 1),
            else_=2,
        )
        app_clause = Policy.application_id.is_(None)
        if app is not None:
            app_clause = app_clause | (Policy.application_id == app)
        user_clause = Policy.user_id.is_(None)
        if user is not None:
            user_clause = user_clause | (Policy.user_id == user)
        stmt = (
            select(Policy)
            .where(Policy.org_id == org, Policy.enabled == true(), app_clause, user_clause)
            .order_by(level, Policy.priority.desc(), Policy.created_at, Policy.id)
        )
        return builtins.list(self.session.scalars(stmt).all())
