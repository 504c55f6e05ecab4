"""
Redis Cluster: a connection pool pinned to the primary that owns one hash slot, the slot of
the trader's hash tag, as redis-py's SentinelConnectionPool is pinned to "the current master".

Every key of a trader shares its hash tag (``launcher.state.layout.trader_key``), so one node
holds all of them: MULTI/EXEC, the Lua guards and SCAN work on a plain ``redis.Redis`` client
on this pool exactly as on one server. A connection asks the seed nodes (``CLUSTER SLOTS``)
which primary owns the slot each time it (re)connects. A redirect or cluster error (MOVED,
ASK, TRYAGAIN, CLUSTERDOWN) means "not here, not now": the connection is dropped and the
error raised as a ConnectionError, so every caller's reconnect-and-retry handles failovers and
reshards; the writer's raw exchanges see those replies themselves (`is_redirect`).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry


# Replies that say the slot is not (or not yet, or not safely) served by this node. Nothing of
# a command or a transaction that got one was applied.
REDIRECT_PREFIXES = ("MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ")
_REDIRECT_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


_REDIRECT_KINDS = {
    redis.exceptions.MovedError: "MOVED",
    redis.exceptions.AskError: "ASK",
    redis.exceptions.TryAgainError: "TRYAGAIN",
    redis.exceptions.ClusterDownError: "CLUSTERDOWN",
}


def note_redirect(pool: Any, error: BaseException) -> None:
    """Count `error` on `pool`'s slot locator when it is a cluster redirect (no-op for other pools)."""
    locator = getattr(pool, "locator", None)
    if locator is not None and is_redirect(error):
        locator.note_redirect(error)


def is_redirect(error: BaseException) -> bool:
    """Whether `error` (parsed by redis-py or a raw hiredis reply) is a cluster redirect or outage."""
    return isinstance(error, _REDIRECT_ERRORS) or (
        isinstance(error, redis.exceptions.ResponseError) and str(error).startswith(REDIRECT_PREFIXES)
    )


class SlotOwnerNotFound(redis.exceptions.ConnectionError):
    """No seed node answered with an owner of the slot (cluster down, seeds unreachable)."""


class NotACluster(redis.exceptions.ResponseError):
    """A seed node answered, but as a server without cluster support: waiting will not help."""


class SlotLocator:
    """
    Finds the primary that owns `slot` by asking the seed nodes, first answer wins.

    Parameters
    ----------
    seeds : tuple[tuple[str, int], ...]
        Any nodes of the cluster; the owner is asked for in this order, then the last owner.
    slot : int
        The hash slot (0..16383) of the trader's hash tag.
    client_kwargs : dict
        Connection options for the short-lived seed clients (auth, TLS, timeouts in seconds).
    """

    def __init__(self, seeds: tuple[tuple[str, int], ...], slot: int, client_kwargs: dict[str, Any]) -> None:
        self.seeds = tuple(seeds)
        self.slot = slot
        self._client_kwargs = {k: v for k, v in client_kwargs.items() if k != "db"}
        self._lock = threading.Lock()
        self.last_owner: tuple[str, int] | None = None
        self.owner_changes = 0  # re-discoveries that found another primary (failover, reshard)
        self.redirects: collections.Counter[str] = collections.Counter()  # MOVED/ASK/TRYAGAIN/CLUSTERDOWN replies seen

    def note_redirect(self, error: BaseException) -> None:
        """Count a redirect reply by kind (its first word; redis-py's parsed errors by class)."""
        kind = _REDIRECT_KINDS.get(type(error)) or str(error).split(" ", 1)[0]
        with self._lock:
            self.redirects[kind] += 1

    def owner(self) -> tuple[str, int]:
        """The (host, port) of the slot's primary now; raises SlotOwnerNotFound."""
        errors: list[str] = []
        candidates = list(self.seeds)
        if self.last_owner is not None and self.last_owner not in candidates:
            candidates.append(self.last_owner)
        for host, port in candidates:
            try:
                found = self._ask(host, port)
            except (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError,
                    redis.exceptions.NoPermissionError):
                raise  # wrong credentials or ACL: every seed would say the same, and waiting will not help
            except redis.exceptions.ResponseError as e:
                if "cluster support disabled" in str(e):
                    raise NotACluster(
                        f"{host}:{port} is not a Redis Cluster node (cluster support disabled): "
                        "use cache=redis_dev or cache=redis_sentinel for it",
                    ) from None
                errors.append(f"{host}:{port}: {e}")
                continue
            except redis.exceptions.RedisError as e:
                errors.append(f"{host}:{port}: {e}")
                continue
            if found is not None:
                with self._lock:
                    if self.last_owner is not None and found != self.last_owner:
                        self.owner_changes += 1
                    self.last_owner = found
                return found
            errors.append(f"{host}:{port}: no owner of slot {self.slot}")
        raise SlotOwnerNotFound(f"no cluster node names the owner of slot {self.slot} ({'; '.join(errors)[:300]})")

    def _ask(self, host: str, port: int) -> tuple[str, int] | None:
        # No client-side retries: a dead seed must cost one connect attempt; the next seed is the retry.
        client = redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **self._client_kwargs)
        try:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= self.slot <= int(end):
                    owner_host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                    # An empty or '?' host means "the node you are talking to" (Redis 7).
                    return (owner_host if owner_host not in ("", "?") else host), int(primary[1])
            return None
        finally:
            client.close()


