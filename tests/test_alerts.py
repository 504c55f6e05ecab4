"""
The Prometheus alerting rules shipped in deploy/alerts.yml: valid for promtool, loaded by
deploy/prometheus.yml, each alert unit-tested (fires for a lasting condition, not for a blip),
and every metric they use is one the launcher exports.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it); without it these
tests fail rather than skip, so unchecked rules never pass CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from launcher.cache.listener import CacheStats
from launcher.monitoring.metrics import LauncherMetrics


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "alerts.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (apt-get install -y prometheus)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_prometheus_config_loads_the_rules():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["services"]["prometheus"]["volumes"]


def test_promtool_unit_tests_of_every_alert_pass():
    result = promtool("test", "rules", str(DEPLOY / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in rules()}


_SECONDS = {"s": 1, "m": 60, "h": 3600}


def test_every_alert_has_a_summary_a_severity_and_a_for_against_flapping():
    for rule in rules():
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        amount, unit = re.fullmatch(r"(\d+)([smh])", rule["for"]).groups()
        assert int(amount) * _SECONDS[unit] >= 30, rule["alert"]  # at least two evaluations (15 s)


# PromQL words that are not metric names.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or label names)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    functions = set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\(", expr))
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)) - functions - _KEYWORDS


def exported_names() -> set[str]:
    """Every metric and sample name the launcher exports with the resilient backend, all sources present."""
    metrics = LauncherMetrics("resilient", trader_id="T-1")
    snapshot = metrics.snapshot
    snapshot.probe = SimpleNamespace(checked=True, up=True)
    snapshot.lease = SimpleNamespace(lost=False, released=False)
    snapshot.set_recovery(SimpleNamespace(load_time_s=0.1, verify_time_s=0.1, counts={"orders_open": 1},
                                          problems=[], skipped=None))
    snapshot.database = lambda: SimpleNamespace(stats=CacheStats, client=None)
    snapshot.closed_history.append(SimpleNamespace(done=False, total=3, loaded=1, failed=[("O-1", "why")]))
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_names_are_found_in_expressions():
    assert metric_names('sum by (job, instance) (increase(a_total{reason="x"}[10m])) > 0 and on(instance) b') == {
        "a_total", "b",
    }


def test_every_metric_the_rules_use_is_exported_by_the_launcher():
    used = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert used == {
        "launcher_lease_held", "redis_up", "cache_writes_pending", "cache_writes_in_spill_file",
        "launcher_verify_ok", "cache_write_errors_total", "cache_writes_unreplicated", "launcher_closed_orders_failed",
    }
    assert used <= exported_names(), used - exported_names()
