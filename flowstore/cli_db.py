"""The ``flowstore db`` commands: migrate, show and check flowstore's revisions and, with
``--migrations DIR`` (or ``FLOWSTORE_MIGRATIONS``), a service's own tree with them.

They parse and print; the work is the schema layer's (``flowstore.schema``,
``flowstore.revision_state``, ``flowstore.schema_check``, ``flowstore.migration_scaffold``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic.script import Script

from flowstore import schema
from flowstore.cli_store import (
    EXIT_OK,
    CommandFailed,
    add_command,
    configured_url,
    note,
    open_store,
)
from flowstore.config import Settings
from flowstore.migration_scaffold import write_service_migrations
from flowstore.revision_state import MigrationState, RevisionState, revision_state
from flowstore.schema_check import compare_schema
from flowstore.service_migrations import ServiceTree
from flowstore.store import Store

__all__ = [
    "add_db_commands",
    "known_state",
    "migration_state",
    "require_at_head",
    "require_migrated",
]


def _migrations_of(args: argparse.Namespace) -> str | None:
    """``--migrations``, else ``FLOWSTORE_MIGRATIONS``: a service's migrations directory.

    Its env.py names the service's models module; like the worker's handlers, it is imported
    from the folder the command runs in.
    """
    given: str | None = getattr(args, "migrations", None)
    if given is not None and not given.strip():
        raise CommandFailed("--migrations is empty")
    directory = given.strip() if given is not None else Settings().migrations
    if directory is not None and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return directory


def migration_state(store: Store, migrations: str | None) -> MigrationState:
    """Where the store's database stands in flowstore's tree and the service's."""
    return revision_state(store.engine, migrations=migrations)


def _require_known(state: MigrationState) -> None:
    """Refuse a database at a revision this code does not ship."""
    for tree in state.trees:
        if tree.unknown:
            raise CommandFailed(tree.unknown_message())


def known_state(store: Store, migrations: str | None = None) -> MigrationState:
    """The store's revision state, refused when this code does not ship its revision."""
    state = migration_state(store, migrations)
    _require_known(state)
    return state


def require_migrated(state: MigrationState) -> None:
    """Refuse a database that was never migrated, or is ahead of this code."""
    if not state.flowstore.migrated:
        raise CommandFailed("the database is not migrated: run `flowstore db upgrade` first")
    _require_known(state)


def require_at_head(state: MigrationState, before: str = "") -> None:
    """Refuse a database that is not exactly at head in every tree; ``before`` ends the hint."""
    require_migrated(state)
    for tree in state.trees:
        if not tree.at_head:
            where = tree.current or "no revision"
            whose = "" if state.service is None else f"{tree.tree} "
            raise CommandFailed(
                f"the database is at {whose}{where}, behind head {tree.head}: "
                f"run `flowstore db upgrade`{before}"
            )


def _labelled(state: MigrationState, tree: RevisionState) -> str:
    """A tree's name before its description, when two trees are shown."""
    return "" if state.service is None else f"{tree.tree}: "


def cmd_db_init(args: argparse.Namespace) -> int:
    """``db init DIR --models MODULE``: write a service's own Alembic environment."""
    made = write_service_migrations(args.directory, args.models, name=args.name)
    shown = [str(Path(os.path.relpath(path))) for path in made.files]
    print(f"wrote {', '.join(shown)}")
    print(
        f"{made.service.name}'s revisions stack on flowstore's and are recorded in "
        f"{made.service.version_table}; next, in this folder:"
    )
    print('  alembic revision --autogenerate -m "first tables"')
    print("  alembic upgrade heads")
    print(f"  flowstore db check --migrations {args.directory}")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """``db upgrade [REV]``: migrate up; a SQLite file is created if missing."""
    migrations = _migrations_of(args)
    with open_store(args, create=True) as store:
        before = known_state(store, migrations)
        schema.upgrade(store.engine, args.revision, migrations=migrations)
        after = migration_state(store, migrations)
        for old, new in zip(before.trees, after.trees, strict=True):
            label = _labelled(after, new)
            if new.current == old.current:
                print(f"{store.safe_url}: {label}already at {new.describe()}")
            else:
                origin = old.current or "an empty database"
                print(f"{store.safe_url}: {label}upgraded from {origin} to {new.describe()}")
    return EXIT_OK


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    """``db downgrade REV``: migrate down (``base`` removes every table of the tree)."""
    migrations = _migrations_of(args)
    with open_store(args) as store:
        before = known_state(store, migrations)
        if not any(tree.migrated for tree in before.trees):
            raise CommandFailed("the database is not migrated: there is nothing to downgrade")
        schema.downgrade(store.engine, args.revision, migrations=migrations)
        after = migration_state(store, migrations)
        for old, new in zip(before.trees, after.trees, strict=True):
            label = _labelled(after, new)
            if new.current == old.current:
                print(f"{store.safe_url}: {label}still at {new.describe()}")
            else:
                target = new.current or f"base (every {new.tree} table removed)"
                print(f"{store.safe_url}: {label}downgraded from {old.current} to {target}")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    """``db current``: the database's revision in each tree and how it stands against head."""
    migrations = _migrations_of(args)
    with open_store(args) as store:
        state = known_state(store, migrations)
        for tree in state.trees:
            print(f"{_labelled(state, tree)}{tree.describe()}")
    return EXIT_OK