class SlotOwnerConnection(redis.Connection):
    """A connection that (re)connects to whichever primary owns its pool's slot now."""

    def __init__(self, **kwargs: Any) -> None:
        self.locator: SlotLocator = kwargs.pop("slot_locator")
        self.probe_key: str = kwargs.pop("slot_probe_key")
        super().__init__(**kwargs)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.locator.owner()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        self.confirm_owner()

    def confirm_owner(self) -> None:
        """
        Raise ConnectionError unless this node serves the slot alone right now: EXISTS of a key
        that is never written (the slot key itself: the trader's keys all extend it) answers MOVED on a node that does not own the slot and ASK while
        the slot is being migrated away (SCAN, which is not slot-checked, would silently miss
        keys there).
        """
        self.send_command("EXISTS", self.probe_key)
        self.read_response()

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.ResponseError as e:
            if not is_redirect(e):
                raise
            self.locator.note_redirect(e)
            self.disconnect()
            raise redis.exceptions.ConnectionError(
                f"slot {self.locator.slot} is not served by {self.host}:{self.port} now "
                f"({type(e).__name__}: {e}); reconnecting to its owner",
            ) from e


class SlotOwnerSSLConnection(SlotOwnerConnection, redis.SSLConnection):
    pass


class SlotOwnerPool(redis.BlockingConnectionPool):
    """
    A bounded pool whose connections go to the owner of one slot. Like a Sentinel master pool it
    has ``is_master`` and ``get_master_address()`` (which drops idle connections to a node that
    no longer owns the slot), so code that follows a Sentinel master follows the slot's owner.
    """

    is_master = True

    def __init__(self, locator: SlotLocator, probe_key: str, *, ssl: bool = False, **kwargs: Any) -> None:
        self.locator = locator
        super().__init__(
            connection_class=SlotOwnerSSLConnection if ssl else SlotOwnerConnection,
            slot_locator=locator,
            slot_probe_key=probe_key,
            **kwargs,
        )

    def get_master_address(self) -> tuple[str, int]:
        previous = self.locator.last_owner
        address = self.locator.owner()
        if previous is not None and address != previous:
            self.disconnect(inuse_connections=False)
        return address


def slot_of(key: str) -> int:
    """The hash slot of `key` (its hash tag's, when it has one)."""
    return key_slot(key.encode())
