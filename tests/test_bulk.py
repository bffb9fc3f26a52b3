"""``add_many``'s bulk path: one batched INSERT, and objects that behave as flushed ones do.

Every test runs on every backend: the objects must be persistent in the session afterwards
(ids, timestamps, ``lock_version`` set; in the identity map), update and delete with their
version checks, go back to transient on rollback, and a failed batch writes nothing and leaves
the objects as they were given.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flowstore import Store
from flowstore.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    InvalidInputError,
    NotFoundError,
    translate,
)
from flowstore.models import (
    Base,
    CopyOf,
    Deployment,
    DeploymentNode,
    DeploymentStatus,
    Organization,
    Request,
    RequestStatus,
    Template,
)
from flowstore.models.base import Money
from flowstore.repositories.bulk import insert_many
from flowstore.testing import factories
from flowstore.testing.factories import DeploymentFactory, using_session
from flowstore.writes import send
from flowstore.writes.plan import plan_for
from flowstore.writes.send import driver_insert


def deployments(n: int, prefix: str = "svc") -> list[Deployment]:
    return [Deployment(name=f"{prefix}-{i}", version="1.0.0", config={"i": i}) for i in range(n)]


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements sent inside the block (executemany counts once per call)."""
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        sent.append(statement.strip().split()[0].upper())

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


@contextmanager
def created(base: type[DeclarativeBase], engine: Engine) -> Iterator[None]:
    """The tables of a test's own models, created for the block and dropped after it."""
    base.metadata.create_all(engine)
    try:
        yield
    finally:
        base.metadata.drop_all(engine)


def test_add_many_takes_the_bulk_path_and_fills_what_a_flush_fills(store: Store) -> None:
    items = deployments(50)
    with store.unit_of_work() as uow, statements(store) as sent:
        returned = uow.deployments.add_many(items)
        assert returned == items
        assert sent.count("INSERT") == 1  # one executemany, not one statement per object
        for item in items:
            state = inspect(item)
            assert state.persistent and not state.modified
            assert item.id.version == 7
            assert (
                item.created_at.tzinfo is not None
                and item.created_at.utcoffset() == UTC.utcoffset(None)
            )
            assert item.lock_version == 1
            assert item.status is DeploymentStatus.PENDING  # the column default
        sent.clear()
        assert uow.session.get(Deployment, items[7].id) is items[7]  # from the identity map
        assert sent == []
    with store.unit_of_work() as uow:
        stored = {d.id: d for d in uow.deployments.list()}
        assert set(stored) == {item.id for item in items}
        assert stored[items[3].id].config == {"i": 3}
        assert stored[items[3].id].created_at == items[3].created_at


def test_given_values_are_kept(store: Store) -> None:
    ident = uuid.uuid4()
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    item = Deployment(
        id=ident, name="given", version="2", status=DeploymentStatus.RUNNING, created_at=when
    )
    with store.unit_of_work() as uow:
        uow.deployments.add_many([item])
    with store.unit_of_work() as uow:
        stored = uow.deployments.get(ident)
        assert stored.created_at == when
        assert stored.status is DeploymentStatus.RUNNING


def test_objects_update_and_delete_afterwards_with_version_checks(store: Store) -> None:
    items = deployments(3)
    with store.unit_of_work() as uow:
        uow.deployments.add_many(items)
        items[0].version = "1.0.1"
        uow.deployments.update(items[0])
        assert items[0].lock_version == 2
        uow.deployments.delete(items[1].id)
    with store.unit_of_work() as uow:
        assert uow.deployments.get(items[0].id).version == "1.0.1"
        assert uow.deployments.get_or_none(items[1].id) is None
    with store.unit_of_work() as uow:
        fresh = deployments(1, "race")
        uow.deployments.add_many(fresh)
        uow.commit()
        with store.unit_of_work() as other:
            other.deployments.get(fresh[0].id).version = "other"
        fresh[0].version = "mine"
        with pytest.raises(ConcurrencyError):
            uow.deployments.update(fresh[0])
        uow.rollback()


