"""The ``flowstore`` command line: migrations, health, statistics, the worker and the demo.

Every command takes its database from ``--url`` or ``FLOWSTORE_DATABASE_URL``. A failure is
one line on stderr (passwords masked) and a non-zero exit status, never a traceback, so the
commands can run unattended in CI/CD and in container health checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, inspect, make_url, select, table
from sqlalchemy.types import TypeEngine

import flowstore
from flowstore import schema
from flowstore.config import Settings
from flowstore.engine import is_memory_sqlite, normalize_url
from flowstore.errors import FlowstoreError, mask_secrets, translate
from flowstore.models import Base, Job
from flowstore.store import Store
from flowstore.worker import add_arguments as add_worker_arguments
from flowstore.worker import resolve_handler
from flowstore.worker import run_from_args as run_worker_from_args

__all__ = ["CommandFailed", "RevisionState", "build_parser", "main", "revision_state"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

URL_ENV = "FLOWSTORE_DATABASE_URL"
DEMO_FILE = "flowstore-demo.sqlite3"


class CommandFailed(Exception):
    """An expected failure of a command; its message is the one line the user sees."""


# -- revisions -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _scripts() -> tuple[Script, ...]:
    """The revisions shipped with this version, newest first."""
    return tuple(ScriptDirectory.from_config(schema.alembic_config()).walk_revisions())


@dataclass(frozen=True)
class RevisionState:
    """Where a database stands against the revisions this version of flowstore ships."""

    current: str | None
    head: str
    known: frozenset[str]

    @property
    def migrated(self) -> bool:
        """The database has an Alembic revision (it was migrated at least once)."""
        return self.current is not None

    @property
    def unknown(self) -> bool:
        """The database is at a revision this version does not ship (a newer flowstore's)."""
        return self.current is not None and self.current not in self.known

    @property
    def at_head(self) -> bool:
        """The database is at this version's newest revision."""
        return self.current == self.head

    def unknown_message(self) -> str:
        """Why a database migrated by a newer flowstore is refused, and what to do."""
        return (
            f"the database is ahead of this code: its revision {self.current!r} is unknown to "
            f"flowstore {flowstore.__version__} (newest: {self.head}), so a newer version "
            "migrated it; upgrade flowstore rather than the schema"
        )

    def describe(self) -> str:
        """The current revision and how it relates to head, in a few words."""
        if self.current is None:
            return "none (not migrated: run `flowstore db upgrade`)"
        if self.at_head:
            return f"{self.current} (head)"
        return f"{self.current} (behind head {self.head}: run `flowstore db upgrade`)"


def revision_state(store: Store) -> RevisionState:
    """The database's revision next to this version's head and known revisions."""
    return RevisionState(
        current=store.current_revision(),
        head=schema.head_revision(),
        known=frozenset(script.revision for script in _scripts()),
    )


def _require_known(state: RevisionState) -> None:
    """Refuse a database at a revision this version does not ship."""
    if state.unknown:
        raise CommandFailed(state.unknown_message())


def _known_state(store: Store) -> RevisionState:
    """The store's revision state, refused when this version does not ship its revision."""
    state = revision_state(store)
    _require_known(state)
    return state


def _require_migrated(state: RevisionState) -> None:
    """Refuse a database that was never migrated, or is ahead of this version."""
    if not state.migrated:
        raise CommandFailed("the database is not migrated: run `flowstore db upgrade` first")
    _require_known(state)


def _require_at_head(state: RevisionState, before: str = "") -> None:
    """Refuse a database that is not exactly at this version's head; ``before`` ends the hint."""
    _require_migrated(state)
    if not state.at_head:
        raise CommandFailed(
            f"the database is at {state.current}, behind head {state.head}: "
            f"run `flowstore db upgrade`{before}"
        )


# -- opening the database --------------------------------------------------------------------


def _configured_url(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--url``, else ``FLOWSTORE_DATABASE_URL``, else ``None`` (nothing configured)."""
    given: str | None = getattr(args, "url", None)
    if given is not None:
        if not given.strip():
            raise CommandFailed("--url is empty")
        return given.strip()
    if "database_url" in settings.model_fields_set:
        return settings.database_url
    return None


def _open_store(
    args: argparse.Namespace, *, default: str | None = None, create: bool = False
) -> Store:
    """The store the command works on.

    With nothing configured, ``default`` is used, or else the in-memory database (with a note,
    since nothing done there outlives the command). A SQLite file must exist unless ``create``:
    a typo in a path should not silently make an empty database.
    """
    settings = Settings()
    url = _configured_url(args, settings)
    if url is None:
        url = default
        if url is None:
            _note(f"{URL_ENV} is not set and no --url given: using a throwaway in-memory database")
            url = settings.database_url
    parsed = normalize_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and not is_memory_sqlite(parsed)
        and not database.startswith("file:")
    ):
        path = Path(database)
        if create and not path.parent.is_dir():
            raise CommandFailed(f"cannot create SQLite file {database!r}: no such directory")
        if not create and not path.exists():
            raise CommandFailed(
                f"SQLite database file {database!r} does not exist "
                "(`flowstore db upgrade` creates it)"
            )
    return Store(parsed, settings=settings)


def _note(message: str) -> None:
    """A remark on stderr that is not an error (the exit status stays 0)."""
    print(f"note: {message}", file=sys.stderr)


# -- db commands -----------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """``db upgrade [REV]``: migrate up; a SQLite file is created if missing."""
    with _open_store(args, create=True) as store:
        before = _known_state(store)
        store.upgrade(args.revision)
        after = revision_state(store)
        if after.current == before.current:
            print(f"{store.safe_url}: already at {after.describe()}")
        else:
            origin = before.current or "an empty database"
            print(f"{store.safe_url}: upgraded from {origin} to {after.describe()}")
    return EXIT_OK


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    """``db downgrade REV``: migrate down (``base`` removes every flowstore table)."""
    with _open_store(args) as store:
        before = _known_state(store)
        if not before.migrated:
            raise CommandFailed("the database is not migrated: there is nothing to downgrade")
        store.downgrade(args.revision)
        after = revision_state(store)
        target = after.current or "base (every flowstore table removed)"
        print(f"{store.safe_url}: downgraded from {before.current} to {target}")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    """``db current``: the database's revision and how it stands against head."""
    with _open_store(args) as store:
        print(_known_state(store).describe())
    return EXIT_OK


def cmd_db_history(args: argparse.Namespace) -> int:
    """``db history``: the shipped revisions; the database's is marked when a URL is given."""
    state: RevisionState | None = None
    if _configured_url(args, Settings()) is not None:
        with _open_store(args) as store:
            state = revision_state(store)
    head = schema.head_revision()
    for script in _scripts():
        marks = ["head"] if script.revision == head else []
        if state is not None and script.revision == state.current:
            marks.append("current")
        down = script.down_revision or "<base>"
        label = f" ({', '.join(marks)})" if marks else ""
        doc = " ".join((script.doc or "").split())
        print(f"{down} -> {script.revision}{label}: {doc}")
    if state is not None:
        _require_known(state)
        if not state.migrated:
            print("the database is not migrated yet")
    return EXIT_OK


def cmd_db_check(args: argparse.Namespace) -> int:
    """``db check``: succeed only at head with a schema that matches the models (a CD gate)."""
    with _open_store(args) as store:
        state = revision_state(store)
        _require_at_head(state)
        with store.engine.connect() as conn, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": schema.include_object_for(conn.dialect.name),
                },
            )
            differences = [
                describe_difference(d, conn.dialect)
                for d in _flatten(compare_metadata(context, Base.metadata))
            ]
        for warning in caught:  # what autogenerate could not compare, e.g. expression indexes
            _note(" ".join(str(warning.message).split()))
        if differences:
            for line in differences:
                print(f"  - {line}")
            raise CommandFailed(
                f"{len(differences)} difference(s) between the models and the database at "
                f"{state.current} (listed on stdout): the schema was changed outside the "
                "migrations, or a model changed without a migration"
            )
        print(f"{store.safe_url}: at head {state.current}; the schema matches the models")
    return EXIT_OK


