"""A Redis database of this test run's own, on the Redis at 127.0.0.1:6379.

A run takes the first of databases 1-15 whose lock key it can set (``SET NX`` with an expiry,
so a crashed run frees it), empties it before and after use, and releases the lock. An
unreachable Redis skips the tests that need it, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.backends import in_ci

REDIS_HOST = os.environ.get("FLOWSTORE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("FLOWSTORE_TEST_REDIS_PORT", "6379"))
_LOCK = "flowstore-test-run"


@contextmanager
def own_redis_database() -> Iterator[str]:
    """The URL of an empty Redis database held for this run (``redis://HOST:PORT/N``)."""
    import redis

    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    chosen: redis.Redis | None = None
    number = 0
    try:
        for number in range(1, 16):
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_timeout=5)
            if client.set(_LOCK, token, nx=True, ex=3600):
                chosen = client
                break
            client.close()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_HOST}:{REDIS_PORT} unreachable: {exc}"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    if chosen is None:
        pytest.fail("every Redis database 1-15 is held by another test run")
    try:
        _empty(chosen, token)
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        _empty(chosen, token)
        if chosen.get(_LOCK) == token.encode():
            chosen.delete(_LOCK)
        chosen.close()


def _empty(client: object, token: str) -> None:
    """Delete every key but the run's lock."""
    keys = [k for k in client.scan_iter(count=1000) if k != _LOCK.encode()]  # type: ignore[attr-defined]
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])  # type: ignore[attr-defined]