def test_a_duplicate_writes_nothing_and_leaves_the_objects_as_given(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.organizations.add(Organization(name="Taken", slug="taken"))
    batch = [Organization(name=f"o{i}", slug=f"o-{i}") for i in range(5)]
    batch.append(Organization(name="again", slug="taken"))
    with store.unit_of_work() as uow:
        with pytest.raises(AlreadyExistsError):
            uow.organizations.add_many(batch)
        for org in batch:
            assert inspect(org).transient
            assert org.id is None and org.created_at is None and org.lock_version is None
        assert uow.organizations.count() == 1  # the unit of work is still usable
        uow.organizations.add_many(batch[:5])  # and the same objects can go in now
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 6


def test_a_duplicate_inside_the_batch_writes_nothing(store: Store) -> None:
    batch = [Organization(name="a", slug="same"), Organization(name="b", slug="same")]
    with store.unit_of_work() as uow, pytest.raises(AlreadyExistsError):
        uow.organizations.add_many(batch)
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 0


def test_rolled_back_objects_go_back_to_transient(store: Store) -> None:
    kept, dropped = deployments(2, "kept"), deployments(2, "dropped")
    with store.unit_of_work() as uow:
        uow.deployments.add_many(kept)
        with pytest.raises(RuntimeError), uow.savepoint():
            uow.deployments.add_many(dropped)
            raise RuntimeError("undo")
        assert all(inspect(d).transient for d in dropped)
        assert uow.deployments.get_or_none(dropped[0].id) is None
        assert inspect(kept[0]).persistent
    with store.unit_of_work() as uow:
        assert {d.name for d in uow.deployments.list()} == {"kept-0", "kept-1"}
        uow.deployments.add_many(deployments(2, "gone"))
        uow.rollback()
        assert uow.deployments.count() == 2
    with store.unit_of_work() as uow, pytest.raises(NotFoundError):
        uow.deployments.get(dropped[0].id)


def test_the_same_object_twice_is_inserted_once(store: Store) -> None:
    item = deployments(1)[0]
    with store.unit_of_work() as uow:
        assert uow.deployments.add_many([item, item]) == [item, item]
    with store.unit_of_work() as uow:
        assert uow.deployments.count() == 1


def test_pending_work_is_flushed_before_the_batch(store: Store) -> None:
    with store.unit_of_work() as uow:
        template = Template(name="t", provider_type="aws", max_number=2, attributes={})
        uow.session.add(template)  # pending: not flushed yet
        template.id = uuid.uuid4()
        batch = [Request(template_id=template.id, machine_count=1) for _ in range(3)]
        uow.requests.add_many(batch)
        assert all(r.status is RequestStatus.PENDING for r in batch)
    with store.unit_of_work() as uow:
        assert len(uow.requests.list(template_id=template.id)) == 3


def test_insert_listeners_keep_the_ordinary_flush(store: Store) -> None:
    seen: list[str] = []

    def listener(mapper: object, connection: object, target: Deployment) -> None:
        seen.append(target.name)

    event.listen(Deployment, "before_insert", listener)
    try:
        with store.unit_of_work() as uow:
            assert not insert_many(uow.session, Deployment, deployments(1, "probe"))
            items = deployments(2, "heard")
            uow.deployments.add_many(items)
            assert all(inspect(d).persistent for d in items)
    finally:
        event.remove(Deployment, "before_insert", listener)
    assert seen == ["heard-0", "heard-1"]


def test_objects_already_in_the_session_keep_the_ordinary_flush(store: Store) -> None:
    with store.unit_of_work() as uow:
        first = deployments(1, "first")
        uow.deployments.add_many(first)
        mixed = [first[0], *deployments(2, "more")]
        assert not insert_many(uow.session, Deployment, mixed)
        uow.deployments.add_many(mixed)
    with store.unit_of_work() as uow:
        names = uow.session.scalars(select(Deployment.name).order_by(Deployment.name)).all()
        assert names == ["first-0", "more-0", "more-1"]


def test_a_bad_value_writes_nothing_and_leaves_the_objects_as_given(store: Store) -> None:
    batch = deployments(6, "checked")
    batch[4].name = "x" * 300  # longer than the column: refused before any SQL
    with store.unit_of_work() as uow, statements(store) as sent:
        with pytest.raises(InvalidInputError, match="name"):
            uow.deployments.add_many(batch)
        assert "INSERT" not in sent
        for item in batch:
            assert inspect(item).transient
            assert item.id is None and item.created_at is None and item.lock_version is None
        batch[4].name = "fine"
        uow.deployments.add_many(batch)  # the same objects go in once mended
    with store.unit_of_work() as uow:
        assert uow.deployments.count() == 6


def test_a_missing_required_value_is_refused_on_the_bulk_path(store: Store) -> None:
    batch = deployments(3, "required")
    batch[1].version = None  # type: ignore[assignment]
    with store.unit_of_work() as uow:
        with pytest.raises(InvalidInputError, match=r"Deployment\.version is required"):
            uow.deployments.add_many(batch)
        assert all(inspect(item).transient and item.id is None for item in batch)


def test_converted_values_are_stored_converted(store: Store) -> None:
    ident = uuid.uuid4()
    item = Deployment(id=str(ident), name="text-id", version="1", status="running")
    with store.unit_of_work() as uow:
        uow.deployments.add_many([item])
        assert item.id == ident and item.status is DeploymentStatus.RUNNING
        assert uow.session.get(Deployment, ident) is item
    with store.unit_of_work() as uow:
        assert uow.deployments.get(ident).status is DeploymentStatus.RUNNING


def test_session_lifecycle_listeners_keep_the_ordinary_flush(store: Store) -> None:
    heard: list[str] = []

    def listener(session: object, instance: object) -> None:
        heard.append(inspect(instance).object.name)

    with store.unit_of_work() as uow:
        event.listen(uow.session, "pending_to_persistent", listener)
        assert not insert_many(uow.session, Deployment, deployments(1, "probe"))
        items = deployments(2, "heard")
        uow.deployments.add_many(items)
        assert all(inspect(d).persistent for d in items)
    assert sorted(heard) == ["heard-0", "heard-1"]


def test_models_whose_attributes_and_columns_differ_take_the_flush() -> None:
    class Other(DeclarativeBase):
        pass

    class Renamed(Other):
        __tablename__ = "renamed"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column("label_text", String(20))

    class Plain(Other):
        __tablename__ = "plain"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(String(20))

    assert plan_for(Renamed) is None  # the objects' dicts could not be the INSERT parameters
    assert plan_for(Plain) is not None
    assert plan_for(Deployment) is not None


def test_a_copied_default_follows_the_column_it_repeats() -> None:
    """``CopyOf`` columns are filled after their source; one that repeats a column that is
    missing, or that repeats another copy, is left to the flush (which fills in table order)."""

    class Other(DeclarativeBase):
        pass

    class Stamped(Other):
        __tablename__ = "stamped"
        id: Mapped[int] = mapped_column(primary_key=True)
        last: Mapped[str] = mapped_column(String(20), default=CopyOf("first", lambda: "x"))
        first: Mapped[str] = mapped_column(String(20), default=lambda: "now")

    class Chained(Other):
        __tablename__ = "chained"
        id: Mapped[int] = mapped_column(primary_key=True)
        first: Mapped[str] = mapped_column(String(20))
        second: Mapped[str] = mapped_column(String(20), default=CopyOf("first", lambda: "x"))
        third: Mapped[str] = mapped_column(String(20), default=CopyOf("second", lambda: "x"))

    class Dangling(Other):
        __tablename__ = "dangling"
        id: Mapped[int] = mapped_column(primary_key=True)
        last: Mapped[str] = mapped_column(String(20), default=CopyOf("nowhere", lambda: "x"))

    plan = plan_for(Stamped)
    assert plan is not None
    assert [c[0] for c in plan.columns] == ["id", "first", "last"]
    assert plan_for(Chained) is None and plan_for(Dangling) is None
    engine = create_engine("sqlite://")
    try:
        with created(Other, engine), Session(engine) as session:
            item = Stamped(id=1)
            assert insert_many(session, Stamped, [item])
            assert (item.first, item.last) == ("now", "now")
            chained = Chained(id=1, first="a")
            assert not insert_many(session, Chained, [chained])
            session.add(chained)
            session.flush()
            assert (chained.second, chained.third) == ("a", "a")
    finally:
        engine.dispose()


def test_updated_at_is_stored_as_given_when_it_is_not_created_at(store: Store) -> None:
    """The bulk path converts ``updated_at`` with ``created_at`` only where the object holds
    the very same value in both; a value of its own is converted and stored as given."""
    created_at = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    updated_at = datetime(2025, 6, 7, 8, 9, 10, 11, tzinfo=UTC)
    items = [
        Deployment(name="both", version="1", created_at=created_at, updated_at=updated_at),
        Deployment(name="created", version="1", created_at=created_at),
        Deployment(name="neither", version="1"),
    ]
    with store.unit_of_work() as uow:
        uow.deployments.add_many(items)
    with store.unit_of_work() as uow:
        stored = {d.name: (d.created_at, d.updated_at) for d in uow.deployments.list()}
    assert stored["both"] == (created_at, updated_at)
    assert stored["created"] == (created_at, created_at)
    assert stored["neither"][0] == stored["neither"][1] != created_at


def test_a_copy_of_a_column_of_another_type_takes_the_flush(store: Store) -> None:
    """A ``CopyOf`` column of another type than its source would need its own check and
    conversion of the shared value (money in micro-units on SQLite, a plain decimal in the
    copy): the flush writes it, and each column stores the value its own way."""

    class Other(DeclarativeBase):
        pass

    class Priced(Other):
        __tablename__ = "priced_items"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        price: Mapped[Decimal] = mapped_column(Money())
        listed: Mapped[Decimal] = mapped_column(
            Numeric(18, 6), default=CopyOf("price", lambda: Decimal(0))
        )

    class Twice(Other):
        __tablename__ = "twice_priced_items"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        price: Mapped[Decimal] = mapped_column(Money())
        listed: Mapped[Decimal] = mapped_column(Money(), default=CopyOf("price", Decimal))

    assert plan_for(Priced) is None
    with created(Other, store.engine):
        with Session(store.engine) as session:
            twice = Twice(id=1, price=Decimal("1.5"))
            assert insert_many(session, Twice, [twice])  # the same type: the bulk path
            assert twice.listed is twice.price
            session.add(Priced(id=1, price=Decimal("1.5")))
            session.commit()
        with store.engine.connect() as conn:
            for model in (Priced, Twice):
                row = conn.execute(select(model.price, model.listed)).one()
                assert row == (Decimal("1.5"), Decimal("1.5"))


# -- the driver's own statement ------------------------------------------------------------

#: Every concrete factory of the kit: one per model, so a new model is covered here at once.
FACTORIES = [
    factory
    for factory in vars(factories).values()
    if isinstance(factory, type)
    and issubclass(factory, factories.FlowstoreFactory)
    and not factory._meta.abstract
]


def _unique_strings(model: type[Any]) -> set[str]:
    table = model.__table__
    groups = [c.columns for c in table.constraints if isinstance(c, UniqueConstraint)]
    groups += [i.columns for i in table.indexes if i.unique]
    return {c.key for group in groups for c in group if isinstance(c.type, String)}


def _other(text: str) -> str:
    """A different string of the same length (a unique column's value for the twin)."""
    return ("x" if text[:1] != "x" else "y") + text[1:]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__.removesuffix("Factory"))
