"""flowstore.liveness: a pooled connection is pinged only after sitting idle for
``pool_pre_ping_idle`` seconds, and a dead idle one is replaced before a unit of work gets it.
On the servers (SQLite is never pinged)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from flowstore import Settings, Store
from tests.conftest import BACKENDS, server_database
from tests.pgbouncer import DROP_HIDDEN, skip_behind_pgbouncer

SERVERS = [b for b in ("postgresql", "mysql") if b in BACKENDS]


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest) -> str:
    database = server_database(request, str(request.param), "live")
    return database.url.render_as_string(hide_password=False)


def count_pings(store: Store[Any], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pings ``store``'s dialect makes from now on."""
    made: list[int] = []
    dialect = store.engine.dialect
    original = dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        made.append(1)
        return bool(original(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counting)
    return made


def _one(store: Store[Any]) -> int:
    with store.unit_of_work() as uow:
        value: int = uow.session.execute(text("SELECT 1")).scalar_one()
        return value


def _backend_id(store: Store[Any]) -> int:
    with store.unit_of_work() as uow:
        query = (
            "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT CONNECTION_ID()"
        )
        value: int = uow.session.execute(text(query)).scalar_one()
        return value


def test_a_connection_used_just_now_is_not_pinged(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(url, settings=Settings(pool_pre_ping_idle=60)) as store:
        pings = count_pings(store, monkeypatch)
        for _ in range(5):
            assert _one(store) == 1
        assert pings == []


def test_every_checkout_is_pinged_with_no_idle_allowance(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(url, settings=Settings(pool_pre_ping_idle=0)) as store:
        pings = count_pings(store, monkeypatch)
        _one(store)
        _one(store)
        assert len(pings) >= 1  # the reused connection was pinged (a new one needs none)


def test_pre_ping_off_never_pings(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(url, settings=Settings(pool_pre_ping=False, pool_pre_ping_idle=0)) as store:
        pings = count_pings(store, monkeypatch)
        _one(store)
        _one(store)
        assert pings == []


def test_an_idle_connection_the_server_dropped_is_replaced(url: str) -> None:
    with Store(url, settings=Settings(pool_pre_ping_idle=0.2, pool_size=1)) as store:
        skip_behind_pgbouncer(store.dialect, DROP_HIDDEN)
        victim = _backend_id(store)
        with Store(url) as admin, admin.unit_of_work() as uow:
            if store.dialect == "postgresql":
                uow.session.execute(text(f"SELECT pg_terminate_backend({victim})"))
            else:
                uow.session.execute(text(f"KILL {victim}"))
        time.sleep(0.3)
        assert _backend_id(store) != victim  # pinged, found dead, replaced: no error
