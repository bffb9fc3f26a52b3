"""What the telemetry modules share: the OpenTelemetry API (absent without the ``otel`` extra),
one store's ``Instrumentation``, and the registry of instrumented engines."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

from flowstore.errors import InvalidInputError

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError:  # pragma: no cover - the extra is not installed
    otel_context = metrics = trace = None  # type: ignore[assignment]
    CallbackOptions = Observation = None  # type: ignore[assignment,misc]

__all__ = [
    "SCOPE",
    "CallbackOptions",
    "Instrumentation",
    "Observation",
    "instrumented",
    "log",
    "metrics",
    "otel_context",
    "remover",
    "require",
    "trace",
]

log = logging.getLogger("flowstore.telemetry")

SCOPE = "flowstore"

#: The instrumented engines (the sync engine of an async store), with their instrumentation.
instrumented: weakref.WeakKeyDictionary[Engine, Instrumentation] = weakref.WeakKeyDictionary()


def require() -> None:
    """Refuse, with the install command, when the OpenTelemetry API is missing."""
    if trace is None:
        raise InvalidInputError(
            "flowstore.telemetry needs the OpenTelemetry API: pip install 'flowstore[otel]'"
        )


@dataclass
class Instrumentation:
    """One store's telemetry: its tracer and meter, and how to take it off again."""

    tracer: Any
    meter: Any
    engine: Engine
    removers: list[Callable[[], None]] = field(default_factory=list)
    open_spans: dict[int, Any] = field(default_factory=dict)  # execution context -> span

    def uninstrument(self) -> None:
        """Remove every listener and wrapper ``instrument`` installed."""
        while self.removers:
            self.removers.pop()()
        instrumented.pop(self.engine, None)


def remover(target: Any, name: str, listener: Callable[..., Any]) -> Callable[[], None]:
    """What takes ``listener`` off ``target`` again."""

    def remove() -> None:
        event.remove(target, name, listener)

    return remove