def test_every_model_reads_back_from_the_bulk_path_as_from_a_flush(
    store: Store, factory: Any
) -> None:
    """A row whose values went through the driver's statement (the columns' bind processors,
    position by position; COPY on PostgreSQL) reads back as its twin stored by a flush:
    enums, JSON, money, booleans, UTC times and UUIDs alike."""
    model = factory._meta.model
    mapper = inspect(model)
    keys = [prop.key for prop in mapper.column_attrs]
    unique = _unique_strings(model)
    with store.unit_of_work() as uow, using_session(uow.session):
        flushed = factory.create()
        values = {key: getattr(flushed, key) for key in keys}
        for key in unique:
            if values[key] is not None:
                values[key] = _other(values[key])
        pk = mapper.get_property_by_column(mapper.primary_key[0]).key
        if model is DeploymentNode:
            values[pk] = DeploymentFactory.create().id
        elif isinstance(mapper.primary_key[0].type, String):  # JobSchedule: (queue, name)
            values[pk] = f"twin-{uuid.uuid4().hex[:12]}"
        else:
            values[pk] = uuid.uuid4()
        version = mapper.version_id_col
        if version is not None:
            values.pop(mapper.get_property_by_column(version).key)
        for column in model.__table__.columns:  # generated: the database computes it
            if column.computed is not None:
                values.pop(mapper.get_property_by_column(column).key)
        twin = model(**values)
        assert insert_many(uow.session, model, [twin])
        left = {key: getattr(twin, key) for key in keys}
        ids = (mapper.primary_key_from_instance(flushed), mapper.primary_key_from_instance(twin))
    with store.unit_of_work() as uow:
        first, second = (uow.session.get(model, ident) for ident in ids)
        assert first is not None and second is not None
        for key in keys:
            a, b = getattr(first, key), getattr(second, key)
            assert b == left[key], key  # what add_many left on the object is what is stored
            if key in unique and a is not None:
                a = _other(a)
            if key != pk:
                assert a == b, key


