"""
Prometheus monitoring as an operator sees it: real ``python -m launcher`` runs against a
real redis-server, scraped over HTTP while the churn strategy trades.

* resilient backend: the spec's metrics move between two scrapes, the latency histogram
  has observations in sub-millisecond buckets, the promise metrics are there (Redis up,
  lease held, verify, recovery, pending/spilled writes, pool), the running node's
  retention removes and the capped quote stream stays within its count and age, and the
  state verifies afterwards;
* native backend: the metrics it cannot provide are declared, not exported as zeros;
* the exporter's own behaviour: both exposition formats parse, a taken port does not stop
  the launcher.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from launcher.monitoring.metrics import BACKEND_METRICS
from launcher.monitoring.runtime import Monitoring
from launcher.monitoring.runtime import monitoring_enabled
from launcher.retention.streams import stream_key
from launcher.servers.redis_process import free_port
from launcher.state import layout
from tests.support.launcher_cli import run_launcher
from tests.support.launcher_cli import start_launcher


pytestmark = pytest.mark.slow

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(port: int, accept: str | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a text-format scrape (parsing it validates it)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def names(scraped: dict) -> set[str]:
    return {name for name, _ in scraped}


def scrape_until(port: int, proc, condition, timeout_s: float, log_path) -> dict:
    """Scrape every 0.2 s until `condition(samples)` holds; fail with the log if it never does."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            last = samples(scrape(port))
            if condition(last):
                return last
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout_s}s; last scrape: {sorted(last or {})[:60]}\n"
                         f"{log_path.read_text()[-3000:]}")


def launcher_args(redis_port: int, metrics_port: int, trader_id: str, *more: str) -> list[str]:
    return [
        "cache=redis_dev", f"cache.redis.port={redis_port}", "cache.redis.embedded=never", f"trader_id={trader_id}",
        f"monitoring.port={metrics_port}", "strategy=churn", "run.post_stop_s=0.2", *more,
    ]


