"""The fault suite (``make test-faults``): servers of its own, crashed, stopped and cut off.

It is collected only when asked for by path (``pytest tests/faults``), so ``make test`` never
runs it. Every test builds the servers it breaks (``servers.py``) and removes them afterwards;
the main servers are never touched. It needs root, Debian's PostgreSQL cluster tools,
``mariadbd`` and ``iptables``: without them a test skips saying what is missing, and under
``CI=true`` it fails instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import URL

from flowstore import Settings, Store
from flowstore.errors import FlowstoreError
from tests.backends import in_ci
from tests.faults.handlers import RECORD_DIR
from tests.faults.network import remove_leftovers
from tests.faults.servers import MariaDBServer, PostgresCluster, Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: A guard against a hung run, never a measure of speed.
PATIENCE = 240.0
#: The bound the suite configures (FLOWSTORE_NETWORK_TIMEOUT) where it matters.
NETWORK_TIMEOUT = 5.0

_TOOLS = {
    "postgresql": ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_isready", "psql"),
    "mariadb": ("mariadbd", "mariadb-install-db"),
    "iptables": ("iptables",),
    "tmpfs": ("mount", "umount"),
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect the fault suite only when a path inside it was asked for."""
    if collection_path.name.startswith("test_") and not _asked_for(config):
        return True
    return None


def _asked_for(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def require(*needs: str) -> None:
    """Skip (fail under CI=true) unless this machine has what ``needs`` name."""
    missing = [tool for need in needs for tool in _TOOLS[need] if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (servers run as their own users, iptables, mount)")
    if not missing:
        return
    reason = f"the fault suite needs {', '.join(missing)} on this machine"
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_rule_left_behind() -> Iterator[None]:
    """After each test: no iptables rule of its own is left (it would cut a port off)."""
    yield
    left = remove_leftovers()
    assert left == [], f"iptables rules left behind (now removed): {left}"


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A migrated server of the test's own, removed afterwards."""
    kind = str(request.param)
    require(kind)
    made: Server = PostgresCluster() if kind == "postgresql" else MariaDBServer()
    try:
        made.create()
        with Store(made.url) as store:
            store.upgrade()
        yield made
    finally:
        made.remove()


def settings(**changes: float) -> Settings:
    """The suite's settings: the bounds it asserts, small enough to keep it short."""
    values: dict[str, float] = {"network_timeout": NETWORK_TIMEOUT, "connect_timeout": 3}
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def wait_for(condition: Callable[[], bool], what: str, patience: float = PATIENCE) -> None:
    """Poll ``condition`` (a database it reads may be down meanwhile) until it holds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            if condition():
                return
        except FlowstoreError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def lines(self, level: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if f" {level} " in line]


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "runs"
    directory.mkdir()
    return directory


@pytest.fixture
def spawn(tmp_path: Path, record_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``python -m flowstore.worker`` processes running ``tests.faults.handlers:record``;
    any left running (or stopped) are killed afterwards."""
    started: list[WorkerProcess] = []

    def start(url: URL, queue: str, *, lease: float, batch: int = 1, threads: int = 1,
              env: dict[str, str] | None = None) -> WorkerProcess:  # fmt: skip
        log = tmp_path / f"worker-{len(started)}.log"
        command = [
            sys.executable, "-m", "flowstore.worker",
            "--url", url.render_as_string(hide_password=False), "--queue", queue,
            "--handler", "tests.faults.handlers:record", "--concurrency", str(threads),
            "--batch", str(batch), "--lease-seconds", str(lease), "--poll-interval", "0.1",
        ]  # fmt: skip
        environment = {**os.environ, RECORD_DIR: str(record_dir), **(env or {})}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=sink, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(process, log)
        started.append(worker)
        wait_for(lambda: b"worker on queue" in log.read_bytes() or process.poll() is not None,
                 "a worker to start")  # fmt: skip
        assert process.poll() is None, log.read_text()
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGCONT)
            worker.process.kill()
            worker.process.wait()


def stop_all(workers: list[WorkerProcess]) -> None:
    """SIGTERM each worker; each must finish its jobs in hand and exit with status 0."""
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.process.wait(timeout=PATIENCE) == 0, worker.log.read_text()[-4000:]


class ErrorRecords(logging.Handler):
    """ERROR (and worse) records of the loggers of this process, kept for a test to check."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def error_records() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