def test_the_batch_goes_to_the_driver_in_one_call(store: Store, copies: list[str]) -> None:
    """PostgreSQL (psycopg): one COPY. Elsewhere: one executemany of the driver's positional
    INSERT, seen by engine listeners as any statement is."""
    items = deployments(30, "driver")
    if store.dialect == "postgresql":
        with store.unit_of_work() as uow:
            uow.deployments.add_many(items)
        assert copies == ['COPY deployments (id, name, version, status, config, created_at, '
                          'updated_at, lock_version) FROM STDIN']  # fmt: skip
    else:
        seen: list[tuple[str, Any]] = []

        def record(conn: object, cursor: object, statement: str, params: Any, *_: object) -> None:
            seen.append((statement, params))

        event.listen(store.engine, "before_cursor_execute", record)
        try:
            with store.unit_of_work() as uow:
                uow.deployments.add_many(items)
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
        inserts = [(s, p) for s, p in seen if s.startswith("INSERT INTO deployments")]
        assert len(inserts) == 1 and copies == []
        statement, params = inserts[0]
        assert "VALUES (?," in statement or "VALUES (%s," in statement
        assert len(params) == 30 and all(type(row) is tuple and len(row) == 8 for row in params)
    with store.unit_of_work() as uow:
        stored = {d.name: d for d in uow.deployments.list(limit=100)}
        assert stored["driver-29"].config == {"i": 29} and len(stored) == 30


