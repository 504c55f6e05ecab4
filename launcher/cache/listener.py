"""
Observation hooks for the resilient cache backend.

`ResilientCacheDatabase` reports what its writer does to one `CacheListener`. The default
listener does nothing; a metrics exporter (Prometheus, logs, a test probe) subclasses it
and overrides only the callbacks it cares about. Callbacks run on the writer thread (write
side) or on the caller's thread (loads); they must be quick and must not call back into the
cache. An exception raised by a listener is swallowed (counted in `CacheStats.listener_errors`)
so observing can never break persisting.

`CacheStats` is the plain counter/state snapshot the backend keeps regardless of listeners
(`ResilientCacheDatabase.stats()` returns a copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field


# Why writes failed, the `reason` label of cache_write_errors_total: the error reply of Redis
# (OOM, NOPERM, WRONGTYPE) or anything else (other error replies, unserializable payloads).
ERROR_REASONS = ("oom", "noperm", "wrongtype", "other")


class CacheListener:
    """No-op base: override what you need."""

    def on_batch_acknowledged(self, writes: int, commands: int, round_trip_s: float) -> None:
        """A batch of `writes` facade writes (`commands` Redis commands) was acknowledged."""

    def on_write_latency(self, kind: str, count: int, max_latency_s: float) -> None:
        """`count` writes of `kind` (e.g. "update_order") were acknowledged; the slowest took
        `max_latency_s` from the facade call to Redis' acknowledgement."""

    def on_round_trip(self, operation: str, seconds: float) -> None:
        """One Redis round trip: "write_batch", "wait_replicas", "load_scan", "load_read", "ping"."""

    def on_outage_start(self, pending_writes: int, error: str) -> None:
        """Redis became unreachable (or stopped acknowledging); `pending_writes` are retained."""

    def on_outage_end(self, resent_writes: int, outage_s: float) -> None:
        """Writes resumed after an outage of `outage_s` seconds."""

    def on_reconnect(self, address: tuple[str, int]) -> None:
        """The writer (re)connected to the server at `address`."""

    def on_failover(self, old_address: tuple[str, int] | None, new_address: tuple[str, int]) -> None:
        """Writes now go to a different server than before (a Sentinel failover was followed)."""

    def on_spill(self, writes: int, path: str) -> None:
        """`writes` retained writes were appended (fsync'd) to the spill file at `path`."""

    def on_replay(self, writes: int, path: str) -> None:
        """`writes` spilled writes from `path` were acknowledged by Redis."""

    def on_pending(self, pending_writes: int) -> None:
        """The number of retained (not yet acknowledged) writes after a batch or spill."""

    def on_repair(self, entity: str, events: int) -> None:
        """Redis did not hold the expected events of the list `entity` (lost by the server, or one
        written twice); it was rewritten from the `events` events held in memory."""

    def on_unreplicated(self, writes: int) -> None:
        """`writes` writes are APPLIED by the master but not acknowledged by ``min_replica_acks``
        replicas (0: replicas have every write again)."""

    def on_refused(self, reason: str, message: str) -> None:
        """Writes cannot be written and retrying cannot fix it (`reason`: "noperm", "wrongtype",
        "other" - the writer stopped, everything unacknowledged is in the spill file - or
        "unserializable": one write was lost). Trading must stop (the launcher exits 8)."""

    def on_load(self, what: str, count: int, seconds: float) -> None:
        """A load_* call returned `count` objects of `what` in `seconds`."""


@dataclass
class CacheStats:
    """Counters and state of one `ResilientCacheDatabase` (a snapshot copy)."""

    pending_writes: int = 0  # retained, not yet acknowledged (memory + spill file)
    spilled_writes: int = 0  # of which currently in the spill file, waiting to be sent
    unreplicated_writes: int = 0  # of which applied by the master, not acknowledged by enough replicas
    last_wait_replicas: int = 0  # replicas the last WAIT reported
    spilled_total: int = 0  # ever appended to the spill file by this instance
    replayed_total: int = 0  # spilled writes acknowledged after replay
    writes_enqueued: int = 0
    writes_acknowledged: int = 0
    batches: int = 0
    resent_batches: int = 0  # batches sent again after a failure (idempotent)
    reconnects: int = 0
    failovers_followed: int = 0
    server_restarts_seen: int = 0  # the master answered with a new run id at the same address (it restarted)
    outages: int = 0
    outage_active: bool = False
    last_outage_s: float = 0.0
    repairs: int = 0  # entity lists rewritten from memory because Redis did not hold the expected events
    duplicates_skipped: int = 0  # appends already present in Redis (resends)
    misplaced_appends: int = 0  # appends whose expected position did not match (appended at the end)
    command_errors: int = 0  # error replies to writes (all reasons) and payloads that could not be serialized
    write_errors: dict[str, int] = field(default_factory=dict)  # failed writes by `ERROR_REASONS` reason
    writes_lost: int = 0  # writes that could not be serialized, hence neither written nor spilled
    refused: str = ""  # why the writer stopped for good (noperm, wrongtype, other); "" while it writes
    refusing: str = ""  # "oom" while Redis refuses writes until memory is freed (retried), else ""
    listener_errors: int = 0
    server_address: tuple[str, int] | None = None
    last_batch_round_trip_s: float = 0.0
    round_trip_s: dict[str, float] = field(default_factory=dict)  # last RTT per operation
