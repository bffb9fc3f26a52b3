"""What flowstore relies on in SQLAlchemy without a public name (flowstore/sa_compat.py,
flowstore/writes/attach.py), checked against the installed release: a change fails here,
loudly, instead of turning a check off or the fast write path."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select, update

from flowstore import sa_compat
from flowstore.models import Organization
from flowstore.writes import attach

TABLE = Table("t", MetaData(), Column("a", Integer), Column("org_id", Integer))


def test_the_set_clause_of_an_update_is_readable() -> None:
    assert sa_compat.update_set_keys(update(TABLE).values(a=1)) == {"a"}
    assert sa_compat.update_set_keys(update(TABLE).values({TABLE.c.org_id: 2})) == {"org_id"}
    assert sa_compat.update_set_keys(update(TABLE).ordered_values((TABLE.c.a, 1))) == {"a"}
    orm = update(Organization).values(name="x")
    assert sa_compat.update_set_keys(orm) == {"name"}
    assert sa_compat.update_set_keys(update(Organization).values({Organization.id: 1})) == {"id"}


def test_what_cannot_be_read_is_reported_so_the_caller_refuses_it() -> None:
    assert sa_compat.update_set_keys(object()) is None


def test_mapped_elements_are_told_from_plain_ones() -> None:
    assert sa_compat.is_orm_annotated(Organization.__table__.c.id) is False
    mapped = [e for e in select(Organization.id).selected_columns]
    assert sa_compat.is_orm_annotated(mapped[0]) is True


def test_the_supported_release_range_is_the_declared_one() -> None:
    assert (2, 0) <= sa_compat.SA_VERSION < (2, 2)


def test_make_test_min_pins_the_lowest_admitted_releases() -> None:
    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = {
        re.match(r"[\w-]+", spec).group(0).lower(): re.search(r">=([\d.]+)", spec).group(1)  # type: ignore[union-attr]
        for spec in declared
        if ">=" in spec
    }
    makefile = (root / "Makefile").read_text()
    assert f"'sqlalchemy[asyncio]=={lowest['sqlalchemy']}'" in makefile
    assert f"'alembic=={lowest['alembic']}'" in makefile


def test_importing_the_errors_loads_neither_alembic_nor_pydantic() -> None:
    probe = (
        "import sys, flowstore.errors; "
        "bad = [m for m in ('alembic', 'pydantic', 'pydantic_settings') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_attach_probe_passes_on_this_release() -> None:
    """``add_many``'s fast path sets ORM internals to attach what it inserted
    (flowstore.writes.attach): on the installed release the probe finds them doing what a flush
    does, so the fast path is taken. A release that changes them fails here."""
    assert attach.probe() is None
    attach.private_route.cache_clear()
    assert attach.private_route()


def test_register_inserted_makes_new_objects_persistent_as_a_flush_does() -> None:
    """The same through ``add_many``: the objects end up as a flush leaves them, and a rollback
    turns them back into transient objects."""
    from sqlalchemy import inspect

    from flowstore import Store
    from flowstore.models import Deployment

    with Store("sqlite://") as store, store.unit_of_work() as uow:
        items = [Deployment(name=f"d{i}", version="1") for i in range(3)]
        uow.deployments.add_many(items)
        session = uow.session
        assert all(inspect(item).persistent for item in items)
        assert not session.new and not session.dirty
        assert session.get(Deployment, items[1].id) is items[1]  # from the identity map
        uow.rollback()
        assert all(inspect(item).transient for item in items)


def test_a_failed_probe_sends_add_many_through_the_public_flush(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a release on which the probe fails gets: the ordinary flush, same results (a
    rollback included), said once at INFO."""
    from sqlalchemy import inspect

    from flowstore import Store
    from flowstore.models import Deployment

    def gone(*args: object) -> None:
        raise AttributeError("'Session' object has no attribute '_autobegin_t'")

    monkeypatch.setattr(attach, "register_inserted", gone)  # as on a release without it
    attach.private_route.cache_clear()
    try:
        with pytest.raises(AttributeError):
            attach.probe()
        with caplog.at_level(logging.INFO, logger=attach.__name__):
            assert not attach.private_route()
            assert not attach.private_route()  # probed once, said once
        said = [r for r in caplog.records if r.name == attach.__name__]
        assert len(said) == 1 and "_autobegin_t" in said[0].getMessage()
        with Store("sqlite://") as store:
            with store.unit_of_work() as uow:
                items = [Deployment(name=f"d{i}", version="1") for i in range(3)]
                assert uow.deployments.add_many(items) == items
                assert all(inspect(item).persistent for item in items)
                assert not uow.session.new and not uow.session.dirty
                assert all(item.lock_version == 1 for item in items)
                uow.rollback()
                assert all(inspect(item).transient for item in items)
                assert [item.name for item in items] == ["d0", "d1", "d2"]
            with store.unit_of_work() as uow:
                assert uow.deployments.count() == 0
                uow.deployments.add_many([Deployment(name="kept", version="1")])
            with store.unit_of_work() as uow:
                assert uow.deployments.count() == 1
    finally:
        monkeypatch.undo()
        attach.private_route.cache_clear()


def test_a_probe_that_disagrees_is_a_failed_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attach step that runs but leaves the object otherwise than a flush (here: still
    new) is not taken either."""
    from sqlalchemy.orm import Session

    def half(session: Session, _cls: object, _key: object, states: list[Any], _d: object) -> None:
        session.add(states[0].obj())

    monkeypatch.setattr(attach, "register_inserted", half)
    assert attach.probe() is not None
    attach.private_route.cache_clear()
    try:
        assert not attach.private_route()
    finally:
        monkeypatch.undo()
        attach.private_route.cache_clear()
