"""Settings read from ``FLOWSTORE_*`` environment variables (pydantic-settings).

With nothing configured the database is an in-memory SQLite database, so flowstore runs with
zero set-up. Secrets never appear in a repr: the URL's password is masked and the API-key
secret is a ``SecretStr``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flowstore.errors import mask_secrets

MEMORY_URL = "sqlite://"

# Used when FLOWSTORE_API_KEY_SECRET is not set; fine for development, not for production.
DEV_API_KEY_SECRET = "flowstore-development-key-do-not-use-in-production"  # noqa: S105


class Settings(BaseSettings):
    """flowstore configuration; every field is read from ``FLOWSTORE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FLOWSTORE_", extra="ignore")

    database_url: str = Field(default=MEMORY_URL, description="SQLAlchemy URL of the database")
    replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="read replicas' URLs (comma-separated in the environment): "
        "read-only units of work read there (docs/scaling.md)",
    )
    replica_max_lag: float = Field(
        default=1.0,
        gt=0,
        description="seconds a read-only unit of work waits for a replica to replay this "
        "store's last commit; a replica that takes longer is skipped",
    )
    replica_retry_after: float = Field(
        default=5.0, gt=0, description="seconds a skipped (lagging or silent) replica rests"
    )
    pool_size: int = Field(default=5, ge=1, description="connections kept open in the pool")
    max_overflow: int = Field(default=10, ge=0, description="extra connections under load")
    pool_timeout: float = Field(default=30.0, gt=0, description="seconds to wait for a connection")
    pool_recycle: int = Field(default=1800, description="seconds before a connection is renewed")
    pool_pre_ping: bool = Field(default=True, description="test a connection before using it")
    pool_pre_ping_idle: float = Field(default=5.0, ge=0, description="...idle this long, s")
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a connection")
    statement_timeout: float | None = Field(default=None, gt=0, description="statement limit, s")
    echo: bool = Field(default=False, description="log every SQL statement")
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0, description="SQLite lock wait")
    migrations: str | None = Field(
        default=None,
        description="a service's migrations directory (from `flowstore db init`), "
        "applied and checked with flowstore's own",
    )
    events: bool = Field(default=True, description="record change events (flowstore.events)")
    cache_url: str | None = Field(default=None, description="Redis URL of the read cache")
    api_key_secret: SecretStr = Field(
        default=SecretStr(DEV_API_KEY_SECRET),
        description="server-side HMAC key for API-key hashes",
    )
    prepared_statements: bool = Field(
        default=True,
        description="let psycopg prepare statements it runs often, on the server (PostgreSQL); "
        "false behind PgBouncer in transaction pooling (docs/scaling.md)",
    )
    partitions_ahead: int = Field(
        default=3,
        ge=0,
        description="months of partitions `flowstore db maintain` and the worker keep ready "
        "ahead of the current one, for partitioned history tables (PostgreSQL; docs/scaling.md)",
    )
    network_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a statement's round trip may take before the connection counts "
        "as lost (ConnectionFailedError); see docs/faults.md",
    )

    @field_validator("database_url")
    @classmethod
    def _url_not_blank(cls, value: str) -> str:
        value = value.strip()
        return value or MEMORY_URL

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("migrations")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            masked = name in {"database_url", "cache_url"} and isinstance(value, str)
            if name == "replica_urls":
                value = [mask_secrets(url) for url in value]
            yield name, (mask_secrets(value) if masked else value)

    @property
    def safe_database_url(self) -> str:
        """The database URL with its password masked, for logs and messages."""
        return mask_secrets(self.database_url)
