"""The bodies of Alembic's env.py: flowstore's own, and the one a service's env.py calls.

The database comes from, in order: a ``Connection`` (or ``Engine``) in
``config.attributes["connection"]`` (how the schema layer calls Alembic), the
``sqlalchemy.url`` option of alembic.ini, or ``FLOWSTORE_DATABASE_URL``.

A service's environment (``run_service_environment``, written into ``DIR/env.py`` by
``flowstore db init``) imports the service's models, so that they are on
``flowstore.models.Base.metadata``; on ``upgrade`` it first brings flowstore's own revisions to
head on the same connection and transaction, then runs the service's, recorded in the
service's own version table. Autogenerate and ``alembic check`` see the service's tables only
(``flowstore.migration_hooks``).
"""

from __future__ import annotations

import importlib
import logging.config
from collections.abc import Callable
from functools import partial
from typing import Any

from alembic import context
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, make_url

from flowstore import schema
from flowstore.config import Settings
from flowstore.engine import build_engine
from flowstore.errors import InvalidInputError
from flowstore.migration_hooks import (
    filled_table_options,
    flowstore_include_object,
    keep_indexes_with_dropped_tables,
    render_flowstore_type,
    service_include_name,
    service_include_object,
)
from flowstore.models import Base
from flowstore.service_migrations import SERVICE_ATTRIBUTE, ServiceEnvironment, valid_service_name

__all__ = ["run_flowstore_environment", "run_service_environment"]


def _configure_logging(config: Config) -> None:
    """Apply alembic.ini's logging sections, unless the caller asked Alembic not to."""
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _common_options(dialect_name: str) -> dict[str, Any]:
    """What both trees configure: the shared metadata, batch mode where ALTER is limited."""
    return {
        "target_metadata": Base.metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        "transaction_per_migration": False,
    }


def _run_online(config: Config, migrate: Callable[[Connection], None], *, required: bool) -> None:
    """Run ``migrate`` on the given connection, or on one transaction of the configured
    database; ``required`` refuses to fall back to the (pointless) in-memory default."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        migrate(given)
        return
    if isinstance(given, Engine):
        engine = given
    else:
        settings = Settings()
        engine = build_engine(_database_url(config, settings, required=required), settings)
    try:
        with engine.begin() as connection:
            migrate(connection)
    finally:
        if not isinstance(given, Engine):
            engine.dispose()


def _database_url(config: Config, settings: Settings, *, required: bool) -> str:
    """alembic.ini's ``sqlalchemy.url``, else ``FLOWSTORE_DATABASE_URL`` (or its default)."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    if required and "database_url" not in settings.model_fields_set:
        raise CommandError(
            "no database to migrate: set FLOWSTORE_DATABASE_URL (or sqlalchemy.url in alembic.ini)"
        )
    return settings.database_url


def _run_offline(
    config: Config, options_for: Callable[[str], dict[str, Any]], *, required: bool
) -> None:
    """``--sql``: write the statements instead of running them; ``options_for`` takes the
    database's dialect name."""
    url = _database_url(config, Settings(), required=required)
    options = options_for(make_url(url).get_backend_name())
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **options)
    with context.begin_transaction():
        context.run_migrations()


# -- flowstore's own tree ----------------------------------------------------------------------


def run_flowstore_environment() -> None:
    """The body of flowstore's env.py (``migrations/env.py``, also in the wheel)."""
    config = context.config
    _configure_logging(config)
    if context.is_offline_mode():
        _run_offline(config, _common_options, required=False)
        return

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            include_object=flowstore_include_object(connection.dialect.name),
            **_common_options(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()

    _run_online(config, migrate, required=False)


# -- a service's tree --------------------------------------------------------------------------


def _import_models(service: ServiceEnvironment) -> None:
    try:
        importlib.import_module(service.models)
    except ImportError as exc:
        raise CommandError(
            f"cannot import {service.name}'s models module {service.models!r} (named in its "
            f"env.py): {exc}; run from the service's folder or put it on PYTHONPATH"
        ) from None
    except Exception as exc:  # the service's own code failed while it was imported
        raise CommandError(
            f"importing {service.name}'s models module {service.models!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _service_options(service: ServiceEnvironment, dialect_name: str) -> dict[str, Any]:
    return {
        **_common_options(dialect_name),
        "version_table": service.version_table,
        "include_object": service_include_object(dialect_name),
        "include_name": service_include_name(),
        "render_item": render_flowstore_type,
        "process_revision_directives": keep_indexes_with_dropped_tables,
    }


def _is_upgrade(environment: EnvironmentContext) -> bool:
    """Whether the running command is ``upgrade``: Alembic hands env.py the command's step
    function, named after the command, and no other sign of it."""
    step = environment.context_opts.get("fn")
    return getattr(step, "__name__", None) == "upgrade"


def run_service_environment(*, models: str, name: str) -> None:
    """The body of a service's env.py: ``models`` is the module defining the service's models
    (on ``flowstore.models.Base``); ``name`` names its version table, ``<name>_alembic_version``.
    """
    config = context.config
    try:
        service = ServiceEnvironment(name=valid_service_name(name), models=models)
    except InvalidInputError as exc:
        raise CommandError(str(exc)) from None
    config.attributes[SERVICE_ATTRIBUTE] = service
    _configure_logging(config)
    _import_models(service)
    if context.is_offline_mode():  # the service's revisions only; flowstore's have their own
        _run_offline(config, partial(_service_options, service), required=True)
        return

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection, **_service_options(service, connection.dialect.name)
        )
        environment = context.get_context().environment_context
        if environment is not None and _is_upgrade(environment):
            try:
                schema.upgrade_on(connection, "heads")
            except InvalidInputError as exc:
                raise CommandError(f"flowstore's revisions: {exc}") from None
            finally:
                # flowstore's run installed its own environment as `alembic.context` and
                # removed it when done; put the service's back for the rest of this run.
                environment.__enter__()
        with filled_table_options(connection), context.begin_transaction():
            context.run_migrations()

    _run_online(config, migrate, required=True)
