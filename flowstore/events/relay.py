"""Publishing the event log to a Redis stream, at least once, never twice without a crash.

The relay keeps its checkpoint (the id of the last event it published) in Redis, next to the
stream, and a Lua script appends a batch and moves the checkpoint in one atomic step, but only
if the checkpoint is still the one the batch was read after. Hence:

* after a crash the relay resumes from the checkpoint: whatever the script appended is
  covered by it, whatever it did not append is published again (at least once);
* two relays at once (or one run twice) cannot both append a batch: the second finds the
  checkpoint moved, appends nothing and reads on from the new checkpoint;
* the stream and its checkpoint live and die together: a Redis that loses data (a failover,
  a restart without persistence) loses both, and the relay publishes again what is still in
  the log, rather than believing it published events the stream no longer has.

(A checkpoint in the database would be written after the stream in another system: a crash
between the two publishes twice, and a lost stream would go unnoticed.)

Each entry carries the event's fields as strings: ``id``, ``type``, ``entity_id``,
``org_id`` (empty when there is none), ``data`` (JSON) and ``created_at`` (ISO 8601).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from flowstore.errors import ConnectionFailedError, InvalidInputError, mask_secrets
from flowstore.events.log import Event, EventLog

__all__ = ["DEFAULT_STREAM", "RedisRelay", "connect_redis"]

DEFAULT_STREAM = "flowstore:events"

_APPEND = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then
  return -1
end
local maxlen = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, 6 do
  local fields = {'id', ARGV[i], 'type', ARGV[i + 1], 'entity_id', ARGV[i + 2],
                  'org_id', ARGV[i + 3], 'data', ARGV[i + 4], 'created_at', ARGV[i + 5]}
  if maxlen then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(fields))
  else
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
  n = n + 1
end
redis.call('SET', KEYS[2], ARGV[2])
return n
"""


def connect_redis(url: str) -> Any:
    """A redis-py client for ``url`` (``redis://HOST[:PORT]/DB``); ``InvalidInputError`` when
    redis-py is missing or the URL is not a Redis URL."""
    try:
        import redis
    except ImportError:
        raise InvalidInputError(
            "publishing to Redis needs redis-py: pip install 'flowstore[redis]'"
        ) from None
    try:
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    except ValueError as exc:
        raise InvalidInputError(f"invalid Redis URL {mask_secrets(url)!r}: {exc}") from None


class RedisRelay:
    """Copies committed events, in commit order, to the Redis stream ``stream``."""

    def __init__(
        self,
        log: EventLog,
        client: Any,
        *,
        stream: str = DEFAULT_STREAM,
        batch: int = 500,
        maxlen: int | None = None,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise InvalidInputError("the stream name must be a non-empty string")
        if not 1 <= batch <= 10_000:
            raise InvalidInputError("batch must be from 1 to 10,000")
        self.log = log
        self.client = client
        self.stream = stream
        self.checkpoint_key = f"{stream}:checkpoint"
        self.batch = batch
        self.maxlen = maxlen
        self.published = 0
        self._script = client.register_script(_APPEND)

    def checkpoint(self) -> int:
        """The id of the last event published to the stream (0: none yet)."""
        value = self._redis(lambda: self.client.get(self.checkpoint_key))
        return int(value) if value else 0

    def publish_batch(self) -> int:
        """Publish the next batch after the checkpoint; how many events it appended (0 when
        there was nothing new, or another relay appended this batch first)."""
        after = self.checkpoint()
        events = self.log.read(after=after, limit=self.batch)
        if not events:
            return 0
        args: list[Any] = [str(after), str(events[-1].id), str(self.maxlen or "")]
        for item in events:
            args += _fields(item)
        keys = [self.stream, self.checkpoint_key]
        appended = int(self._redis(lambda: self._script(keys=keys, args=args)))
        if appended < 0:
            return 0  # another relay moved the checkpoint: read on from it next time
        self.published += appended
        return appended

    def run(
        self,
        *,
        until_empty: bool = False,
        interval: float = 1.0,
        stop: threading.Event | None = None,
    ) -> int:
        """Publish until ``stop`` is set (or, with ``until_empty``, until nothing new is left),
        polling every ``interval`` seconds when idle; how many events this run appended."""
        stop = stop or threading.Event()
        start = self.published
        while not stop.is_set():
            appended = self.publish_batch()
            if appended:
                continue
            if until_empty and self.checkpoint() >= (self.log.last_id() or 0):
                break
            if not until_empty:
                stop.wait(interval)
        return self.published - start

    def _redis(self, call: Callable[[], Any]) -> Any:
        import redis

        try:
            return call()
        except redis.RedisError as exc:
            raise ConnectionFailedError(f"Redis: {mask_secrets(str(exc))}") from exc


def _fields(event: Event) -> list[str]:
    return [
        str(event.id),
        event.type,
        event.entity_id or "",
        str(event.org_id) if event.org_id else "",
        json.dumps(event.data, separators=(",", ":")),
        event.created_at.isoformat(),
    ]
