"""Composition of every config group, the pure conversion to TradingNodeConfig, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.live.config import TradingNodeConfig

from launcher.config.compose import CONFIG_DIR
from launcher.config.compose import compose_config
from launcher.config.compose import redacted_yaml
from launcher.config.compose import to_settings
from launcher.config.connection import connection_settings
from launcher.config.node_config import build_node_config
from launcher.errors import ConfigError
from tests.support.launcher_cli import run_launcher


SENTINELS = "cache.sentinel.nodes=[127.0.0.1:26379,127.0.0.1:26380]"
CLUSTER_NODES = "cache.cluster.nodes=[127.0.0.1:7000,127.0.0.1:7001]"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def settings_for(*overrides: str):
    return to_settings(compose_config(list(overrides)))


@pytest.mark.parametrize("cache", group_options("cache"))
@pytest.mark.parametrize("strategy", [s for s in group_options("strategy") if s != "custom"])
@pytest.mark.parametrize("venue", group_options("venue"))
def test_every_config_group_composes_and_converts(fake_credentials, cache, strategy, venue):
    overrides = [f"cache={cache}", f"strategy={strategy}", f"venue={venue}", SENTINELS, CLUSTER_NODES]
    if venue == "interactive_brokers" and importlib.util.find_spec("ibapi") is None:
        with pytest.raises(ConfigError, match=r"needs the Python package 'ibapi'.*\[ib\]"):
            settings_for(*overrides)
        return
    settings = settings_for(*overrides)
    config = build_node_config(settings, redis_address=("127.0.0.1", 7000))
    assert isinstance(config, TradingNodeConfig)
    assert str(config.trader_id) == "TRADER-001"
    assert isinstance(config.cache, CacheConfig)
    assert list(config.data_clients) == [settings.venue.name]
    assert list(config.exec_clients) == [settings.venue.name]
    assert len(config.strategies) == 1
    expected = "EUR/USD.SIM" if venue == "sim" else settings.venue.instrument_ids[0]
    assert config.strategies[0].config["instrument_id"] == expected


def test_every_config_group_composes_with_several_strategies_and_modes(fake_credentials):
    """The list-valued and new keys compose too: strategies, actors, reconciliation, mode=check."""
    strategies = [s for s in group_options("strategy") if s != "custom"]
    settings = settings_for(f"strategies=[{','.join(strategies)}]", "mode=check", "venue=binance",
                            "venue.execution=sandbox", "reconciliation.lookback_mins=60")
    config = build_node_config(settings)
    assert [s.config["order_id_tag"] for s in config.strategies] == [f"{i:03d}" for i in range(1, len(strategies) + 1)]
    assert config.exec_engine.reconciliation_lookback_mins == 60


def test_memory_profile_has_no_database_and_does_not_load_state():
    config = build_node_config(settings_for("cache=memory"))
    assert config.cache.database is None
    assert config.exec_engine.load_cache is False


def test_redis_dev_profile_maps_fr001_and_fr002():
    settings = settings_for("cache=redis_dev", "cache.redis.port=7001", "trader_id=DRILL-001")
    config = build_node_config(settings)
    db = config.cache.database
    assert (db.type, db.host, db.port, db.username, db.password, db.ssl) == ("redis", "localhost", 7001, None, None, False)
    assert (db.connection_timeout, db.response_timeout) == (2, 2)
    assert config.cache.encoding == "msgpack"
    assert config.cache.timestamps_as_iso8601 is True
    assert config.cache.buffer_interval_ms == 100
    assert config.cache.persist_account_events is True
    assert config.cache.use_trader_prefix is True
    assert config.exec_engine.load_cache is True
    assert str(config.trader_id) == "DRILL-001"
    assert settings.cache.persist_quotes is False and settings.cache.persist_trades is False


def test_environment_variables_follow_fr001(monkeypatch):
    monkeypatch.setenv("REDIS_HOST", "127.0.0.2")
    monkeypatch.setenv("REDIS_PORT", "7002")
    monkeypatch.setenv("REDIS_USER", "trader")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("REDIS_SSL", "TRUE")
    settings = settings_for("cache=redis_dev")
    conn = connection_settings(settings.cache)
    assert (conn.host, conn.port, conn.username, conn.password, conn.ssl) == ("127.0.0.2", 7002, "trader", "s3cret", True)
    assert "s3cret" not in conn.describe() and "s3cret" not in repr(conn)


def test_sentinel_nodes_from_environment(monkeypatch):
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26380")
    settings = settings_for("cache=redis_sentinel")
    conn = connection_settings(settings.cache)
    assert conn.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert conn.master_name == "mymaster"
    assert settings.cache.sentinel.min_replica_acks == 1


def test_sentinel_native_backend_uses_the_resolved_master_address():
    settings = settings_for("cache=redis_sentinel", SENTINELS, "cache.backend=native")
    config = build_node_config(settings, redis_address=("127.0.0.1", 7100))
    assert (config.cache.database.host, config.cache.database.port) == ("127.0.0.1", 7100)


def test_custom_strategy_plugs_in_without_yaml():
    settings = settings_for(
        "strategy=custom",
        "strategy.path=tests.support.custom_strategy:MyStrategy",
        "strategy.config_path=tests.support.custom_strategy:MyConfig",
        "+strategy.params.fast=10",
    )
    config = build_node_config(settings)
    assert config.strategies[0].strategy_path == "tests.support.custom_strategy:MyStrategy"
    assert config.strategies[0].config == {"fast": 10, "instrument_id": "EUR/USD.SIM"}


def test_redacted_yaml_hides_passwords_in_values_and_overrides():
    cfg = compose_config(["cache.redis.password=hunter2"], with_hydra=True)
    text = redacted_yaml(cfg, resolve=True)
    assert "hunter2" not in text
    assert "password: '***'" in text
    assert "cache.redis.password=***" in text  # hydra.overrides.task


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["cache.redis.prot=1"], "cache.redis.prot"),
        (["cache.redis.port=abc"], "cache.redis.port"),
        (["cache.redis.port=70000"], "cache.redis.port: port 70000 is out of range"),
        (["cache.redis.username=bob"], "cache.redis.username"),
        (["cache=redis_sentinel"], "cache.sentinel.nodes"),
        (["cache.buffer_interval_ms=-5"], "cache.buffer_interval_ms"),
        (["trader_id=TRADER"], "trader_id: 'TRADER' is not in NautilusTrader's NAME-TAG form"),
        (["cache.durability=sometimes"], "cache.durability"),
        (["cache=nosuch"], "Could not find 'cache/nosuch' (available: memory, redis_cluster, redis_dev, redis_sentinel)"),
        (["cache=redis_cluster"], "cache.cluster.nodes"),
        (["cache=redis_cluster", CLUSTER_NODES, "cache.backend=native"], "cache.backend: native cannot be used"),
        (["strategy.params.fast_ema_period=50"], "strategy.params"),
        (["cache.backend=native", "cache.durability=sync"], "cache.durability"),
        (["cache.persist_orders=false"], "cache.persist_orders: false is not supported"),
        (["cache.redis.db=1", "cache.backend=native"], "cache.redis.db"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        settings_for(*overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cache.redis.prot=1"], "cache.redis.prot: unknown key"),
        (["cache.redis.port=70000"], "cache.redis.port"),
        (["cache.redis.username=bob"], "without cache.redis.password"),
        (["cache=redis_sentinel"], "cache.sentinel.nodes"),
        (["trader_id=TRADER"], "NAME-TAG"),
        (["strategy=custom", "strategy.path=nosuch.module:Nope", "strategy.config_path=nosuch.module:NopeConfig"],
         "strategy.path: cannot import strategy 'nosuch.module:Nope'"),
    ],
)
def test_cli_bad_configuration_exits_2_with_one_line(tmp_path: Path, args, expected):
    result = run_launcher(args, cwd=tmp_path, timeout_s=60)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()


def test_cli_cfg_job_prints_sentinel_profile_without_password(tmp_path: Path):
    result = run_launcher(
        ["--cfg", "job", "cache=redis_sentinel", "--resolve"], cwd=tmp_path, timeout_s=60,
        REDIS_PASSWORD="topsecret", REDIS_SENTINELS="127.0.0.1:26379",
    )
    assert result.returncode == 0, result.stderr
    assert "store: sentinel" in result.stdout
    assert "127.0.0.1:26379" in result.stdout
    assert "topsecret" not in result.stdout + result.stderr
