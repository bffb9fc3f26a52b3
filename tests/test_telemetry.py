"""flowstore.telemetry with the OpenTelemetry SDK's in-memory exporters: spans for units of
work, repository calls, statements (operation and table) and queue claims/acknowledgements,
metrics for the pool and the queues, nothing of the bound values anywhere; and nothing at
all on a store never instrumented.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowstore import AlreadyExistsError, Store, UnitOfWork
from flowstore.aio import AsyncStore
from flowstore.models import Organization, utcnow
from flowstore.telemetry import audit_batch, instrument
from tests.test_timeouts import aio_url  # noqa: F401 (a fixture)

SECRET = "s3cret-slug-4711"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def providers(exporter: InMemorySpanExporter) -> Iterator[tuple[TracerProvider, Any, Any]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, meter_provider, reader
    meter_provider.shutdown()


def _everything(exporter: InMemorySpanExporter) -> str:
    return json.dumps(
        [
            (s.name, dict(s.attributes or {}), [e.name for e in s.events])
            for s in exporter.get_finished_spans()
        ],
        default=str,
    )


def test_a_unit_of_work_its_calls_and_statements_are_spans_without_values(
    store: Store[Any], exporter: InMemorySpanExporter, providers: Any
) -> None:
    tracer_provider, meter_provider, _reader = providers
    done = instrument(store, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with store.unit_of_work() as uow:
            org = uow.organizations.add(Organization(name=SECRET, slug=SECRET))
            assert uow.organizations.get_by_slug(SECRET) is org
        with pytest.raises(AlreadyExistsError), store.unit_of_work() as uow:
            uow.organizations.add(Organization(name="dup", slug=SECRET))
    finally:
        done.uninstrument()
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("flowstore.unit_of_work") == 2
    assert "OrganizationRepository.add" in names and "OrganizationRepository.get_by_slug" in names
    selects = [s for s in spans if s.name == "SELECT organizations"]
    attributes = dict(selects[0].attributes or {})
    assert attributes["db.operation.name"] == "SELECT"
    assert attributes["db.collection.name"] == "organizations"
    assert attributes["db.system.name"] == store.dialect
    uows = [s for s in spans if s.name == "flowstore.unit_of_work"]
    add = next(s for s in spans if s.name == "OrganizationRepository.add")
    assert add.parent is not None and add.parent.span_id == uows[0].context.span_id
    failed = uows[1]
    assert failed.status.status_code.name == "ERROR"
    assert SECRET not in _everything(exporter)


def test_queue_claims_and_acknowledgements_are_spans_and_depths_are_metrics(
    store: Store[Any], exporter: InMemorySpanExporter, providers: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    done = instrument(store, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        queue = store.queue("mail")
        queue.enqueue({"to": SECRET})
        queue.enqueue({"to": "later"}, run_at=utcnow() + timedelta(hours=1))
        with store.unit_of_work() as uow:
            uow.queue("mail").enqueue({"to": "in-uow"})
        job = queue.dequeue()
        assert job is not None
        queue.acknowledge(job)
        metrics = reader.get_metrics_data()
    finally:
        done.uninstrument()
    names = [s.name for s in exporter.get_finished_spans()]
    assert "flowstore.queue dequeue" in names and "flowstore.queue acknowledge" in names
    assert SECRET not in _everything(exporter)
    points = {
        (m.name, p.attributes.get("messaging.destination.name")): p.value
        for rm in metrics.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
        if m.name.startswith("flowstore.queue")
    }
    assert points[("flowstore.queue.depth", "mail")] == 2
    assert points[("flowstore.queue.oldest_due_age", "mail")] >= 0


def test_the_pool_is_measured(store: Store[Any], providers: Any, tmp_path: Any) -> None:
    tracer_provider, meter_provider, reader = providers
    done = instrument(store, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with store.unit_of_work() as uow:
            uow.organizations.count()
            data = reader.get_metrics_data()
    finally:
        done.uninstrument()
    found = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    used = [
        p.value
        for p in found["db.client.connection.count"].data.data_points
        if p.attributes["db.client.connection.state"] == "used"
    ]
    assert used == [1]
    assert "db.client.connection.wait_time" in found
    assert "db.client.connection.pending_requests" in found
    assert "flowstore.pool.overflow" in found


def test_the_async_face_is_traced(
    aio_url: str,  # noqa: F811
    exporter: InMemorySpanExporter,
    providers: Any,
) -> None:
    tracer_provider, meter_provider, _reader = providers

    async def main() -> None:
        async with AsyncStore(aio_url) as store:
            instrument(store, tracer_provider=tracer_provider, meter_provider=meter_provider)
            async with store.unit_of_work() as uow:
                await uow.organizations.add(Organization(name=SECRET, slug=SECRET))
                assert await uow.organizations.count() == 1
            await store.queue("q").enqueue({"x": SECRET})

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert "flowstore.unit_of_work" in names and "OrganizationRepository.count" in names
    assert "flowstore.queue enqueue" in names
    uow = next(s for s in spans if s.name == "flowstore.unit_of_work")
    count = next(s for s in spans if s.name == "OrganizationRepository.count")
    assert count.parent is not None and count.parent.span_id == uow.context.span_id
    assert SECRET not in _everything(exporter)


def test_an_audit_writer_batch_is_a_span(
    store: Store[Any], exporter: InMemorySpanExporter, providers: Any
) -> None:
    tracer_provider, meter_provider, _reader = providers
    with audit_batch(store.engine, 3, copy=True):
        pass  # not instrumented: no span
    done = instrument(store, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with audit_batch(store.engine, 3, copy=True):
            pass
    finally:
        done.uninstrument()
    (span,) = exporter.get_finished_spans()
    assert span.name == "flowstore.audit_writer.batch"
    attributes = dict(span.attributes or {})
    assert attributes["db.operation.name"] == "COPY"
    assert attributes["db.operation.batch.size"] == 3


def test_a_store_never_instrumented_runs_no_telemetry_code() -> None:
    with Store() as store:
        engine = store.engine
        assert not engine.dispatch.before_cursor_execute
        assert "connect" not in vars(engine.pool)
        assert store.unit_of_work_class is UnitOfWork
        assert "queue" not in vars(store)


def test_uninstrument_takes_it_all_off(providers: Any) -> None:
    tracer_provider, meter_provider, _reader = providers
    with Store() as store:
        before = list(store.engine.dispatch.before_cursor_execute)
        instrument(
            store, tracer_provider=tracer_provider, meter_provider=meter_provider
        ).uninstrument()
        assert list(store.engine.dispatch.before_cursor_execute) == before
        assert store.unit_of_work_class is UnitOfWork
        assert "queue" not in vars(store) and "connect" not in vars(store.engine.pool)
