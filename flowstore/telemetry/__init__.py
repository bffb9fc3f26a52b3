"""OpenTelemetry traces and metrics for a store (the ``otel`` extra: the OpenTelemetry API).

``instrument(store)`` turns them on for one ``Store`` or ``AsyncStore``; a store never
instrumented runs no telemetry code at all (no listener, no wrapper), and without the
``opentelemetry-api`` package ``instrument`` is refused with the install command.

Spans: ``flowstore.unit_of_work`` around each unit of work; one per repository call
(``OrganizationRepository.add``) and per queue claim, acknowledgement or failure, inside it;
one per statement (``SELECT organizations``), with ``db.system.name``, ``db.operation.name``
and ``db.collection.name``: the statement's operation and table, never its text or its bound
values. ``audit_batch(engine, rows, copy=...)`` is the span an ``AuditWriter`` batch opens
(its COPY is no cursor execution, so the statement spans would not see it).

Metrics: the pool's connections in use and idle, its overflow, the requests waiting for a
connection, how long they waited and how many timed out (``db.client.connection.*``); the
queued jobs and the age of the oldest due one per queue (``flowstore.queue.*``, read when the
metrics are collected, with one short query; a sync ``Store`` only); an ``AuditWriter``'s
backlog and retries (``observe_audit_writer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine

from flowstore.telemetry.base import SCOPE, Instrumentation, instrumented, metrics, require, trace
from flowstore.telemetry.measures import measure_pool, measure_queues, observe_audit_writer
from flowstore.telemetry.spans import (
    audit_batch,
    trace_statements,
    trace_store_queues,
    trace_units_of_work,
)

if TYPE_CHECKING:
    from flowstore.aio.store import AsyncStore
    from flowstore.store import Store

__all__ = ["Instrumentation", "audit_batch", "instrument", "observe_audit_writer"]


def instrument(
    store: Store[Any] | AsyncStore[Any],
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Instrumentation:
    """Emit traces and metrics for ``store`` (the global providers unless given)."""
    require()
    from flowstore.aio.store import AsyncStore

    is_async = isinstance(store, AsyncStore)
    engine = cast(Engine, store.engine.sync_engine if is_async else store.engine)  # type: ignore[union-attr]
    if engine in instrumented:
        return instrumented[engine]
    tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
    done = Instrumentation(tracer, meter, engine)
    trace_statements(done)
    trace_units_of_work(done, store, is_async)
    trace_store_queues(done, store, is_async)
    measure_pool(done)
    if not is_async:
        measure_queues(done, store)
    instrumented[engine] = done
    return done
