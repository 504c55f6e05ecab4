"""Pure: the cache profile's Redis settings -> ConnectionSettings (no I/O)."""

from __future__ import annotations

import dataclasses

from launcher.config.schema import Backend
from launcher.config.schema import CacheSettings
from launcher.config.schema import Embedded
from launcher.config.schema import Store
from launcher.config.schema import parse_migrate_target
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


def migrate_target(cache: CacheSettings, to: str) -> CacheSettings:
    """
    The cache profile of ``migrate.to``: `cache` with the target's store and addresses (the
    same credentials, TLS, encoding and key options, so the state is read back as it was written).
    """
    store, addresses, extra = parse_migrate_target(to)
    nodes = [f"{host}:{port}" for host, port in addresses]
    redis, sentinel, cluster = cache.redis, cache.sentinel, cache.cluster
    if store == Store.redis:
        host, port = addresses[0]
        redis = dataclasses.replace(redis, host=host, port=port, db=int(extra or 0), embedded=Embedded.never)
    elif store == Store.sentinel:
        sentinel = dataclasses.replace(sentinel, nodes=nodes, master_name=extra or sentinel.master_name)
    else:
        redis = dataclasses.replace(redis, db=0)
        cluster = dataclasses.replace(cluster, nodes=nodes)
    # One replace: CacheSettings checks the store against its connection settings as a whole.
    return dataclasses.replace(cache, store=store, backend=Backend.resilient, redis=redis, sentinel=sentinel,
                               cluster=cluster)
