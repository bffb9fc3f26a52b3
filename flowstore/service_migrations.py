"""A service's own Alembic revision tree, kept next to flowstore's.

``flowstore db init`` writes the tree: ``DIR/env.py`` (a call to
``flowstore.migration_env.run_service_environment``), ``DIR/script.py.mako`` and
``DIR/versions/``. Its history is its own, recorded in its own version table
(``<name>_alembic_version``), and stacks on flowstore's head: the environment applies
flowstore's revisions before the service's. This module opens such a directory for the schema
layer; Alembic's errors about it become ``InvalidInputError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine

from flowstore.errors import InvalidInputError

__all__ = [
    "SERVICE_ATTRIBUTE",
    "MigrationsDir",
    "ServiceEnvironment",
    "ServiceTree",
    "valid_service_name",
]

MigrationsDir = str | os.PathLike[str]

# The key under which a service's env.py publishes its ServiceEnvironment in
# ``Config.attributes``, Alembic's channel between a command's caller and env.py.
SERVICE_ATTRIBUTE = "flowstore.service"

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def valid_service_name(name: str) -> str:
    """``name`` if it can name a version table on every backend, else ``InvalidInputError``."""
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid service name {name!r}: use 1 to 40 lower-case letters, digits and "
            "underscores, starting with a letter (it names the version table)"
        )
    return name


@dataclass(frozen=True)
class ServiceEnvironment:
    """What a service's env.py declares: its name and the module that defines its models."""

    name: str
    models: str

    @property
    def version_table(self) -> str:
        """The table that records the service tree's applied revision."""
        return f"{self.name}_alembic_version"


@contextmanager
def _tree_errors(directory: Path) -> Iterator[None]:
    """A broken or unknown revision of the service's tree is bad input."""
    try:
        yield
    except (CommandError, RevisionError) as exc:
        raise InvalidInputError(f"the migrations in {str(directory)!r}: {exc}") from None


class ServiceTree:
    """The revision tree of a service, in the directory ``flowstore db init`` wrote."""

    def __init__(self, migrations: MigrationsDir) -> None:
        self.directory = Path(migrations).expanduser().resolve()
        if not (self.directory / "env.py").is_file():
            raise InvalidInputError(
                f"{str(self.directory)!r} holds no env.py: make the service's migrations "
                "with `flowstore db init DIR --models MODULE`"
            )

    def config(self, connection: Connection | None = None) -> Config:
        """An Alembic ``Config`` for the tree; with ``connection``, env.py migrates through it."""
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.set_main_option("path_separator", "os")
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def scripts(self) -> ScriptDirectory:
        """The tree's revision scripts."""
        with _tree_errors(self.directory):
            return ScriptDirectory.from_config(self.config())

    def revisions(self) -> tuple[Script, ...]:
        """The tree's revisions, newest first."""
        with _tree_errors(self.directory):
            return tuple(self.scripts().walk_revisions())

    def head(self) -> str | None:
        """The tree's newest revision, ``None`` before its first; two heads are refused."""
        heads = self.scripts().get_heads()
        if len(heads) > 1:
            raise InvalidInputError(
                f"the migrations in {str(self.directory)!r} have {len(heads)} heads "
                f"({', '.join(sorted(heads))}): join them with `alembic merge heads`"
            )
        return heads[0] if heads else None

    def read_on(self, connection: Connection) -> tuple[ServiceEnvironment, str | None]:
        """Run the tree's env.py without changing anything: the environment it declares (its
        models are imported on the way) and the tree's revision applied to the database."""
        config = self.config(connection)
        applied: list[tuple[str, ...]] = []

        def read_only(heads: Any, _context: Any) -> list[Any]:
            applied.append(tuple(heads))
            return []

        scripts = self.scripts()
        with (
            _tree_errors(self.directory),
            EnvironmentContext(config, scripts, fn=read_only, dont_mutate=True),
        ):
            scripts.run_env()
        declared = config.attributes.get(SERVICE_ATTRIBUTE)
        if not isinstance(declared, ServiceEnvironment):
            raise InvalidInputError(
                f"{str(self.directory / 'env.py')!r} does not run flowstore's service "
                "environment (flowstore.migration_env.run_service_environment)"
            )
        heads = applied[0] if applied else ()
        if len(heads) > 1:
            raise InvalidInputError(
                f"{declared.version_table} holds {len(heads)} revisions "
                f"({', '.join(sorted(heads))}): join the branches with `alembic merge heads`"
            )
        return declared, heads[0] if heads else None

    def declared(self) -> ServiceEnvironment:
        """What the tree's env.py declares, read without the service's database (on a private
        in-memory one)."""
        engine = create_engine("sqlite://")
        try:
            with engine.connect() as connection:
                return self.read_on(connection)[0]
        finally:
            engine.dispose()

    def current_on(self, connection: Connection) -> str | None:
        """The tree's revision applied to the database, or ``None``."""
        return self.read_on(connection)[1]
