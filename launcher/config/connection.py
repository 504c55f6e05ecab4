"""Pure: the cache profile's Redis settings -> ConnectionSettings (no I/O)."""

from __future__ import annotations

from launcher.config.schema import CacheSettings
from launcher.config.schema import Store
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import parse_address


def connection_settings(cache: CacheSettings) -> ConnectionSettings | None:
    """Return where the cache profile's state lives, or None for ``store: memory``."""
    if cache.store == Store.memory:
        return None
    redis = cache.redis
    sentinels: tuple[tuple[str, int], ...] = ()
    if cache.store == Store.sentinel:
        sentinels = tuple(parse_address(node) for node in cache.sentinel.nodes)
    return ConnectionSettings(
        host=redis.host,
        port=int(redis.port),
        username=redis.username or None,
        password=redis.password or None,
        ssl=bool(redis.ssl),
        ssl_ca_file=redis.ssl_ca_file,
        db=int(redis.db),
        timeout_s=float(redis.timeout_s),
        max_connections=int(redis.max_connections),
        sentinels=sentinels,
        master_name=cache.sentinel.master_name,
        sentinel_username=cache.sentinel.username,
        sentinel_password=cache.sentinel.password,
    )
