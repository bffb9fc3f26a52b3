"""The AuditWriter across a 15 s outage and a COMMIT whose answer is lost: every entry is
stored or reported, and none reported is stored.

The lost answer is a real one: as a batch's transaction is about to commit, the server's
replies on its port are dropped (iptables), so the COMMIT reaches the server and lands, and the
writer waits for an answer that never comes until ``network_timeout`` runs out. Then the port
is opened again and the writer retries the batch, meeting its own entries.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from sqlalchemy import event, func, select

from flowstore import Store
from flowstore.audit_writer import AuditWriter, FailedEntry
from flowstore.errors import FlowstoreError
from flowstore.models import AuditLog
from tests.faults.conftest import NETWORK_TIMEOUT, ErrorRecords, require, settings, wait_for
from tests.faults.network import drop, restore
from tests.faults.servers import Server

ENTRIES = 20_000
TICKS = 250  # the entries are written in 250 tenths of a second
DOWN_FOR = 15.0


def test_twenty_thousand_entries_across_an_outage_and_a_lost_answer(
    server: Server, error_records: ErrorRecords
) -> None:
    require("iptables")
    org = uuid.uuid4()
    reported: list[FailedEntry] = []
    batches: list[int] = []  # the size of each batch tried, in order
    lost: dict[str, Any] = {}  # the batch whose COMMIT's answer is dropped
    arm = threading.Event()

    with Store(server.url, settings=settings()) as store:
        writer = AuditWriter(store, batch_size=500, on_error=lambda e, f: reported.extend(f))
        real_insert = writer._insert

        def insert(rows: list[Any]) -> None:
            batches.append(len(rows))
            real_insert(rows)

        writer._insert = insert  # type: ignore[method-assign]

        @event.listens_for(store.engine, "commit")
        def _drop_the_answer(conn: Any) -> None:
            """The first COMMIT after ``arm``: its request goes out, its answer is dropped."""
            if arm.is_set() and not lost:
                lost["rows"] = batches[-1]
                rules = drop(server.port, replies_only=True)
                reopen = threading.Timer(NETWORK_TIMEOUT + 1, restore, [rules])
                reopen.start()
                lost["reopen"] = reopen

        ids: list[uuid.UUID] = []
        started = time.monotonic()
        try:
            for tick in range(TICKS):
                ids.extend(writer.write(_entry(org, len(ids) + n)) for n in range(ENTRIES // TICKS))
                if tick == 30:  # 3 s in: the server goes down for 15 s
                    server.crash()
                    threading.Timer(DOWN_FOR, server.start).start()
                if tick == 200:  # after the outage: the next COMMIT's answer is lost
                    wait_for(server.answers, "the server to be back")
                    arm.set()
                time.sleep(max(0.0, started + (tick + 1) / 10 - time.monotonic()))
            writer.close()
        finally:
            if "reopen" in lost:
                lost["reopen"].join()
        stats = writer.stats
        stored = _stored_ids(store, org)

    written = set(ids)
    failed = {entry.values["id"] for entry in reported}
    print(f"figures: {stats}, lost answer's batch {lost.get('rows')}, stored {len(stored)}")
    assert len(ids) == len(written) == ENTRIES
    assert stored | failed == written  # every entry stored or reported ...
    assert stored & failed == set()  # ... and none reported that is stored
    assert (stats.written, stats.failed, stats.pending) == (len(stored), len(failed), 0)
    assert (len(stored), len(failed)) == (ENTRIES, 0)  # the outage is within the 30 s budget
    assert lost["rows"] > 0 and stats.already_stored == lost["rows"]  # found, not re-reported
    assert stats.retries >= 2  # the outage and the lost answer were both ridden out
    assert not [m for m in error_records.messages() if "flowstore" in m]


def _entry(org: uuid.UUID, n: int) -> dict[str, Any]:
    return {
        "org_id": org,
        "action": "fault.test",
        "resource_type": "entry",
        "resource_id": str(n),
        "details": {"n": n},
    }


def _stored_ids(store: Store, org: uuid.UUID) -> set[uuid.UUID]:
    try:
        with store.engine.connect() as conn:
            count = conn.execute(
                select(func.count()).select_from(AuditLog).where(AuditLog.org_id == org)
            ).scalar_one()
            ids = set(conn.execute(select(AuditLog.id).where(AuditLog.org_id == org)).scalars())
    except Exception as exc:  # pragma: no cover - a message, not a skip
        raise FlowstoreError(f"could not read the entries back: {exc}") from exc
    assert count == len(ids)  # no id twice
    return ids
