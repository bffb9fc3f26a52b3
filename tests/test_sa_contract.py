"""What flowstore relies on in SQLAlchemy without a public name (flowstore/sa_compat.py), checked
against the installed release: a change fails here, loudly, instead of turning a check off."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select, update

from flowstore import sa_compat
from flowstore.models import Organization

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


def test_register_inserted_makes_new_objects_persistent_as_a_flush_does() -> None:
    """``add_many``'s batches rely on it (flowstore.repositories.bulk): on this release the
    internals it sets exist, the objects end up as a flush leaves them, and a rollback turns
    them back into transient objects."""
    from sqlalchemy import inspect

    from flowstore import Store
    from flowstore.models import Deployment

    assert sa_compat.CAN_REGISTER_INSERTED
    with Store("sqlite://") as store, store.unit_of_work() as uow:
        items = [Deployment(name=f"d{i}", version="1") for i in range(3)]
        uow.deployments.add_many(items)
        session = uow.session
        assert all(inspect(item).persistent for item in items)
        assert not session.new and not session.dirty
        assert session.get(Deployment, items[1].id) is items[1]  # from the identity map
        uow.rollback()
        assert all(inspect(item).transient for item in items)


def test_without_the_internals_add_many_takes_the_public_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The public fallback a release without them gets: the ordinary flush, same results."""
    from flowstore import Store
    from flowstore.models import Deployment
    from flowstore.repositories import bulk

    monkeypatch.setattr(bulk, "CAN_REGISTER_INSERTED", False)

    def unavailable(*args: object) -> None:
        raise AssertionError("register_inserted called without the internals")

    monkeypatch.setattr(bulk, "register_inserted", unavailable)
    with Store("sqlite://") as store:
        with store.unit_of_work() as uow:
            items = [Deployment(name=f"d{i}", version="1") for i in range(3)]
            assert uow.deployments.add_many(items) == items
            assert all(item.lock_version == 1 for item in items)
        with store.unit_of_work() as uow:
            assert uow.deployments.count() == 3