def _flatten(diffs: Sequence[Any]) -> list[tuple[Any, ...]]:
    """compare_metadata nests column modifications in lists; give one tuple per difference."""
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        if isinstance(diff, list):
            flat.extend(diff)
        else:
            flat.append(diff)
    return flat


def _type_name(value: Any, dialect: Any) -> str:
    """A column type (or default) as the database would spell it."""
    if isinstance(value, TypeEngine):
        try:
            return str(value.compile(dialect=dialect))
        except sa_exc.SQLAlchemyError:
            return repr(value)
    return repr(value)


def describe_difference(diff: tuple[Any, ...], dialect: Any) -> str:
    """One readable line for one Alembic autogenerate difference."""
    kind = diff[0]
    if kind == "add_table":
        return f"table {diff[1].name}: in the models, missing from the database"
    if kind == "remove_table":
        return f"table {diff[1].name}: in the database, not in the models"
    if kind == "add_column":
        return f"column {diff[2]}.{diff[3].name}: in the models, missing from the database"
    if kind == "remove_column":
        return f"column {diff[2]}.{diff[3].name}: in the database, not in the models"
    if kind in {"add_index", "remove_index", "add_constraint", "remove_constraint"}:
        item = diff[1]
        where = "in the models, missing from the database"
        if kind.startswith("remove"):
            where = "in the database, not in the models"
        noun = "index" if kind.endswith("index") else "constraint"
        return f"{noun} {item.name} on {item.table.name}: {where}"
    if kind in {"add_fk", "remove_fk"}:
        fk = diff[1]
        where = "missing from the database" if kind == "add_fk" else "not in the models"
        columns = ", ".join(c.name for c in fk.columns)
        return f"foreign key {fk.name} on {fk.parent.name}({columns}): {where}"
    if kind.startswith("modify_"):
        _, _schema, table_name, column, _existing, old, new = diff
        what = kind.removeprefix("modify_").replace("_", " ")
        return (
            f"column {table_name}.{column} {what}: database has {_type_name(old, dialect)}, "
            f"the models say {_type_name(new, dialect)}"
        )
    return mask_secrets(repr(diff))


