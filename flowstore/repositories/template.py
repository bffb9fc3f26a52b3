"""Templates: lookup by provider, and matching on their JSON ``attributes``.

Attribute matching is containment (every given key has the given value), compiled per
dialect: ``@>`` on PostgreSQL (JSONB), ``JSON_CONTAINS`` on MySQL/MariaDB, and ``json_each``
on SQLite, where nested values are then checked in Python.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal_column, select, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from flowstore.errors import InvalidInputError
from flowstore.models import Template
from flowstore.repositories.base import Repository, translated
from flowstore.spec import check_json


def json_contains(document: Any, wanted: Any) -> bool:
    """Containment with PostgreSQL's ``@>`` semantics, in Python."""
    if isinstance(wanted, dict):
        return isinstance(document, dict) and all(
            key in document and json_contains(document[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(document, list) and all(
            any(json_contains(item, w) for item in document) for w in wanted
        )
    if isinstance(wanted, bool) or isinstance(document, bool):
        return type(wanted) is type(document) and wanted == document
    return bool(document == wanted)


def _sqlite_scalar_match(key: str, value: Any) -> ColumnElement[bool]:
    each = func.json_each(Template.attributes).table_valued("key", "value", "type").alias("je")
    if value is None:
        kind = each.c.type == "null"
    elif isinstance(value, bool):
        kind = each.c.type == ("true" if value else "false")
    elif isinstance(value, int | float):
        kind = and_(each.c.type.in_(["integer", "real"]), each.c.value == value)
    else:
        kind = and_(each.c.type == "text", each.c.value == value)
    return exists(select(literal_column("1")).select_from(each).where(each.c.key == key, kind))


class TemplateRepository(Repository[Template]):
    model = Template

    @translated
    def get_by_provider_type(self, provider_type: str) -> builtins.list[Template]:
        """Templates of one provider type."""
        return self.list(provider_type=provider_type)

    @translated
    def find_by_attributes(self, attributes: dict[str, Any]) -> builtins.list[Template]:
        """Templates whose ``attributes`` contain every given key with the given value."""
        if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
            raise InvalidInputError("find_by_attributes takes a dict with string keys")
        check_json("attributes", attributes)  # NUL, NaN, depth: refused before any SQL
        try:
            encoded = json.dumps(attributes, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"attributes must be JSON values: {exc}") from None
        attributes = json.loads(encoded)  # as stored: tuples are arrays
        dialect = self.session.get_bind().dialect.name
        nested = {k: v for k, v in attributes.items() if isinstance(v, dict | list)}
        if not attributes:
            clause: ColumnElement[bool] = true()
        elif dialect == "postgresql":
            clause = Template.attributes.op("@>")(type_coerce(attributes, JSONB))
        elif dialect in {"mysql", "mariadb"}:
            clause = func.json_contains(Template.attributes, encoded) == 1
        else:
            scalars = [_sqlite_scalar_match(k, v) for k, v in attributes.items() if k not in nested]
            clause = and_(true(), *scalars)
        stmt = select(Template).where(clause).order_by(*self._ordering(None))
        found = builtins.list(self.session.scalars(stmt).all())
        if dialect == "sqlite" and nested:
            found = [t for t in found if json_contains(t.attributes, nested)]
        elif dialect in {"mysql", "mariadb"} and attributes:
            # JSON_CONTAINS compares numbers as doubles (2**53 + 1 matches 2**53): confirm.
            found = [t for t in found if json_contains(t.attributes, attributes)]
        return found
