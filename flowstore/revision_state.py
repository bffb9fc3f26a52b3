"""Where a database stands against flowstore's revisions and, optionally, a service's.

``revision_state`` reads both trees' applied revisions next to the revisions this code ships,
so that a caller (the command line, a deployment gate, a health check) can say "behind",
"at head" or "ahead of this code" without touching Alembic itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

import flowstore
from flowstore import schema
from flowstore.service_migrations import MigrationsDir, ServiceTree

__all__ = ["MigrationState", "RevisionState", "revision_state", "revision_state_on"]


@dataclass(frozen=True)
class RevisionState:
    """Where a database stands against one revision tree: flowstore's or a service's.

    ``head`` is ``None`` only for a service tree without any revision yet.
    """

    tree: str
    current: str | None
    head: str | None
    known: frozenset[str]
    shipped_by: str = f"flowstore {flowstore.__version__}"

    @property
    def migrated(self) -> bool:
        """The database has a revision of this tree (it was migrated at least once)."""
        return self.current is not None

    @property
    def unknown(self) -> bool:
        """The database is at a revision this code does not ship (a newer version's)."""
        return self.current is not None and self.current not in self.known

    @property
    def at_head(self) -> bool:
        """The database is at this tree's newest revision."""
        return self.current == self.head

    def unknown_message(self) -> str:
        """Why a database migrated by newer code is refused, and what to do."""
        whose = "" if self.tree == "flowstore" else f"{self.tree} "
        return (
            f"the database is ahead of this code: its {whose}revision {self.current!r} is "
            f"unknown to {self.shipped_by} (newest: {self.head}), so a newer version "
            f"migrated it; upgrade the code rather than the schema"
        )

    def describe(self) -> str:
        """The current revision and how it relates to head, in a few words."""
        if self.current is None and self.head is None:
            return "none (the tree has no revisions yet)"
        if self.current is None:
            return "none (not migrated: run `flowstore db upgrade`)"
        if self.at_head:
            return f"{self.current} (head)"
        return f"{self.current} (behind head {self.head}: run `flowstore db upgrade`)"


@dataclass(frozen=True)
class MigrationState:
    """The state of flowstore's tree and, when a service's migrations are given, of its."""

    flowstore: RevisionState
    service: RevisionState | None = None

    @property
    def trees(self) -> tuple[RevisionState, ...]:
        """flowstore's state, then the service's."""
        return (self.flowstore,) if self.service is None else (self.flowstore, self.service)

    @property
    def at_head(self) -> bool:
        """Every tree is at its head."""
        return all(tree.at_head for tree in self.trees)


def revision_state_on(
    connection: Connection, *, migrations: MigrationsDir | None = None
) -> MigrationState:
    """``revision_state`` through ``connection``."""
    flowstore_state = RevisionState(
        tree="flowstore",
        current=schema.current_revision_on(connection),
        head=schema.head_revision(),
        known=frozenset(script.revision for script in schema.shipped_revisions()),
    )
    if migrations is None:
        return MigrationState(flowstore_state)
    tree = ServiceTree(migrations)
    declared, current = tree.read_on(connection)
    service_state = RevisionState(
        tree=declared.name,
        current=current,
        head=tree.head(),
        known=frozenset(script.revision for script in tree.revisions()),
        shipped_by=f"the migrations in {str(tree.directory)!r}",
    )
    return MigrationState(flowstore_state, service_state)


def revision_state(engine: Engine, *, migrations: MigrationsDir | None = None) -> MigrationState:
    """Both trees' applied revisions next to their heads and known revisions (``migrations``:
    a service's directory; without it, flowstore's tree only)."""
    with engine.connect() as conn:
        return revision_state_on(conn, migrations=migrations)
