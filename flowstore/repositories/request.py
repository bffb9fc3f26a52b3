"""Machine requests: by status, the active ones, and status transitions."""

from __future__ import annotations

import builtins
from typing import Any

from flowstore.models import ACTIVE_REQUEST_STATUSES, Request, RequestStatus
from flowstore.repositories.base import Repository, translated
from flowstore.spec import where


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
        return self._set_required(id, "status", status)
