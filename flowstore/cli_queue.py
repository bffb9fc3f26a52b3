"""The queue's command line: ``flowstore worker`` (run a handler on a queue) and ``flowstore
queue status|schedules`` (what the queues hold, and the periodic jobs with their next run).

``add_queue_commands(commands)`` registers them on the ``flowstore`` parser; every command
takes its database from ``--url`` or ``FLOWSTORE_DATABASE_URL``, and fails in one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from flowstore.cli_db import migration_state, require_at_head, require_migrated
from flowstore.cli_store import EXIT_OK, URL_ENV, CommandFailed, add_command, add_url, open_store
from flowstore.errors import translating
from flowstore.models.enums import JobStatus
from flowstore.models.types import utcnow
from flowstore.queue import queue_status
from flowstore.queue.schedules import list_schedules
from flowstore.store import Store
from flowstore.worker import resolve_handler, run_worker

__all__ = ["add_queue_commands", "add_worker_arguments", "cmd_worker"]

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


# -- the worker ------------------------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The worker's options (``flowstore worker``); returns ``parser``."""
    parser.add_argument("--queue", required=True, help="the queue to process")
    parser.add_argument(
        "--handler",
        required=True,
        help="the job handler, as 'package.module:function' (or a flowstore.queue.Tasks)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="worker threads (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="jobs claimed at a time (default 1)")
    parser.add_argument(
        "--lease-seconds", type=float, default=30, help="a claim's lease (default 30)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.5,
        help="idle polling period (default 0.5; PostgreSQL also wakes on NOTIFY)",
    )
    parser.add_argument(
        "--listen-url",
        default=None,
        help="a direct PostgreSQL URL for the wake-up's LISTEN (behind PgBouncer in "
        "transaction pooling; docs/scaling.md)",
    )
    parser.add_argument(
        "--no-listen", action="store_true", help="never LISTEN: wake up by polling only"
    )
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    parser.add_argument(
        "--until-empty", action="store_true", help="stop once the queue has no unfinished job"
    )
    add_url(parser)
    return parser


def cmd_worker(args: argparse.Namespace) -> int:
    """Check the database in one line of output or less, then run the worker until it stops."""
    with open_store(args) as store:
        if store.is_memory:
            raise CommandFailed(
                "a worker needs a database its producers share: "
                f"set {URL_ENV} or pass --url (the in-memory default is private to a process)"
            )
        store.ping()
        require_at_head(migration_state(store, None), " before starting workers")
        url = store.url
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # handlers of the project the worker runs in
    handler = resolve_handler(args.handler)  # a typo in the handler is one line, first
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with Store(url) as store:
        count = run_worker(
            store,
            args.queue,
            handler,
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            poll_interval=args.poll_interval,
            batch=args.batch,
            max_jobs=args.max_jobs,
            until_empty=args.until_empty,
            listen=not args.no_listen,
            listen_url=args.listen_url,
        )
    logging.getLogger("flowstore.worker").info("processed %d job(s)", count)
    return EXIT_OK


# -- status and schedules ------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 120:
        return f"{seconds:.1f}s"
    if whole < 7200:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _first_line(text: str | None) -> str:
    """The line of an error that says the most: a traceback's last."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def cmd_queue_status(args: argparse.Namespace) -> int:
    """``queue status``: per queue and status the counts, the oldest due job's age, dead jobs."""
    with open_store(args) as store:
        require_migrated(migration_state(store, None))
        now = utcnow()
        with translating(), store.engine.connect() as conn:
            found = queue_status(conn, now, queue=args.queue, dead_limit=args.dead)
    if args.json:
        print(json.dumps({"at": now.isoformat(), "queues": [q.as_dict() for q in found]}, indent=2))
        return EXIT_OK
    if not found:
        print("no jobs")
        return EXIT_OK
    statuses = [status.value for status in JobStatus]
    width = max(len("queue"), *(len(q.queue) for q in found))
    print(f"{'queue':<{width}}  " + "  ".join(f"{s:>9}" for s in statuses) + "  oldest due")
    for entry in found:
        counts = "  ".join(f"{entry.counts[s]:>9,}" for s in statuses)
        print(f"{entry.queue:<{width}}  {counts}  {_age(entry.oldest_due_seconds):>10}")
        for dead in entry.dead:
            print(f"  dead {dead.id} (attempts {dead.attempts}): {_first_line(dead.last_error)}")
    return EXIT_OK


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    relative = f"in {_age(delta)}" if delta >= 0 else f"{_age(-delta)} ago"
    return f"{moment.isoformat(timespec='seconds')} ({relative})"


def cmd_queue_schedules(args: argparse.Namespace) -> int:
    """``queue schedules``: the periodic jobs with their next run."""
    with open_store(args) as store:
        require_migrated(migration_state(store, None))
        now = utcnow()
        with translating(), store.engine.connect() as conn:
            found = list_schedules(conn, args.queue)
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                **schedule.__dict__,
                "next_run_at": schedule.next_run_at.isoformat(),
                "last_run_at": schedule.last_run_at.isoformat() if schedule.last_run_at else None,
            }
            for schedule in found
        ]
        print(json.dumps({"at": now.isoformat(), "schedules": rows}, indent=2))
        return EXIT_OK
    if not found:
        print("no schedules")
        return EXIT_OK
    for schedule in found:
        task = f" task {schedule.task}" if schedule.task else ""
        print(
            f"{schedule.queue}/{schedule.name}  {schedule.cron!r}{task}  "
            f"next {_when(schedule.next_run_at, now)}  last {_when(schedule.last_run_at, now)}"
        )
    return EXIT_OK


def add_queue_commands(commands: Any) -> None:
    """``worker`` and ``queue status|schedules``, on the ``flowstore`` parser's subparsers."""
    worker_help = "process jobs of a queue with a handler (stops on SIGTERM, jobs in hand first)"
    worker = commands.add_parser("worker", help=worker_help, description=worker_help)
    add_worker_arguments(worker)
    worker.set_defaults(command=cmd_worker)

    queue = commands.add_parser(
        "queue", help="job queue status and schedules", description="job queue status"
    )
    queue.set_defaults(command=lambda _args: _usage(queue))
    actions = queue.add_subparsers(title="queue commands", metavar="ACTION")
    status = add_command(
        actions,
        "status",
        cmd_queue_status,
        "per queue and status the counts, the oldest due job's age, dead jobs",
    )
    status.add_argument("--queue", default=None, help="one queue only")
    status.add_argument("--dead", type=int, default=5, help="dead jobs shown per queue (5)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    schedules = add_command(
        actions, "schedules", cmd_queue_schedules, "the periodic jobs, with their next run"
    )
    schedules.add_argument("--queue", default=None, help="one queue only")
    schedules.add_argument("--json", action="store_true", help="print the schedules as JSON")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
