"""The audit trail: append-only, queried newest first."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import select

from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog
from flowstore.repositories.base import Repository, check_page, translated
from flowstore.spec import coerce_value

DEFAULT_QUERY_LIMIT = 100


class AuditLogRepository(Repository[AuditLog]):
    model = AuditLog

    @translated
    def record(
        self,
        org_id: Any,
        action: str,
        resource_type: str,
        *,
        resource_id: str | None = None,
        application_id: Any = None,
        user_id: Any = None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditLog:
        """Append one audit entry and return it."""
        entry = AuditLog(
            org_id=coerce_value(AuditLog.org_id, "org_id", org_id),
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            application_id=coerce_value(AuditLog.application_id, "application_id", application_id),
            user_id=coerce_value(AuditLog.user_id, "user_id", user_id),
            request_id=request_id,
            details=details or {},
        )
        return self.add(entry)

    @translated
    def query(
        self,
        org_id: Any,
        *,
        application_id: Any = None,
        user_id: Any = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
        offset: int = 0,
    ) -> builtins.list[AuditLog]:
        """An organization's entries, newest first, at most ``limit`` of them.

        ``since`` is inclusive and ``until`` exclusive; the other arguments narrow by equality.
        """
        filters: dict[str, Any] = {"org_id": org_id}
        for name, value in (
            ("application_id", application_id),
            ("user_id", user_id),
            ("action", action),
            ("request_id", request_id),
        ):
            if value is not None:
                filters[name] = value
        if filters["org_id"] is None:
            raise InvalidInputError("org_id is required")
        criteria = self._criteria((), filters)
        if since is not None:
            criteria.append(AuditLog.created_at >= coerce_value(AuditLog.created_at, "since", since))
        if until is not None:
            criteria.append(AuditLog.created_at < coerce_value(AuditLog.created_at, "until", until))
        stmt = (
            select(AuditLog)
            .where(*criteria)
            .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
            .limit(check_page("limit", limit))
            .offset(check_page("offset", offset) or None)
        )
        return builtins.list(self.session.scalars(stmt).all())

    def update(self, entity: AuditLog) -> NoReturn:
        """Refused: the audit log is append-only."""
        raise InvalidInputError("the audit log is append-only: entries cannot be updated")

    def delete(self, id: Any) -> NoReturn:
        """Refused: the audit log is append-only."""
        raise InvalidInputError("the audit log is append-only: entries cannot be deleted")
