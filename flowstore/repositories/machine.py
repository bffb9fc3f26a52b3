"""Machines: by request, by status, by provider instance ids, and status transitions."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

from flowstore.errors import InvalidInputError
from flowstore.models import Machine, MachineStatus
from flowstore.repositories.base import Repository, translated
from flowstore.spec import coerce_value, where


class MachineRepository(Repository[Machine]):
    model = Machine

    @translated
    def get_by_request_id(self, request_id: Any) -> builtins.list[Machine]:
        """Machines launched for one request."""
        return self.list(request_id=request_id)

    @translated
    def get_by_status(self, status: MachineStatus | str) -> builtins.list[Machine]:
        """Machines in ``status``."""
        return self.list(status=status)

    @translated
    def get_by_instance_ids(self, instance_ids: Iterable[str]) -> builtins.list[Machine]:
        """Machines with any of these provider instance ids (unknown ids are skipped)."""
        if isinstance(instance_ids, str | bytes | dict) or not isinstance(instance_ids, Iterable):
            raise InvalidInputError("get_by_instance_ids takes a list of instance ids")
        wanted = [coerce_value(Machine.instance_id, "instance_id", i) for i in instance_ids]
        ids = builtins.list(dict.fromkeys(wanted))
        if not ids:
            return []
        return self.list(where("instance_id", "in", ids))

    @translated
    def update_status(self, id: Any, status: MachineStatus | str) -> bool:
        """Set the machine's status; ``False`` when there is no such machine."""
        return self._set_required(id, "status", status)