# -- ping, stats -----------------------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    """``ping``: one round trip, with the server's version (a health check)."""
    with _open_store(args) as store:
        started = time.perf_counter()
        store.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
        version = store.engine.dialect.server_version_info
        server = (
            f"{store.dialect} {'.'.join(str(v) for v in version)}" if version else store.dialect
        )
        print(f"{store.safe_url}: ok ({server}, {elapsed_ms:.1f} ms)")
    return EXIT_OK


def collect_stats(store: Store) -> dict[str, Any]:
    """Row counts per table, deployment and job statistics and the revision, as plain data."""
    state = revision_state(store)
    _require_migrated(state)
    with store.engine.connect() as conn:
        names = sorted(n for n in inspect(conn).get_table_names() if n != "alembic_version")
        counts = {
            name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
            for name in names
        }
        jobs: dict[str, dict[str, int]] = {}
        if Job.__tablename__ in names:
            grouped = conn.execute(
                select(Job.queue, Job.status, func.count())
                .group_by(Job.queue, Job.status)
                .order_by(Job.queue, Job.status)
            )
            for queue, status, count in grouped:
                jobs.setdefault(queue, {})[str(status)] = int(count)
    with store.unit_of_work() as uow:
        deployment_stats = uow.deployments.stats()
    return {
        "database": store.safe_url,
        "revision": state.current,
        "head": state.head,
        "tables": counts,
        "deployments": {
            "total": deployment_stats.total,
            "by_status": {
                str(status): count for status, count in sorted(deployment_stats.by_status.items())
            },
        },
        "jobs": jobs,
    }


def cmd_stats(args: argparse.Namespace) -> int:
    """``stats [--json]``: what the database holds, for operators and scripts."""
    with _open_store(args) as store:
        stats = collect_stats(store)
    if args.json:
        print(json.dumps(stats, indent=2))
        return EXIT_OK
    print(f"database     {stats['database']}")
    print(f"revision     {stats['revision']} (head {stats['head']})")
    print("rows per table")
    width = max((len(name) for name in stats["tables"]), default=0)
    for name, count in stats["tables"].items():
        print(f"  {name:<{width}}  {count:>9,}")
    deployments = stats["deployments"]
    by_status = ", ".join(f"{s} {n}" for s, n in deployments["by_status"].items()) or "none"
    print(f"deployments  {deployments['total']:,} in all ({by_status})")
    for queue, counts in stats["jobs"].items():
        print(f"jobs         queue {queue}: {', '.join(f'{s} {n}' for s, n in counts.items())}")
    return EXIT_OK


