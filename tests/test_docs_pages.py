"""docs/async.md, backends.md, performance.md and security.md are executable: every block of
each page runs as a reader would run it (tests/docs_runner.py), and the count of blocks of each
kind is pinned, so a block that stops running (skipped, or its fence changed) is noticed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.docs_runner import REPO_ROOT, run_page

# What each page runs; "other:" is performance.md's untagged block of `make bench` options,
# shown to the reader and not run (a full benchmark takes minutes).
EXPECTED: dict[str, dict[str, int]] = {
    "async.md": {"python": 2},
    "backends.md": {"python": 1},
    "performance.md": {"python": 2, "other:": 1},
    "security.md": {"python": 1},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_block_of_the_page_runs(name: str, tmp_path: Path) -> None:
    ran = run_page(REPO_ROOT / "docs" / name, tmp_path)
    assert ran == Counter(EXPECTED[name])
