"""Alembic environment for flowstore's own revisions (see flowstore.migration_env).

The database comes from, in order: a ``Connection`` (or ``Engine``) in
``config.attributes["connection"]`` (how ``Store.upgrade()`` and the tests call it), the
``sqlalchemy.url`` option, or ``FLOWSTORE_DATABASE_URL`` through flowstore's settings.
"""

from flowstore.migration_env import run_flowstore_environment

run_flowstore_environment()
