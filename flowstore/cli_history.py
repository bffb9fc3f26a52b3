"""The ``flowstore db`` commands for the history tables: ``partition`` (turn ``audit_logs``
and ``inference_requests`` into monthly partitioned tables on PostgreSQL, rows kept),
``maintain`` (create the months ahead) and ``prune`` (retention). They parse and print; the
work is ``flowstore.partitions`` and ``flowstore.retention``'s.
"""

from __future__ import annotations

import argparse
from typing import Any

from flowstore import arguments
from flowstore.cli_store import EXIT_OK, CommandFailed, add_command, open_store
from flowstore.config import Settings
from flowstore.errors import translating
from flowstore.models.types import utcnow
from flowstore.partitions import HISTORY_TABLES, ensure_partitions, partition_table
from flowstore.retention import DEFAULT_BATCH, prune_history

__all__ = ["add_history_commands"]


def _months_ahead(args: argparse.Namespace) -> int:
    given: int | None = args.months_ahead
    if given is None:
        return Settings().partitions_ahead
    return arguments.integer("--months-ahead", given, minimum=0, maximum=120)


def cmd_db_partition(args: argparse.Namespace) -> int:
    """``db partition [TABLE ...]``: partition the history tables by month (PostgreSQL)."""
    tables = args.tables or list(HISTORY_TABLES)
    unknown = sorted(set(tables) - set(HISTORY_TABLES))
    if unknown:
        raise CommandFailed(f"only {' and '.join(HISTORY_TABLES)} are partitioned, not {unknown}")
    with open_store(args) as store, translating(), store.engine.begin() as conn:
        now, ahead = utcnow(), _months_ahead(args)
        for table in tables:
            done = partition_table(conn, table, now=now, months_ahead=ahead)
            if done is None:
                print(f"{table}: already partitioned")
            else:
                print(
                    f"{table}: partitioned by month, {done.rows:,} row(s) kept in "
                    f"{len(done.partitions)} partition(s)"
                )
    return EXIT_OK


def cmd_db_maintain(args: argparse.Namespace) -> int:
    """``db maintain``: create this month's and the next months' partitions."""
    with open_store(args) as store, translating(), store.engine.begin() as conn:
        created = ensure_partitions(conn, now=utcnow(), months_ahead=_months_ahead(args))
    print(f"created {len(created)} partition(s)" + (f": {', '.join(created)}" if created else ""))
    return EXIT_OK


def cmd_db_prune(args: argparse.Namespace) -> int:
    """``db prune --audit-older-than AGE --inference-older-than AGE``: retention."""
    audit = args.audit_older_than
    inference = args.inference_older_than
    if audit is None and inference is None:
        raise CommandFailed("say what to prune: --audit-older-than and/or --inference-older-than")
    with open_store(args) as store:
        done = prune_history(
            store.engine,
            audit_older_than=None if audit is None else arguments.age("--audit-older-than", audit),
            inference_older_than=(
                None if inference is None else arguments.age("--inference-older-than", inference)
            ),
            batch_size=args.batch_size,
        )
    for pruned in done:
        print(pruned.describe())
    return EXIT_OK


def add_history_commands(db_commands: Any) -> None:
    """``partition``, ``maintain`` and ``prune`` on the ``db`` command's subparsers."""
    partition = add_command(
        db_commands,
        "partition",
        cmd_db_partition,
        "partition audit_logs and inference_requests by month, keeping their rows (PostgreSQL)",
    )
    partition.add_argument(
        "tables",
        nargs="*",
        metavar="TABLE",
        help=f"{' and/or '.join(HISTORY_TABLES)} (default both)",
    )
    maintain = add_command(
        db_commands, "maintain", cmd_db_maintain, "create the partitions of the months ahead"
    )
    for needs_months in (partition, maintain):
        needs_months.add_argument(
            "--months-ahead",
            type=int,
            default=None,
            metavar="N",
            help="months after the current one (default: $FLOWSTORE_PARTITIONS_AHEAD, 3)",
        )
    prune = add_command(
        db_commands,
        "prune",
        cmd_db_prune,
        "delete audit entries and inference records older than an age (30d, 12w, ...)",
    )
    prune.add_argument("--audit-older-than", default=None, metavar="AGE")
    prune.add_argument("--inference-older-than", default=None, metavar="AGE")
    prune.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help="rows per DELETE"
    )
