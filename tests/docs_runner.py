"""Running a documentation page's code blocks, in order, in one folder, as a reader would.

A block may be preceded by an HTML comment that says what it is:

* ``<!-- docs-test: file PATH -->``: its text is written to PATH in the folder;
* ``<!-- docs-test: example PATH -->``: it shows the file PATH of the example the page walks
  through, and must be that file's text exactly;
* ``<!-- docs-test: skip -->``: it is not run (output shown to the reader, say).

Any other ```python block runs as a script in the folder; a ```sh block runs in bash
(``set -e``) after the ``export`` lines of the blocks before it. ``flowstore``, ``alembic``
and ``pytest`` are this environment's console scripts, running this checkout's code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.test_cli import cli_env

REPO_ROOT = Path(__file__).resolve().parent.parent

_BLOCK = re.compile(
    r"(?:^<!--\s*docs-test:\s*(?P<mode>file|example|skip)(?:\s+(?P<path>\S+))?\s*-->\s*\n)?"
    r"^```(?P<lang>\w*)\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    lang: str
    code: str
    line: int
    mode: str | None
    path: str | None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order."""
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            m["lang"],
            m["code"],
            text.count("\n", 0, m.start("code")) + 1,
            m["mode"],
            m["path"],
        )
        for m in _BLOCK.finditer(text)
    ]


def run_in(folder: Path, args: list[str], *paths: Path) -> subprocess.CompletedProcess[str]:
    """``args`` in ``folder`` with a clean environment: no ``FLOWSTORE_`` settings, the
    folder, ``paths`` and this checkout importable."""
    search = [str(folder), *map(str, paths), os.environ.get("PYTHONPATH", ""), str(REPO_ROOT)]
    env = cli_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in search if p),
    )
    return subprocess.run(
        args, cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def run_page(page: Path, folder: Path, *, example: Path | None = None) -> Counter[str]:
    """Run every block of ``page`` in ``folder``; how many of each kind ran. An assertion
    error names the page, the line and what the block printed."""
    exports: list[str] = []
    ran: Counter[str] = Counter()
    name = page.relative_to(REPO_ROOT)
    for block in blocks(page):
        where = f"{name} line {block.line}"
        if block.mode == "skip":
            ran["skipped"] += 1
            continue
        if block.mode == "file":
            assert block.path, where
            target = folder / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
            ran["file"] += 1
            continue
        if block.mode == "example":
            assert example is not None and block.path, where
            shown = (example / block.path).read_text(encoding="utf-8")
            assert block.code == shown, f"{where} differs from {block.path} of the example"
            ran["example"] += 1
            continue
        if block.lang == "python":
            script = folder / f"docs_line{block.line}.py"
            script.write_text(block.code, encoding="utf-8")
            result = run_in(folder, [sys.executable, str(script)])
        elif block.lang == "sh":
            result = run_in(folder, ["bash", "-e", "-c", "\n".join([*exports, block.code])])
            exports += [ln for ln in block.code.splitlines() if ln.startswith("export ")]
        else:
            ran[f"other:{block.lang}"] += 1
            continue
        assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
        ran[block.lang] += 1
    return ran
