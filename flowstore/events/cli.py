"""``flowstore events relay`` and ``flowstore events prune``: the event log's commands.

``flowstore.cli.build_parser`` adds them with :func:`add_commands`. Failures are
``flowstore.errors`` errors, which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from flowstore import arguments
from flowstore.config import Settings
from flowstore.engine import is_memory_sqlite, normalize_url
from flowstore.errors import InvalidInputError
from flowstore.events.relay import DEFAULT_STREAM, RedisRelay, connect_redis
from flowstore.store import Store

__all__ = ["add_commands", "parse_age"]


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` as a ``timedelta``."""
    return arguments.age("--older-than", text)


def _store(args: argparse.Namespace) -> Store:
    """The store named by ``--url`` or ``FLOWSTORE_DATABASE_URL``; the in-memory default is
    refused (its log is private to this process and empty)."""
    settings = Settings()
    url = getattr(args, "url", None) or settings.database_url
    parsed = normalize_url(url)
    if is_memory_sqlite(parsed):
        raise InvalidInputError(
            "the event log is in the application's database: set FLOWSTORE_DATABASE_URL or "
            "pass --url (the in-memory default is private to a process)"
        )
    return Store(parsed, settings=settings)


def cmd_relay(args: argparse.Namespace) -> int:
    """``events relay --to redis://HOST/DB``: publish committed events to a Redis stream."""
    client = connect_redis(args.to)
    with _store(args) as store:
        relay = RedisRelay(
            store.events, client, stream=args.stream, batch=args.batch, maxlen=args.maxlen
        )
        try:
            count = relay.run(until_empty=args.until_empty, interval=args.interval)
        finally:
            client.close()
        print(f"published {count:,} event(s) to {args.stream}; checkpoint {relay.checkpoint()}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """``events prune --older-than 30d``: delete events older than that."""
    age = parse_age(args.older_than)
    with _store(args) as store:
        removed = store.events.prune(age)
    print(f"pruned {removed:,} event(s) older than {args.older_than}")
    return 0


def _url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="database URL (default: $FLOWSTORE_DATABASE_URL)",
    )


def add_commands(commands: Any) -> None:
    """Add ``events relay`` and ``events prune`` to the ``flowstore`` subcommands."""
    events = commands.add_parser(
        "events", help="the change-event log", description="the change-event log"
    )
    events.set_defaults(command=lambda _args: _usage(events))
    actions = events.add_subparsers(title="events commands", metavar="ACTION")
    relay_help = "publish committed events to a Redis stream (at least once, resumable)"
    relay = actions.add_parser("relay", help=relay_help, description=relay_help)
    _url(relay)
    relay.add_argument("--to", required=True, metavar="REDIS_URL", help="redis://HOST[:PORT]/DB")
    relay.add_argument("--stream", default=DEFAULT_STREAM, help=f"default: {DEFAULT_STREAM}")
    relay.add_argument(
        "--until-empty", action="store_true", help="stop once every event is published"
    )
    relay.add_argument("--batch", type=int, default=500, help="events per append (default 500)")
    relay.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls when idle"
    )
    relay.add_argument(
        "--maxlen", type=int, default=None, help="trim the stream to about this many entries"
    )
    relay.set_defaults(command=cmd_relay)
    prune_help = "delete events older than an age (30d, 12h, ...)"
    prune = actions.add_parser("prune", help=prune_help, description=prune_help)
    _url(prune)
    prune.add_argument("--older-than", required=True, metavar="AGE", help="like 30d, 12h, 90m")
    prune.set_defaults(command=cmd_prune)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
