"""``flowstore db init``: the files of a service's own Alembic environment.

It writes ``alembic.ini`` into the service's folder and ``DIR/env.py``, ``DIR/script.py.mako``
and ``DIR/versions/``; env.py is a call to ``flowstore.migration_env.run_service_environment``,
so the logic stays in flowstore and a new flowstore version needs no new env.py. Nothing
existing is overwritten.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from flowstore.errors import InvalidInputError
from flowstore.schema import script_location
from flowstore.service_migrations import MigrationsDir, ServiceEnvironment, valid_service_name

__all__ = ["ServiceScaffold", "default_service_name", "write_service_migrations"]

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_ENV = '''"""Alembic environment of the {name} service, made by `flowstore db init`.

`alembic upgrade heads` applies flowstore's own revisions first, then the service's
(versions/, recorded in the table {version_table}).
Autogenerate and `alembic check` compare the service's own tables only, from
{models}. The database comes from sqlalchemy.url in alembic.ini, else
FLOWSTORE_DATABASE_URL.
"""

from flowstore.migration_env import run_service_environment

run_service_environment(models="{models}", name="{name}")
'''

_INI = """# Alembic configuration of the {name} service, made by `flowstore db init`.
#   FLOWSTORE_DATABASE_URL=postgresql://app@db/app alembic upgrade heads
#   alembic revision --autogenerate -m "what changed"
# flowstore's own revisions come from the installed flowstore; {name}'s are in {directory}.
# The database URL comes from FLOWSTORE_DATABASE_URL unless sqlalchemy.url is set here.
[alembic]
script_location = {location}
prepend_sys_path = .
path_separator = os
file_template = %%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


def default_service_name(models: str) -> str:
    """The name a service gets from its models module: the top package, lower-cased."""
    return models.partition(".")[0].lower()


@dataclass(frozen=True)
class ServiceScaffold:
    """What ``write_service_migrations`` wrote."""

    service: ServiceEnvironment
    ini: Path
    directory: Path
    files: tuple[Path, ...]


def write_service_migrations(
    directory: MigrationsDir,
    models: str,
    *,
    name: str | None = None,
    folder: MigrationsDir | None = None,
) -> ServiceScaffold:
    """Write a service's Alembic environment: ``alembic.ini`` in ``folder`` (default: the
    current one) and ``directory``'s env.py, script.py.mako and versions/. Refuses, before
    writing anything, an existing alembic.ini or env.py and an invalid module or name."""
    if not _MODULE.fullmatch(models):
        raise InvalidInputError(f"--models {models!r} is not a dotted module name")
    service = ServiceEnvironment(
        name=valid_service_name(name if name is not None else default_service_name(models)),
        models=models,
    )
    base = Path(folder if folder is not None else Path.cwd()).resolve()
    ini = base / "alembic.ini"
    target = (base / directory).resolve()
    for existing in (ini, target / "env.py"):
        if existing.exists():
            raise InvalidInputError(f"{existing} already exists: not overwriting it")
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target} exists and is not a directory")

    shown = Path(os.path.relpath(target, base)) if target.is_relative_to(base) else target
    location = f"%(here)s/{shown.as_posix()}" if not shown.is_absolute() else str(shown)
    versions = target / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    env = target / "env.py"
    env.write_text(
        _ENV.format(name=service.name, models=service.models, version_table=service.version_table),
        encoding="utf-8",
    )
    template = target / "script.py.mako"
    if not template.exists():
        template.write_text(
            (script_location() / "script.py.mako").read_text(encoding="utf-8"), encoding="utf-8"
        )
    ini.write_text(
        _INI.format(name=service.name, directory=shown.as_posix(), location=location),
        encoding="utf-8",
    )
    return ServiceScaffold(service, ini, target, (ini, env, template, versions))