def test_resilient_run_metrics_move_retention_removes_streams_stay_capped(redis_server, tmp_path):
    metrics_port = free_port()
    log_path = tmp_path / "launcher.log"
    proc = start_launcher(launcher_args(
        redis_server.port, metrics_port, "MON-001",
        "run.duration_s=14",
        # Windows of a few seconds, so the running node's retention has work within the test.
        "retention.interval_s=1", "retention.orders_days=0.00003", "retention.positions_closed_hours=0.0005",
        "retention.account_events_days=0.00003",
        "cache.persist_quotes=true", "cache.persist_trades=true", "venue.trades=true", "venue.quote_rate_hz=50",
        "retention.stream_max_len=40",
        "retention.stream_max_age_s=1",
    ), cwd=tmp_path, log_path=log_path)
    try:
        def trading(s):
            return (value(s, "redis_operations_total", operation="update_order") or 0) > 0

        first = scrape_until(metrics_port, proc, trading, 30, log_path)
        second = scrape_until(
            metrics_port, proc,
            lambda s: (value(s, "redis_operations_total", operation="update_order") or 0)
            > value(first, "redis_operations_total", operation="update_order")
            and (value(s, "redis_latency_seconds_count", operation="write_batch") or 0)
            > (value(first, "redis_latency_seconds_count", operation="write_batch") or 0)
            and (value(s, "launcher_retention_removed_total", kind="orders") or 0) > 0
            and (value(s, "launcher_retention_removed_total", kind="account_events") or 0) > 0,
            12, log_path,
        )
        openmetrics = scrape(metrics_port, accept=OPENMETRICS)
        # Everything to see has been seen: a clean stop now (run.duration_s only bounds a run that fails).
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=60)
    log = log_path.read_text()
    assert proc.returncode == 0, log[-4000:]

    # The spec's three metrics.
    for op in ("add_order", "update_order", "update_account", "update_position", "load_orders"):
        assert value(second, "redis_operations_total", operation=op) > 0, op
    assert value(second, "redis_latency_seconds_count", operation="write_batch") > 0
    sub_ms = value(second, "redis_latency_seconds_bucket", operation="write_batch", le="0.001")
    assert sub_ms is not None and value(second, "redis_latency_seconds_bucket", operation="write_batch", le="5e-05") is not None
    assert value(second, "redis_latency_seconds_count", operation="ping") > 0
    assert value(second, "redis_connection_pool_size") >= 1
    # What an operator needs to see the promises kept.
    assert value(second, "redis_up") == 1
    assert value(second, "launcher_lease_held") == 1
    assert value(second, "launcher_verify_ok") == 1 and value(second, "launcher_verify_problems") == 0
    assert value(second, "launcher_recovery_duration_seconds", phase="node_build") > 0
    assert value(second, "cache_writes_pending") is not None
    assert value(second, "cache_writes_spilled_total") == 0
    assert value(second, "cache_writes_acknowledged_total") > value(first, "cache_writes_acknowledged_total")
    assert value(second, "redis_reconnects_total") == 0 and value(second, "redis_failovers_followed_total") == 0
    assert value(second, "launcher_retention_passes_total") >= 1
    assert value(second, "launcher_market_data_entries_total", kind="quotes") > 0
    assert value(second, "launcher_info", backend="resilient", trader_id="MON-001",
                 instance_id=next(dict(k[1])["instance_id"] for k in second if k[0] == "launcher_info")) == 1
    assert not [k for k in second if k[0] == "launcher_metric_unavailable"]
    assert {f.name for f in parse_openmetrics(openmetrics)} >= {"redis_operations", "redis_latency_seconds", "redis_up"}

    # Stopped at exit.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", metrics_port), timeout=0.5).close()

    client = redis_server.client()
    for kind in ("quotes", "trades"):
        key = stream_key(layout.trader_key("MON-001"), kind, "EUR/USD.SIM")
        assert 0 < client.xlen(key) <= 40, kind  # 50 ticks/s for ~10 s went through a 40-entry cap
        entries = client.xrange(key)
        first_ms, last_ms = (int(entries[i][0].decode().split("-")[0]) for i in (0, -1))
        assert last_ms - first_ms <= 1000 + 200, kind  # age bound (+ one flush interval of slack)
    assert value(second, "launcher_market_data_entries_total", kind="trades") > 0

    verified = run_launcher(["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
                             "trader_id=MON-001", "mode=verify"], cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout[-3000:]


def test_native_run_declares_what_it_cannot_measure(redis_server, tmp_path):
    metrics_port = free_port()
    log_path = tmp_path / "launcher.log"
    proc = start_launcher(launcher_args(
        redis_server.port, metrics_port, "MON-002", "cache.backend=native", "run.duration_s=8",
        "retention.interval_s=1", "retention.orders_days=0.00003", "retention.account_events_days=0.00003",
    ), cwd=tmp_path, log_path=log_path)
    try:
        scraped = scrape_until(
            metrics_port, proc,
            lambda s: (value(s, "launcher_retention_removed_total", kind="account_events") or 0) > 0, 25, log_path,
        )
        proc.send_signal(signal.SIGTERM)  # seen: a clean stop now
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0, log_path.read_text()[-4000:]
    declared = {dict(k[1])["metric"] for k in scraped if k[0] == "launcher_metric_unavailable"}
    assert declared >= set(BACKEND_METRICS)
    for name in ("redis_operations_total", "redis_connection_pool_size", "cache_writes_pending", "redis_reconnects_total"):
        assert name not in names(scraped), name
    assert value(scraped, "redis_up") == 1
    assert value(scraped, "launcher_lease_held") == 1
    assert value(scraped, "launcher_verify_ok") == 1
    # Native: retention trimmed the account list in Redis itself and kept the manifest in step.
    verified = run_launcher(["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
                             "trader_id=MON-002", "mode=verify"], cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout[-3000:]


def _settings(**monitoring):
    return SimpleNamespace(
        trader_id="MON-003",
        cache=SimpleNamespace(store="redis", backend="resilient"),
        monitoring=SimpleNamespace(**{"enabled": None, "host": "127.0.0.1", "port": free_port(), **monitoring}),
    )


def test_enabled_by_default_with_redis_only():
    assert monitoring_enabled(_settings())
    memory = _settings()
    memory.cache.store = "memory"
    assert not monitoring_enabled(memory)
    assert monitoring_enabled(_settings(enabled=True)) and not monitoring_enabled(_settings(enabled=False))


def test_a_taken_port_is_logged_and_does_not_stop_the_launcher():
    # A handler on the logger itself: the launcher's loggers do not propagate once configured.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("launcher.monitoring")
    logger.addHandler(handler)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monitoring = Monitoring(_settings(port=taken.getsockname()[1])).start()
        try:
            assert monitoring.exporter is None
            assert any("Prometheus metrics NOT exported" in r.getMessage() for r in records)
        finally:
            monitoring.close()
            logger.removeHandler(handler)
