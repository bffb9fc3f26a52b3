"""Alembic environment for flowstore.

The database comes from, in order: a ``Connection`` (or ``Engine``) in
``config.attributes["connection"]`` (how ``Store.upgrade()`` and the tests call it), the
``sqlalchemy.url`` option, or ``FLOWSTORE_DATABASE_URL`` through flowstore's settings.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection, Engine

from flowstore.config import Settings
from flowstore.engine import build_engine
from flowstore.models import Base
from flowstore.schema import include_object_for

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        include_object=include_object_for(connection.dialect.name),
        transaction_per_migration=False,
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return
    if isinstance(given, Engine):
        engine = given
    else:
        url = config.get_main_option("sqlalchemy.url") or Settings().database_url
        engine = build_engine(url, Settings())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if not isinstance(given, Engine):
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
