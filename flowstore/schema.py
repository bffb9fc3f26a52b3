"""Schema management: Alembic run programmatically, from a checkout or an installed wheel.

The wheel ships the revisions as ``flowstore/_migrations``; a checkout (editable install)
uses the top-level ``migrations/`` directory. Both are the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Dialect, Engine

from flowstore.errors import InvalidInputError
from flowstore.models import FLOWSTORE_TABLES, Base

__all__ = [
    "alembic_config",
    "create_schema",
    "create_schema_on",
    "current_revision",
    "current_revision_on",
    "downgrade",
    "downgrade_on",
    "head_revision",
    "include_object_for",
    "script_location",
    "table_options",
    "upgrade",
    "upgrade_on",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """The directory holding ``env.py`` and ``versions/``."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("flowstore's migrations are missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for flowstore; with ``connection``, env.py migrates through it."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def table_options(dialect: Dialect) -> dict[str, str]:
    """Table options the migrations give every table: on MySQL/MariaDB, utf8mb4 with a binary,
    no-pad collation, so strings compare exactly as on PostgreSQL and SQLite (``"acme"``,
    ``"ACME"`` and ``"acme "`` are three different slugs) whatever the server's default."""
    if dialect.name not in {"mysql", "mariadb"}:
        return {}
    version = getattr(dialect, "server_version_info", None) or ()
    if getattr(dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"
    elif version >= (8, 0):
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision id shipped with this version of flowstore."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("flowstore ships no migrations")
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, in one transaction where the dialect allows."""
    with engine.begin() as conn:
        upgrade_on(conn, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    with engine.begin() as conn:
        downgrade_on(conn, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated."""
    with engine.connect() as conn:
        return current_revision_on(conn)


def create_schema(engine: Engine) -> None:
    """Create every table straight from the models and stamp it as the head revision.

    Used for throwaway in-memory databases, where it is many times faster than replaying the
    revisions; the test suite checks that the models and the migrations agree.
    """
    with engine.begin() as conn:
        create_schema_on(conn)


# -- the same operations on an open connection, whose transaction the caller owns ------------
# (flowstore.aio runs them through ``AsyncConnection.run_sync``.)


@contextmanager
def _revision_errors(revision: str) -> Iterator[None]:
    """An unknown or unreachable revision is bad input, not an Alembic internals error."""
    try:
        yield
    except (CommandError, RevisionError) as exc:
        raise InvalidInputError(f"cannot migrate to {revision!r}: {exc}") from None


def upgrade_on(connection: Connection, revision: str = "head") -> None:
    """``upgrade`` through ``connection``."""
    with _revision_errors(revision):
        command.upgrade(alembic_config(connection), revision)


def downgrade_on(connection: Connection, revision: str) -> None:
    """``downgrade`` through ``connection``."""
    with _revision_errors(revision):
        command.downgrade(alembic_config(connection), revision)


def current_revision_on(connection: Connection) -> str | None:
    """``current_revision`` through ``connection``."""
    return MigrationContext.configure(connection).get_current_revision()


def create_schema_on(connection: Connection) -> None:
    """``create_schema`` through ``connection``."""
    Base.metadata.create_all(connection)
    scripts = ScriptDirectory.from_config(alembic_config())
    MigrationContext.configure(connection).stamp(scripts, "head")


def include_object_for(dialect_name: str) -> Callable[..., bool]:
    """An autogenerate ``include_object`` filter for ``dialect_name``: it leaves out model
    objects created only on other databases (``Index(...).ddl_if(dialect=...)``), so comparing
    models and database stays clean on every backend."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in Base.metadata.tables and name not in FLOWSTORE_TABLES:
            return False  # a service's model's table: its own migrations and checks cover it
        condition = getattr(obj, "_ddl_if", None)
        wanted = getattr(condition, "dialect", None)
        if reflected or wanted is None:
            return True
        return dialect_name in ((wanted,) if isinstance(wanted, str) else tuple(wanted))

    return include_object
