"""What the fenced ORM internals (flowstore.writes.attach.register_inserted) are worth:
``add_many`` of a batch of deployments with them, and with the public fallback (the ordinary
flush) that a SQLAlchemy release on which the attach probe fails gets. Median of five runs,
in-memory SQLite.

    python scripts/bench_bulk_fallback.py [BATCH]
"""

from __future__ import annotations

import statistics
import sys
import time

from flowstore import Store
from flowstore.models import Deployment
from flowstore.writes import attach


def per_object(batch: int, runs: int = 5) -> float:
    """Microseconds per object of one ``add_many`` and its commit."""
    timings = []
    for _ in range(runs):
        with Store("sqlite://") as store:
            items = [Deployment(name=f"d{i}", version="1", config={"i": i}) for i in range(batch)]
            started = time.perf_counter()
            with store.unit_of_work() as uow:
                uow.deployments.add_many(items)
            timings.append((time.perf_counter() - started) / batch * 1e6)
    return statistics.median(timings)


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    fenced = per_object(batch)
    vars(attach)["private_route"] = lambda: False  # as when the probe fails
    fallback = per_object(batch)
    print(
        f"add_many of {batch}: {fenced:.1f} us/object with register_inserted, "
        f"{fallback:.1f} us/object by the flush fallback ({fallback / fenced:.2f}x)"
    )


if __name__ == "__main__":
    main()
