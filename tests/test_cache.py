"""The read cache: never a row older than a commit that returned, from any process, also when
readers fill the cache while a writer commits; tenant scope as without it; Redis outages
degrade to the database (every backend, the real Redis)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowstore import Store, TenantScopeError, UnitOfWork, where
from flowstore.cache import client as cache_client
from flowstore.cache.client import Cache
from flowstore.models import Application, Deployment, Organization, User
from tests.conftest import BACKENDS
from tests.redis_db import own_redis_database

# Cached stores share a database with other stores (and processes): a file or a server.
SHARED = [b for b in BACKENDS if b != "sqlite"] or ["sqlite_file"]
pytestmark = pytest.mark.parametrize("backend", SHARED, indirect=True)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with own_redis_database() as url:
        yield url


def cache(store: Store) -> Cache:
    assert store.cache is not None
    return store.cache


def redis_url_of(store: Store) -> str:
    kwargs = cache(store).client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


@pytest.fixture
def cached(store: Store, redis_url: str) -> Iterator[Store]:
    """A store with the cache on the same database as ``store`` (for the in-memory database:
    ``store`` itself, given a cache)."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    made = Store(store.url, cache_url=redis_url)
    try:
        yield made
    finally:
        made.close()


def _org_with_app(store: Store, slug: str = "acme") -> tuple[Organization, Application, str]:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug=slug))
        app, raw = uow.applications.create_with_api_key(org.id, "gateway")
    return org, app, raw


def _warm(store: Store, org: Organization, app: Application, raw: str) -> None:
    for _ in range(2):  # SQLite fills only the first read of a transaction: twice is enough
        reads: list[Callable[[UnitOfWork], object]] = [
            lambda uow: uow.organizations.get(org.id),
            lambda uow: uow.organizations.get_by_slug(org.slug),
            lambda uow: uow.applications.get_by_api_key(raw),
            lambda uow: uow.applications.get(app.id),
        ]
        for read in reads:
            with store.unit_of_work() as uow:
                read(uow)


