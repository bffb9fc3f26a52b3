"""flowstore: typed SQLAlchemy 2.x persistence for control-plane services."""

from flowstore.config import Settings
from flowstore.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    ConnectionFailedError,
    FlowstoreError,
    InvalidInputError,
    NotFoundError,
    TenantScopeError,
    TransactionFailedError,
)
from flowstore.spec import Spec, where
from flowstore.store import Store
from flowstore.uow import UnitOfWork

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "ConcurrencyError",
    "ConnectionFailedError",
    "FlowstoreError",
    "InvalidInputError",
    "NotFoundError",
    "Settings",
    "Spec",
    "Store",
    "TenantScopeError",
    "TransactionFailedError",
    "UnitOfWork",
    "__version__",
    "where",
]
