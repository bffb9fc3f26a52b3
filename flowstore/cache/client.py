"""The Redis side of the read cache: leases, holds, and falling back to the database.

Every cached item (an entity by key, or a unique lookup) is one Redis hash with up to three
fields: ``d`` the row, ``l`` a lease, ``h`` how many committing writers hold it. The protocol,
each step one Lua script (atomic in Redis):

* **read**: a hit returns ``d``. A miss hands out a lease (a token from a counter that never
  repeats), or the one already handed out; an item on hold hands out nothing.
* **fill**: a reader that got a lease, then read the row from the database, stores it only if
  the item still has that lease and no hold. Any invalidation after the lease was handed out
  deleted the lease, so a row read before a commit can never be stored after it (the
  read-populate race), however slow the reader.
* **hold** (a writer, just before its ``COMMIT``): delete ``d`` and ``l``, count a hold, and
  let the item expire after ``hold_ms`` if the writer dies. While held, readers go to the
  database and fill nothing.
* **release** (the writer, after ``COMMIT``, before ``commit()`` returns): drop the hold;
  the last one deletes the item. A read that starts afterwards misses, so it reads the
  committed row.

Keys carry the database's fingerprint and the Redis server's ``run_id``: a Redis that
restarts with old data (a snapshot) is a new namespace, never a source of rows older than
commits it missed.

When Redis fails, the cache steps aside: reads go to the database (logged once, counted in
``stats``), and for ``retry_after`` seconds Redis is not tried. A writer's invalidations that
could not be sent are kept; until they are delivered, this process reads nothing from the
cache.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flowstore.errors import InvalidInputError, mask_secrets
from flowstore.sa_compat import await_in_greenlet

__all__ = ["Cache", "CacheStats", "Lease", "open_cache"]

log = logging.getLogger("flowstore.cache")

_READ = """
local v = redis.call('HMGET', KEYS[1], 'd', 'h', 'l')
if v[1] then return {1, v[1]} end
if v[2] and tonumber(v[2]) > 0 then return {2, ''} end
if v[3] then return {3, v[3]} end
local token = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', KEYS[1], 'l', token)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {3, token}
"""

_FILL = """
local v = redis.call('HMGET', KEYS[1], 'l', 'h')
if v[1] ~= ARGV[1] then return 0 end
if v[2] and tonumber(v[2]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
redis.call('HDEL', KEYS[1], 'l')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_HOLD = """
for _, key in ipairs(KEYS) do
  redis.call('HDEL', key, 'd', 'l')
  redis.call('HINCRBY', key, 'h', 1)
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS
"""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('HINCRBY', key, 'h', -1) <= 0 then
    redis.call('DEL', key)
  else
    redis.call('HDEL', key, 'd', 'l')
  end
end
return #KEYS
"""

_MAX_UNSENT = 100_000


@dataclass
class CacheStats:
    """What the cache did since the store opened (one process)."""

    hits: int = 0
    misses: int = 0  # read from the database (then maybe filled)
    fills: int = 0
    bypassed: int = 0  # read from the database without asking Redis (outage, own writes)
    invalidated: int = 0  # keys released after commits
    errors: int = 0  # Redis calls that failed

    @property
    def database_reads(self) -> int:
        """Reads through the cache that reached the database."""
        return self.misses + self.bypassed


@dataclass(frozen=True)
class Lease:
    """The answer to a read: ``value`` on a hit; else ``token`` (fill allowed) or nothing."""

    value: bytes | None = None
    token: bytes | None = None


class Cache:
    """A Redis-backed read cache shared by every process of one database (see the module)."""

    def __init__(
        self,
        client: Any,
        *,
        database: str,
        prefix: str = "flowstore",
        ttl: float = 300.0,
        lease_ttl: float = 10.0,
        hold_ttl: float = 30.0,
        retry_after: float = 1.0,
        asynchronous: bool = False,
        label: str = "",
    ) -> None:
        self.client = client
        self.asynchronous = asynchronous
        self.ttl_ms = int(ttl * 1000)
        self.lease_ms = int(lease_ttl * 1000)
        self.hold_ms = int(hold_ttl * 1000)
        self.retry_after = retry_after
        self.label = label
        self.stats = CacheStats()
        self._database = hashlib.sha1(database.encode()).hexdigest()[:10]  # noqa: S324
        self._prefix = prefix
        self._namespace: str | None = None
        self._down_until = 0.0
        self._unsent: set[str] = set()
        self._lock = threading.Lock()
        self._read = client.register_script(_READ)
        self._fill = client.register_script(_FILL)
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"<Cache {self.label}>"

    # -- keys ------------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        """The name of an item; its Redis key adds the namespace when it is sent."""
        return ":".join(parts)

    # -- the protocol ----------------------------------------------------------------------

    def read(self, item: str) -> Lease | None:
        """A hit, a lease, or an empty answer (on hold); ``None`` when Redis failed."""
        namespace = self._ready()
        if namespace is None:
            return None
        keys = [f"{namespace}:{item}", f"{namespace}:clock"]
        found = self._call(lambda: self._read(keys=keys, args=[self.lease_ms]))
        if found is None:
            return None
        status, payload = int(found[0]), found[1]
        if status == 1:
            self.stats.hits += 1
            return Lease(value=payload)
        self.stats.misses += 1
        return Lease(token=payload if status == 3 else None)

    def fill(self, item: str, token: bytes, value: str) -> None:
        """Store ``value`` if ``token`` is still the item's lease (see the module)."""
        namespace = self._ready()
        if namespace is None:
            return
        key = f"{namespace}:{item}"
        stored = self._call(lambda: self._fill(keys=[key], args=[token, value, self.ttl_ms]))
        if stored:
            self.stats.fills += 1

    def hold(self, items: list[str]) -> bool:
        """A committing writer's first step; ``False`` when Redis failed."""
        namespace = self._ready()
        if namespace is None:
            return False
        if not items:
            return True
        keys = [f"{namespace}:{item}" for item in items]
        done = self._call(lambda: self._hold(keys=keys, args=[self.hold_ms]))
        return done is not None

    def release(self, items: Iterable[str]) -> None:
        """A committed writer's last step; items that cannot be sent are kept for later."""
        wanted = list(items)
        with self._lock:
            if self._unsent:
                wanted += self._unsent
                self._unsent.clear()
        if not wanted:
            return
        namespace = self._ready()
        done = None
        if namespace is not None:
            keys = [f"{namespace}:{item}" for item in wanted]
            done = self._call(lambda: self._release(keys=keys, args=[]))
        if done is None:
            self._keep_unsent(wanted)
        else:
            self.stats.invalidated += len(wanted)

    def usable(self) -> bool:
        """Whether reads may use the cache now (Redis up, no undelivered invalidation)."""
        if self._ready() is None:
            return False
        if self._unsent:
            self.release(())
        return not self._unsent

    def bypass(self) -> None:
        """Count a read that went to the database without asking Redis."""
        self.stats.bypassed += 1

    @property
    def undelivered(self) -> int:
        """Invalidations that could not be sent yet (reads skip the cache until they are)."""
        return len(self._unsent)

    def retry_now(self) -> None:
        """Try Redis at the next call, without waiting for ``retry_after`` to pass."""
        self._down_until = min(self._down_until, time.monotonic())

    # -- Redis, and its failures -----------------------------------------------------------

    def _ready(self) -> str | None:
        """The namespace (database fingerprint, Redis run id), or ``None`` during an outage."""
        if self._namespace is not None and not self._down_until:
            return self._namespace
        if self._down_until and time.monotonic() < self._down_until:
            return None
        info = self._call(lambda: self.client.info("server"), probe=True)
        if info is None:
            return None
        run_id = str(info.get("run_id", ""))[:12]
        self._namespace = f"{self._prefix}:{self._database}:{run_id}"
        if self._down_until:
            log.info("cache %s: Redis answers again", self.label)
        self._down_until = 0.0
        return self._namespace

    def _run(self, result: Any) -> Any:
        return await_in_greenlet(result) if self.asynchronous else result

    def _call(self, call: Callable[[], Any], *, probe: bool = False) -> Any:
        import redis

        if self._down_until and not probe and time.monotonic() < self._down_until:
            return None
        try:
            return self._run(call())
        except (redis.RedisError, OSError) as exc:
            self.stats.errors += 1
            if not self._down_until:
                log.warning(
                    "cache %s: Redis failed (%s); reading from the database for now",
                    self.label,
                    mask_secrets(str(exc)),
                )
            self._down_until = time.monotonic() + self.retry_after
            return None

    def _keep_unsent(self, keys: list[str]) -> None:
        with self._lock:
            self._unsent.update(keys)
            if len(self._unsent) > _MAX_UNSENT:  # keep the newest; the TTL bounds the rest
                log.error("cache %s: dropping undelivered invalidations", self.label)
                self._unsent = set(list(self._unsent)[-_MAX_UNSENT:])

    def close(self) -> None:
        """Close the connections (a synchronous cache)."""
        if not self.asynchronous:
            self.client.close()

    async def aclose(self) -> None:
        """Close the connections (an asynchronous cache)."""
        await self.client.aclose()


def open_cache(url: str, database: str, *, asynchronous: bool = False) -> Cache:
    """A :class:`Cache` on the Redis at ``url`` for the database ``database`` (its URL,
    password masked: what tells two databases' rows apart in a shared Redis)."""
    try:
        if asynchronous:
            import redis.asyncio as redis_module
        else:
            import redis as redis_module  # type: ignore[no-redef]
    except ImportError:
        raise InvalidInputError(
            "cache_url needs redis-py: pip install 'flowstore[redis]'"
        ) from None
    try:
        client = redis_module.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=0.5, health_check_interval=30
        )
    except ValueError as exc:
        raise InvalidInputError(f"invalid cache URL {mask_secrets(url)!r}: {exc}") from None
    return Cache(
        client,
        database=database,
        asynchronous=asynchronous,
        label=mask_secrets(url),
    )
