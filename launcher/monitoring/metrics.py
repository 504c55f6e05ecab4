"""
Prometheus metrics of the launcher and its cache backend (prometheus-client).

The spec's three metrics keep their names (``redis_operations_total``,
``redis_latency_seconds``, ``redis_connection_pool_size``); the rest show whether the
launcher's promises are being kept: Redis reachable, writes waiting for acknowledgement,
writes spilled to disk, reconnects, failovers followed, lease held, recovery and verify
results, retention removals. Units are base units (seconds), counters end in ``_total``.

Two kinds of sources:

* events, pushed as they happen - the cache backend's listener (operations, round trips,
  outage time; ``launcher/monitoring/listener.py``) and retention passes - go to ordinary
  ``Counter``/``Histogram`` objects;
* states, read at scrape time by `SnapshotCollector` - the backend's ``CacheStats`` and pool,
  the lease, the last recovery and verify, the health probe - so a scrape always shows the
  current value and nothing is exported that was never measured (a value appears only once
  its source exists: no recovery gauge before a recovery, no lease gauge without a lease).

With ``cache.backend=native`` the backend metrics cannot be measured (NautilusTrader's
adapter writes from a Rust task that reports nothing to Python); they are then not
exported at all, and ``launcher_metric_unavailable{metric=...,reason=...}`` says so,
instead of zeros that would look measured. The same with ``cache=memory``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from launcher.cache.listener import ERROR_REASONS
from launcher.cache.listener import CacheStats


# ``*_created`` series double every counter's series for a timestamp dashboards never use.
disable_created_metrics()

# Sub-millisecond resolution: a loopback Redis round trip is ~50-200 us.
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

# Metrics only the resilient backend can provide (it reports to Python; the native adapter does not).
BACKEND_METRICS = (
    "redis_operations_total",
    "redis_connection_pool_size",
    "redis_connection_pool_in_use",
    "redis_connection_pool_max",
    "cache_writes_pending",
    "cache_writes_in_spill_file",
    "cache_writes_unreplicated",
    "cache_writes_spilled_total",
    "cache_writes_acknowledged_total",
    "cache_write_errors_total",
    "cache_repairs_total",
    "cache_write_ack_delay_max_seconds",
    "redis_reconnects_total",
    "redis_failovers_followed_total",
    "redis_server_restarts_total",
    "redis_outages_total",
    "redis_outage_active",
    "redis_outage_seconds_total",
)

RETENTION_KINDS = ("orders", "positions", "account_events")


class LauncherMetrics:
    """
    Every metric the launcher exports, in its own registry.

    Parameters
    ----------
    backend : str
        ``resilient`` or ``native`` (``memory`` when nothing is persisted).
    trader_id : str
    """

    def __init__(self, backend: str, trader_id: str = "", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.backend = backend
        self.trader_id = trader_id
        r = self.registry
        self.latency = Histogram(
            "redis_latency_seconds",
            "Redis round-trip time by operation (write_batch, wait_replicas, load_scan, load_read, ping)",
            ["operation"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.retention_removed = Counter(
            "launcher_retention_removed", "Entities or events removed by the running node's retention, by kind",
            ["kind"], registry=r,
        )
        self.retention_passes = Counter("launcher_retention_passes", "Retention passes of the running node", registry=r)
        self.operations = self.ack_delay = self.outage_seconds = None
        if backend == "resilient":
            self.operations = Counter(
                "redis_operations",
                "Cache operations acknowledged by Redis, by kind (add_order, update_order, ..., load_orders, ...)",
                ["operation"], registry=r,
            )
            self.ack_delay = Histogram(
                "cache_write_ack_delay_max_seconds",
                "Per acknowledged batch and write kind: the longest a write waited from the cache call to Redis' ack",
                buckets=LATENCY_BUCKETS_S, registry=r,
            )
            self.outage_seconds = Counter(
                "redis_outage_seconds", "Time cache writes could not reach Redis (completed outages)", registry=r,
            )
        self.snapshot = SnapshotCollector(self)
        r.register(self.snapshot)

    def unavailable(self) -> dict[str, str]:
        """metric name -> why the selected backend cannot provide it."""
        if self.backend == "resilient":
            return {}
        if self.backend == "native":
            reason = "cache.backend=native: NautilusTrader's adapter writes from a Rust task that reports nothing"
            out = {name: reason for name in BACKEND_METRICS}
            out["redis_latency_seconds"] = (
                "cache.backend=native: only operation=ping (the launcher's own health probe) is measured"
            )
            return out
        reason = "cache=memory: nothing is persisted"
        out = {name: reason for name in BACKEND_METRICS}
        out.update({name: reason for name in ("redis_latency_seconds", "redis_up", "launcher_lease_held")})
        return out

    # -- pushed by the launcher ---------------------------------------------------------------

    def record_recovery(self, report: Any) -> None:
        """Publish a recovery report (``launcher.bootstrap.verify.RecoveryReport``)."""
        self.snapshot.set_recovery(report)

    def record_node_build(self, seconds: float) -> None:
        """How long building the node (the kernel loading the cache from Redis) took."""
        self.snapshot.values["node_build_s"] = float(seconds)

    def record_retention_pass(self, result: Any) -> None:
        """A ``launcher.retention.actor.PassResult``."""
        for kind in RETENTION_KINDS:
            self.retention_removed.labels(kind=kind).inc(result.removed.get(kind, 0))
        self.retention_passes.inc()
        self.snapshot.values["retention_last_ts"] = time.time()
        self.snapshot.values["retention_last_s"] = float(result.seconds)

    def retention_enabled(self) -> None:
        """Export the removal counters at 0 from the start (they are measured, just nothing removed yet)."""
        for kind in RETENTION_KINDS:
            self.retention_removed.labels(kind=kind)


class SnapshotCollector(Collector):
    """Reads current states at scrape time (see the module docstring)."""

    def __init__(self, metrics: LauncherMetrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self.values: dict[str, Any] = {}
        self.info: dict[str, str] = {}
        self.database: Callable[[], Any] | None = None  # -> ResilientCacheDatabase or None
        self.lease: Any = None
        self.closed_history: list[Any] = []  # launcher.cache.history.ClosedHistory, one per database
        self.probe: Any = None  # launcher.monitoring.health.RedisProbe
        self.streams: Any = None  # launcher.retention.streams.StreamWriter
        self._recovery: Any = None

    def set_recovery(self, report: Any) -> None:
        with self._lock:
            self._recovery = report

    def describe(self) -> list:
        return []  # collected lazily; names vary with the backend

    def _cluster_shard(self, database: Any):
        """On a Redis Cluster: the trader's shard (slot, primary now), owner changes and redirects seen."""
        locators = _locators(getattr(self.probe, "client", None), getattr(database, "client", None))
        if not locators:
            return
        current = next((loc for loc in reversed(locators) if loc.last_owner is not None), locators[0])
        shard = GaugeMetricFamily("redis_cluster_shard", "1 for the shard holding the trader: its slot and primary now",
                                  labels=["slot", "primary"])
        owner = current.last_owner
        shard.add_metric([str(current.slot), f"{owner[0]}:{owner[1]}" if owner else ""], 1)
        yield shard
        yield _counter("redis_cluster_owner_changes", "Re-discoveries that found the trader's slot on another primary",
                       sum(loc.owner_changes for loc in locators))
        redirects = CounterMetricFamily("redis_cluster_redirects", "Cluster redirects (MOVED, ASK, TRYAGAIN, "
                                        "CLUSTERDOWN) answered to the launcher: nothing applied, resent", labels=["kind"])
        for kind in ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"):
            redirects.add_metric([kind], sum(loc.redirects[kind] for loc in locators))
        yield redirects

    def collect(self):
        m = self._metrics
        info = GaugeMetricFamily("launcher_info", "The launcher answering this scrape", labels=sorted({
            "trader_id", "backend", *self.info,
        }))
        labels = {"trader_id": m.trader_id, "backend": m.backend, **self.info}
        info.add_metric([labels[k] for k in sorted(labels)], 1)
        yield info

        unavailable = GaugeMetricFamily(
            "launcher_metric_unavailable", "1 for each metric the selected backend cannot provide (not exported)",
            labels=["metric", "reason"],
        )
        for name, reason in sorted(m.unavailable().items()):
            unavailable.add_metric([name, reason], 1)
        if unavailable.samples:
            yield unavailable

        database = self.database() if self.database is not None else None
        stats = database.stats() if database is not None else None
        probe = self.probe
        if probe is not None and probe.checked:
            # A server that answers PING but refuses every write (OOM, NOPERM) is not up for us.
            accepting = stats is None or not (stats.refusing or stats.refused)
            yield _gauge("redis_up", "1 when the cache store answered the launcher's last health check (PING) and "
                         "accepts the launcher's writes (resilient backend: no OOM or refusal), else 0",
                         1 if probe.up and accepting else 0)
        yield from self._cluster_shard(database)

        lease = self.lease
        if lease is not None:
            held = not lease.lost and not getattr(lease, "released", False)
            yield _gauge("launcher_lease_held", "1 while this launcher holds the trader's single-writer lease",
                         1 if held else 0)

        with self._lock:
            report = self._recovery
        if report is not None:
            duration = GaugeMetricFamily(
                "launcher_recovery_duration_seconds", "Duration of the last recovery, by phase", labels=["phase"],
            )
            duration.add_metric(["verify_load"], float(report.load_time_s))
            duration.add_metric(["verify_checks"], float(report.verify_time_s))
            if "node_build_s" in self.values:
                duration.add_metric(["node_build"], self.values["node_build_s"])
            yield duration
            recovered = GaugeMetricFamily(
                "launcher_recovered_entities", "Entities found by the last recovery, by kind and state",
                labels=["kind", "state"],
            )
            for key, value in sorted(report.counts.items()):
                kind, _, state = key.partition("_")
                recovered.add_metric([kind, state or "all"], value)
            yield recovered
            if getattr(report, "skipped", None) is None:
                yield _gauge("launcher_verify_ok", "1 when the last verify found no problem, else 0",
                             0 if report.problems else 1)
                yield _gauge("launcher_verify_problems", "Problems found by the last verify", len(report.problems))
        elif "node_build_s" in self.values:
            duration = GaugeMetricFamily(
                "launcher_recovery_duration_seconds", "Duration of the last recovery, by phase", labels=["phase"],
            )
            duration.add_metric(["node_build"], self.values["node_build_s"])
            yield duration

        if self.closed_history:
            yield _gauge("launcher_closed_orders_waiting",
                         "Closed orders recovered but not yet in the node's cache (cache.closed_orders=deferred)",
                         sum(0 if h.done else h.total - h.loaded - len(h.failed) for h in self.closed_history))
            yield _gauge("launcher_closed_orders_failed", "Closed orders that could not be added to the node's cache",
                         sum(len(h.failed) for h in self.closed_history))

        if "retention_last_ts" in self.values:
            yield _gauge("launcher_retention_last_pass_timestamp_seconds", "When the last retention pass ran (UNIX s)",
                         self.values["retention_last_ts"])
            yield _gauge("launcher_retention_last_pass_duration_seconds", "How long the last retention pass took",
                         self.values["retention_last_s"])

        streams = self.streams
        if streams is not None:
            entries = CounterMetricFamily(
                "launcher_market_data_entries", "Ticks written to the capped Redis streams, by kind", labels=["kind"],
            )
            for kind, count in sorted(streams.written.items()):
                entries.add_metric([kind], count)
            yield entries
            yield CounterMetricFamily(
                "launcher_market_data_dropped", "Ticks dropped before reaching Redis (bounded buffer full)",
                value=streams.dropped,
            )

        if database is not None:
            yield from _backend_families(database, stats)