def test_on_postgresql_watched_engines_get_an_insert_not_copy(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY is not a cursor execution: with an engine listener, a dialect ``do_executemany``
    hook or ``echo`` on, the batch goes through Core, so what watches the SQL sees it."""
    if store.dialect != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    quiet = Store(store.url, events=False)  # the batch's statements only, not its events
    try:
        _watched_engines_get_an_insert(quiet, monkeypatch)
    finally:
        quiet.close()


def _watched_engines_get_an_insert(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send, "copy_rows", _no_copy)
    with statements(store) as sent, store.unit_of_work() as uow:
        uow.deployments.add_many(deployments(3, "watched"))
    assert sent.count("INSERT") == 1
    store.engine.echo = True
    try:
        with store.unit_of_work() as uow:
            uow.deployments.add_many(deployments(3, "echoed"))
    finally:
        store.engine.echo = False
    hooked: list[str] = []

    def hook(cursor: object, statement: str, parameters: object, context: object) -> None:
        hooked.append(statement.split()[0])  # lets the dialect execute (returns None)

    event.listen(store.engine, "do_executemany", hook)
    try:
        with store.unit_of_work() as uow:
            uow.deployments.add_many(deployments(3, "hooked"))
    finally:
        event.remove(store.engine, "do_executemany", hook)
    assert hooked == ["INSERT"]
    with store.unit_of_work() as uow:
        assert uow.deployments.count() == 9


def _no_copy(*_: object) -> None:
    raise AssertionError("COPY was used")


class _Picky(TypeDecorator[str]):
    """Refuses ``"bad"`` when it is sent, as a type's own bind processing may."""

    impl = String(10)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value == "bad":
            raise ValueError("picky: 'bad' is refused")
        return value


def test_a_value_a_column_type_refuses_writes_nothing(tmp_path: Path) -> None:
    """The types' bind processors run before the driver is called: one refusing a value is
    the flowstore error, and the batch is taken back whole."""

    class Other(DeclarativeBase):
        pass

    class Note(Other):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(_Picky())
        made: Mapped[int] = mapped_column(default=7)

    engine = create_engine(f"sqlite:///{tmp_path / 'picky.db'}")
    Other.metadata.create_all(engine)
    batch = [Note(id=1, text="fine"), Note(id=2, text="bad")]
    try:
        with Session(engine) as session:
            with pytest.raises(StatementError, match="picky") as raised:
                insert_many(session, Note, batch)
            assert isinstance(translate(raised.value), InvalidInputError)
            assert all(inspect(n).transient and "made" not in vars(n) for n in batch)
            assert session.scalar(select(func.count()).select_from(Note)) == 0
            batch[1].text = "mended"
            assert insert_many(session, Note, batch)
            session.commit()
        with Session(engine) as session:
            assert session.scalars(select(Note.made)).all() == [7, 7]
    finally:
        engine.dispose()


def test_text_the_drivers_escape_reads_back_unchanged(store: Store) -> None:
    """Tabs, newlines, backslashes and quotes are COPY's and SQL's own syntax: the driver must
    escape them, in plain columns and inside JSON alike."""
    awkward = "tab\there\nnew line\\back \"quoted\" 'single' 50% {} ü ✓"
    item = Deployment(
        name=awkward[:60], version="1\\2", config={awkward: [awkward, {"k": awkward}]}
    )
    with store.unit_of_work() as uow:
        uow.deployments.add_many([item])
    with store.unit_of_work() as uow:
        stored = uow.deployments.get(item.id)
        assert (stored.name, stored.version) == (awkward[:60], "1\\2")
        assert stored.config == {awkward: [awkward, {"k": awkward}]}


def test_names_with_a_percent_sign_reach_format_style_drivers_intact(store: Store) -> None:
    """PyMySQL and psycopg take ``%s`` marks: a ``%`` in a table or column name must be sent
    as ``%%`` in the driver's own INSERT, or the driver reads it as a mark."""

    class Other(DeclarativeBase):
        pass

    class Discount(Other):
        __tablename__ = "discount_50%"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        rate: Mapped[str] = mapped_column("rate%", String(10))

    class Share(Other):
        __tablename__ = "share%"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        percent: Mapped[str] = mapped_column(String(10))

    assert plan_for(Discount) is None  # a renamed column: the flush's, not ours
    with created(Other, store.engine):
        with Session(store.engine) as session:
            assert insert_many(
                session, Share, [Share(id=1, percent="50%"), Share(id=2, percent="%s")]
            )
            session.commit()
        with Session(store.engine) as session:
            assert session.scalars(select(Share.percent).order_by(Share.id)).all() == ["50%", "%s"]


def test_a_table_in_a_named_schema_is_written_there(store: Store) -> None:
    """The driver's own statement names the table as Core does, schema included; an engine
    that maps schemas (``schema_translate_map``) keeps Core's statement, which applies it."""
    if store.dialect == "sqlite":
        pytest.skip("SQLite's other schemas are attached databases, per connection")
    schema = f"flowstore_aux_{uuid.uuid4().hex[:8]}"
    create = "CREATE SCHEMA" if store.dialect == "postgresql" else "CREATE DATABASE"
    drop = "DROP SCHEMA {} CASCADE" if store.dialect == "postgresql" else "DROP DATABASE {}"

    class Other(DeclarativeBase):
        pass

    class Placed(Other):
        __tablename__ = "placed_items"
        __table_args__ = {"schema": schema}
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        label: Mapped[str] = mapped_column(String(10))

    class Unplaced(Other):  # placed by the engine's schema_translate_map
        __tablename__ = "unplaced_items"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)

    translated = store.engine.execution_options(schema_translate_map={None: schema})
    with store.engine.begin() as conn:
        conn.execute(text(f"{create} {schema}"))
    try:
        Other.metadata.create_all(translated)
        with Session(store.engine) as session:
            assert insert_many(session, Placed, [Placed(id=1, label="a"), Placed(id=2, label="b")])
            session.commit()
        with Session(store.engine) as session:
            assert session.scalars(select(Placed.label).order_by(Placed.id)).all() == ["a", "b"]
        with Session(translated) as session:
            assert insert_many(session, Unplaced, [Unplaced(id=3)])
            session.commit()
        with translated.connect() as conn:
            assert conn.scalars(select(Unplaced.id)).all() == [3]
    finally:
        with store.engine.begin() as conn:
            conn.execute(text(drop.format(schema)))


