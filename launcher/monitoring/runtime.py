"""
`Monitoring`: the launcher's metrics for one ``mode=run``, wired to what app.py builds.

``monitoring.enabled`` (schema default null) means: on with the Redis profiles, off with
``cache=memory``; true/false force it. When off, every method here is a no-op and the
backend gets no listener, so monitoring costs nothing.

If the endpoint cannot be bound (port taken, e.g. by another trader's launcher on this
host), the launcher logs an ERROR and keeps trading without an endpoint: a metrics port
must not stop a node that is managing positions. Prometheus then sees the target down (or,
if another launcher owns the port, that launcher - ``launcher_info{trader_id}`` tells them
apart).
"""

from __future__ import annotations

import logging
from typing import Any

from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.monitoring.exporter import MetricsExporter
from launcher.monitoring.health import RedisProbe
from launcher.monitoring.metrics import LauncherMetrics


log = logging.getLogger("launcher.monitoring")


def monitoring_enabled(settings: LauncherConfig) -> bool:
    enabled = settings.monitoring.enabled
    if enabled is None:
        return settings.cache.store != Store.memory
    return bool(enabled)


def backend_name(settings: LauncherConfig) -> str:
    if settings.cache.store == Store.memory:
        return "memory"
    return str(settings.cache.backend)


class Monitoring:
    def __init__(self, settings: LauncherConfig) -> None:
        self.enabled = monitoring_enabled(settings)
        self.metrics: LauncherMetrics | None = None
        self.exporter: MetricsExporter | None = None
        self._probe: RedisProbe | None = None
        self._settings = settings
        if self.enabled:
            self.metrics = LauncherMetrics(backend_name(settings), trader_id=str(settings.trader_id))

    def start(self) -> Monitoring:
        if not self.enabled:
            return self
        m = self._settings.monitoring
        exporter = MetricsExporter(self.metrics.registry, m.host, m.port)
        try:
            self.exporter = exporter.start()
        except OSError as e:
            log.error(
                "Prometheus metrics NOT exported: cannot listen on %s:%s (%s); the node runs without an endpoint "
                "(set monitoring.port, or monitoring.enabled=false)", m.host, m.port, e,
            )
        return self

    # -- wiring -------------------------------------------------------------------------------

    def cache_listener(self):
        """A CacheListener for the resilient backend (None when off or another backend)."""
        if self.metrics is None or self.metrics.operations is None:
            return None
        from launcher.monitoring.listener import MetricsListener  # noqa: PLC0415

        return MetricsListener(self.metrics)

    def watch_factory(self, factory: Any) -> None:
        """The resilient factory whose ``instances`` hold the backend built by the kernel."""
        if self.metrics is None or factory is None:
            return
        instances = getattr(factory, "instances", None)
        if instances is not None:
            self.metrics.snapshot.database = lambda: instances[-1] if instances else None

    def watch_closed_orders(self, history: Any) -> None:
        """A ``launcher.cache.history.ClosedHistory``: closed orders still to join the node's cache."""
        if self.metrics is not None:
            self.metrics.snapshot.closed_history.append(history)

    def watch_redis(self, client: Any) -> None:
        if self.metrics is None or self._probe is not None:
            return
        self._probe = RedisProbe(client, self.metrics.latency).start()
        self.metrics.snapshot.probe = self._probe

    def watch_lease(self, lease: Any) -> None:
        if self.metrics is not None:
            self.metrics.snapshot.lease = lease

    def watch_streams(self, writer: Any) -> None:
        if self.metrics is not None:
            self.metrics.snapshot.streams = writer

    def set_info(self, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.snapshot.info.update({k: str(v) for k, v in labels.items()})

    # -- results ------------------------------------------------------------------------------

    def recovery(self, report: Any) -> None:
        if self.metrics is not None and report is not None:
            self.metrics.record_recovery(report)

    def node_built(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.record_node_build(seconds)

    def retention_enabled(self) -> None:
        if self.metrics is not None:
            self.metrics.retention_enabled()

    def retention_pass(self, result: Any) -> None:
        if self.metrics is not None:
            self.metrics.record_retention_pass(result)

    def close(self) -> None:
        if self._probe is not None:
            self._probe.stop()
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
