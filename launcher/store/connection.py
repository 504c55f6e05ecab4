"""
Connections to the Redis that holds trading state: one server directly, the current master
behind Sentinel, or the primary that owns the trader's slot in a Redis Cluster. Built on
redis-py's pools and Sentinel support (NFR-002); the cluster pool is `launcher.store.cluster`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from launcher.store.cluster import SlotLocator
from launcher.store.cluster import SlotOwnerPool
from launcher.store.cluster import slot_of


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Where and how to connect.

    Parameters
    ----------
    timeout_s : float
        Socket connect and response timeout, seconds (FR-001: 2.0).
    max_connections : int
        Pool size bound (spec: 20).
    sentinels : tuple[tuple[str, int], ...]
        Sentinel addresses; when non-empty the master named `master_name` is discovered
        through them and followed across failovers.
    cluster_nodes : tuple[tuple[str, int], ...]
        Redis Cluster seed nodes; when non-empty the connections go to the primary that owns
        the hash slot of `slot_key`, followed across failovers and reshards.
    slot_key : str, optional
        With a cluster: the trader key (its hash tag) whose slot the connections are pinned to.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    ssl_ca_file: str | None = None
    db: int = 0
    timeout_s: float = 2.0
    max_connections: int = 20
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    slot_key: str | None = None

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def describe(self) -> str:
        """A log-safe description (never contains the password)."""
        auth = f"{self.username or ''}:***@" if self.password else (f"{self.username}@" if self.username else "")
        scheme = "rediss" if self.ssl else "redis"
        if self.is_sentinel:
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel://{nodes}/{self.master_name} (db {self.db}, {scheme})"
        if self.is_cluster:
            nodes = ",".join(f"{h}:{p}" for h, p in self.cluster_nodes)
            slot = f"slot {slot_of(self.slot_key)} of '{self.slot_key}'" if self.slot_key else "no slot"
            return f"cluster://{auth}{nodes} ({slot}, {scheme})"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    @classmethod
    def from_database_config(cls, database: Any, **overrides: Any) -> ConnectionSettings:
        """Build from NautilusTrader's ``DatabaseConfig`` (what its own adapter receives)."""
        values = dict(
            host=database.host or "127.0.0.1",
            port=int(database.port or 6379),
            username=database.username,
            password=database.password,
            ssl=bool(database.ssl),
            timeout_s=float(min(database.response_timeout, database.connection_timeout) or 2.0),
        )
        values.update(overrides)
        return cls(**values)


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``; raises ValueError with the reason."""
    if "@" in str(text):
        # user:password@host:port (a URL pasted into REDIS_SENTINELS...): what precedes '@' may be a
        # password, so it is not echoed, and it would otherwise reach the logs as part of the host.
        raise ValueError(f"'***@{str(text).rpartition('@')[2]}' holds credentials: an address is host:port "
                         "(credentials: cache.redis.username/password, cache.sentinel.username/password)")
    host, sep, port = str(text).rpartition(":")
    if not sep or not host:
        raise ValueError(f"'{text}' is not host:port")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' has no valid port (1..65535)")
    return host.strip("[]"), int(port)


def _common_kwargs(settings: ConnectionSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        username=settings.username,
        password=settings.password,
        db=settings.db,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        health_check_interval=0,
    )
    if settings.ssl:
        kwargs["ssl"] = True
        if settings.ssl_ca_file:
            kwargs["ssl_ca_certs"] = settings.ssl_ca_file
    return kwargs


def sentinel_client(settings: ConnectionSettings) -> Sentinel:
    """A redis-py ``Sentinel`` for the configured sentinels."""
    # No retries per sentinel: redis-py's default (3 with backoff) makes every dead sentinel
    # cost seconds on each master lookup; the next sentinel in the list is the retry.
    sentinel_kwargs: dict[str, Any] = dict(
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    if settings.sentinel_password:
        sentinel_kwargs["password"] = settings.sentinel_password
        sentinel_kwargs["username"] = settings.sentinel_username
    return Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **_common_kwargs(settings))


def connect(settings: ConnectionSettings, *, max_connections: int | None = None) -> redis.Redis:
    """
    Return a client backed by a bounded pool.

    With Sentinel the pool asks the sentinels for the master whenever a connection is
    (re)made, and a READONLY reply (a demoted master) is turned into a reconnect, so a
    failover is followed without restarting anything.
    """
    pool_size = max_connections or settings.max_connections
    if settings.is_cluster:
        return redis.Redis(connection_pool=_slot_owner_pool(settings, pool_size))
    if settings.is_sentinel:
        return sentinel_client(settings).master_for(
            settings.master_name,
            max_connections=pool_size,
            **_common_kwargs(settings),
        )
    kwargs = _common_kwargs(settings)
    connection_class: type[redis.Connection] = redis.Connection
    if kwargs.pop("ssl", False):
        connection_class = redis.SSLConnection
    pool = redis.BlockingConnectionPool(
        host=settings.host,
        port=settings.port,
        max_connections=pool_size,
        timeout=settings.timeout_s,
        connection_class=connection_class,
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


def _slot_owner_pool(settings: ConnectionSettings, pool_size: int) -> SlotOwnerPool:
    if not settings.slot_key:
        raise ValueError("a cluster connection needs slot_key (the trader key whose slot it is pinned to)")
    kwargs = _common_kwargs(settings)
    kwargs.pop("db")  # a cluster has database 0 only, and refuses SELECT
    ssl = kwargs.pop("ssl", False)
    seed_kwargs = dict(kwargs)
    if ssl:
        seed_kwargs["ssl"] = True
    locator = SlotLocator(settings.cluster_nodes, slot_of(settings.slot_key), seed_kwargs)
    return SlotOwnerPool(locator, settings.slot_key, ssl=ssl, max_connections=pool_size, timeout=settings.timeout_s,
                         **kwargs)


def master_address(settings: ConnectionSettings) -> tuple[str, int]:
    """The address of the server that takes writes now (asks the sentinels, or the cluster for the slot's owner)."""
    if settings.is_cluster:
        return _slot_owner_pool(settings, 1).locator.owner()
    if settings.is_sentinel:
        return sentinel_client(settings).discover_master(settings.master_name)
    return settings.host, settings.port


def health_check(client: redis.Redis) -> bool:
    """True when the server answers PING."""
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
