"""The gateway workload: what one request of an LLM gateway costs on flowstore, against the same
service written on plain SQLAlchemy, on the sync and the async face.

In process, no HTTP (so the figures are steady): each request authenticates an API key (an
HMAC of the raw key, then a lookup), loads the policies that apply to the caller, inserts an
inference record and an audit entry, and commits, in one transaction. flowstore's way is what
its README shows: a unit of work, ``get_by_api_key``, ``get_applicable_policies`` and two
``add`` calls; a third way also narrows the unit of work to the caller's organization with
``scope_to`` once the key is known (tenant scope: the rest of the request cannot touch
another organization's rows), a guard the hand-written service does not have. The
hand-written service records no change events, so the ``flowstore`` row runs with events off
(``Store(url, events=False)``), as the other comparisons with Core do; one more row runs with
them on, flowstore's default, to show what an outbox row per write costs here. The
hand-written way uses the same models on a plain ``sessionmaker`` (``AsyncSession`` for the
async face) and an engine made with ``create_engine`` defaults, with the same queries written
out.

Figures per backend and face: CPU time per request (this process, all threads: the steady
figure on a shared machine), wall time per request, and the statements per request that reach
the driver. Runs alternate between the two ways; each figure is the median of the runs.

    .venv/bin/python scripts/bench_gateway.py [--backends sqlite,postgresql,mysql] [--quick]

``run(backends)`` is what ``make bench`` calls (``backends``: name -> URL of a new migrated
database).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from bench_core import rows_table, throwaway_url
from sqlalchemy import Engine, case, create_engine, event, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from flowstore import Store
from flowstore.aio import AsyncStore
from flowstore.engine import normalize_url
from flowstore.models import (
    Application,
    AuditLog,
    InferenceRequest,
    Organization,
    Policy,
    PolicyType,
)

ASYNC_BACKENDS = ("sqlite", "postgresql")
FULL = {"requests": 400, "rounds": 7, "apps": 20}
QUICK = {"requests": 100, "rounds": 3, "apps": 5}
GOAL = 1.05
SCOPED = "flowstore, scoped to the caller's organization"
EVENTS = "flowstore, recording change events"


# -- the data every request reads -------------------------------------------------------------


def seed(store: Store[Any], apps: int) -> list[str]:
    """Organizations with applications, their keys, and policies at every level."""
    keys = []
    with store.unit_of_work() as uow:
        for n in range(apps):
            org = uow.organizations.add(Organization(name=f"Org {n}", slug=f"org-{n}"))
            app, key = uow.applications.create_with_api_key(org.id, f"app-{n}")
            keys.append(key)
            for priority, level_app in ((10, None), (5, app.id), (1, app.id)):
                uow.policies.add(
                    Policy(
                        org_id=org.id,
                        application_id=level_app,
                        policy_type=PolicyType.RATE_LIMIT,
                        config={"rpm": 600},
                        priority=priority,
                    )
                )
    return keys


def _request_rows(app: Application, policies: list[Policy]) -> tuple[InferenceRequest, AuditLog]:
    inference = InferenceRequest(
        org_id=app.org_id,
        application_id=app.id,
        model="gpt-x",
        status="ok",
        prompt_tokens=120,
        completion_tokens=40,
        cost=Decimal("0.0021"),
        latency_ms=350,
    )
    audit = AuditLog(
        org_id=app.org_id,
        action="inference.create",
        resource_type="inference_request",
        application_id=app.id,
        details={"policies": len(policies), "model": "gpt-x"},
    )
    return inference, audit


# -- flowstore ---------------------------------------------------------------------------------


def flowstore_request(store: Store[Any], raw_key: str, scoped: bool = False) -> None:
    with store.unit_of_work() as uow:
        app = uow.applications.get_by_api_key(raw_key)
        assert app is not None
        if scoped:
            uow.scope_to(app.org_id)
        policies = uow.policies.get_applicable_policies(app.org_id, application_id=app.id)
        inference, audit = _request_rows(app, policies)
        uow.inference_requests.add(inference)
        uow.audit_logs.add(audit)


async def flowstore_request_async(
    store: AsyncStore[Any], raw_key: str, scoped: bool = False
) -> None:
    async with store.unit_of_work() as uow:
        app = await uow.applications.get_by_api_key(raw_key)
        assert app is not None
        if scoped:
            await uow.scope_to(app.org_id)
        policies = await uow.policies.get_applicable_policies(app.org_id, application_id=app.id)
        inference, audit = _request_rows(app, policies)
        await uow.inference_requests.add(inference)
        await uow.audit_logs.add(audit)


# -- the same service, hand-written -----------------------------------------------------------


def _digest(raw_key: str, secret: str) -> str:
    return hmac.new(secret.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def _app_statement(digest: str) -> Any:
    return select(Application).where(Application.api_key_hash == digest).limit(1)


def _policy_statement(app: Application) -> Any:
    level = case((Policy.user_id.is_not(None), 0), (Policy.application_id.is_not(None), 1), else_=2)
    return (
        select(Policy)
        .where(
            Policy.org_id == app.org_id,
            Policy.enabled == true(),
            Policy.application_id.is_(None) | (Policy.application_id == app.id),
            Policy.user_id.is_(None),
        )
        .order_by(level, Policy.priority.desc(), Policy.created_at, Policy.id)
    )


def plain_request(factory: sessionmaker[Session], secret: str, raw_key: str) -> None:
    with factory() as session, session.begin():
        app = session.scalars(_app_statement(_digest(raw_key, secret))).first()
        assert app is not None
        policies = list(session.scalars(_policy_statement(app)).all())
        inference, audit = _request_rows(app, policies)
        session.add(inference)
        session.add(audit)


async def plain_request_async(
    factory: async_sessionmaker[AsyncSession], secret: str, raw_key: str
) -> None:
    async with factory() as session, session.begin():
        app = (await session.scalars(_app_statement(_digest(raw_key, secret)))).first()
        assert app is not None
        policies = list((await session.scalars(_policy_statement(app))).all())
        inference, audit = _request_rows(app, policies)
        session.add(inference)
        session.add(audit)


# -- measuring ---------------------------------------------------------------------------------


@contextmanager
def counting(engine: Engine) -> Iterator[list[int]]:
    """Statements handed to the driver (registered last: a statement flowstore skips is not
    counted)."""
    sent = [0]

    def note(*_: Any) -> bool:
        sent[0] += 1
        return False

    names = ("do_execute", "do_execute_no_params", "do_executemany")
    for name in names:
        event.listen(engine, name, note)
    try:
        yield sent
    finally:
        for name in names:
            event.remove(engine, name, note)


def timed(run: Callable[[], object]) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def compare(
    label: str,
    ways: Mapping[str, tuple[Callable[[], object], Engine]],
    requests: int,
    rounds: int,
) -> list[dict[str, Any]]:
    """Alternate the ways round by round; a row per way with the medians per request."""
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    wall: dict[str, list[float]] = {name: [] for name in ways}
    statements: dict[str, float] = {}
    for name, (run, engine) in ways.items():
        run()  # warm up: compiled caches, pooled connections, flowstore's lazy listeners
        with counting(engine) as sent:
            run()
        statements[name] = sent[0] / requests
    for _ in range(rounds):
        for name, (run, _engine) in ways.items():
            spent_cpu, spent_wall = timed(run)
            cpu[name].append(spent_cpu / requests)
            wall[name].append(spent_wall / requests)
    base = statistics.median(cpu["hand-written SQLAlchemy"])
    rows = []
    for name in ways:
        mine = statistics.median(cpu[name])
        goal = ""
        if name == "flowstore":
            goal = f"within {GOAL}x: " + ("held" if mine / base <= GOAL else "missed")
        rows.append(
            {
                "backend / face": label,
                "way": name,
                "CPU per request": f"{mine * 1e3:.3f} ms",
                "ratio": f"{mine / base:.2f}x",
                "wall per request": f"{statistics.median(wall[name]) * 1e3:.3f} ms",
                "statements per request": f"{statements[name]:g}",
                "goal": goal,
            }
        )
    return rows


def _keys_cycle(keys: list[str], requests: int) -> list[str]:
    return [keys[i % len(keys)] for i in range(requests)]


def bench_sync(url: str, sizes: Mapping[str, int], label: str) -> list[dict[str, Any]]:
    store = Store(url, events=False)
    recording = Store(url, events=True)
    plain_engine = create_engine(normalize_url(url))
    try:
        keys = _keys_cycle(seed(store, sizes["apps"]), sizes["requests"])
        secret = store.settings.api_key_secret.get_secret_value()
        factory = sessionmaker(plain_engine, expire_on_commit=False)

        def flowstore_way() -> None:
            for key in keys:
                flowstore_request(store, key)

        def scoped_way() -> None:
            for key in keys:
                flowstore_request(store, key, scoped=True)

        def events_way() -> None:
            for key in keys:
                flowstore_request(recording, key)

        def plain_way() -> None:
            for key in keys:
                plain_request(factory, secret, key)

        ways = {
            "hand-written SQLAlchemy": (plain_way, plain_engine),
            "flowstore": (flowstore_way, store.engine),
            SCOPED: (scoped_way, store.engine),
            EVENTS: (events_way, recording.engine),
        }
        return compare(f"{label} / sync", ways, sizes["requests"], sizes["rounds"])
    finally:
        store.close()
        recording.close()
        plain_engine.dispose()


def bench_async(url: str, sizes: Mapping[str, int], label: str) -> list[dict[str, Any]]:
    runner = asyncio.Runner()
    store: AsyncStore[Any] = AsyncStore(url, events=False)
    recording: AsyncStore[Any] = AsyncStore(url, events=True)
    plain_engine = create_async_engine(normalize_url(url, asynchronous=True))
    with Store(url) as sync_store:  # the seed rows, made once; a new org set per face
        keys = _keys_cycle([k for k in seed_again(sync_store, sizes["apps"])], sizes["requests"])
        secret = sync_store.settings.api_key_secret.get_secret_value()
    factory = async_sessionmaker(plain_engine, expire_on_commit=False)

    def drive(step: Callable[[str], Awaitable[None]]) -> Callable[[], None]:
        async def all_requests() -> None:
            for key in keys:
                await step(key)

        return lambda: runner.run(all_requests())

    try:
        ways = {
            "hand-written SQLAlchemy": (
                drive(lambda key: plain_request_async(factory, secret, key)),
                plain_engine.sync_engine,
            ),
            "flowstore": (
                drive(lambda key: flowstore_request_async(store, key)),
                store.engine.sync_engine,
            ),
            SCOPED: (
                drive(lambda key: flowstore_request_async(store, key, scoped=True)),
                store.engine.sync_engine,
            ),
            EVENTS: (
                drive(lambda key: flowstore_request_async(recording, key)),
                recording.engine.sync_engine,
            ),
        }
        return compare(f"{label} / async", ways, sizes["requests"], sizes["rounds"])
    finally:
        runner.run(store.close())
        runner.run(recording.close())
        runner.run(plain_engine.dispose())
        runner.close()


def seed_again(store: Store[Any], apps: int) -> list[str]:
    """More organizations and keys, with slugs the first seed did not take."""
    keys = []
    with store.unit_of_work() as uow:
        for n in range(apps):
            org = uow.organizations.add(Organization(name=f"A{n}", slug=f"async-{uuid.uuid4()}"))
            app, key = uow.applications.create_with_api_key(org.id, f"async-app-{n}")
            keys.append(key)
            uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.BUDGET, config={}))
            uow.policies.add(
                Policy(
                    org_id=org.id,
                    application_id=app.id,
                    policy_type=PolicyType.RATE_LIMIT,
                    config={"rpm": 60},
                    priority=3,
                )
            )
    return keys


def run(backends: Mapping[str, str], sizes: Mapping[str, int] = FULL) -> list[dict[str, Any]]:
    """The gateway rows for each backend (name -> URL of a new migrated database)."""
    rows: list[dict[str, Any]] = []
    for backend, url in backends.items():
        print(f"gateway: {backend}", flush=True)
        rows += bench_sync(url, sizes, backend)
        if backend in ASYNC_BACKENDS:
            rows += bench_async(url, sizes, backend)
    return rows


def goal_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Whether flowstore stayed within ``GOAL`` of the hand-written service, per row."""
    lines = []
    for row in rows:
        if row["way"] == "flowstore":
            ratio = float(row["ratio"].rstrip("x"))
            verdict = "held" if ratio <= GOAL else "missed"
            lines.append(f"- {row['backend / face']}: {row['ratio']} ({verdict})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    cleanups: list[Callable[[], None]] = []
    try:
        urls = {
            b.strip(): throwaway_url(b.strip(), "gateway", cleanups)
            for b in args.backends.split(",")
            if b.strip()
        }
        rows = run(urls, QUICK if args.quick else FULL)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    print("\n".join(rows_table(rows)))
    print(f"\ngoal: flowstore within {GOAL}x of the hand-written service's CPU per request")
    print("\n".join(goal_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