def _history_lines(
    scripts: Sequence[Script], tree: RevisionState | None, head: str | None, label: str
) -> list[str]:
    lines = []
    for script in scripts:
        marks = ["head"] if script.revision == head else []
        if tree is not None and script.revision == tree.current:
            marks.append("current")
        down = script.down_revision or "<base>"
        marked = f" ({', '.join(marks)})" if marks else ""
        doc = " ".join((script.doc or "").split())
        lines.append(f"{label}{down} -> {script.revision}{marked}: {doc}")
    return lines


def cmd_db_history(args: argparse.Namespace) -> int:
    """``db history``: the revisions, newest first (a service's above flowstore's); the
    database's are marked when a URL is given."""
    migrations = _migrations_of(args)
    state: MigrationState | None = None
    if configured_url(args, Settings()) is not None:
        with open_store(args) as store:
            state = migration_state(store, migrations)
    lines: list[str] = []
    if migrations is not None:
        service = ServiceTree(migrations)
        name = state.service.tree if state is not None and state.service else None
        name = name or service.declared().name
        lines += _history_lines(
            service.revisions(),
            state.service if state is not None else None,
            service.head(),
            f"{name}: ",
        )
    lines += _history_lines(
        schema.shipped_revisions(),
        state.flowstore if state is not None else None,
        schema.head_revision(),
        "" if migrations is None else "flowstore: ",
    )
    print("\n".join(lines))
    if state is not None:
        _require_known(state)
        if not state.flowstore.migrated:
            print("the database is not migrated yet")
    return EXIT_OK


def cmd_db_check(args: argparse.Namespace) -> int:
    """``db check``: succeed only at head with a schema that matches the models (a CD gate)."""
    migrations = _migrations_of(args)
    with open_store(args) as store:
        state = migration_state(store, migrations)
        require_at_head(state)
        comparison = compare_schema(store.engine, migrations=migrations)
        for remark in comparison.notes:  # what autogenerate could not compare
            note(remark)
        heads = ", ".join(f"{tree.tree} {tree.current or '(none)'}" for tree in state.trees)
        if not comparison.matches:
            for line in comparison.differences:
                print(f"  - {line}")
            hint = "" if migrations else "; a service's own tables need --migrations DIR"
            raise CommandFailed(
                f"{len(comparison.differences)} difference(s) between the models and the "
                f"database at {heads} (listed on stdout): the schema was changed outside the "
                f"migrations, or a model changed without a migration{hint}"
            )
        where = state.flowstore.current if migrations is None else heads
        print(f"{store.safe_url}: at head {where}; the schema matches the models")
    return EXIT_OK


def add_db_commands(db_commands: Any) -> None:
    """The ``db`` actions, on the ``db`` command's subparsers."""
    init_help = "write a service's own Alembic environment (alembic.ini here, DIR/env.py)"
    init = db_commands.add_parser("init", help=init_help, description=init_help)
    init.add_argument("directory", metavar="DIR", help="the service's migrations directory")
    init.add_argument(
        "--models", required=True, metavar="MODULE", help="the module defining its models"
    )
    init.add_argument(
        "--name",
        default=None,
        help="its name, for the version table <name>_alembic_version "
        "(default: MODULE's top package)",
    )
    init.set_defaults(command=cmd_db_init)
    upgrade = add_command(
        db_commands, "upgrade", cmd_db_upgrade, "migrate up to REV (default head)"
    )
    upgrade.add_argument("revision", nargs="?", default="head", metavar="REV")
    downgrade = add_command(
        db_commands, "downgrade", cmd_db_downgrade, "migrate down to REV ('base' drops the tree)"
    )
    downgrade.add_argument("revision", metavar="REV")
    current = add_command(db_commands, "current", cmd_db_current, "show the database's revision")
    history = add_command(db_commands, "history", cmd_db_history, "list the revisions")
    check = add_command(
        db_commands,
        "check",
        cmd_db_check,
        "fail unless the database is at head and its schema matches the models",
    )
    for migrating in (upgrade, downgrade, current, history, check):
        migrating.add_argument(
            "--migrations",
            default=argparse.SUPPRESS,
            metavar="DIR",
            help="a service's migrations (from `flowstore db init`), applied and checked "
            "with flowstore's (default: $FLOWSTORE_MIGRATIONS)",
        )