class _Lowered(TypeDecorator[str]):
    """Lower-cased by the database as it is stored (a bind expression, as spatial types use)."""

    impl = String(20)
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return func.lower(bindvalue)


def test_a_type_with_a_bind_expression_keeps_cores_statement(store: Store) -> None:
    """Values a type wraps in SQL cannot be handed to the driver as they are: such a model is
    written through Core's insert, which applies the expression."""

    class Other(DeclarativeBase):
        pass

    class Tag(Other):
        __tablename__ = "lowered_tags"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        name: Mapped[str] = mapped_column(_Lowered())

    with created(Other, store.engine):
        with Session(store.engine) as session:
            assert insert_many(session, Tag, [Tag(id=1, name="MiXeD")])
            session.commit()
        with Session(store.engine) as session:
            assert session.scalars(select(Tag.name)).all() == ["mixed"]


def test_a_none_in_a_json_column_is_stored_as_a_flush_stores_it(store: Store) -> None:
    """A JSON column evaluates ``None``: a flush stores JSON ``null``, not SQL NULL, and the
    bulk path must too. A ``None`` for other types is SQL NULL on both paths."""

    class Other(DeclarativeBase):
        pass

    class Doc(Other):
        __tablename__ = "json_docs"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        body: Mapped[Any] = mapped_column(JSON, nullable=True)
        note: Mapped[str | None] = mapped_column(String(10), nullable=True)

    with created(Other, store.engine):
        with Session(store.engine) as session:
            session.add(Doc(id=1, body=None, note=None))
            session.flush()
            assert insert_many(session, Doc, [Doc(id=2, body=None, note=None)])
            session.commit()
        with Session(store.engine) as session:
            rows = session.execute(
                select(Doc.id, Doc.body.is_(None), Doc.note.is_(None)).order_by(Doc.id)
            ).all()
            assert [tuple(r) for r in rows] == [(1, False, True), (2, False, True)]


