"""docs/migrations.md is executable: its blocks run in order, in one empty folder, as a
service's developer would type them.

A ```python block preceded by ``<!-- docs-test: file PATH -->`` is written to PATH; any other
```python block runs as a script there; a ```sh block runs in bash (``set -e``), after the
``export`` lines of the blocks before it. ``flowstore`` and ``alembic`` are this environment's
console scripts, running this checkout's code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from tests.test_cli import cli_env

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "migrations.md"

_BLOCK = re.compile(
    r"(?:^<!--\s*docs-test:\s*file\s+(?P<file>\S+)\s*-->\s*\n)?"
    r"^```(?P<lang>\w*)\n(?P<code>.*?)^```",
    re.S | re.M,
)


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    paths = [str(folder), os.environ.get("PYTHONPATH", ""), str(REPO_ROOT)]
    env = cli_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
    )
    return subprocess.run(
        args, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_every_block_of_the_migrations_guide_runs(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = list(_BLOCK.finditer(text))
    assert {b["lang"] for b in blocks} == {"python", "sh"}
    exports: list[str] = []
    ran = {"file": 0, "python": 0, "sh": 0}
    for block in blocks:
        line = text.count("\n", 0, block.start("code")) + 1
        code = block["code"]
        if block["file"]:
            target = tmp_path / block["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code, encoding="utf-8")
            ran["file"] += 1
            continue
        if block["lang"] == "python":
            script = tmp_path / f"docs_line{line}.py"
            script.write_text(code, encoding="utf-8")
            result = _run([sys.executable, str(script)], tmp_path)
        else:
            result = _run(["bash", "-e", "-c", "\n".join([*exports, code])], tmp_path)
            exports += [ln for ln in code.splitlines() if ln.startswith("export ")]
        assert result.returncode == 0, f"docs/migrations.md line {line}:\n{result.stderr}"
        ran[block["lang"]] += 1
    assert ran == {"file": 2, "python": 1, "sh": 5}
    assert (tmp_path / "alembic.ini").is_file()
    assert len(list((tmp_path / "migrations" / "versions").glob("*.py"))) == 1
    database = create_engine(f"sqlite:///{tmp_path / 'acme.sqlite3'}")
    try:
        with database.connect() as conn:  # the guide ends with every table removed
            assert set(inspect(conn).get_table_names()) == {
                "alembic_version",
                "acme_alembic_version",
            }
    finally:
        database.dispose()
