"""
`MetricsListener`: the resilient backend's `CacheListener` events into Prometheus metrics.

Only what happens as events is taken here (operations acknowledged, round trips, the
slowest write of each batch, completed outages); states (pending writes, spill file,
reconnects, failovers, pool) are read from ``CacheStats`` at scrape time by
``SnapshotCollector``, so nothing is counted twice. Callbacks run on the backend's writer
thread: each is a dictionary lookup and an increment, and never raises into the backend
(the backend swallows listener errors anyway, counting them).
"""

from __future__ import annotations

from launcher.cache.listener import CacheListener
from launcher.monitoring.metrics import LauncherMetrics


class MetricsListener(CacheListener):
    def __init__(self, metrics: LauncherMetrics) -> None:
        if metrics.operations is None:
            raise ValueError("MetricsListener needs metrics built for the resilient backend")
        self._operations = metrics.operations
        self._latency = metrics.latency
        self._ack_delay = metrics.ack_delay
        self._outage_seconds = metrics.outage_seconds
        # Child metrics cached per label value: labels() takes a lock and builds a key each call.
        self._op_children: dict[str, object] = {}
        self._rtt_children: dict[str, object] = {}

    def _op(self, operation: str):
        child = self._op_children.get(operation)
        if child is None:
            child = self._op_children[operation] = self._operations.labels(operation=operation)
        return child

    def on_write_latency(self, kind: str, count: int, max_latency_s: float) -> None:
        self._op(kind).inc(count)
        self._ack_delay.observe(max_latency_s)

    def on_round_trip(self, operation: str, seconds: float) -> None:
        child = self._rtt_children.get(operation)
        if child is None:
            child = self._rtt_children[operation] = self._latency.labels(operation=operation)
        child.observe(seconds)

    def on_load(self, what: str, count: int, seconds: float) -> None:
        self._op(f"load_{what}").inc()

    def on_outage_end(self, resent_writes: int, outage_s: float) -> None:
        self._outage_seconds.inc(outage_s)
