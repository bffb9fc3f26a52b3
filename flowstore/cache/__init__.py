"""A read-through cache in Redis that is never stale after a commit (see docs/cache.md).

``Store(url, cache_url="redis://...")`` reads ``get``, ``get_or_none`` and the unique lookups
declared with :func:`cached_lookup` (``get_by_slug``, ``get_by_api_key``, ...) through Redis.
"""

from flowstore.cache import invalidation as _invalidation  # installs the commit hooks
from flowstore.cache.client import Cache, CacheStats
from flowstore.cache.reads import cached_lookup

__all__ = ["Cache", "CacheStats", "cached_lookup"]

del _invalidation
