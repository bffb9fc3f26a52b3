"""The audit trail: append-only, queried newest first.

Append-only holds beyond this repository: any flush of a changed or deleted ``AuditLog``
fails, flowstore's sessions refuse an UPDATE or DELETE statement on ``audit_logs``, and the
database's triggers (migration 0003) refuse raw SQL.
"""

from __future__ import annotations

import builtins
import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import Connection, Select, event, select
from sqlalchemy.orm import Mapper, ORMExecuteState, object_session
from sqlalchemy.sql import operators

from flowstore.errors import InvalidInputError
from flowstore.models import AuditLog
from flowstore.repositories.base import Repository, check_page, translated
from flowstore.repositories.pagination import (
    Page,
    after_clause,
    decode_cursor,
    fetch_page,
    position_clause,
)
from flowstore.repositories.shapes import Binder, planned, value_check
from flowstore.sessions import FlowstoreSession
from flowstore.validation import coerce_value

if TYPE_CHECKING:
    from flowstore.audit_writer import AuditWriter

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
        after: str | None = None,
    ) -> builtins.list[AuditLog]:
        """An organization's entries, newest first, at most ``limit`` of them.

        ``since`` is inclusive and ``until`` exclusive; the other arguments narrow by equality.
        ``after`` (a cursor from ``query_page()`` or ``cursor_for()``) continues just after
        (older than) that entry: keyset pagination, as fast deep down as at the start.
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
        if not self._plain_reads:  # a subclass's own _criteria: built as ever, with them
            built = _built_query(self, filters, since, until, limit, offset, after)
            return builtins.list(self.session.scalars(built).all())
        # the checks criteria() and coerce_value() make, in their order; then the statement
        # kept for this shape runs with the checked values (flowstore.repositories.shapes)
        values = [value_check(AuditLog, name)[1](value) for name, value in filters.items()]
        for label, bound in (("since", since), ("until", until)):
            if bound is not None:
                values.append(value_check(AuditLog, "created_at", label)[1](bound))
        if after is not None:
            if offset:
                raise InvalidInputError("use either after or offset, not both")
            values.extend(decode_cursor(AuditLog, after))
        if check_page("limit", limit) is not None:
            values.append(limit)
        if check_page("offset", offset):
            values.append(offset)
        shape: tuple[Any, ...] = (tuple(filters), since is not None, until is not None)
        shape += (after is not None, limit is not None, bool(offset))
        plan = planned(("audit_logs.query", *shape), functools.partial(_query_shape, shape))
        stmt, parameters = plan.bind(values)
        return builtins.list(self.session.scalars(stmt, parameters).all())

    @translated
    def query_page(
        self,
        org_id: Any,
        *,
        limit: int = DEFAULT_QUERY_LIMIT,
        after: str | None = None,
        **narrow: Any,
    ) -> Page[AuditLog]:
        """``query()`` one page at a time: up to ``limit`` entries, newest first, after the
        cursor ``after``, and the next page's cursor (``None`` on the last page); one query.
        ``narrow`` takes ``query()``'s other keywords (application_id, since, ...)."""
        if "offset" in narrow:
            raise InvalidInputError("query_page pages with cursors, not offset")
        return fetch_page(limit, lambda n: self.query(org_id, limit=n, after=after, **narrow))

    def writer(self, **options: Any) -> AuditWriter:
        """A background writer of audit entries to this repository's database: ``write()``
        returns at once and a thread stores entries in batches (see ``flowstore.audit_writer``
        for ``options``). Make one per process and keep it; its entries are committed by the
        writer, not by this unit of work. A tenant-scoped repository's writer writes only its
        organization's entries."""
        from flowstore.audit_writer import AuditWriter

        options.setdefault("org_id", self.context.org_id)
        options.setdefault("settings", self.context.settings)
        return AuditWriter(self.session.get_bind(), **options)  # the bind's engine, or its own

    def update(self, entity: AuditLog) -> NoReturn:
        """Refused: the audit log is append-only."""
        raise InvalidInputError("the audit log is append-only: entries cannot be updated")

    def delete(self, id: Any) -> NoReturn:
        """Refused: the audit log is append-only."""
        raise InvalidInputError("the audit log is append-only: entries cannot be deleted")

    def upsert(self, entity: AuditLog, *, on: Any = None) -> NoReturn:
        """Refused: the audit log is append-only (use ``add``)."""
        raise InvalidInputError("the audit log is append-only: entries cannot be upserted")

    def update_many(self, *specs: Any, **changes: Any) -> NoReturn:
        """Refused: the audit log is append-only."""
        raise InvalidInputError("the audit log is append-only: entries cannot be updated")

    def delete_many(self, *specs: Any, **filters: Any) -> NoReturn:
        """Refused: the audit log is append-only (retention is `flowstore db prune`'s)."""
        raise InvalidInputError("the audit log is append-only: entries cannot be deleted")


