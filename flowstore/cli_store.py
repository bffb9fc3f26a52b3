"""What every ``flowstore`` command shares: its expected failure, its database and the
``--url`` option.

A command takes its database from ``--url``, else ``FLOWSTORE_DATABASE_URL``, else (with a
note) the in-memory default; an expected failure is ``CommandFailed``, whose message is the
one line the user sees.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowstore.config import Settings
from flowstore.engine import is_memory_sqlite, normalize_url
from flowstore.store import Store

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "URL_ENV",
    "CommandFailed",
    "add_command",
    "add_url",
    "configured_url",
    "note",
    "open_store",
]

EXIT_OK = 0
EXIT_FAILURE = 1

URL_ENV = "FLOWSTORE_DATABASE_URL"


class CommandFailed(Exception):
    """An expected failure of a command; its message is the one line the user sees."""


def configured_url(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--url``, else ``FLOWSTORE_DATABASE_URL``, else ``None`` (nothing configured)."""
    given: str | None = getattr(args, "url", None)
    if given is not None:
        if not given.strip():
            raise CommandFailed("--url is empty")
        return given.strip()
    if "database_url" in settings.model_fields_set:
        return settings.database_url
    return None


def open_store(
    args: argparse.Namespace, *, default: str | None = None, create: bool = False
) -> Store:
    """The store the command works on.

    With nothing configured, ``default`` is used, or else the in-memory database (with a note,
    since nothing done there outlives the command). A SQLite file must exist unless ``create``:
    a typo in a path should not silently make an empty database.
    """
    settings = Settings()
    url = configured_url(args, settings)
    if url is None:
        url = default
        if url is None:
            note(f"{URL_ENV} is not set and no --url given: using a throwaway in-memory database")
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


def note(message: str) -> None:
    """A remark on stderr that is not an error (the exit status stays 0)."""
    print(f"note: {message}", file=sys.stderr)


def add_url(
    parser: argparse.ArgumentParser,
    fallback: str = "an in-memory SQLite database",
    dest: str = "url",
) -> None:
    """The ``--url`` option (on a command, or before it with ``dest="global_url"``)."""
    parser.add_argument(
        "--url",
        dest=dest,
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"database URL (default: ${URL_ENV}, else {fallback})",
    )


def add_command(
    subparsers: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help_text: str,
    **url_fallback: str,
) -> argparse.ArgumentParser:
    """A subcommand ``name`` run by ``handler``, with ``--url``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    add_url(parser, **url_fallback)
    parser.set_defaults(command=handler)
    return parser
