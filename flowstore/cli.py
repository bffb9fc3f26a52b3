"""The ``flowstore`` command line: migrations, health, statistics, the worker and the demo.

Every command takes its database from ``--url`` or ``FLOWSTORE_DATABASE_URL``. A failure is
one line on stderr (passwords masked) and a non-zero exit status, never a traceback, so the
commands can run unattended in CI/CD and in container health checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from alembic.script.revision import RevisionError
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, inspect, make_url, select, table

import flowstore
from flowstore.cli_db import (
    add_db_commands,
    known_state,
    migration_state,
    require_migrated,
)
from flowstore.cli_history import add_history_commands
from flowstore.cli_queue import add_queue_commands
from flowstore.cli_store import (
    EXIT_FAILURE,
    EXIT_OK,
    URL_ENV,
    CommandFailed,
    add_command,
    add_url,
    open_store,
)
from flowstore.errors import FlowstoreError, mask_secrets, translate
from flowstore.events.cli import add_commands as add_event_commands
from flowstore.models import Job
from flowstore.store import Store

__all__ = ["EXIT_FAILURE", "EXIT_OK", "CommandFailed", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DEMO_FILE = "flowstore-demo.sqlite3"


# -- ping, stats -----------------------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    """``ping``: one round trip, with the server's version (a health check)."""
    with open_store(args) as store:
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
    state = migration_state(store, None)
    require_migrated(state)
    with store.engine.connect() as conn:
        names = sorted(
            n for n in inspect(conn).get_table_names() if not n.endswith("alembic_version")
        )
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
        "revision": state.flowstore.current,
        "head": state.flowstore.head,
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
    with open_store(args) as store:
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


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the story of flowstore.demo, on ./flowstore-demo.sqlite3 by default."""
    from flowstore.demo import run_demo

    with open_store(args, default=f"sqlite:///{DEMO_FILE}", create=True) as store:
        known_state(store)
        run_demo(store, out=sys.stdout)
    return EXIT_OK


# -- the parser and main ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``flowstore`` argument parser (every subcommand accepts ``--url``)."""
    parser = argparse.ArgumentParser(
        prog="flowstore",
        description="flowstore: migrations, health checks, statistics, the job worker and a demo.",
        epilog=f"The database comes from --url or ${URL_ENV}.",
    )
    parser.add_argument("--version", action="version", version=f"flowstore {flowstore.__version__}")
    add_url(parser, dest="global_url")  # `flowstore --url URL COMMAND`; the command's wins
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser(
        "db", help="schema migrations (Alembic)", description="schema migrations"
    )
    db.set_defaults(command=lambda _args: _usage(db))
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    add_db_commands(db_commands)
    add_history_commands(db_commands)

    add_command(commands, "ping", cmd_ping, "check that the database answers")
    stats = add_command(
        commands, "stats", cmd_stats, "row counts per table, deployment and job statistics"
    )
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_queue_commands(commands)
    add_command(
        commands,
        "demo",
        cmd_demo,
        f"walk a control-plane story on a demo database (default: ./{DEMO_FILE})",
        fallback=f"sqlite:///{DEMO_FILE}",
    )
    add_event_commands(commands)  # `flowstore events relay|prune` (flowstore.events.cli)
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