def test_every_flowstore_model_goes_in_by_copy_on_psycopg() -> None:
    """COPY takes the types it is known to read back as Core writes them; all of flowstore's."""
    dialect = create_engine("postgresql+psycopg://", module=psycopg).dialect
    for mapper in Base.registry.mappers:
        model: Any = mapper.class_
        plan = plan_for(model)
        assert plan is not None, model
        driver = driver_insert(dialect, model, plan)
        assert driver is not None and driver.copy, model


def test_an_array_column_keeps_cores_insert_on_postgresql(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A type outside those COPY is known to take (an ARRAY here) keeps Core's INSERT."""
    if store.dialect != "postgresql":
        pytest.skip("ARRAY is PostgreSQL's")
    monkeypatch.setattr(send, "copy_rows", _no_copy)

    class Other(DeclarativeBase):
        pass

    class Tagged(Other):
        __tablename__ = "tagged_rows"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        tags: Mapped[list[str]] = mapped_column(postgresql.ARRAY(String(10)))

    with created(Other, store.engine):
        with Session(store.engine) as session:
            assert insert_many(session, Tagged, [Tagged(id=1, tags=["a", "b,c"])])
            session.commit()
        with Session(store.engine) as session:
            assert session.scalars(select(Tagged.tags)).all() == [["a", "b,c"]]


def test_the_batch_goes_to_the_models_own_bind(tmp_path: Path) -> None:
    """A session with a bind per model writes each model's batch through its own engine."""

    class Other(DeclarativeBase):
        pass

    class Kept(Other):
        __tablename__ = "kept_items"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)

    default = create_engine(f"sqlite:///{tmp_path / 'default.db'}")
    own = create_engine(f"sqlite:///{tmp_path / 'own.db'}")
    try:
        for engine in (default, own):
            Other.metadata.create_all(engine)
        with Session(bind=default, binds={Kept: own}) as session:
            assert insert_many(session, Kept, [Kept(id=1), Kept(id=2)])
            session.commit()
        with own.connect() as conn:
            assert conn.scalars(select(Kept.id).order_by(Kept.id)).all() == [1, 2]
        with default.connect() as conn:
            assert conn.scalars(select(Kept.id)).all() == []
    finally:
        default.dispose()
        own.dispose()


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql", "mysql"])
def test_the_generated_row_converts_as_the_column_pass_does(dialect_name: str) -> None:
    """``row_maker``'s straight-line function gives, row for row, what converting column by
    column (``process_columns``, the AuditWriter's way) gives: Nones, twins that are and are
    not their source's object, JSON null, every flowstore model's columns."""
    urls = {
        "sqlite": "sqlite://",
        "postgresql": "postgresql+psycopg://",
        "mysql": "mysql+pymysql://",
    }
    dialect = create_engine(urls[dialect_name]).dialect
    rng = random.Random(7)
    when = datetime(2026, 12, 3, 9, 30, 1, 250, tzinfo=UTC)
    for mapper in Base.registry.mappers:
        model: Any = mapper.class_
        plan = plan_for(model)
        assert plan is not None
        columns = [c for c in plan.table.columns if c.computed is None]
        keys = [c.key for c in columns]
        processors = send.bind_processors(dialect, [c.type for c in columns])
        twins = tuple(
            (keys.index(key), keys.index(copied))
            for key, _default, copied, *_ in plan.columns
            if copied is not None
        )
        samples: dict[str, list[Any]] = {
            "created_at": [when, None],
            "updated_at": [when, datetime(2027, 1, 1, tzinfo=UTC), None],
        }
        rows = []
        for _ in range(40):
            rows.append({c.key: samples.get(c.key) or _sample(c, rng) for c in columns})
            for key in samples:  # a twin that is, or is not, its source's object
                if key in rows[-1]:
                    rows[-1][key] = rng.choice(samples[key])
        make = send.row_maker(keys, processors, twins)
        made = send.make_rows(make, rows)
        by_column: list[Any] = [[row[key] for row in rows] for key in keys]
        send.process_columns(by_column, processors, twins)
        assert _plain(made) == _plain(list(zip(*by_column, strict=True))), model


