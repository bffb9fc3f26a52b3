"""flowstore: typed SQLAlchemy 2.x persistence for control-plane services.

The names below are imported on first use, so ``import flowstore.errors`` (or any one module)
loads only what it needs: not Alembic, not pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowstore.config import Settings
    from flowstore.errors import (
        AlreadyExistsError,
        ConcurrencyError,
        ConnectionFailedError,
        FlowstoreError,
        InvalidInputError,
        NotFoundError,
        ReadOnlyError,
        StatementTimeoutError,
        TenantScopeError,
        TransactionFailedError,
    )
    from flowstore.repositories.base import Repository
    from flowstore.spec import Spec, where
    from flowstore.store import Store
    from flowstore.uow import UnitOfWork, repository

__version__ = "0.1.0"

_EXPORTS = {
    "AlreadyExistsError": "flowstore.errors",
    "ConcurrencyError": "flowstore.errors",
    "ConnectionFailedError": "flowstore.errors",
    "FlowstoreError": "flowstore.errors",
    "InvalidInputError": "flowstore.errors",
    "NotFoundError": "flowstore.errors",
    "ReadOnlyError": "flowstore.errors",
    "StatementTimeoutError": "flowstore.errors",
    "TenantScopeError": "flowstore.errors",
    "TransactionFailedError": "flowstore.errors",
    "Repository": "flowstore.repositories.base",
    "Settings": "flowstore.config",
    "Spec": "flowstore.spec",
    "Store": "flowstore.store",
    "UnitOfWork": "flowstore.uow",
    "repository": "flowstore.uow",
    "where": "flowstore.spec",
}

__all__ = [
    "AlreadyExistsError",
    "ConcurrencyError",
    "ConnectionFailedError",
    "FlowstoreError",
    "InvalidInputError",
    "NotFoundError",
    "ReadOnlyError",
    "Repository",
    "Settings",
    "Spec",
    "StatementTimeoutError",
    "Store",
    "TenantScopeError",
    "TransactionFailedError",
    "UnitOfWork",
    "__version__",
    "repository",
    "where",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
