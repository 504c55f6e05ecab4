"""
Real venues from YAML (conf/venue/*.yaml), several strategies and actors per node, mode=check,
credentials from the environment only, and an unreachable venue. Nothing reaches the internet:
endpoints are closed loopback ports.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import pytest
import yaml
from nautilus_trader.common.config import ImportableConfig

from launcher.config.compose import CONFIG_DIR
from launcher.config.compose import compose_config
from launcher.config.compose import to_settings
from launcher.config.node_config import build_node_config
from launcher.errors import ConfigError
from launcher.node.check import check_node
from launcher.servers.redis_process import free_port
from tests.support.fake_credentials import FAKE
from tests.support.launcher_cli import run_launcher


VENUES = sorted(p.stem for p in (CONFIG_DIR / "venue").glob("*.yaml"))
ADAPTERS = [v for v in VENUES if v != "sim"]
SEED_CACHES = ["memory", "redis_dev", "redis_sentinel"]
SENTINELS = "cache.sentinel.nodes=[127.0.0.1:26379]"
IB_MISSING = importlib.util.find_spec("ibapi") is None


def venue_yaml(venue: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "venue" / f"{venue}.yaml").read_text())


def settings_for(*overrides: str):
    return to_settings(compose_config(list(overrides)))


@pytest.mark.parametrize("cache", SEED_CACHES)
@pytest.mark.parametrize("venue", VENUES)
def test_every_venue_passes_mode_check_offline(tmp_path: Path, venue, cache):
    """
    A process each: some adapters register process-wide state when a client is built, as a real
    launcher does once. Nothing listens on the Redis port: mode=check needs no Redis.
    """
    args = ["mode=check", f"venue={venue}", f"cache={cache}", SENTINELS, f"cache.redis.port={free_port()}"]
    result = run_launcher(args, cwd=tmp_path, timeout_s=90, **FAKE)
    output = result.stdout + result.stderr
    assert not any(secret in output for secret in FAKE.values())
    if venue == "interactive_brokers" and IB_MISSING:
        assert result.returncode == 2, output
        assert output.strip() == ("error: venue: venue IB needs the Python package 'ibapi', which is not installed: "
                                  "pip install 'nautilus-redis-launcher[ib]'")
        return
    assert result.returncode == 0, output
    doc = venue_yaml(venue)
    name = doc.get("name", "SIM")
    assert f"venue           {name} (" in output
    where = f"environment {doc['environment']}" if venue != "sim" else "offline simulation"
    assert where in output
    assert output.split("data clients")[1].splitlines()[0].endswith(f" {name}")
    store = {"memory": "memory", "redis_dev": "redis", "redis_sentinel": "sentinel"}[cache]
    assert f"cache           {store}" in output
    assert "EMACross" in output
    assert not (tmp_path / "var").exists()


def test_every_adapter_client_is_named_by_import_path(fake_credentials):
    for venue in ADAPTERS:
        if venue == "interactive_brokers" and IB_MISSING:
            continue
        config = build_node_config(settings_for(f"venue={venue}", "cache=memory"))
        for client in [*config.data_clients.values(), *config.exec_clients.values()]:
            assert isinstance(client, ImportableConfig) and client.factory is not None
            assert client.path.startswith("nautilus_trader.adapters.")


@pytest.mark.parametrize("venue", [v for v in VENUES if "exec_client" in venue_yaml(v)])
def test_venues_that_trade_real_money_default_to_a_test_environment(venue):
    doc = venue_yaml(venue)
    assert doc["environment"] != "live"
    assert "live" in doc["environments"]  # going live is possible, explicitly


@pytest.mark.parametrize(("venue", "variable"), [
    ("binance", "BINANCE_TESTNET_API_KEY"), ("bybit", "BYBIT_TESTNET_API_SECRET"),
    ("okx", "OKX_API_PASSPHRASE"), ("databento", "DATABENTO_API_KEY"),
])
def test_a_missing_credential_names_the_variable(fake_credentials, monkeypatch, venue, variable):
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError) as info:
        settings_for(f"venue={venue}", "mode=check")
    assert f"environment variable {variable} is not set" in str(info.value)


@pytest.mark.parametrize("mode", ["verify", "inspect", "retention"])
def test_modes_that_build_no_node_need_no_venue_credentials(monkeypatch, mode):
    for name in FAKE:
        monkeypatch.delenv(name, raising=False)
    assert settings_for("venue=binance", f"mode={mode}").venue.name == "BINANCE"
    with pytest.raises(ConfigError, match="BINANCE_TESTNET_API_KEY is not set"):
        settings_for("venue=binance", "mode=run")


def test_live_is_chosen_explicitly_and_reads_the_live_variables(fake_credentials):
    testnet = build_node_config(settings_for("venue=binance", "cache=memory"))
    live = build_node_config(settings_for("venue=binance", "cache=memory", "venue.environment=live"))
    assert testnet.data_clients["BINANCE"].config["environment"] == "TESTNET"
    assert testnet.exec_clients["BINANCE"].config["api_key"] == FAKE["BINANCE_TESTNET_API_KEY"]
    assert live.exec_clients["BINANCE"].config["environment"] == "LIVE"
    assert live.exec_clients["BINANCE"].config["api_secret"] == FAKE["BINANCE_API_SECRET"]
    with pytest.raises(ConfigError, match="venue.environment: 'mainnet' is not one of venue BINANCE's"):
        settings_for("venue=binance", "venue.environment=mainnet")


def test_a_credential_must_name_a_variable_and_is_never_echoed(fake_credentials):
    with pytest.raises(ConfigError) as info:
        settings_for("venue=binance", "venue.credentials.testnet.api_key=sk-pasted-by-mistake")
    assert "sk-pasted-by-mistake" not in str(info.value)
    assert info.value.key == "venue.credentials.testnet.api_key"


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
def test_sandbox_execution_keeps_the_data_client_and_swaps_the_execution_factory(fake_credentials, venue):
    real = build_node_config(settings_for(f"venue={venue}", "cache=memory"))
    paper = build_node_config(settings_for(f"venue={venue}", "cache=memory", "venue.execution=sandbox"))
    name = venue_yaml(venue)["name"]
    assert paper.data_clients == real.data_clients
    assert real.exec_clients[name].factory.path == venue_yaml(venue)["exec_client"]["factory_path"]
    sandbox = paper.exec_clients[name]
    # NautilusTrader's sandbox client, which also cancels recovered orders its empty engine cannot work
    assert sandbox.factory.path == "launcher.venues.sim:SandboxLiveExecClientFactory"
    assert sandbox.path == "nautilus_trader.adapters.sandbox.config:SandboxExecutionClientConfig"
    assert sandbox.config["starting_balances"] == venue_yaml(venue)["starting_balances"]
    assert sandbox.config["venue"] == name
    assert "api_key" not in sandbox.config


def test_databento_is_data_only_and_paper_trades_on_the_exchange_venue(fake_credentials):
    config = build_node_config(settings_for("venue=databento", "cache=memory"))
    assert config.exec_clients["DATABENTO"].config["venue"] == "XCME"
    assert config.strategies[0].config["instrument_id"] == "ESZ6.XCME"
    with pytest.raises(ConfigError, match="has no execution client of its own"):
        settings_for("venue=databento", "venue.execution=venue")
    assert build_node_config(settings_for("venue=databento", "cache=memory", "venue.execution=none")).exec_clients == {}


def test_several_strategies_and_actors_each_with_a_distinct_id():
    settings = settings_for(
        "cache=memory", "strategies=[ema_cross,churn]", "+strategy_params.churn.actions_per_second=3",
        "actors=[{path: 'tests.support.actor:PingActor', config_path: 'tests.support.actor:PingConfig'}]",
    )
    config = build_node_config(settings)
    assert [s.strategy_path for s in config.strategies] == ["strategies.ema_cross:EMACross",
                                                            "strategies.churn:ChurnStrategy"]
    assert [s.config["order_id_tag"] for s in config.strategies] == ["001", "002"]
    assert config.strategies[1].config["actions_per_second"] == 3
    assert config.actors[0].config == {"instrument_id": "EUR/USD.SIM"}
    text = check_node(settings, config)  # the sim's clients may be built again in one process
    assert "EMACross-001 (EMACross), ChurnStrategy-002 (ChurnStrategy)" in text
    assert "PingActor" in text


@pytest.mark.parametrize(("overrides", "expected"), [
    (["strategies=[ema_cross,nosuch]"], "strategies: no strategy option 'nosuch' (available: churn, custom"),
    (["strategies=[ema_cross,ema_cross]"], "strategies: 'ema_cross' is listed twice"),
    (["strategies=[ema_cross]", "+strategy_params.churn.x=1"], "strategy_params.churn: is not an option listed"),
    (["strategies=[ema_cross,churn]", "+strategy_params.churn.nope=1"], "strategies.churn.params: strategy 'churn'"),
    (["actors=[{path: 'nosuch:A', config_path: 'nosuch:B'}]"], "actors.0.path: cannot import actor 'nosuch:A'"),
])
def test_bad_strategy_lists_are_one_line_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        settings_for("cache=memory", *overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_reconciliation_settings_reach_the_execution_engine():
    default = build_node_config(settings_for("cache=redis_dev"))
    assert default.exec_engine.reconciliation is True
    assert default.exec_engine.inflight_check_interval_ms == 2_000
    tuned = build_node_config(settings_for(
        "cache=memory", "reconciliation.lookback_mins=120", "reconciliation.open_check_interval_s=5",
        "reconciliation.enabled=false",
    ))
    engine = tuned.exec_engine
    assert (engine.reconciliation, engine.reconciliation_lookback_mins, engine.open_check_interval_secs) == (
        False, 120, 5.0)
    assert engine.inflight_check_interval_ms == 0


def test_cli_check_exits_0_without_redis_and_prints_no_secret(tmp_path: Path):
    port = free_port()  # nothing listens: check must not need Redis (nor start an embedded one)
    result = run_launcher(["mode=check", "venue=okx", f"cache.redis.port={port}", "strategies=[ema_cross,churn]"],
                          cwd=tmp_path, timeout_s=90, **FAKE)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "OKX (adapter; environment demo, execution venue)" in output
    assert "EMACross-001 (EMACross), ChurnStrategy-002 (ChurnStrategy)" in output
    assert not any(secret in output for secret in FAKE.values())
    assert not (tmp_path / "var").exists()


def test_cli_missing_credential_is_exit_2_one_line(tmp_path: Path):
    env = {k: v for k, v in FAKE.items() if k != "BYBIT_TESTNET_API_KEY"}
    result = run_launcher(["mode=check", "venue=bybit"], cwd=tmp_path, timeout_s=60, **env)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, lines
    assert lines == ["error: venue.credentials: environment variable BYBIT_TESTNET_API_KEY is not set "
                     "(venue BYBIT, environment testnet, its api_key)"]


@pytest.mark.parametrize("args", [["--cfg", "job", "--resolve"], ["--cfg", "all"]])
def test_cli_cfg_never_prints_a_venue_secret(tmp_path: Path, args):
    result = run_launcher([*args, "venue=okx", "+venue.data_client.params.api_secret=typed-on-the-line"],
                          cwd=tmp_path, timeout_s=60, **FAKE)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "kind: adapter" in output
    assert "typed-on-the-line" not in output
    assert not any(secret in output for secret in FAKE.values())


@pytest.mark.slow
def test_an_unreachable_venue_is_exit_9_in_bounded_time_lease_released_state_untouched(tmp_path, redis_server):
    from tests.test_bootstrap_e2e import snapshot

    closed = free_port()
    endpoints = [f"+venue.{client}.params.{key}={scheme}://127.0.0.1:{closed}"
                 for client in ("data_client", "exec_client")
                 for key, scheme in (("base_url_http", "http"), ("base_url_ws", "ws"))]
    args = ["venue=binance", "cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            "trader_id=REMOTE-001", "run.timeout_connection_s=3", *endpoints]
    client = redis_server.client()
    client.set("trader-REMOTE-001:general:marker", b"persisted before")
    before = snapshot(client, "trader-REMOTE-001")
    started = time.monotonic()
    result = run_launcher(args, cwd=tmp_path, timeout_s=90, **FAKE)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 9, output[-3000:]
    assert elapsed < 45, elapsed  # 3 s connect timeout + disconnect + process start, far from a hang
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: venue unreachable: BinanceSpotDataClient BINANCE"), last
    assert "Traceback" not in output
    assert not any(secret in output for secret in FAKE.values())
    assert client.get("trader-REMOTE-001:launcher:lease") is None
    after = snapshot(client, "trader-REMOTE-001")
    meta = [key for key in after if b":launcher:manifest:" in key]  # who started last, and when
    assert {k: v for k, v in after.items() if k not in meta} == {k: v for k, v in before.items() if k not in meta}


@pytest.mark.slow
def test_two_strategies_on_sim_persist_their_orders_and_both_are_recovered(tmp_path: Path, redis_server):
    args = ["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            "trader_id=MULTI-001", "strategies=[ema_cross,churn]", "+strategy_params.ema_cross.fast_ema_period=2",
            "+strategy_params.ema_cross.slow_ema_period=4", "+strategy_params.churn.actions_per_second=10"]
    first = run_launcher([*args, "run.duration_s=4", "run.post_stop_s=0.2"], cwd=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    client = redis_server.client()
    orders = {key.decode().rsplit(":", 1)[1] for key in client.scan_iter(match="trader-MULTI-001:orders:*")}
    # Client order ids are O-{time}-{trader tag}-{strategy tag}-{count}: both strategies placed orders.
    by_tag = {tag: {o for o in orders if f"-001-{tag}-" in o} for tag in ("001", "002")}
    assert by_tag["001"] and by_tag["002"], sorted(orders)[:10]
    assert client.scard("trader-MULTI-001:index:orders") == len(orders)

    second = run_launcher([*args, "run.duration_s=1", "run.post_stop_s=0.2"], cwd=tmp_path)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "Node loaded exactly what the recovery report counted" in log
    inspect = run_launcher([*args, "mode=inspect"], cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr[-3000:]
    for ids in by_tag.values():  # every order of both strategies read back from Redis
        assert all(order_id in inspect.stdout for order_id in ids)
    assert "EMACross-001" in inspect.stdout and "ChurnStrategy-002" in inspect.stdout  # their saved states


def test_the_worked_example_of_docs_venues_md_builds(tmp_path: Path):
    """Adding a venue is a YAML file: the documented example, on Hydra's search path, passes mode=check."""
    text = (CONFIG_DIR.parent / "docs" / "venues.md").read_text()
    example = re.search(r"```yaml\n(# conf/venue/kraken.yaml\n.*?)```", text, re.DOTALL).group(1)
    (tmp_path / "venue").mkdir()
    (tmp_path / "venue" / "kraken.yaml").write_text(example)
    env = {"KRAKEN_FUTURES_DEMO_API_KEY": "fake-kraken-key", "KRAKEN_FUTURES_DEMO_API_SECRET": "fake-kraken-secret"}
    result = run_launcher(["mode=check", "venue=kraken", f"hydra.searchpath=[file://{tmp_path}]"],
                          cwd=tmp_path, timeout_s=90, **env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "KrakenDataClient KRAKEN" in output and "KrakenExecutionClient KRAKEN" in output
    assert "fake-kraken" not in output
