"""``flowstore events relay`` against the real Redis, and ``flowstore events prune``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from flowstore import ConnectionFailedError, Store
from flowstore.cli import main
from flowstore.events.relay import RedisRelay, connect_redis
from flowstore.models import EVENTS, Organization
from flowstore.models.types import utcnow
from tests.redis_db import own_redis_database
from tests.test_cli import cli_env


@pytest.fixture(scope="module")
def redis_base() -> Iterator[str]:
    with own_redis_database() as url:
        yield url


@pytest.fixture
def redis_url(redis_base: str) -> str:
    import redis

    redis.Redis.from_url(redis_base).flushdb()
    return redis_base


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'events.sqlite3'}") as store:
        store.upgrade()
        yield store


def _publish(store: Store, n: int, start: int = 0) -> None:
    with store.unit_of_work() as uow:
        for i in range(start, start + n):
            uow.events.publish("tick", {"i": i})


def _stream(redis_url: str, stream: str = "flowstore:events") -> list[dict[str, str]]:
    client = connect_redis(redis_url)
    try:
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in client.xrange(stream)
        ]
    finally:
        client.close()


def test_the_relay_publishes_every_event_once_in_order(db: Store, redis_url: str) -> None:
    with db.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug="acme"))
    _publish(db, 5)
    url = db.url.render_as_string(hide_password=False)
    assert main(["events", "relay", "--url", url, "--to", redis_url, "--until-empty"]) == 0
    entries = _stream(redis_url)
    assert [e["type"] for e in entries] == ["organization.created"] + ["tick"] * 5
    assert entries[0]["entity_id"] == entries[0]["org_id"] == str(org.id)
    assert [json.loads(e["data"])["i"] for e in entries[1:]] == list(range(5))
    assert [int(e["id"]) for e in entries] == [e.id for e in db.events.read()]
    # again: nothing new, nothing twice; then only what came since
    assert main(["events", "relay", "--url", url, "--to", redis_url, "--until-empty"]) == 0
    assert len(_stream(redis_url)) == 6
    _publish(db, 2, start=5)
    assert main(["events", "relay", "--url", url, "--to", redis_url, "--until-empty"]) == 0
    assert [json.loads(e["data"]).get("i") for e in _stream(redis_url)][-3:] == [4, 5, 6]


def test_two_relays_at_once_publish_nothing_twice(db: Store, redis_url: str) -> None:
    _publish(db, 300)
    relays = [RedisRelay(db.events, connect_redis(redis_url), batch=7) for _ in range(3)]
    threads = [threading.Thread(target=r.run, kwargs={"until_empty": True}) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [int(e["id"]) for e in _stream(redis_url)]
    assert ids == [e.id for e in db.events.read(limit=1000)]  # each once, in order
    assert sum(r.published for r in relays) == 300


def test_a_crashed_relay_resumes_after_its_checkpoint(
    db: Store, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(db, 25)
    relay = RedisRelay(db.events, connect_redis(redis_url), batch=10)
    read = db.events.read
    calls = {"n": 0}

    def crash_on_third(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionFailedError("the database went away")
        return read(*args, **kwargs)

    monkeypatch.setattr(db.events, "read", crash_on_third)
    with pytest.raises(ConnectionFailedError):
        relay.run(until_empty=True)
    assert relay.checkpoint() == read()[19].id and len(_stream(redis_url)) == 20
    monkeypatch.setattr(db.events, "read", read)
    again = RedisRelay(db.events, connect_redis(redis_url), batch=10)
    assert again.run(until_empty=True) == 5
    assert [int(e["id"]) for e in _stream(redis_url)] == [e.id for e in read(limit=100)]


def test_the_stream_and_its_checkpoint_are_named_by_the_stream(db: Store, redis_url: str) -> None:
    _publish(db, 3)
    url = db.url.render_as_string(hide_password=False)
    args = ["events", "relay", "--url", url, "--to", redis_url, "--stream", "acme", "--until-empty"]
    assert main(args) == 0
    client = connect_redis(redis_url)
    try:
        assert client.xlen("acme") == 3
        assert int(client.get("acme:checkpoint")) == db.events.last_id()
    finally:
        client.close()


def test_relay_failures_are_one_line(db: Store, tmp_path: Path) -> None:
    url = db.url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-m", "flowstore", "events", "relay", "--url", url,
         "--to", "redis://:hunter2@127.0.0.1:1/0", "--until-empty"],
        env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("flowstore: error: Redis") and "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    memory = subprocess.run(
        [sys.executable, "-m", "flowstore", "events", "relay", "--to", "redis://127.0.0.1/0"],
        env=cli_env(), capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert memory.returncode == 1 and "FLOWSTORE_DATABASE_URL" in memory.stderr


def test_prune_from_the_command_line(db: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _publish(db, 4)
    ids = [e.id for e in db.events.read()]
    with db.engine.begin() as conn:
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(ids[:2]))
            .values(created_at=utcnow() - timedelta(days=8))
        )
    url = db.url.render_as_string(hide_password=False)
    assert main(["events", "prune", "--url", url, "--older-than", "7d"]) == 0
    assert "pruned 2 event(s)" in capsys.readouterr().out
    assert [e.id for e in db.events.read()] == ids[2:]
    assert main(["events", "prune", "--url", url, "--older-than", "a week"]) == 1
    assert "--older-than takes" in capsys.readouterr().err
