"""docs/queue.md is executable: its Python blocks run in order, in one folder, on a SQLite
file (the first block creates and migrates it)."""

from __future__ import annotations

from pathlib import Path

from tests.docs_runner import REPO_ROOT, run_page


def test_every_block_of_the_queue_guide_runs(tmp_path: Path) -> None:
    ran = run_page(REPO_ROOT / "docs" / "queue.md", tmp_path)
    assert ran["python"] == 4
