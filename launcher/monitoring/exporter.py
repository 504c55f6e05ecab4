"""
The HTTP endpoint Prometheus scrapes: ``http://{monitoring.host}:{monitoring.port}/metrics``.

Bound to 127.0.0.1 unless ``monitoring.host`` says otherwise: the metrics reveal trading
activity. prometheus-client's own threaded server, stopped (socket closed) at exit.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry
from prometheus_client import start_http_server


log = logging.getLogger("launcher.monitoring")


class MetricsExporter:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = int(port)
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsExporter:
        """Raises OSError when the address cannot be bound (port in use, unknown host)."""
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._server.server_address[1]  # the real port when 0 was asked for
        log.info("Prometheus metrics on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
