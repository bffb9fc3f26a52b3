"""The ``flowstore`` command line, run as a real process on a SQLite file and on PostgreSQL.

Every failure must be one line on stderr with a non-zero exit status: no traceback and no
password, whatever the command and however the URL is broken.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import inspect, make_url, text

from flowstore import Store, __version__, cli, schema
from flowstore.models import (
    FLOWSTORE_TABLES,
    Deployment,
    DeploymentStatus,
    JobStatus,
    Organization,
)
from flowstore.schema import alembic_config, head_revision
from tests.backends import create_database, in_ci
from tests.conftest import BACKENDS

SQLITE_FILE = ["sqlite_file"] if {"sqlite", "sqlite_file"} & set(BACKENDS) else []
CLI_BACKENDS = SQLITE_FILE + (["postgresql"] if "postgresql" in BACKENDS else [])
# The whole migration lifecycle also runs on MySQL/MariaDB, where `db check` compares types.
LIFECYCLE_BACKENDS = CLI_BACKENDS + (["mysql"] if "mysql" in BACKENDS else [])
PASSWORD = "Sup3r-s3cret-pw"
UNKNOWN_REVISION = "9f1c0ffee5a7"
REVISIONS = [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
REVISIONS.reverse()  # oldest first


_ENVIRONMENT_SETTINGS = {"FLOWSTORE_PREPARED_STATEMENTS"}


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: this one without any FLOWSTORE_ setting, plus ``extra``
    (but for what describes the way to the servers: ``make test-pgbouncer``'s pooler)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWSTORE_") or k in _ENVIRONMENT_SETTINGS
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowstore ARGS`` in a fresh process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "flowstore", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def run_concurrently(
    *commands: list[str], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI commands side by side (the suite's time is mostly process start)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda command: run_cli(*command, env=env), commands))


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *secrets: str, code: int = 1
) -> str:
    """The run failed with ``code`` and said why in exactly one stderr line, secrets masked."""
    assert result.returncode == code, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flowstore: error: "), lines[0]
    for output in (result.stderr, result.stdout):
        assert "Traceback" not in output
        for secret in secrets:
            assert secret not in output
    return lines[0]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file path, or a throwaway database on a server (dropped)."""
    if backend == "sqlite_file":
        yield f"sqlite:///{tmp_path / 'cli.sqlite3'}"
        return
    yield from server_database_url(backend, "cli")


def server_database_url(backend: str, tag: str) -> Iterator[str]:
    """The URL of a throwaway database on ``backend``'s server, dropped afterwards; an
    unreachable server skips the test locally and fails it in CI."""
    try:
        database = create_database(backend, tag)
    except Exception as exc:
        reason = f"{backend} unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield database.url.render_as_string(hide_password=False)
    finally:
        database.drop()


@pytest.fixture(params=CLI_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from empty_database(request.param, tmp_path)


@pytest.fixture(params=LIFECYCLE_BACKENDS)
def lifecycle_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from empty_database(request.param, tmp_path)


def migrated(url: str) -> Store:
    store = Store(url)
    store.upgrade()
    return store


def test_migration_lifecycle(lifecycle_url: str) -> None:
    """upgrade step by step, current, history, check, ping, stats, then downgrade to base."""
    database_url = lifecycle_url
    first, head = REVISIONS[0], head_revision()
    assert_ok(run_cli("db", "upgrade", first, "--url", database_url))

    current = assert_ok(run_cli("db", "current", "--url", database_url)).strip()
    if first != head:
        assert current.startswith(f"{first} (behind head {head}")
        behind = assert_one_line_error(run_cli("db", "check", "--url", database_url))
        assert f"at {first}, behind head {head}" in behind
    else:
        assert current == f"{head} (head)"

    upgraded = assert_ok(run_cli("db", "upgrade", "--url", database_url))
    assert f"to {head} (head)" in upgraded

    current_, history_, check_, ping_, stats_ = run_concurrently(
        ["--url", database_url, "db", "current"],
        ["db", "history", "--url", database_url],
        ["db", "check", "--url", database_url],
        ["ping", "--url", database_url],
        ["stats", "--json", "--url", database_url],
    )
    assert assert_ok(current_).strip() == f"{head} (head)"
    history = assert_ok(history_).splitlines()
    assert [line.split(" -> ")[1].split()[0].rstrip(":") for line in history] == REVISIONS[::-1]
    assert "(head, current)" in history[0]
    assert f"at head {head}; the schema matches the models" in assert_ok(check_)
    assert "ok (" in assert_ok(ping_)
    stats = json.loads(assert_ok(stats_))
    assert stats["revision"] == head
    assert set(stats["tables"]) == FLOWSTORE_TABLES
    assert set(stats["tables"].values()) == {0}

    down = assert_ok(run_cli("db", "downgrade", "base", "--url", database_url))
    assert f"downgraded from {head} to base" in down
    assert assert_ok(run_cli("db", "current", "--url", database_url)).startswith(
        "none (not migrated"
    )
    with Store(database_url) as store, store.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}


