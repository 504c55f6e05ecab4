"""
The metric set itself, without a node: every metric the Grafana dashboard queries is one the
launcher exports (so a rename cannot silently blank a panel), names follow Prometheus
conventions, nothing is exported before it is measured, and the deploy files point at the
launcher's default port.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import redis
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from launcher.cache.listener import CacheStats
from launcher.config.schema import MonitoringSettings
from launcher.monitoring.listener import MetricsListener
from launcher.monitoring.metrics import BACKEND_METRICS
from launcher.monitoring.metrics import LauncherMetrics


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def exported(metrics: LauncherMetrics) -> set[str]:
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def fully_fed(backend: str = "resilient") -> LauncherMetrics:
    """Metrics with every source attached and every event seen once."""
    m = LauncherMetrics(backend, trader_id="T-001")
    if backend == "resilient":
        listener = MetricsListener(m)
        listener.on_write_latency("update_order", 3, 0.0004)
        listener.on_round_trip("write_batch", 0.0002)
        listener.on_load("orders", 10, 0.01)
        listener.on_outage_end(5, 1.5)
        pool = redis.BlockingConnectionPool(host="127.0.0.1", port=1, max_connections=20)
        database = SimpleNamespace(stats=lambda: CacheStats(pending_writes=2), client=SimpleNamespace(connection_pool=pool))
        m.snapshot.database = lambda: database
    m.snapshot.probe = SimpleNamespace(checked=True, up=True)
    m.latency.labels(operation="ping").observe(0.0001)
    m.snapshot.lease = SimpleNamespace(lost=False, released=False)
    m.record_recovery(SimpleNamespace(load_time_s=0.1, verify_time_s=0.01, counts={"orders_open": 1}, problems=[],
                                      skipped=None))
    m.record_node_build(0.5)
    m.retention_enabled()
    m.record_retention_pass(SimpleNamespace(removed={"orders": 1, "positions": 0, "account_events": 2}, seconds=0.001))
    m.snapshot.streams = SimpleNamespace(written={"quotes": 5}, dropped=0)
    return m


def test_every_dashboard_metric_is_exported():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "launcher.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {name for e in exprs for name in re.findall(r"([a-z_]+)\{", e)}
    missing = queried - exported(fully_fed()) - exported(fully_fed("native"))
    assert not missing, missing


def test_conventions_and_spec_names():
    names = exported(fully_fed())
    assert {"redis_operations_total", "redis_latency_seconds_bucket", "redis_connection_pool_size"} <= names
    for name in names:
        assert re.fullmatch(r"[a-z_]+", name), name
        assert not name.endswith("_milliseconds") and "_ms" not in name, name
    text = generate_latest(fully_fed().registry).decode()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name


def test_nothing_before_it_is_measured_and_native_declares_instead_of_zeros():
    # Before anything is attached: no state gauge (recovery, lease, Redis up, pool...), only
    # event counters and histograms, at zero because nothing has happened yet.
    text = generate_latest(LauncherMetrics("resilient").registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "launcher_info":
            continue
        assert family.type in ("counter", "histogram"), family.name
        assert all(s.value == 0 for s in family.samples), family.name
    native = fully_fed("native")
    names = exported(native)
    assert not names & {n for n in BACKEND_METRICS}
    text = generate_latest(native.registry).decode()
    declared = {s.labels["metric"] for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "launcher_metric_unavailable"}
    assert declared == set(BACKEND_METRICS) | {"redis_latency_seconds"}


def test_deploy_files_scrape_the_default_port():
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"host.docker.internal:{MonitoringSettings().port}"]
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "launcher.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
