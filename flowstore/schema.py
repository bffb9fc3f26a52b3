"""Schema management: Alembic run programmatically, from a checkout or an installed wheel.

The wheel ships the revisions as ``flowstore/_migrations``; a checkout (editable install)
uses the top-level ``migrations/`` directory. Both are the same files; their branch label is
``flowstore``.

Every operation also takes ``migrations``, the directory of a service's own revision tree
(made by ``flowstore db init``; see ``flowstore.service_migrations``), which stacks on
flowstore's head:

* ``upgrade``: ``"head"``/``"heads"`` brings both trees to head, flowstore's first; a service
  revision brings flowstore's to head and the service's to that revision; a flowstore revision
  (``"0003"``, ``"flowstore@..."``) moves flowstore's tree only.
* ``downgrade``: a service revision, ``"-1"`` or ``"base"`` moves the service's tree only. A
  flowstore revision moves flowstore's tree, and is refused (``InvalidInputError``) while any
  service revision is applied: those stack on flowstore's head, so take them to ``"base"`` first.
* ``current_revision``: the service tree's applied revision.
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
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Dialect, Engine

from flowstore.errors import InvalidInputError
from flowstore.models import Base
from flowstore.partitions import is_partition_name
from flowstore.service_migrations import MigrationsDir, ServiceTree

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
    "is_flowstore_revision",
    "script_location",
    "shipped_revisions",
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


@lru_cache(maxsize=1)
def shipped_revisions() -> tuple[Script, ...]:
    """The revisions shipped with this version of flowstore, newest first."""
    return tuple(ScriptDirectory.from_config(alembic_config()).walk_revisions())


def is_flowstore_revision(revision: str) -> bool:
    """Whether ``revision`` names a revision of flowstore's tree: one of its ids, or anything
    addressed through its branch label (``"flowstore@head"``, ``"flowstore@-1"``)."""
    return revision.startswith("flowstore@") or any(
        script.revision == revision for script in shipped_revisions()
    )


def upgrade(
    engine: Engine, revision: str = "head", *, migrations: MigrationsDir | None = None
) -> None:
    """Migrate the database up to ``revision``, in one transaction where the dialect allows;
    with ``migrations``, flowstore's revisions and then the service's (see the module doc)."""
    with engine.begin() as conn:
        upgrade_on(conn, revision, migrations=migrations)


def downgrade(engine: Engine, revision: str, *, migrations: MigrationsDir | None = None) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table of the tree:
    flowstore's, or with ``migrations`` the service's)."""
    with engine.begin() as conn:
        downgrade_on(conn, revision, migrations=migrations)


def current_revision(engine: Engine, *, migrations: MigrationsDir | None = None) -> str | None:
    """The revision the database is at (with ``migrations``, the service tree's), or ``None``
    when it was never migrated."""
    with engine.connect() as conn:
        return current_revision_on(conn, migrations=migrations)


def create_schema(engine: Engine, *, migrations: MigrationsDir | None = None) -> None:
    """Create every table straight from the models and stamp it as the head revision (with
    ``migrations``, the service's models and head too).

    Used for throwaway in-memory databases, where it is many times faster than replaying the
    revisions; the test suite checks that the models and the migrations agree.
    """
    with engine.begin() as conn:
        create_schema_on(conn, migrations=migrations)


# -- the same operations on an open connection, whose transaction the caller owns ------------
# (flowstore.aio runs them through ``AsyncConnection.run_sync``.)


@contextmanager
def _revision_errors(revision: str) -> Iterator[None]:
    """An unknown or unreachable revision is bad input, not an Alembic internals error."""
    try:
        yield
    except (CommandError, RevisionError) as exc:
        raise InvalidInputError(f"cannot migrate to {revision!r}: {exc}") from None


def upgrade_on(
    connection: Connection, revision: str = "head", *, migrations: MigrationsDir | None = None
) -> None:
    """``upgrade`` through ``connection``."""
    if migrations is None or is_flowstore_revision(revision):
        with _revision_errors(revision):
            command.upgrade(alembic_config(connection), revision)
        return
    tree = ServiceTree(migrations)
    target = "heads" if revision in {"head", "heads"} else revision
    with _revision_errors(revision):  # the service's env.py applies flowstore's revisions first
        command.upgrade(tree.config(connection), target)


def downgrade_on(
    connection: Connection, revision: str, *, migrations: MigrationsDir | None = None
) -> None:
    """``downgrade`` through ``connection``."""
    if migrations is None:
        with _revision_errors(revision):
            command.downgrade(alembic_config(connection), revision)
        return
    tree = ServiceTree(migrations)
    if is_flowstore_revision(revision):
        applied = tree.current_on(connection)
        if applied is not None:
            raise InvalidInputError(
                f"cannot downgrade flowstore's revisions to {revision!r} while the service's "
                f"revision {applied!r} is applied: its revisions stack on flowstore's head, so "
                "downgrade them to 'base' first"
            )
        with _revision_errors(revision):
            command.downgrade(alembic_config(connection), revision)
        return
    with _revision_errors(revision):
        command.downgrade(tree.config(connection), revision)


def current_revision_on(
    connection: Connection, *, migrations: MigrationsDir | None = None
) -> str | None:
    """``current_revision`` through ``connection``."""
    if migrations is not None:
        return ServiceTree(migrations).current_on(connection)
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise InvalidInputError(
            f"alembic_version holds {len(heads)} revisions ({', '.join(sorted(heads))}): "
            "another revision tree shares flowstore's version table; give a service's "
            "migrations their own with `flowstore db init`"
        )
    return heads[0] if heads else None


def create_schema_on(connection: Connection, *, migrations: MigrationsDir | None = None) -> None:
    """``create_schema`` through ``connection``."""
    if migrations is not None:  # its env.py imports the service's models and stamps its head
        with _revision_errors("heads"):
            command.stamp(ServiceTree(migrations).config(connection), "heads")
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
        if reflected and type_ == "table" and is_partition_name(name):
            return False  # a month of a partitioned history table: the models hold its parent
        condition = getattr(obj, "_ddl_if", None)
        wanted = getattr(condition, "dialect", None)
        if reflected or wanted is None:
            return True
        return dialect_name in ((wanted,) if isinstance(wanted, str) else tuple(wanted))

    return include_object