def test_url_from_the_environment_and_no_password_shown(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":  # the test server trusts local users: any password
        database_url = url.set(password=PASSWORD).render_as_string(hide_password=False)
    env = cli_env(FLOWSTORE_DATABASE_URL=database_url)
    results = [run_cli("db", "upgrade", env=env)]
    assert "upgraded from an empty database" in assert_ok(results[0])
    results.append(run_cli("db", "current", env=env))
    assert assert_ok(results[-1]).strip() == f"{head_revision()} (head)"
    assert "note:" not in results[-1].stderr
    results += run_concurrently(["ping"], ["stats"], ["db", "check"], env=env)
    for result in results:
        assert_ok(result)
        assert PASSWORD not in result.stdout + result.stderr


def test_stats_counts_what_is_there(database_url: str) -> None:
    statuses = [DeploymentStatus.RUNNING, DeploymentStatus.RUNNING, DeploymentStatus.FAILED]
    with migrated(database_url) as store, store.unit_of_work() as uow:
        uow.organizations.add_many(
            [Organization(name=f"Org {i}", slug=f"org-{i}") for i in range(4)]
        )
        uow.deployments.add_many(
            [Deployment(name=f"d{i}", version="1.0.0", status=s) for i, s in enumerate(statuses)]
        )

    stats = json.loads(assert_ok(run_cli("stats", "--json", "--url", database_url)))
    assert stats["tables"]["organizations"] == 4
    assert stats["tables"]["deployments"] == len(statuses)
    assert stats["tables"]["users"] == 0
    assert stats["deployments"] == {"total": 3, "by_status": {"failed": 1, "running": 2}}

    report = assert_ok(run_cli("stats", "--url", database_url))
    assert "deployments  3 in all (failed 1, running 2)" in report
    assert any(line.split() == ["organizations", "4"] for line in report.splitlines())


def test_check_fails_when_the_schema_was_changed_behind_alembics_back(database_url: str) -> None:
    with migrated(database_url) as store, store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE organizations ADD COLUMN rogue INTEGER"))
        conn.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)"))

    result = run_cli("db", "check", "--url", database_url)
    error = assert_one_line_error(result)
    assert "2 difference(s) between the models and the database" in error
    listed = result.stdout.splitlines()
    assert "  - column organizations.rogue: in the database, not in the models" in listed
    assert "  - table scratch: in the database, not in the models" in listed


def test_check_lists_a_missing_table(database_url: str) -> None:
    with migrated(database_url) as store, store.engine.begin() as conn:
        conn.execute(text("DROP TABLE inference_requests"))
    result = run_cli("db", "check", "--url", database_url)
    error = assert_one_line_error(result)
    listed = result.stdout.splitlines()
    assert f"{len(listed)} difference(s)" in error
    assert "  - table inference_requests: in the models, missing from the database" in listed
    assert all("inference_requests" in line for line in listed)  # the table and its indexes


def test_a_database_ahead_of_the_code_is_refused(database_url: str) -> None:
    with migrated(database_url) as store, store.engine.begin() as conn:
        conn.execute(text(f"UPDATE alembic_version SET version_num = '{UNKNOWN_REVISION}'"))

    *refused, history = run_concurrently(
        ["db", "current", "--url", database_url],
        ["db", "check", "--url", database_url],
        ["db", "upgrade", "--url", database_url],
        ["db", "downgrade", "base", "--url", database_url],
        ["db", "history", "--url", database_url],
    )
    for result in refused:
        error = assert_one_line_error(result)
        assert f"the database is ahead of this code: its revision '{UNKNOWN_REVISION}'" in error
    assert "ahead of this code" in assert_one_line_error(history)
    assert head_revision() in history.stdout

    with Store(database_url) as store:
        assert store.current_revision() == UNKNOWN_REVISION  # nothing was touched
        with store.engine.connect() as conn:
            assert set(FLOWSTORE_TABLES) <= set(inspect(conn).get_table_names())


def test_a_wrong_revision_is_one_line(database_url: str) -> None:
    assert_ok(run_cli("db", "upgrade", "--url", database_url))
    for result in run_concurrently(
        ["db", "upgrade", "nosuchrev", "--url", database_url],
        ["db", "downgrade", "nosuchrev", "--url", database_url],
    ):
        error = assert_one_line_error(result)
        assert "'nosuchrev'" in error
        assert "flowstore db history" in error
    with Store(database_url) as store:
        assert store.current_revision() == head_revision()


