"""The factories' foundations: typed names for factory-boy's declarations, ``Parent``, and the
base classes that write through the bound session (``flowstore.testing.binding``)."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import factory.random
from factory import declarations
from factory.alchemy import SQLAlchemyModelFactory
from factory.faker import Faker as _Faker
from sqlalchemy.orm import Session

from flowstore.errors import InvalidInputError, translating
from flowstore.models import Application, Organization, User, uuid7
from flowstore.testing.binding import current_session

__all__ = [
    "RUN_TAG",
    "Dict",
    "EntityFactory",
    "Faker",
    "FlowstoreFactory",
    "LazyAttribute",
    "LazyAttributeSequence",
    "LazyFunction",
    "Parent",
    "SelfAttribute",
    "Sequence",
    "org_id_of",
    "rand",
    "slugify",
]

# factory-boy's declarations are untyped; typed names for them keep this module --strict clean.
Dict: Callable[..., Any] = declarations.Dict
Faker: Callable[..., Any] = _Faker
LazyAttribute: Callable[..., Any] = declarations.LazyAttribute
LazyAttributeSequence: Callable[..., Any] = declarations.LazyAttributeSequence
LazyFunction: Callable[..., Any] = declarations.LazyFunction
SelfAttribute: Callable[..., Any] = declarations.SelfAttribute
Sequence: Callable[..., Any] = declarations.Sequence

# Mixed into sequence-made identifiers so that two test processes writing to one persistent
# database (factories used outside the rolled-back fixtures) do not collide either.
RUN_TAG = secrets.randbits(40)


def rand() -> Any:
    """factory-boy's random generator (seeded by ``factory.random.reseed_random``)."""
    return factory.random.randgen


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "org"


class Parent(declarations.SubFactory):
    """A required parent made by its factory, unless the call passes the parent's id (or
    another field named in ``unless``): ``UserFactory(org_id=o.id)`` makes no organization."""

    def __init__(self, parent_factory: Any, *, unless: tuple[str, ...], **defaults: Any) -> None:
        super().__init__(parent_factory, **defaults)  # type: ignore[no-untyped-call]
        self.unless = unless

    def evaluate(self, instance: Any, step: Any, extra: Any) -> Any:
        # ``step.builder.extras``: the keyword arguments of this (sub)factory call.
        if any(name in step.builder.extras for name in self.unless):
            return None
        return super().evaluate(instance, step, extra)  # type: ignore[no-untyped-call]


ModelT = TypeVar("ModelT")


class FlowstoreFactory(SQLAlchemyModelFactory, Generic[ModelT]):
    """Base of the factories: the bound session, and each insert flushed in its own savepoint
    (a failed one leaves the session usable and raises the flowstore error). Subclasses name
    their model twice: ``Meta.model`` for factory-boy, the type argument for type checkers
    (``create()`` and ``build()`` return it; a bare call is factory-boy's, untyped)."""

    class Meta:
        abstract = True
        sqlalchemy_session_factory = current_session
        sqlalchemy_session_persistence = "flush"

    @classmethod
    def build(cls, **kwargs: Any) -> ModelT:
        """An unsaved instance (parents unsaved too); needs no session."""
        built: ModelT = super().build(**kwargs)
        return built

    @classmethod
    def create(cls, **kwargs: Any) -> ModelT:
        """A saved instance, flushed through the bound session (same as calling the factory;
        typed, for tests checked with ``mypy --strict``)."""
        created: ModelT = super().create(**kwargs)
        return created

    @classmethod
    def _create(cls, model_class: type[Any], *args: Any, **kwargs: Any) -> Any:
        # Looked up per call, not stored on ``_meta`` as factory-boy does, so that subclasses
        # defined after a first use still declare cleanly and a rebinding takes effect at once.
        meta: Any = cls._meta
        session_factory = meta.sqlalchemy_session_factory
        session = session_factory() if session_factory else meta.sqlalchemy_session
        if session is None:
            raise InvalidInputError(f"{cls.__name__} has no session to write to")
        if meta.sqlalchemy_get_or_create:
            return cls._get_or_create(model_class, session, args, kwargs)  # type: ignore[no-untyped-call]
        return cls._save(model_class, session, args, kwargs)

    @classmethod
    def _save(
        cls, model_class: type[Any], session: Session, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        instance = model_class(*args, **kwargs)
        with translating():
            with session.begin_nested():
                session.add(instance)
            if getattr(cls._meta, "sqlalchemy_session_persistence", None) == "commit":
                session.commit()
        return instance


class EntityFactory(FlowstoreFactory[ModelT]):
    """Models with the ``Entity`` columns: the id is made up front, so ``build()`` has one too."""

    class Meta:
        abstract = True

    id = LazyFunction(uuid7)


def org_id_of(resolver: Any, *owners: str) -> uuid.UUID:
    """The organization of the first owner given (org, application, user), or of the one whose
    id was passed (looked up in the bound session)."""
    for owner in owners:
        parent = getattr(resolver, owner, None)
        if parent is not None:
            owner_id: uuid.UUID = parent.id if isinstance(parent, Organization) else parent.org_id
            return owner_id
    session = current_session()
    application_id = getattr(resolver, "application_id", None) if "application" in owners else None
    application = session.get(Application, application_id) if application_id else None
    if application is not None:
        return application.org_id
    user_id = getattr(resolver, "user_id", None) if "user" in owners else None
    user = session.get(User, user_id) if user_id else None
    if user is not None:
        return user.org_id
    raise InvalidInputError(f"cannot tell the organization: pass org_id or one of {owners}")
