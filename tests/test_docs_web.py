"""docs/web.md is executable: every Python block runs (as a script, or as a test module under
pytest with flowstore's plugin when marked ``<!-- readme-test: pytester -->``), the way
tests/test_readme.py runs the README's."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_readme import _BLOCK, KNOWN_MODES, REPO_ROOT, Block, run

DOC = REPO_ROOT / "docs" / "web.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = [
    Block(
        m["lang"], textwrap.dedent(m["code"]), TEXT.count("\n", 0, m.start("code")) + 1, m["mode"]
    )
    for m in _BLOCK.finditer(TEXT)
    if m["lang"] == "python"
]


def test_the_page_shows_a_service_its_tests_and_production_concerns() -> None:
    assert len(BLOCKS) >= 5
    assert {b.mode for b in BLOCKS} <= KNOWN_MODES | {None}
    assert sum(b.mode == "pytester" for b in BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_block_runs(block: Block, tmp_path: Path) -> None:
    if block.mode == "pytester":
        module = tmp_path / "test_web_example.py"
        module.write_text(block.code, encoding="utf-8")
        result = run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)], tmp_path
        )
        expected = len(re.findall(r"^(?:async )?def test_", block.code, re.M))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{expected} passed" in result.stdout, result.stdout
        return
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    result = run([sys.executable, str(script)], tmp_path)
    assert result.returncode == 0, f"docs/web.md line {block.line}:\n{result.stderr}"
