"""The README is executable documentation: every Python example in it runs, and what it says
about settings, commands, make targets and links is checked against the code.

A ```python block runs as a script in a fresh process and an empty folder, with no
``FLOWSTORE_`` setting (so on the in-memory database). An HTML comment right before a block
says how else to run it; the only such mode is ``<!-- readme-test: pytester -->``: the block
is a test module, run by pytest with flowstore's installed plugin. No block is skipped.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from flowstore.cli import build_parser
from flowstore.config import Settings
from tests.test_cli import cli_env

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")

_BLOCK = re.compile(
    r"(?:^[ ]*<!--\s*readme-test:\s*(?P<mode>[\w-]+)\s*-->\s*\n)?"
    r"^(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<code>.*?)^(?P=indent)```",
    re.S | re.M,
)  # fenced blocks, also indented ones (inside list items), with an optional mode comment
KNOWN_MODES = {"pytester"}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    mode: str | None

    @property
    def id(self) -> str:
        return f"line{self.line}"


def blocks(lang: str | None = None) -> list[Block]:
    found = [
        Block(
            m["lang"],
            textwrap.dedent(m["code"]),
            TEXT.count("\n", 0, m.start("code")) + 1,
            m["mode"],
        )
        for m in _BLOCK.finditer(TEXT)
    ]
    return [b for b in found if lang is None or b.lang == lang]


PYTHON_BLOCKS = blocks("python")
SHELL_BLOCKS = blocks("sh")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300, check=False
    )


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 5
    assert {b.mode for b in PYTHON_BLOCKS} <= KNOWN_MODES | {None}


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    if block.mode == "pytester":
        module = tmp_path / "test_readme_example.py"
        module.write_text(block.code, encoding="utf-8")
        result = run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)], tmp_path
        )
        expected = len(re.findall(r"^def test_", block.code, re.M))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{expected} passed" in result.stdout, result.stdout
        return
    assert block.mode is None, f"unknown readme-test mode {block.mode!r}"
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    result = run([sys.executable, str(script)], tmp_path)
    assert result.returncode == 0, f"README line {block.line}:\n{result.stderr}"


def test_it_starts_with_make_run_and_make_test() -> None:
    first = blocks()[0]
    before = TEXT[: TEXT.index("```")]
    assert "\n## " not in before  # the commands come before any section
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert commands[:2] == ["make run", "make test"]


def _default_shown(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if default == []:
        return "none"
    if isinstance(default, SecretStr):
        return "a development key"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_the_configuration_table_lists_every_setting_with_its_default() -> None:
    rows = {
        cells[0].strip("`"): cells
        for line in TEXT.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for name in Settings.model_fields:
        assert name in rows, f"setting {name} is missing from the README"
        env_name, default = rows[name][1], rows[name][2]
        assert env_name == f"`FLOWSTORE_{name.upper()}`"
        assert default == _default_shown(name), name


def _shell_commands() -> list[list[str]]:
    commands = []
    for block in SHELL_BLOCKS:
        for line in block.code.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words and words[0] != "export":
                commands.append(words)
    return commands


def test_every_flowstore_command_shown_parses() -> None:
    shown = [words for words in _shell_commands() if words[0] == "flowstore"]
    assert len(shown) >= 5
    parser = build_parser()
    for words in shown:
        args = parser.parse_args(words[1:])  # SystemExit (a failure) on a wrong command
        assert callable(args.command)


def test_every_make_target_shown_exists() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    shown = {words[1] for words in _shell_commands() if words[0] == "make"}
    assert shown, "the README shows no make command"
    assert shown <= targets, shown - targets


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_point_at_existing_files_and_sections() -> None:
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", TEXT, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        if link.startswith("#"):
            assert link[1:] in anchors, f"no section for {link}"
        else:
            assert (REPO_ROOT / link.split("#")[0]).is_file(), f"{link} does not exist"
