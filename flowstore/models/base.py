"""The declarative base every flowstore model (and a service's own) derives from, and the
``Entity`` mixin of records with a UUIDv7 id, timestamps and an optimistic-lock counter.

``Base`` carries flowstore's metadata (one naming convention, so constraint names are stable on
every backend) and its portable types (``flowstore.models.types``): ``Mapped[dict[str, Any]]``
is JSON (JSONB on PostgreSQL) whose in-place changes are saved
(``flowstore.models.mutable_json``), ``datetime`` is timezone-aware UTC, ``uuid.UUID`` accepts
its string form, ``Decimal`` is an exact amount.

Tenancy is declared on the model: a model whose rows belong to an organization has an
``org_id`` column (or names its tenant column in ``__tenant_column__``: ``Organization`` says
``"id"``); every other model on ``Base`` is platform-level data (``tenant_column``).
"""

from __future__ import annotations

import uuid
import weakref
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import JSON, Integer, MetaData, String, Table, event, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, declared_attr, mapped_column

from flowstore.models import mutable_json
from flowstore.models.types import (
    GUID,
    CopyOf,
    JSONType,
    Money,
    UTCDateTime,
    as_uuid,
    str_enum,
    utcnow,
    uuid7,
)

__all__ = [
    "GUID",
    "NAMING_CONVENTION",
    "Base",
    "CopyOf",
    "Entity",
    "JSONType",
    "Money",
    "UTCDateTime",
    "as_uuid",
    "str_enum",
    "tenant_column",
    "utcnow",
    "uuid7",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The default tenant column: a model on ``Base`` with this column belongs to organizations.
TENANT_COLUMN: Final = "org_id"
_UNKNOWN: Final[Any] = object()
_TENANT_COLUMNS: weakref.WeakKeyDictionary[Mapper[Any], str | None] = weakref.WeakKeyDictionary()


class Base(DeclarativeBase):
    """Declarative base of every flowstore model; its metadata carries the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        uuid.UUID: GUID(),
        Decimal: Money(),
        str: String(255),
    }

    def __repr__(self) -> str:
        ident = getattr(self, "id", None)
        return f"<{type(self).__name__} id={ident}>"


def tenant_column(target: Mapper[Any] | type[Any] | Table) -> str | None:
    """The attribute naming the organization a row belongs to, for a model (its mapper, its
    class, or its table): ``None`` for platform-level models, and for what is not a model on
    ``Base`` (unknown to flowstore)."""
    if isinstance(target, Table):
        for mapper in Base.registry.mappers:
            if mapper.local_table is target:
                return tenant_column(mapper)
        return None
    if not isinstance(target, Mapper):
        found = inspect(target, raiseerr=False)
        if not isinstance(found, Mapper):
            return None
        target = found
    if target not in _TENANT_COLUMNS and target.registry is Base.registry:
        Base.registry.configure()  # declared when the model is configured
    return _TENANT_COLUMNS.get(target)


@event.listens_for(Base, "mapper_configured", propagate=True)
def _configure_model(mapper: Mapper[Any], cls: type[Any]) -> None:
    """Per model on ``Base``: its tenant column, UUID attributes that take strings, and JSON
    attributes whose in-place changes are saved."""
    declared = getattr(cls, "__tenant_column__", _UNKNOWN)
    keys = {prop.key for prop in mapper.column_attrs}
    if declared is _UNKNOWN:
        declared = TENANT_COLUMN if TENANT_COLUMN in keys else None
    elif declared is not None and declared not in keys:
        raise TypeError(f"{cls.__name__}.__tenant_column__ names no mapped column: {declared!r}")
    _TENANT_COLUMNS[mapper] = declared
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1:
            continue
        column_type = prop.columns[0].type
        if isinstance(column_type, GUID):
            event.listen(getattr(cls, prop.key), "set", _to_uuid, retval=True)
        elif isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON):
            mutable_json.track(getattr(cls, prop.key))


def _to_uuid(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return value  # left for the column type to refuse when it is written
    return value


class Entity(Base):
    """Abstract model with the columns every record has.

    ``lock_version`` is the optimistic-lock counter: SQLAlchemy adds ``WHERE lock_version = :v``
    to every UPDATE/DELETE and raises when no row matched (mapped to ``ConcurrencyError``).
    """

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7, sort_order=-10)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, sort_order=90)
    updated_at: Mapped[datetime] = mapped_column(
        default=CopyOf("created_at", utcnow), onupdate=utcnow, sort_order=91
    )
    lock_version: Mapped[int] = mapped_column(Integer, nullable=False, sort_order=92)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.lock_version}
