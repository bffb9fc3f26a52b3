"""Machine requests: by status, the active ones, and status transitions."""

from __future__ import annotations

import builtins
from typing import Any

from flowstore.errors import InvalidInputError
from flowstore.models import ACTIVE_REQUEST_STATUSES, Request, RequestStatus
from flowstore.repositories.base import Repository, translated
from flowstore.spec import coerce_value, where


class RequestRepository(Repository[Request]):
    model = Request

    @translated
    def get_by_status(self, status: RequestStatus | str) -> builtins.list[Request]:
        """Requests in ``status``, oldest first."""
        return self.list(status=status)

    @translated
    def get_active_requests(self) -> builtins.list[Request]:
        """Requests still pending or in progress, oldest first."""
        return self.list(where("status", "in", ACTIVE_REQUEST_STATUSES))

    @translated
    def update_status(self, id: Any, status: RequestStatus | str) -> bool:
        """Set the request's status; ``False`` when there is no such request."""
        new_status: RequestStatus = coerce_value(Request.status, "status", status)
        if new_status is None:
            raise InvalidInputError("status is required")
        request = self.get_or_none(id)
        if request is None:
            return False
        request.status = new_status
        self.session.flush()
        return True
