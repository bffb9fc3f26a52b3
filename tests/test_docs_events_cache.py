"""docs/events.md and docs/cache.md are executable: every Python example runs as a script in a
fresh process and an empty folder (the cache's against this run's own Redis database), and
every ``flowstore`` command shown parses."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowstore.cli import build_parser
from tests.redis_db import own_redis_database
from tests.test_cli import cli_env

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("events.md", "cache.md")
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            if match[1] == lang:
                found.append((page, text.count("\n", 0, match.start(2)) + 1, match[2]))
    return found


PYTHON = blocks("python")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with own_redis_database() as url:
        yield url


def test_both_pages_have_examples() -> None:
    assert {page for page, _line, _code in PYTHON} == set(PAGES)
    assert len(PYTHON) >= 6


@pytest.mark.parametrize(("page", "line", "code"), PYTHON, ids=[f"{p}:{n}" for p, n, _ in PYTHON])
def test_python_example_runs(
    page: str, line: int, code: str, tmp_path: Path, redis_url: str
) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=cli_env(FLOWSTORE_CACHE_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{page} line {line}:\n{result.stdout}\n{result.stderr}"


def test_the_commands_shown_parse() -> None:
    parser = build_parser()
    shown = 0
    for _page, _line, code in blocks("sh"):
        for text in code.splitlines():
            words = shlex.split(text, comments=True)
            if words and words[0] == "flowstore":
                parser.parse_args(words[1:])
                shown += 1
    assert shown >= 3
