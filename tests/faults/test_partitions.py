"""The network to the server drops every packet (iptables DROP on the server's own port) for
10 s and for 60 s: every call returns, ``ConnectionFailedError`` or a result, within
``network_timeout`` (5 s here) plus a second, and once the network is back the pool serves
every kind of call again.

The calls: a unit of work, a queue call, a ping (the pool's pre-ping checks the pooled
connection first) and a job heartbeat, as a worker's heartbeat thread makes it, each in a loop
of its own, started before the partition and kept up until after it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from flowstore import Store
from flowstore.errors import ConnectionFailedError, FlowstoreError
from tests.faults.conftest import NETWORK_TIMEOUT, require, settings
from tests.faults.network import cut_off
from tests.faults.servers import Server

BOUND = NETWORK_TIMEOUT + 1.0
AFTER = 5.0  # the loops go on this long after the network is back
CALLS_PER_LOOP = 2000  # a bound on each loop; the clock stops them sooner


@dataclass(frozen=True)
class Call:
    kind: str
    began: float  # time.monotonic()
    took: float
    outcome: str  # "ok", or the error's class


@pytest.mark.parametrize("seconds", [10, 60])
def test_a_partition_fails_every_call_within_the_bound_and_the_pool_recovers(
    server: Server, seconds: int
) -> None:
    require("iptables")
    with Store(server.url, settings=settings(pool_size=8)) as store:
        queue = store.queue("partition", lease_seconds=3600)
        queue.enqueue({"n": 1})
        job = queue.dequeue()
        assert job is not None

        def unit_of_work() -> None:
            with store.unit_of_work() as uow:
                uow.organizations.count()

        kinds: dict[str, Callable[[], object]] = {
            "unit of work": unit_of_work,
            "queue call": queue.counts,
            "ping": store.ping,
            "heartbeat": lambda: queue.heartbeat(job),
        }
        for call in kinds.values():
            call()  # every kind has a pooled connection, alive, before the partition
        calls: list[Call] = []
        lock = threading.Lock()
        cut = threading.Event()
        healed = threading.Event()

        def loop(kind: str, call: Callable[[], object]) -> None:
            stop_at = None
            for _ in range(CALLS_PER_LOOP):
                if healed.is_set():
                    stop_at = stop_at or time.monotonic() + AFTER
                    if time.monotonic() > stop_at:
                        return
                began = time.monotonic()
                try:
                    call()
                    outcome = "ok"
                except FlowstoreError as exc:
                    outcome = type(exc).__name__
                took = time.monotonic() - began
                with lock:
                    calls.append(Call(kind, began, took, outcome))
                if outcome != "ok" or not cut.is_set():
                    time.sleep(0.2)

        threads = [threading.Thread(target=loop, args=item, daemon=True) for item in kinds.items()]
        for thread in threads:
            thread.start()
        time.sleep(1)
        with cut_off(server.port):
            origin = time.monotonic()
            cut.set()
            time.sleep(seconds)
        healed.set()
        for thread in threads:
            thread.join(BOUND + AFTER + 5)
        assert not any(t.is_alive() for t in threads), "a call never returned"
        after = {kind: _ok(call) for kind, call in kinds.items()}  # one more round: all fine

    during = [c for c in calls if 0 <= c.began - origin < seconds]
    slowest = max(c.took for c in calls)
    failures = Counter(c.kind for c in during if c.outcome != "ok")
    print(f"figures: {len(calls)} calls, slowest {slowest:.2f}s, failed while cut off {failures}")
    assert slowest <= BOUND, sorted(calls, key=lambda c: -c.took)[:5]
    assert {c.outcome for c in calls} <= {"ok", "ConnectionFailedError"}
    for kind in kinds:
        failed = [c for c in during if c.kind == kind and c.outcome == "ConnectionFailedError"]
        assert failed, f"no {kind} failed during the partition"
        cut_through = [
            c for c in during if c.outcome == "ok" and c.began + c.took < origin + seconds
        ]
        assert not [c for c in cut_through if c.kind == kind], f"a {kind} got through"
        last = [c for c in calls if c.kind == kind][-1]
        assert last.outcome == "ok" and last.began > origin + seconds, f"{kind} did not recover"
    assert after == dict.fromkeys(kinds, True)


def _ok(call: Callable[[], object]) -> bool:
    try:
        call()
    except ConnectionFailedError:
        return False
    return True
