"""Moved to :mod:`flowstore.writes.send`; these names stay here for the test suite's fixtures
(tests/conftest.py imports ``flowstore.driver``)."""

from __future__ import annotations

from flowstore.writes.send import (
    Processors,
    bind_processors,
    copy_rows,
    copy_statement,
    copy_takes,
    positional_insert,
    process_columns,
    quiet,
    sent_as_values,
)

__all__ = [
    "Processors",
    "bind_processors",
    "copy_rows",
    "copy_statement",
    "copy_takes",
    "positional_insert",
    "process_columns",
    "quiet",
    "sent_as_values",
]