def test_reads_are_answered_from_the_cache(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    hits = cache(cached).stats.hits
    with cached.unit_of_work() as uow:
        found = uow.applications.get_by_api_key(raw)
    assert found is not None and found.id == app.id and cache(cached).stats.hits == hits + 1
    with cached.unit_of_work() as uow:
        assert uow.organizations.get(org.id).slug == "acme"
    assert cache(cached).stats.hits == hits + 2


def test_a_cached_entity_updates_like_a_loaded_one(cached: Store) -> None:
    with cached.unit_of_work() as uow:
        d = uow.deployments.add(Deployment(name="api", version="1", config={"replicas": 1}))
    for _ in range(2):
        with cached.unit_of_work() as uow:
            uow.deployments.get(d.id)
    hits = cache(cached).stats.hits
    with cached.unit_of_work() as uow:
        found = uow.deployments.get(d.id)
        found.config["replicas"] = 3  # in place, on an object that came from Redis
    assert cache(cached).stats.hits == hits + 1
    with cached.unit_of_work() as uow:
        again = uow.deployments.get(d.id)
        assert again.config == {"replicas": 3} and again.lock_version == 2


def test_a_rotated_key_stops_working_when_the_rotation_commits(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    with cached.unit_of_work() as uow:
        fresh = uow.applications.rotate_api_key(app.id)
    with cached.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is None
        assert uow.applications.get_by_api_key(fresh).id == app.id  # type: ignore[union-attr]


def test_statement_writes_invalidate(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    with cached.unit_of_work() as uow:
        assert uow.organizations.update_many(where("slug", "==", "acme"), slug="acme-2") == 1
    with cached.unit_of_work() as uow:
        assert uow.organizations.get_by_slug("acme") is None
        assert uow.organizations.get(org.id).slug == "acme-2"
    _warm(cached, org, app, raw)
    with cached.unit_of_work() as uow:
        uow.organizations.upsert(Organization(id=org.id, name="Upserted", slug="acme-2"))
    with cached.unit_of_work() as uow:
        assert uow.organizations.get(org.id).name == "Upserted"
    with cached.unit_of_work() as uow:
        assert uow.applications.delete_many(name="gateway") == 1
    with cached.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is None
        assert uow.applications.get_or_none(app.id) is None


def test_deleting_an_organization_evicts_what_the_database_cascades(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    with cached.unit_of_work() as uow:
        uow.organizations.delete(org.id)
    with cached.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is None
        assert uow.applications.get_or_none(app.id) is None


def test_a_unit_of_work_reads_its_own_writes(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    with cached.unit_of_work() as uow:
        uow.organizations.update_many(where("id", "==", org.id), name="Mine")
        assert uow.organizations.get(org.id).name == "Mine"
        uow.applications.rotate_api_key(app.id)
        assert uow.applications.get_by_api_key(raw) is None
        uow.rollback()


def test_tenant_scope_applies_to_cached_reads(cached: Store) -> None:
    org, app, raw = _org_with_app(cached)
    other, _other_app, _ = _org_with_app(cached, "other")
    with cached.unit_of_work() as uow:
        user = uow.users.add(User(org_id=org.id, email="a@acme.test", external_id="ext-1"))
        d = uow.deployments.add(Deployment(name="api", version="1"))
    _warm(cached, org, app, raw)
    for _ in range(2):
        with cached.unit_of_work() as uow:
            uow.users.get_by_external_id("ext-1")
            uow.users.get_by_email(org.id, "a@acme.test")
            uow.deployments.get(d.id)
    with cached.unit_of_work(org_id=other.id) as uow:
        hits = cache(cached).stats.hits
        assert uow.applications.get_by_api_key(raw) is None
        assert uow.applications.get_or_none(app.id) is None
        assert uow.organizations.get_by_slug("acme") is None
        assert uow.users.get_by_external_id("ext-1") is None
        assert uow.users.get_by_email(org.id, "a@acme.test") is None
        assert cache(cached).stats.hits > hits  # answered by the cache, and still refused
        with pytest.raises(TenantScopeError):
            uow.deployments.get(d.id)  # platform data: refused, cached or not
    with cached.unit_of_work(org_id=org.id) as uow:
        assert uow.applications.get_by_api_key(raw).id == app.id  # type: ignore[union-attr]
        assert uow.users.get_by_external_id("ext-1").id == user.id  # type: ignore[union-attr]


# -- the read-populate race -----------------------------------------------------------------


def _stalled_fill(
    monkeypatch: pytest.MonkeyPatch,
    reader: list[threading.Thread],
    reached: threading.Event,
    go_on: threading.Event,
) -> None:
    fill = Cache.fill

    def stalled(self: Cache, item: str, token: bytes, value: str) -> None:
        if reader and threading.current_thread() is reader[0]:
            reached.set()
            go_on.wait(10)
        fill(self, item, token, value)

    monkeypatch.setattr(Cache, "fill", stalled)


def _race(cached: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A reader misses, reads the old row, and stalls before filling; the key is rotated and
    committed meanwhile; then the reader fills. Returns (old key, new key)."""
    _org, app, raw = _org_with_app(cached)
    reached, go_on = threading.Event(), threading.Event()
    reader: list[threading.Thread] = []
    _stalled_fill(monkeypatch, reader, reached, go_on)
    seen: list[Any] = []

    def read() -> None:
        with cached.unit_of_work() as uow:
            seen.append(uow.applications.get_by_api_key(raw))

    reader.append(threading.Thread(target=read))
    reader[0].start()
    assert reached.wait(10), "the reader never got to fill"
    with cached.unit_of_work() as uow:
        fresh = uow.applications.rotate_api_key(app.id)
    go_on.set()
    reader[0].join(10)
    assert seen and seen[0] is not None  # it read before the rotation
    return raw, fresh


def test_a_fill_from_before_a_commit_is_refused(
    cached: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _race(cached, monkeypatch)
    with cached.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(old) is None
        assert uow.applications.get_by_api_key(new) is not None


def test_the_race_check_can_fail_without_leases(
    cached: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fill that ignores its lease stores the row read before the rotation: stale."""
    monkeypatch.setattr(
        cache_client,
        "_FILL",
        "redis.call('HSET', KEYS[1], 'd', ARGV[2]); redis.call('HDEL', KEYS[1], 'l'); return 1",
    )
    with Store(cached.url, cache_url=redis_url_of(cached)) as unleased:
        old, _new = _race(unleased, monkeypatch)
        with unleased.unit_of_work() as uow:
            assert uow.applications.get_by_api_key(old) is not None  # the stale row authenticates


def _process_reader(
    url: str, cache_url: str, slug: str, raws: Any, version: Any, stop: Any, failures: Any
) -> None:
    """Read the organization (by id, by slug) and the retired keys in a loop; a read that
    started after the commit of version ``v`` must see ``v`` or later."""
    with Store(url, cache_url=cache_url) as store:
        with store.unit_of_work() as uow:
            org_id = uow.organizations.get_by_slug(slug).id  # type: ignore[union-attr]
        while not stop.is_set():
            started = version.value
            retired = list(raws)[: max(0, started)]
            with store.unit_of_work() as uow:
                name = uow.organizations.get(org_id).name
                by_slug = uow.organizations.get_by_slug(slug)
                stale_keys = [r for r in retired if uow.applications.get_by_api_key(r)]
            seen = min(int(name[1:]), int(by_slug.name[1:]))  # type: ignore[union-attr]
            if seen < started or stale_keys:
                failures.put(f"started at v{started}, saw v{seen}, stale keys {len(stale_keys)}")
                return


def test_readers_in_other_processes_never_see_a_row_older_than_a_returned_commit(
    cached: Store, redis_url: str
) -> None:
    with cached.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="v0", slug="race"))
        app, raw = uow.applications.create_with_api_key(org.id, "gateway")
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    raws = manager.list()
    version = context.Value("i", 0)
    stop, failures = context.Event(), context.Queue()
    url = cached.url.render_as_string(hide_password=False)
    readers = [
        context.Process(
            target=_process_reader,
            args=(url, redis_url, "race", raws, version, stop, failures),
        )
        for _ in range(2)
    ]
    for p in readers:
        p.start()
    try:
        for n in range(1, 16):
            with cached.unit_of_work() as uow:
                uow.organizations.get(org.id).name = f"v{n}"
                new_raw = uow.applications.rotate_api_key(app.id)
            raws.append(raw)  # retired by the commit that just returned
            raw = new_raw
            version.value = n
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for p in readers:
            p.join(60)
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    assert problems == []
    assert all(p.exitcode == 0 for p in readers)


# -- outages ----------------------------------------------------------------------------------


def test_an_unreachable_redis_degrades_to_the_database(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(store.url, cache_url="redis://127.0.0.1:1/0") as down:
        org, app, raw = _org_with_app(down)
        with caplog.at_level(logging.WARNING, logger="flowstore.cache"):
            for _ in range(3):
                with down.unit_of_work() as uow:
                    assert uow.applications.get_by_api_key(raw).id == app.id  # type: ignore[union-attr]
                    assert uow.organizations.get(org.id).slug == "acme"
            with down.unit_of_work() as uow:
                uow.applications.rotate_api_key(app.id)
            with down.unit_of_work() as uow:
                assert uow.applications.get_by_api_key(raw) is None
        assert cache(down).stats.errors >= 1 and cache(down).stats.database_reads >= 6
        assert "reading from the database" in caplog.text


def test_invalidations_missed_in_an_outage_are_sent_before_the_cache_is_read_again(
    cached: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    org, app, raw = _org_with_app(cached)
    _warm(cached, org, app, raw)
    held = cache(cached)
    real_call = Cache._call

    def broken(self: Cache, call: Any, *, probe: bool = False) -> Any:
        def fail() -> Any:
            raise redis.ConnectionError("Redis is gone")

        return real_call(self, fail, probe=probe)

    monkeypatch.setattr(Cache, "_call", broken)
    with cached.unit_of_work() as uow:
        uow.applications.rotate_api_key(app.id)  # commits; Redis never hears of it
    assert held.undelivered == 3  # the entity, the old and the new key's lookups
    monkeypatch.setattr(Cache, "_call", real_call)
    held.retry_now()  # Redis is back
    with cached.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is None
    assert held.undelivered == 0
