"""docs/extending.md is executable: it runs in a copy of examples/gateway, and the files it
shows are the example's own."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.docs_runner import REPO_ROOT, run_page

EXAMPLE = REPO_ROOT / "examples" / "gateway"


def test_every_block_of_the_extending_guide_runs(tmp_path: Path) -> None:
    folder = tmp_path / "gateway"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    ran = run_page(REPO_ROOT / "docs" / "extending.md", folder, example=EXAMPLE)
    assert ran == {"example": 5, "python": 2, "sh": 4}
