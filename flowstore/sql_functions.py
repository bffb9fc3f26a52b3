"""SQL functions that must mean the same on every backend.

``lower_text(x)`` is Unicode lower case: PostgreSQL's and MySQL's ``lower()`` already are, but
SQLite's folds ASCII only, so on SQLite it calls ``flowstore_lower``, a Python function that
``register_sqlite_functions`` installs on each of flowstore's connections. Where Python's
lower case of one character is several (``"İ"``), the first is kept, as the servers do.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

__all__ = ["lower_text", "register_sqlite_functions", "unicode_lower"]

SQLITE_LOWER = "flowstore_lower"


class lower_text(GenericFunction[str]):
    """Unicode lower case of a text expression, alike on every backend."""

    type = String()
    name = "lower"
    inherit_cache = True


@compiles(lower_text, "sqlite")
def _lower_on_sqlite(element: lower_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_LOWER}({compiler.process(element.clauses, **kw)})"


def unicode_lower(text: str | None) -> str | None:
    """Lower case as the servers make it: one character for one (``None`` stays ``None``)."""
    if text is None:
        return None
    folded = text.lower()
    if len(folded) == len(text):
        return folded
    return "".join(char.lower()[0] for char in text)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Install flowstore's SQL functions on a sqlite3 (or aiosqlite adapter) connection."""
    dbapi_connection.create_function(SQLITE_LOWER, 1, unicode_lower, deterministic=True)
