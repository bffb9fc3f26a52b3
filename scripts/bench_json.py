"""What tracking in-place JSON edits costs per object (flowstore.models.mutable_json).

Deployments are built and loaded twice: as flowstore's ``Deployment`` (whose ``config`` is
tracked), and as the very same table and column types mapped on a plain declarative base
(nothing tracked). The
difference per object is the price of the guarantee. Run: ``python scripts/bench_json.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import DeclarativeBase, Session

from flowstore import Store
from flowstore.models import Deployment

N = 20_000


class Plain(DeclarativeBase):
    """The same columns, mapped without flowstore's listeners."""


_TABLE = cast(Table, Deployment.__table__).to_metadata(Plain.metadata)  # the same columns


class PlainDeployment(Plain):
    __table__ = _TABLE
    __mapper_args__ = {"version_id_col": _TABLE.c.lock_version}


def config(i: int) -> dict[str, Any]:
    return {"image": f"registry/app:{i}", "replicas": 2, "ports": [8080], "env": {"A": "1"}}


def best(work: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    store = Store()
    with store.unit_of_work() as uow:
        uow.deployments.add_many(
            [Deployment(name=f"d{i}", version="1", config=config(i)) for i in range(N)]
        )
    build_tracked = best(
        lambda: [Deployment(name="d", version="1", config=config(i)) for i in range(N)]
    )
    build_plain = best(
        lambda: [PlainDeployment(name="d", version="1", config=config(i)) for i in range(N)]
    )

    def load(model: type[Any]) -> Callable[[], object]:
        def run() -> object:
            with Session(store.engine) as session:
                return session.scalars(select(model)).all()

        return run

    load_tracked, load_plain = best(load(Deployment)), best(load(PlainDeployment))
    print(f"{N:,} deployments, median of 5, per object:")
    for what, tracked, plain in (
        ("built", build_tracked, build_plain),
        ("loaded", load_tracked, load_plain),
    ):
        extra = (tracked - plain) / N * 1e6
        print(
            f"  {what:<7} tracked {tracked / N * 1e6:6.2f} µs, plain {plain / N * 1e6:6.2f} µs: "
            f"+{extra:.2f} µs ({tracked / plain:.2f}x)"
        )


if __name__ == "__main__":
    main()