# -- worker ----------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    """Check the database in one line of output or less, then hand over to flowstore.worker."""
    with _open_store(args) as store:
        if store.is_memory:
            raise CommandFailed(
                "a worker needs a database its producers share: "
                f"set {URL_ENV} or pass --url (the in-memory default is private to a process)"
            )
        store.ping()
        _require_at_head(revision_state(store), " before starting workers")
        args.url = store.url.render_as_string(hide_password=False)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # handlers of the project the worker runs in
    resolve_handler(args.handler)  # a typo in the handler is one line, before any thread
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_worker_from_args(args)


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the story of flowstore.demo, on ./flowstore-demo.sqlite3 by default."""
    from flowstore.demo import run_demo

    with _open_store(args, default=f"sqlite:///{DEMO_FILE}", create=True) as store:
        _known_state(store)
        run_demo(store, out=sys.stdout)
    return EXIT_OK


# -- the parser and main ---------------------------------------------------------------------


def _add_url(
    parser: argparse.ArgumentParser,
    fallback: str = "an in-memory SQLite database",
    dest: str = "url",
) -> None:
    parser.add_argument(
        "--url",
        dest=dest,
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"database URL (default: ${URL_ENV}, else {fallback})",
    )


def _command(
    subparsers: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help_text: str,
    **url_fallback: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    _add_url(parser, **url_fallback)
    parser.set_defaults(command=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``flowstore`` argument parser (every subcommand accepts ``--url``)."""
    parser = argparse.ArgumentParser(
        prog="flowstore",
        description="flowstore: migrations, health checks, statistics, the job worker and a demo.",
        epilog=f"The database comes from --url or ${URL_ENV}.",
    )
    parser.add_argument("--version", action="version", version=f"flowstore {flowstore.__version__}")
    _add_url(parser, dest="global_url")  # `flowstore --url URL COMMAND`; the command's wins
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser(
        "db", help="schema migrations (Alembic)", description="schema migrations"
    )
    db.set_defaults(command=lambda _args: _usage(db))
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    upgrade = _command(db_commands, "upgrade", cmd_db_upgrade, "migrate up to REV (default head)")
    upgrade.add_argument("revision", nargs="?", default="head", metavar="REV")
    downgrade = _command(
        db_commands, "downgrade", cmd_db_downgrade, "migrate down to REV ('base' drops everything)"
    )
    downgrade.add_argument("revision", metavar="REV")
    _command(db_commands, "current", cmd_db_current, "show the database's revision")
    _command(db_commands, "history", cmd_db_history, "list the revisions of this version")
    _command(
        db_commands,
        "check",
        cmd_db_check,
        "fail unless the database is at head and its schema matches the models",
    )

    _command(commands, "ping", cmd_ping, "check that the database answers")
    stats = _command(
        commands, "stats", cmd_stats, "row counts per table, deployment and job statistics"
    )
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    worker_help = "process jobs of a queue with a handler (stops on SIGTERM, jobs in hand first)"
    worker = commands.add_parser("worker", help=worker_help, description=worker_help)
    add_worker_arguments(worker)
    worker.set_defaults(command=cmd_worker)
    _command(
        commands,
        "demo",
        cmd_demo,
        f"walk a control-plane story on a demo database (default: ./{DEMO_FILE})",
        fallback=f"sqlite:///{DEMO_FILE}",
    )
    parser.set_defaults(command=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _one_line(message: str, secrets: Sequence[str]) -> str:
    """``message`` on a single line with every known secret masked."""
    text = mask_secrets(" ".join(message.split()))
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _secrets_of(args: argparse.Namespace | None) -> list[str]:
    """Passwords in the URLs this run may have used, so that no message can carry them."""
    candidates = [os.environ.get(URL_ENV, "")]
    if args is not None:
        candidates.append(getattr(args, "url", "") or "")
    found: list[str] = []
    for url in candidates:
        try:
            password = make_url(url).password if url else None
        except (sa_exc.ArgumentError, ValueError, TypeError):
            continue
        if password:
            found.append(str(password))
    return found


def _fail(message: str, args: argparse.Namespace | None) -> int:
    print(f"flowstore: error: {_one_line(message, _secrets_of(args))}", file=sys.stderr)
    return EXIT_FAILURE


def _with_revision_hint(message: str) -> str:
    """Point an unknown-revision message at the list of revisions."""
    if "locate revision" in message:  # Alembic's words, kept by any translation of its error
        return f"{message} (`flowstore db history` lists this version's revisions)"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        if getattr(args, "url", None) is None and getattr(args, "global_url", None) is not None:
            args.url = args.global_url
        command: Callable[[argparse.Namespace], int] = args.command
        return command(args)
    except KeyboardInterrupt:
        print("flowstore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `flowstore stats | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except CommandFailed as exc:
        return _fail(str(exc), args)
    except FlowstoreError as exc:
        return _fail(_with_revision_hint(str(exc) or type(exc).__name__), args)
    except (CommandError, RevisionError) as exc:
        return _fail(_with_revision_hint(f"migration failed: {exc}"), args)
    except ValidationError as exc:
        problems = "; ".join(
            f"FLOWSTORE_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        return _fail(f"invalid configuration: {problems}", args)
    except sa_exc.SQLAlchemyError as exc:
        return _fail(str(translate(exc)), args)
    except Exception as exc:  # the command line's last line of defence: still one line
        return _fail(f"unexpected {type(exc).__name__}: {exc}", args)