def test_downgrade_needs_a_revision(tmp_path: Path) -> None:
    result = run_cli("db", "downgrade", "--url", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert result.returncode == 2
    assert "REV" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("this is not a url", "invalid database URL"),
        (f"nosuchdriver://admin:{PASSWORD}@127.0.0.1/db", "cannot use database URL"),
        ("postgresql://admin:{password}@127.0.0.1:{port}/db", "database connection failed"),
        ("mysql://admin:{password}@127.0.0.1:{port}/db", "database connection failed"),
    ],
    ids=["garbage", "unknown-driver", "postgresql-closed-port", "mysql-closed-port"],
)
def test_bad_urls_fail_in_one_line_without_the_password(url: str, expected: str) -> None:
    url = url.format(password=PASSWORD, port=closed_port())
    with ThreadPoolExecutor(max_workers=2) as pool:
        by_option = pool.submit(run_cli, "ping", "--url", url)
        by_env = pool.submit(run_cli, "db", "upgrade", env=cli_env(FLOWSTORE_DATABASE_URL=url))
        assert expected in assert_one_line_error(by_option.result(), PASSWORD)
        assert expected in assert_one_line_error(by_env.result(), PASSWORD)


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.sqlite3"
    error = assert_one_line_error(run_cli("db", "current", "--url", f"sqlite:///{path}"))
    assert "does not exist" in error
    assert not path.exists()
    no_dir = tmp_path / "no" / "such" / "dir.sqlite3"
    error = assert_one_line_error(run_cli("db", "upgrade", "--url", f"sqlite:///{no_dir}"))
    assert "no such directory" in error


def test_invalid_settings_are_one_line() -> None:
    result = run_cli("ping", env=cli_env(FLOWSTORE_POOL_SIZE="lots"))
    assert "FLOWSTORE_POOL_SIZE" in assert_one_line_error(result)


def test_in_memory_default_says_so() -> None:
    result = run_cli("db", "current")
    assert assert_ok(result).strip() == f"{head_revision()} (head)"
    assert "throwaway in-memory database" in result.stderr


def test_usage_and_version() -> None:
    bare = run_cli()
    assert bare.returncode == 2
    assert "db" in bare.stderr and "demo" in bare.stderr
    db = run_cli("db")
    assert db.returncode == 2
    assert "upgrade" in db.stderr and "check" in db.stderr

    script = Path(sys.executable).with_name("flowstore")
    if not script.exists():
        pytest.skip("the flowstore console script is not installed next to this Python")
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert assert_ok(version).strip() == f"flowstore {__version__}"


HANDLER_MODULE = """
import json
from pathlib import Path


def handle(job):
    if job.payload.get("explode"):
        raise RuntimeError("this job always fails")
    with Path(__file__).with_name("handled.jsonl").open("a") as out:
        out.write(json.dumps(job.payload) + "\\n")
"""


def test_worker_processes_a_queue_until_it_is_empty(database_url: str, tmp_path: Path) -> None:
    with migrated(database_url) as store:
        mail = store.queue("mail")
        ids = [mail.enqueue({"n": n}) for n in range(3)]
        doomed = mail.enqueue({"explode": True}, max_attempts=1)
        store.queue("other").enqueue({"n": 99})
    (tmp_path / "demo_handlers.py").write_text(HANDLER_MODULE)

    result = run_cli(
        "worker",
        "--queue",
        "mail",
        "--handler",
        "demo_handlers:handle",
        "--until-empty",
        "--url",
        database_url,
        cwd=tmp_path,
    )
    assert_ok(result)
    handled = [json.loads(line) for line in (tmp_path / "handled.jsonl").read_text().splitlines()]
    assert sorted(p["n"] for p in handled) == [0, 1, 2]
    with Store(database_url) as store:
        mail = store.queue("mail")
        assert {mail.get(i).status for i in ids} == {JobStatus.DONE}
        dead = mail.get(doomed)
        assert dead.status == JobStatus.DEAD
        assert "this job always fails" in (dead.last_error or "")
        assert store.queue("other").counts()[JobStatus.QUEUED] == 1  # another queue: untouched

    stats = json.loads(assert_ok(run_cli("stats", "--json", "--url", database_url)))
    assert stats["jobs"] == {"mail": {"dead": 1, "done": 3}, "other": {"queued": 1}}


