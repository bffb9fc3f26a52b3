"""Alembic environment of the gateway service, made by `flowstore db init`.

`alembic upgrade heads` applies flowstore's own revisions first, then the service's
(versions/, recorded in the table gateway_alembic_version).
Autogenerate and `alembic check` compare the service's own tables only, from
gateway.models. The database comes from sqlalchemy.url in alembic.ini, else
FLOWSTORE_DATABASE_URL.
"""

from flowstore.migration_env import run_service_environment

run_service_environment(models="gateway.models", name="gateway")