def test_a_value_the_generated_row_refuses_is_a_statement_error() -> None:
    dialect = create_engine("sqlite://").dialect
    processors = send.bind_processors(dialect, [DateTime()])
    make = send.row_maker(["at"], processors)
    with pytest.raises(StatementError):
        send.make_rows(make, [{"at": "not a time"}])


def _plain(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows with psycopg's JSON wrappers (which compare by identity) unwrapped."""
    wrappers = (psycopg.types.json.Json, psycopg.types.json.Jsonb)
    return [tuple(("json", v.obj) if isinstance(v, wrappers) else v for v in r) for r in rows]


def _sample(column: Any, rng: Any) -> Any:
    """A value of ``column``'s Python type, or ``None`` now and then."""
    if rng.random() < 0.2:
        return None
    if isinstance(column.type, JSON):
        return rng.choice([{"a": [1, "x"]}, [], "s", 1.5])
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    if issubclass(kind, enum.Enum):
        return rng.choice(list(kind))
    samples = {
        uuid.UUID: uuid.uuid4(),
        str: f"text-{rng.random()}",
        bool: rng.random() < 0.5,
        int: rng.randrange(-(2**40), 2**40),
        Decimal: Decimal("12.345600"),
        datetime: datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    }
    for base, value in samples.items():
        if issubclass(kind, base):
            return value
    return None


def test_one_row_on_postgresql_is_cores_own_insert_text() -> None:
    """One row on psycopg goes as the very text Core compiles (bind casts and all); a column
    whose key Core would rename as a parameter keeps Core's ``insert()``."""
    dialect = create_engine("postgresql+psycopg://", module=psycopg).dialect
    table: Any = Deployment.__table__
    keys = [c.key for c in table.columns]
    made = send.core_insert_text(dialect, table, keys)
    assert made is not None
    assert "%(id)s::UUID" in made and "%(config)s::JSONB" in made
    odd = Table(
        "odd_rows", MetaData(), Column("id", Integer, primary_key=True), Column("a b", Integer)
    )
    assert send.core_insert_text(dialect, odd, ["id", "a b"]) is None


def test_a_refused_row_in_the_plain_savepoint_leaves_the_transaction_usable(
    store: Store,
) -> None:
    """``add``'s SAVEPOINT is sent as plain statements: a duplicate is rolled back to it, and
    the unit of work goes on and commits what came before and after."""
    with store.unit_of_work() as uow:
        first = uow.deployments.add(Deployment(name="kept", version="1"))
    with store.unit_of_work() as uow:  # a new identity map: the database finds the duplicate
        uow.deployments.add(Deployment(name="before", version="1"))
        with pytest.raises(AlreadyExistsError):
            uow.deployments.add(Deployment(id=first.id, name="again", version="1"))
        uow.deployments.add(Deployment(name="after", version="1"))
    with store.unit_of_work() as uow:
        assert sorted(d.name for d in uow.deployments.list()) == ["after", "before", "kept"]