def test_worker_refusals_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    migrated(url).close()
    missing = run_cli(
        "worker", "--queue", "q", "--handler", "no_such_module:handle", "--url", url, cwd=tmp_path
    )
    assert "no_such_module" in assert_one_line_error(missing)
    in_memory = run_cli("worker", "--queue", "q", "--handler", "json:dumps", cwd=tmp_path)
    assert "needs a database its producers share" in in_memory.stderr.splitlines()[-1]
    assert in_memory.returncode == 1 and "Traceback" not in in_memory.stderr
    behind = f"sqlite:///{tmp_path / 'behind.sqlite3'}"
    with Store(behind) as store:
        store.upgrade(REVISIONS[0])
    if REVISIONS[0] != head_revision():
        refused = run_cli("worker", "--queue", "q", "--handler", "json:dumps", "--url", behind)
        assert "behind head" in assert_one_line_error(refused)
    closed = f"postgresql://worker:{PASSWORD}@127.0.0.1:{closed_port()}/jobs"
    unreachable = run_cli("--url", closed, "worker", "--queue", "q", "--handler", "json:dumps")
    assert "connection failed" in assert_one_line_error(unreachable, PASSWORD)


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'term.sqlite3'}"
    with migrated(url) as store:
        job_id = store.queue("q").enqueue({"n": 7})
    (tmp_path / "demo_handlers.py").write_text(HANDLER_MODULE)
    handled = tmp_path / "handled.jsonl"
    worker = [
        "worker",
        "--queue",
        "q",
        "--handler",
        "demo_handlers:handle",
        "--poll-interval",
        "0.05",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "flowstore", *worker],
        env=cli_env(FLOWSTORE_DATABASE_URL=url),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(1200):  # the first job handled: the worker is up, its signal handler too
            if handled.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the worker exited before it was asked to"
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log
    assert "Traceback" not in log
    assert handled.read_text().strip() == '{"n": 7}'
    with Store(url) as store:
        assert store.queue("q").get(job_id).status == JobStatus.DONE


def test_a_broken_revision_tree_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alembic's own errors about the revision scripts (two heads after a bad merge, a
    missing parent) end as one line naming a migration failure, not a traceback."""

    def broken() -> None:
        raise RevisionError("Multiple heads are present for given argument 'head'")

    url = f"sqlite:///{tmp_path / 'broken.sqlite3'}"
    assert cli.main(["db", "upgrade", "--url", url]) == cli.EXIT_OK
    monkeypatch.setattr(schema, "shipped_revisions", broken)
    for action in ("history", "current", "check"):
        assert cli.main(["db", action, "--url", url]) == cli.EXIT_FAILURE
        error = capsys.readouterr().err
        assert error.count("\n") == 1, error
        assert error.startswith("flowstore: error: migration failed: Multiple heads"), error


# -- a service's own migrations (the full lifecycle is in test_service_migrations.py) --------


def test_every_db_command_takes_a_service_migrations_directory() -> None:
    parser = cli.build_parser()
    for action in (["upgrade"], ["downgrade", "base"], ["current"], ["history"], ["check"]):
        args = parser.parse_args(["db", *action, "--migrations", "svc/migrations"])
        assert args.migrations == "svc/migrations", action


def test_db_init_writes_an_environment_and_never_overwrites(tmp_path: Path) -> None:
    made = assert_ok(
        run_cli("db", "init", "db/migrations", "--models", "acme_api.models", cwd=tmp_path)
    )
    assert "acme_api_alembic_version" in made
    env = (tmp_path / "db" / "migrations" / "env.py").read_text()
    assert 'run_service_environment(models="acme_api.models", name="acme_api")' in env
    assert "script_location = %(here)s/db/migrations" in (tmp_path / "alembic.ini").read_text()
    assert (tmp_path / "db" / "migrations" / "versions").is_dir()

    ini = (tmp_path / "alembic.ini").read_text()
    again = run_cli("db", "init", "other", "--models", "acme_api.models", cwd=tmp_path)
    assert "alembic.ini already exists: not overwriting it" in assert_one_line_error(again)
    assert (tmp_path / "alembic.ini").read_text() == ini
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--models", "acme..models"], "is not a dotted module name"),
        (["--models", "acme.models", "--name", "Acme-API"], "invalid service name 'Acme-API'"),
    ],
)
def test_db_init_refuses_bad_names(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli("db", "init", "migrations", *args, cwd=tmp_path)
    assert expected in assert_one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_migrations_option_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    result = run_cli("db", "upgrade", "--migrations", " ", "--url", url)
    assert "--migrations is empty" in assert_one_line_error(result)


def test_a_shared_version_table_is_one_clear_line(tmp_path: Path) -> None:
    """A service tree merged into flowstore's version table: the error says what to do."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    with migrated(url) as store, store.engine.begin() as conn:
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('a1b2c3d4e5f6')"))
    for result in run_concurrently(["db", "current", "--url", url], ["db", "check", "--url", url]):
        assert "give a service's migrations their own" in assert_one_line_error(result)