def _built_query(
    repository: AuditLogRepository,
    filters: dict[str, Any],
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    after: str | None,
) -> Select[Any]:
    """``query()``'s statement built with the values in place, with the repository's
    ``_criteria``."""
    criteria = repository._criteria((), filters)
    if since is not None:
        criteria.append(AuditLog.created_at >= coerce_value(AuditLog.created_at, "since", since))
    if until is not None:
        criteria.append(AuditLog.created_at < coerce_value(AuditLog.created_at, "until", until))
    if after is not None:
        if offset:
            raise InvalidInputError("use either after or offset, not both")
        criteria.append(after_clause(AuditLog, after, descending=True))
    return (
        select(AuditLog)
        .where(*criteria)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .limit(check_page("limit", limit))
        .offset(check_page("offset", offset) or None)
    )


def _query_shape(shape: tuple[Any, ...], binder: Binder) -> Select[Any]:
    """The statement of one shape of ``query()``: newest first, cut to the page."""
    names, since, until, after, limit, offset = shape
    criteria = [binder.compare(getattr(AuditLog, name), operators.eq) for name in names]
    if since:
        criteria.append(binder.compare(AuditLog.created_at, operators.ge))
    if until:
        criteria.append(binder.compare(AuditLog.created_at, operators.lt))
    if after:
        created_at = binder.value(AuditLog.created_at, operators.le, operators.lt)
        key = binder.value(AuditLog.id, operators.lt)
        criteria.append(position_clause(AuditLog, created_at, key, descending=True))
    stmt = select(AuditLog).where(*criteria)
    stmt = stmt.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    if limit:
        stmt = stmt.limit(binder.count())
    if offset:
        stmt = stmt.offset(binder.count())
    return stmt


def _refuse_audit_change(mapper: Mapper[Any], connection: Connection, entry: AuditLog) -> None:
    """In any flush: an audit entry may be inserted, never updated or deleted.

    A mapper event (not ``before_flush``) so that it costs nothing to flushes without audit
    changes and leaves ``add_many``'s bulk path open; the failed flush rolls the transaction
    (or its savepoint) back.
    """
    session = object_session(entry)
    if session is not None and not session.is_modified(entry) and entry not in session.deleted:
        return
    raise InvalidInputError("the audit log is append-only: entries cannot be changed or deleted")


def _refuse_audit_statements(state: ORMExecuteState) -> None:
    """Bulk UPDATE/DELETE statements on the audit log, through flowstore's sessions, are
    refused (other sessions, and their own ``audit_logs`` tables, are not flowstore's)."""
    changes = state.is_update or state.is_delete
    described = getattr(state.statement, "entity_description", None) if changes else None
    if isinstance(described, dict) and described.get("table") is AuditLog.__table__:
        raise InvalidInputError(
            "the audit log is append-only: UPDATE and DELETE statements are refused"
        )


event.listen(AuditLog, "before_update", _refuse_audit_change)
event.listen(AuditLog, "before_delete", _refuse_audit_change)
event.listen(FlowstoreSession, "do_orm_execute", _refuse_audit_statements)
