"""The example service (examples/gateway): its own tests pass through flowstore's plugin on
SQLite and PostgreSQL, its migrations match its models, and its typed async face is current.

Everything runs in subprocesses: importing the example's models here would put its tables on
flowstore's metadata for the rest of this run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, server_database
from tests.test_cli import cli_env

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "gateway"
EXAMPLE_BACKENDS = [b for b in ("sqlite", "postgresql") if b in BACKENDS]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    paths = [str(EXAMPLE), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    environment = cli_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        **env,
    )
    return subprocess.run(
        args, cwd=EXAMPLE, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


def database_for(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    return server_database(request, backend, "gateway").url.render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", EXAMPLE_BACKENDS)
def test_the_example_services_own_tests_pass(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = (
        {}
        if backend == "sqlite"
        else {"FLOWSTORE_TEST_DATABASE_URL": database_for(request, backend, tmp_path)}
    )
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"], **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


@pytest.mark.parametrize("backend", EXAMPLE_BACKENDS)
def test_the_example_migrations_match_its_models(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = database_for(request, backend, tmp_path)
    for command in (
        ["alembic", "upgrade", "heads"],
        ["alembic", "check"],
        ["flowstore", "db", "check", "--migrations", "migrations"],
        ["alembic", "downgrade", "base"],
    ):
        result = run(command, FLOWSTORE_DATABASE_URL=url)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def test_the_example_typed_async_face_is_current() -> None:
    generated = EXAMPLE / "gateway" / "aio_uow.py"
    probe = (
        "import sys\n"
        "from flowstore.aio.codegen import main\n"
        "sys.exit(main(['gateway.uow:GatewayUnitOfWork']))\n"
    )
    result = run([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout == generated.read_text(encoding="utf-8"), (
        "regenerate it: python -m flowstore.aio.codegen gateway.uow:GatewayUnitOfWork "
        "-o gateway/aio_uow.py (in examples/gateway)"
    )
