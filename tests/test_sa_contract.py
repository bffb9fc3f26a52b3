"""What flowstore relies on in SQLAlchemy without a public name (flowstore/sa_compat.py), checked
against the installed release: a change fails here, loudly, instead of turning a check off."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

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