def _locators(*clients: Any) -> list[Any]:
    """The slot locators (launcher.store.cluster) of the clients' pools: none unless on a Redis Cluster."""
    pools = [getattr(client, "connection_pool", None) for client in clients if client is not None]
    return [pool.locator for pool in pools if getattr(pool, "locator", None) is not None]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _backend_families(database: Any, s: CacheStats):
    """The resilient backend's CacheStats `s` and connection pool."""
    yield _gauge("cache_writes_pending", "Cache writes not yet acknowledged by Redis (memory and spill file)",
                 s.pending_writes)
    yield _gauge("cache_writes_in_spill_file", "Retained cache writes currently in the local spill file",
                 s.spilled_writes)
    yield _gauge("cache_writes_unreplicated", "Cache writes the master applied that fewer than min_replica_acks replicas "
                 "acknowledged (retained for a resend; a failover now could lose them from Redis)",
                 s.unreplicated_writes)
    yield _counter("cache_writes_spilled", "Cache writes appended to the spill file (outages, memory bound, "
                   "unreplicated writes, refusals)", s.spilled_total)
    yield _counter("cache_writes_acknowledged", "Cache writes acknowledged by Redis", s.writes_acknowledged)
    errors = CounterMetricFamily(
        "cache_write_errors", "Cache writes Redis refused (retained: retried, or spilled when retrying cannot fix "
        "it) or that could not be serialized, by reason; each is logged as ERROR", labels=["reason"],
    )
    for reason in ERROR_REASONS:
        errors.add_metric([reason], s.write_errors.get(reason, 0))
    yield errors
    yield _counter("cache_repairs", "Events re-written because Redis had lost them", s.repairs)
    yield _counter("redis_reconnects", "Reconnections after Redis was unreachable for writes", s.reconnects)
    yield _counter("redis_failovers_followed", "Sentinel failovers followed to a new master", s.failovers_followed)
    yield _counter("redis_server_restarts", "Restarts of the master at the same address (a new run id), reconciled",
                   s.server_restarts_seen)
    yield _counter("redis_outages", "Times Redis became unreachable (or stopped acknowledging) for writes", s.outages)
    yield _gauge("redis_outage_active", "1 while cache writes cannot reach Redis", 1 if s.outage_active else 0)
    pool = getattr(getattr(database, "client", None), "connection_pool", None)
    if pool is not None:
        idle = in_use = 0
        try:
            for count, attributes in pool.get_connection_count():
                state = str(next((v for k, v in attributes.items() if k.endswith("state")), ""))
                if state == "used":
                    in_use += int(count)
                else:
                    idle += int(count)
        except Exception:  # noqa: BLE001 (pool internals: a scrape must not fail on them)
            return
        yield _gauge("redis_connection_pool_size", "Connections open in the cache backend's Redis pool", idle + in_use)
        yield _gauge("redis_connection_pool_in_use", "Connections of the pool checked out right now", in_use)
        yield _gauge("redis_connection_pool_max", "The pool's bound (cache.redis.max_connections)",
                     int(getattr(pool, "max_connections", 0) or 0))
