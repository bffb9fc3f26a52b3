"""Named tasks: one worker serving several kinds of job, each with its handler.

``tasks = Tasks()``; ``@tasks.task("send_email")`` registers a handler; ``run_worker(store,
"default", tasks)`` runs each claimed job with the handler named by its ``task``
(``queue.enqueue(payload, task="send_email")``). A job whose task has no handler here fails
(retried with backoff, then dead), so a job enqueued by newer code than the worker's waits for a
worker that knows it rather than being lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flowstore.errors import InvalidInputError
from flowstore.models.job import Job
from flowstore.queue.values import task_name

__all__ = ["Tasks", "UnknownTaskError"]

H = TypeVar("H", bound=Callable[[Job], Any])


class UnknownTaskError(LookupError):
    """A claimed job names a task this worker has no handler for (it fails, and is retried)."""


class Tasks:
    """A registry of job handlers by task name; calling it runs the job's handler."""

    def __init__(self, default: Callable[[Job], Any] | None = None) -> None:
        self._handlers: dict[str, Callable[[Job], Any]] = {}
        self.default = default

    def register(self, name: str, handler: Callable[[Job], Any]) -> None:
        """Run ``handler`` for the jobs of task ``name`` (one handler per name)."""
        checked = task_name(name)
        if checked is None:
            raise InvalidInputError("a task needs a name")
        if not callable(handler):
            raise InvalidInputError(f"the handler of task {name!r} is not callable")
        if checked in self._handlers:
            raise InvalidInputError(f"task {name!r} already has a handler")
        self._handlers[checked] = handler

    def task(self, name: str) -> Callable[[H], H]:
        """A decorator: ``@tasks.task("name")`` registers the function it decorates."""

        def decorate(handler: H) -> H:
            self.register(name, handler)
            return handler

        return decorate

    def handler_for(self, job: Job) -> Callable[[Job], Any]:
        """The handler of ``job``'s task (the default one for a job without a task)."""
        if job.task is None:
            if self.default is None:
                raise UnknownTaskError(f"job {job.id} names no task, and there is no default")
            return self.default
        handler = self._handlers.get(job.task)
        if handler is None:
            raise UnknownTaskError(f"no handler for task {job.task!r} in this worker")
        return handler

    def __call__(self, job: Job) -> Any:
        return self.handler_for(job)(job)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    def __len__(self) -> int:
        return len(self._handlers)
