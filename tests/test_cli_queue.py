"""``flowstore queue status`` and ``flowstore queue schedules``: what the queues hold, in text
and JSON, from a fresh process (a migrated SQLite file; the SQL is the queue's, tested on every
backend in test_queue_features.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from flowstore import Store
from flowstore.models import JobStatus
from tests.test_cli import assert_ok, run_cli


@pytest.fixture
def url(tmp_path: Path) -> str:
    address = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    with Store(address) as store:
        store.upgrade()
        mail = store.queue("mail")
        mail.enqueue({"to": "ada"}, run_at=timedelta(seconds=-90))
        doomed = mail.enqueue({"to": "nobody"}, max_attempts=1, priority=5)
        job = mail.dequeue()
        assert job is not None and job.id == doomed
        mail.fail(job, "Traceback (most recent call last):\nValueError: no such mailbox")
        store.queue("reports").schedule("weekly", "0 6 * * 1", {"kind": "weekly"})
    return address


def test_queue_status_shows_counts_ages_and_dead_jobs(url: str) -> None:
    out = assert_ok(run_cli("queue", "status", "--url", url))

    header, mail, dead = out.splitlines()[:3]
    assert header.split() == ["queue", *[s.value for s in JobStatus], "oldest", "due"]
    assert mail.split()[:6] == ["mail", "1", "0", "0", "1", "0"]
    assert mail.split()[6].endswith("s")  # about 1m30s: an age
    assert "dead" in dead and "ValueError: no such mailbox" in dead


def test_queue_status_as_json(url: str) -> None:
    status = json.loads(assert_ok(run_cli("queue", "status", "--json", "--url", url)))

    (mail,) = status["queues"]
    assert mail["queue"] == "mail"
    assert mail["counts"] == {"queued": 1, "running": 0, "done": 0, "dead": 1, "cancelled": 0}
    assert mail["oldest_due_seconds"] >= 90
    assert mail["dead"][0]["last_error"].endswith("ValueError: no such mailbox")


def test_queue_schedules_lists_the_next_run(url: str) -> None:
    out = assert_ok(run_cli("queue", "schedules", "--url", url))
    assert "reports/weekly  '0 6 * * 1'" in out and "next " in out and "(in " in out

    listed = json.loads(assert_ok(run_cli("queue", "schedules", "--json", "--url", url)))
    (weekly,) = listed["schedules"]
    assert (weekly["queue"], weekly["name"], weekly["cron"]) == ("reports", "weekly", "0 6 * * 1")
    assert weekly["next_run_at"] > listed["at"]


def test_queue_commands_on_an_unmigrated_database_fail_in_one_line(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    with Store(empty) as store:
        store.ping()  # the file exists, with no table
    for command in ("status", "schedules"):
        result = run_cli("queue", command, "--url", empty)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "flowstore: error: the database is not migrated: run `flowstore db upgrade` first"
        ]
