"""What the chapters of one run share: the store, the report and the ids found on the way."""

from __future__ import annotations

import uuid
from typing import TextIO

from flowstore.demo.report import Report
from flowstore.store import Store


class Story:
    """One run of the demo on one store; each chapter reads and fills in these ids."""

    def __init__(self, store: Store, out: TextIO) -> None:
        self.store = store
        self.report = Report(out)
        self.org_id = uuid.UUID(int=0)
        self.neighbour_id = uuid.UUID(int=0)
        self.app_ids: dict[str, uuid.UUID] = {}
        self.user_ids: dict[str, uuid.UUID] = {}
        self.template_ids: dict[str, uuid.UUID] = {}
