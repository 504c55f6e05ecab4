"""Pure: the cache profile's Redis settings -> ConnectionSettings (no I/O)."""

from __future__ import annotations

from launcher.config.schema import CacheSettings
from launcher.config.schema import Store
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import parse_address


def connection_settings(cache: CacheSettings, slot_key: str | None = None) -> ConnectionSettings | None:
    """
    Return where the cache profile's state lives, or None for ``store: memory``. With the
    cluster profile `slot_key` is the trader key whose hash slot the connections follow
    (``launcher.state.loader.store_connection`` passes it).
    """
    if cache.store == Store.memory:
        return None
    redis = cache.redis
    sentinels: tuple[tuple[str, int], ...] = ()
    if cache.store == Store.sentinel:
        sentinels = tuple(parse_address(node) for node in cache.sentinel.nodes)
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    if cache.store == Store.cluster:
        cluster_nodes = tuple(parse_address(node) for node in cache.cluster.nodes)
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
        cluster_nodes=cluster_nodes,
        slot_key=slot_key,
    )
