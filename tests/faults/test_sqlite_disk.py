"""SQLite on a full disk (a small tmpfs of its own): a clear error, every row committed before
it kept, and a file that passes ``PRAGMA integrity_check``."""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from flowstore import Store
from flowstore.errors import FlowstoreError
from flowstore.models import Organization
from tests.faults.conftest import require

SIZE = "4m"
ROWS = 100_000  # a bound: the disk is full long before


@pytest.fixture
def small_disk() -> Iterator[Path]:
    require("tmpfs")
    mount_point = Path(tempfile.mkdtemp(prefix="flowstore-faults-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, capture_output=True, timeout=30)
        mount_point.rmdir()


def test_a_full_disk_is_a_clear_error_and_keeps_every_committed_row(small_disk: Path) -> None:
    path = small_disk / "full.sqlite3"
    committed = 0
    with Store(f"sqlite:///{path}") as store:
        store.upgrade()
        with pytest.raises(FlowstoreError) as full:
            for n in range(ROWS):
                with store.unit_of_work() as uow:
                    uow.organizations.add(Organization(name="x" * 200, slug=f"org-{n}"))
                committed += 1
        with pytest.raises(FlowstoreError, match="out of space"), store.unit_of_work() as uow:
            uow.organizations.add(Organization(name="y" * 200, slug="one-more"))
    assert "out of space" in str(full.value), full.value
    assert committed > 100  # the disk filled up with rows, not with the schema
    with closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check.execute("SELECT count(*) FROM organizations").fetchone() == (committed,)
        slugs = {row[0] for row in check.execute("SELECT slug FROM organizations")}
    assert slugs == {f"org-{n}" for n in range(committed)}
