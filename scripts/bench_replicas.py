"""Read replicas, measured on a real streaming pair built for the run (tests/pg_replication.py;
root, Debian's postgresql-common): read throughput of 4 reader processes on the primary alone
against the same readers with a replica, and what read-your-writes adds to a read that follows
a commit (the wait for the replica to replay it, p50/p99).

    python scripts/bench_replicas.py [SECONDS]

Both servers share this machine's cores, so the throughput row says what routing costs and
carries, not what a second machine would add.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from typing import Any

from flowstore import Settings, Store
from flowstore.models import Deployment
from tests.pg_replication import ReplicationPair

READERS = 4
ROWS = 2000


def _reader(primary: str, replicas: list[str], seconds: float, ids: list[Any], out: Any) -> None:
    done = 0
    with Store(primary, replica_urls=replicas, settings=Settings(pool_size=2)) as store:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with store.unit_of_work(read_only=True) as uow:
                uow.deployments.get(ids[done % len(ids)])
                uow.deployments.list(limit=20)
            done += 1
    out.put(done)


def throughput(primary: str, replicas: list[str], seconds: float, ids: list[Any]) -> float:
    """Read-only units of work per second, all readers together."""
    queue: Any = multiprocessing.Queue()
    readers = [
        multiprocessing.Process(target=_reader, args=(primary, replicas, seconds, ids, queue))
        for _ in range(READERS)
    ]
    for reader in readers:
        reader.start()
    total = sum(int(queue.get()) for _ in readers)
    for reader in readers:
        reader.join()
    return total / seconds


def read_after_write(primary: str, replica: str, rounds: int = 300) -> tuple[list[float], int]:
    """Milliseconds a read-only unit of work took to choose its replica right after a commit
    (probe + wait for replay), and how many of them fell back to the primary."""
    waits: list[float] = []
    fallbacks = 0
    with Store(primary, replica_urls=[replica]) as store:
        assert store.replicas is not None
        for n in range(rounds):
            with store.unit_of_work() as uow:
                uow.deployments.add(Deployment(name=f"w{n}", version="1"))
            started = time.perf_counter()
            chosen = store.replicas.choose()
            waits.append((time.perf_counter() - started) * 1000)
            fallbacks += chosen is None
    return waits, fallbacks


def probe_alone(primary: str, replica: str, rounds: int = 300) -> list[float]:
    """Milliseconds of choosing the replica with no commit to wait for (the probe alone)."""
    waits = []
    with Store(primary, replica_urls=[replica]) as store:
        assert store.replicas is not None
        for _ in range(rounds):
            started = time.perf_counter()
            store.replicas.choose()
            waits.append((time.perf_counter() - started) * 1000)
    return waits


def _percentiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values):.2f} ms, p99 {cuts[98]:.2f} ms"


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with ReplicationPair() as pair:
        primary = pair.primary_url.render_as_string(hide_password=False)
        replica = pair.replica_url.render_as_string(hide_password=False)
        with Store(primary) as store:
            store.upgrade()
            with store.unit_of_work() as uow:
                rows = [Deployment(name=f"d{i}", version="1") for i in range(ROWS)]
                ids = [d.id for d in uow.deployments.add_many(rows)]
        pair.wait_for_replay()
        alone = throughput(primary, [], seconds, ids)
        routed = throughput(primary, [replica], seconds, ids)
        waits, fallbacks = read_after_write(primary, replica)
        probes = probe_alone(primary, replica)
    print(f"{READERS} reader processes, {seconds:g} s each way")
    print(f"  primary only:         {alone:8.0f} read-only units of work/s")
    print(
        f"  through the replica:  {routed:8.0f} read-only units of work/s ({routed / alone:.2f}x)"
    )
    print(f"choosing the replica after a commit: {_percentiles(waits)}; {fallbacks} fell back")
    print(f"choosing it with nothing to wait for: {_percentiles(probes)}")


if __name__ == "__main__":
    main()
