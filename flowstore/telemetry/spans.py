"""Spans: statements (operation and table, never text or values), units of work, repository
calls, queue operations and ``AuditWriter`` batches."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Delete, Engine, Insert, Select, Update, event

from flowstore.telemetry.base import Instrumentation, instrumented, otel_context, remover, trace

__all__ = [
    "audit_batch",
    "describe_statement",
    "trace_statements",
    "trace_store_queues",
    "trace_units_of_work",
    "traced_repository_class",
]

_QUEUE_METHODS = frozenset(
    {"dequeue", "dequeue_many", "acknowledge", "acknowledge_many", "fail", "enqueue"}
)

_FIRST_WORD = re.compile(r"\s*(\w+)")
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|COPY|TABLE)\s+[\"`]?(\w+)", re.I)


def describe_statement(statement: str, context: Any) -> tuple[str, str | None]:
    """The operation and the table of a statement, from its compiled form when there is one
    (never its text beyond the first keyword and a table name, never its values)."""
    compiled = getattr(getattr(context, "compiled", None), "statement", None)
    word = _FIRST_WORD.match(statement)
    operation = word.group(1).upper() if word else "SQL"
    if isinstance(compiled, Insert | Update | Delete):
        return operation, getattr(compiled.table, "name", None)
    if isinstance(compiled, Select):
        names = [getattr(f, "name", None) for f in compiled.get_final_froms()]
        return operation, ",".join(n for n in names if n) or None
    table = _TABLE.search(statement) if compiled is None else None
    return operation, table.group(1) if table else None


def trace_statements(done: Instrumentation) -> None:
    engine, tracer, spans = done.engine, done.tracer, done.open_spans
    system = engine.dialect.name

    def before(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _m: Any
    ) -> None:
        operation, table = describe_statement(statement, context)
        attributes = {"db.system.name": system, "db.operation.name": operation}
        if table:
            attributes["db.collection.name"] = table
        name = f"{operation} {table}" if table else operation
        span = tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)
        spans[id(context)] = span

    def after(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _m: Any
    ) -> None:
        span = spans.pop(id(context), None)
        if span is not None:
            span.end()

    def failed(exception_context: Any) -> None:
        span = spans.pop(id(exception_context.execution_context), None)
        if span is not None:
            error = exception_context.original_exception
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
            span.set_attribute("error.type", type(error).__name__)
            span.end()

    for name, listener in (
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("handle_error", failed),
    ):
        event.listen(engine, name, listener)
        done.removers.append(remover(engine, name, listener))


@contextlib.contextmanager
def _span(tracer: Any, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def audit_batch(engine: Engine, rows: int, *, copy: bool) -> Iterator[None]:
    """The span of one ``AuditWriter`` batch on ``engine`` (nothing when it is not
    instrumented): ``with audit_batch(engine, len(rows), copy=...):`` around its insert."""
    done = instrumented.get(engine)
    if done is None:
        yield
        return
    attributes = {
        "db.system.name": engine.dialect.name,
        "db.operation.name": "COPY" if copy else "INSERT",
        "db.collection.name": "audit_logs",
        "db.operation.batch.size": rows,
    }
    with _span(done.tracer, "flowstore.audit_writer.batch", attributes):
        yield


def _traced_method(tracer: Any, label: str, table: str | None, method: Callable[..., Any]) -> Any:
    attributes = {"code.function.name": label}
    if table:
        attributes["db.collection.name"] = table

    def traced(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(label, attributes=attributes):
            return method(*args, **kwargs)

    traced.__name__ = method.__name__
    traced.__qualname__ = method.__qualname__
    traced.__doc__ = method.__doc__
    traced.__wrapped__ = method  # type: ignore[attr-defined]
    return traced


def traced_repository_class(tracer: Any, repository_class: type[Any]) -> type[Any]:
    """A subclass of ``repository_class`` whose public methods each open a span."""
    from flowstore.aio.proxy import public_methods

    table = getattr(getattr(repository_class.model, "__table__", None), "name", None)
    namespace: dict[str, Any] = {
        name: _traced_method(tracer, f"{repository_class.__name__}.{name}", table, method)
        for name, method in public_methods(repository_class).items()
    }
    namespace["__module__"] = repository_class.__module__
    namespace["__doc__"] = repository_class.__doc__
    return type(repository_class.__name__, (repository_class,), namespace)


def _traced_sync_class(tracer: Any, uow_class: type[Any]) -> type[Any]:
    from flowstore.uow import repository

    namespace: dict[str, Any] = {
        name: repository(traced_repository_class(tracer, repo_class))
        for name, repo_class in uow_class.repositories.items()
    }

    def __enter__(self: Any) -> Any:
        self.telemetry_span = _start_unit_of_work(tracer, self)
        try:
            return uow_class.__enter__(self)
        except BaseException as exc:
            _end_unit_of_work(self.telemetry_span, exc)
            raise

    def __exit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            uow_class.__exit__(self, exc_type, exc, tb)
        except BaseException as error:
            _end_unit_of_work(self.telemetry_span, error)
            raise
        _end_unit_of_work(self.telemetry_span, exc)

    def queue(self: Any, name: str = "default") -> Any:
        return _TracedQueue(tracer, uow_class.queue(self, name))

    namespace.update(__enter__=__enter__, __exit__=__exit__, queue=queue)
    namespace["__module__"] = uow_class.__module__
    return type(uow_class.__name__, (uow_class,), namespace)


def _traced_async_class(tracer: Any, uow_class: type[Any]) -> type[Any]:
    sync_traced = _traced_sync_class(tracer, uow_class.sync_class)

    async def __aenter__(self: Any) -> Any:
        self.telemetry_span = _start_unit_of_work(tracer, self)
        try:
            return await uow_class.__aenter__(self)
        except BaseException as exc:
            _end_unit_of_work(self.telemetry_span, exc)
            raise

    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await uow_class.__aexit__(self, exc_type, exc, tb)
        except BaseException as error:
            _end_unit_of_work(self.telemetry_span, error)
            raise
        _end_unit_of_work(self.telemetry_span, exc)

    def queue(self: Any, name: str = "default") -> Any:
        made = uow_class.queue(self, name)
        made.sync = _TracedQueue(tracer, made.sync)
        return made

    namespace = {
        "sync_class": sync_traced,
        "__aenter__": __aenter__,
        "__aexit__": __aexit__,
        "queue": queue,
        "__module__": uow_class.__module__,
    }
    return type(uow_class.__name__, (uow_class,), namespace)


def _start_unit_of_work(tracer: Any, uow: Any) -> tuple[Any, Any]:
    attributes: dict[str, Any] = {"flowstore.unit_of_work": type(uow).__name__}
    if uow.context.org_id is not None:
        attributes["flowstore.scoped"] = True
    span = tracer.start_span("flowstore.unit_of_work", attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    return span, token


def _end_unit_of_work(started: tuple[Any, Any], error: BaseException | None) -> None:
    span, token = started
    if error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        span.set_attribute("error.type", type(error).__name__)
    with contextlib.suppress(Exception):  # left in another thread than it was entered in
        otel_context.detach(token)
    span.end()


def trace_units_of_work(done: Instrumentation, store: Any, is_async: bool) -> None:
    original = store.unit_of_work_class
    make = _traced_async_class if is_async else _traced_sync_class
    store.unit_of_work_class = make(done.tracer, original)

    def restore() -> None:
        store.unit_of_work_class = original

    done.removers.append(restore)


class _TracedQueue:
    """A job queue whose claims, acknowledgements, failures and enqueues each open a span."""

    def __init__(self, tracer: Any, queue: Any) -> None:
        self._tracer = tracer
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._queue, name)
        if name not in _QUEUE_METHODS:
            return found
        attributes = {
            "messaging.system": "flowstore",
            "messaging.destination.name": self._queue.name,
            "messaging.operation.name": name,
        }
        tracer = self._tracer

        def traced(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(f"flowstore.queue {name}", attributes=attributes):
                return found(*args, **kwargs)

        return traced

    def __repr__(self) -> str:
        return repr(self._queue)


def trace_store_queues(done: Instrumentation, store: Any, is_async: bool) -> None:
    original = store.queue

    def queue(name: str = "default", **options: Any) -> Any:
        made = original(name, **options)
        if is_async:
            made.sync = _TracedQueue(done.tracer, made.sync)
            return made
        return _TracedQueue(done.tracer, made)

    store.queue = queue
    done.removers.append(lambda: vars(store).pop("queue", None))
