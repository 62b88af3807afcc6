from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """The process's shared client for Parley's own keys (streams, locks, buckets)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def key(*parts: object) -> str:
    return ":".join([settings.REDIS_KEY_PREFIX, *(str(part) for part in parts)])
