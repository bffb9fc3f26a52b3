"""The values a job carries, checked: payloads, error texts, task names and dedup keys."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flowstore import arguments
from flowstore.errors import InvalidInputError

__all__ = ["MAX_ERROR_CHARS", "dedup_key", "error_text", "payload", "task_name"]

MAX_ERROR_CHARS = 8000
MAX_TASK_NAME = 100
MAX_DEDUP_KEY = 255


def payload(value: Any) -> dict[str, Any]:
    """``value`` as a plain dict, if JSON can store it."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"a job payload must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the job payload is not JSON-serialisable: {exc}") from None
    return dict(value)


def error_text(error: Any) -> str:
    """What a failed run records: an exception as ``Type: message``, or the text given; a
    long one keeps its end (the last lines of a traceback say the most)."""
    if isinstance(error, BaseException):
        message = str(error)
        described = f"{type(error).__name__}: {message}" if message else type(error).__name__
    elif isinstance(error, str):
        described = error
    else:
        raise InvalidInputError(f"error must be a str or an exception, got {type(error).__name__}")
    if len(described) <= MAX_ERROR_CHARS:
        return described
    return "..." + described[-(MAX_ERROR_CHARS - 3) :]


def task_name(value: Any) -> str | None:
    """A named task (``None``: the queue's one handler)."""
    return arguments.optional_text("task", value, max_length=MAX_TASK_NAME)


def dedup_key(value: Any) -> str | None:
    """A queueing lock's key (``None``: no lock)."""
    return arguments.optional_text("dedup_key", value, max_length=MAX_DEDUP_KEY)
