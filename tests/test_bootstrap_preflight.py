"""run_preflight against real redis-server processes (and a real Sentinel topology)."""

from __future__ import annotations

import pytest

from launcher.bootstrap.preflight import run_preflight
from launcher.bootstrap.wait import wait_for_redis
from launcher.config.connection import connection_settings
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.errors import PreflightFailed
from launcher.errors import RedisUnavailable
from launcher.retry import poll
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import SentinelTopology
from launcher.store.connection import connect


def settings_for(port: int, **cache: object) -> LauncherConfig:
    settings = LauncherConfig(trader_id="TESTER-001")
    settings.cache.redis.host = "127.0.0.1"
    settings.cache.redis.port = port
    for name, value in cache.items():
        setattr(settings.cache, name, value)
    return settings


def preflight(server: RedisProcess, settings: LauncherConfig | None = None, **kwargs):
    settings = settings or settings_for(server.port)
    conn = connection_settings(settings.cache)
    client = connect(conn)
    try:
        return {r.check: r for r in run_preflight(client, settings, conn, **kwargs)}
    finally:
        client.close()


def test_default_server_passes(redis_server, caplog):
    caplog.set_level("INFO", logger="launcher.bootstrap")
    results = preflight(redis_server)
    assert {r.status for r in results.values()} == {"PASS"}, results
    assert {"server-version", "role", "eviction", "persistence", "msgbus-db", "flush-on-start"} <= set(results)
    assert "AOF on (appendfsync everysec)" in results["persistence"].reason


def test_evicting_policy_with_maxmemory_fails(redis_server):
    redis_server.client().config_set("maxmemory", "100mb")
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(PreflightFailed) as raised:
        preflight(redis_server)
    message = str(raised.value)
    assert "eviction" in message and "allkeys-lru" in message
    assert "\n" not in message
    assert raised.value.exit_code == 7
    redis_server.client().config_set("maxmemory-policy", "noeviction")
    assert preflight(redis_server)["eviction"].status == "PASS"


def test_no_persistence_warns_for_redis_and_fails_for_sentinel(tmp_path):
    server = RedisProcess(tmp_path / "volatile", appendonly=False).start()
    try:
        assert preflight(server)["persistence"].status == "WARN"
        sentinel_like = settings_for(server.port)
        sentinel_like.cache.store = Store.sentinel  # the checks read the store kind; the connection stays direct
        conn = connection_settings(settings_for(server.port).cache)
        client = connect(conn)
        with pytest.raises(PreflightFailed, match="persistence"):
            run_preflight(client, sentinel_like, conn)
        sentinel_like.bootstrap.allow_no_persistence = True
        results = {r.check: r for r in run_preflight(client, sentinel_like, conn)}
        assert results["persistence"].status == "WARN"
        client.close()
    finally:
        server.kill()


def test_config_command_disabled_warns_instead_of_crashing(tmp_path):
    server = RedisProcess(tmp_path / "managed", appendonly=False, extra=["--rename-command", "CONFIG", ""]).start()
    try:
        results = preflight(server)
        assert results["eviction"].status == "PASS"  # INFO memory still tells maxmemory and its policy
        assert results["persistence"].status == "WARN"
        assert "could not be checked" in results["persistence"].reason
    finally:
        server.kill()


def test_flush_on_start_warns_loudly_and_refuses_to_delete_other_traders(redis_server):
    client = redis_server.client()
    client.set("trader-TESTER-001:general:x", b"1")
    results = preflight(redis_server, settings_for(redis_server.port, flush_on_start=True))
    assert results["flush-on-start"].status == "WARN"
    assert "DELETE" in results["flush-on-start"].reason
    client.set("trader-OTHER-001:general:y", b"1")
    with pytest.raises(PreflightFailed, match="flush-on-start"):
        preflight(redis_server, settings_for(redis_server.port, flush_on_start=True))


@pytest.mark.parametrize(("written", "configured"), [("json", "msgpack"), ("msgpack", "json")])
def test_state_in_the_other_encoding_fails(redis_server, written, configured):
    """Payloads as NautilusTrader's serializer writes them, read back with the other encoding."""
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    from tests.support.trading_state import make_serializer

    client = redis_server.client()
    client.flushall()
    assert preflight(redis_server, settings_for(redis_server.port, encoding=configured))["encoding"].status == "PASS"
    client.set("trader-OTHER-001:instruments:X", b"\xff not a payload")  # another trader's key: not looked at
    client.set("trader-TESTER-001:general:note", b"{}")  # not a serializer payload: not looked at
    assert preflight(redis_server, settings_for(redis_server.port, encoding=configured))["encoding"].status == "PASS"
    instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    client.set("trader-TESTER-001:instruments:EUR/USD.SIM", make_serializer(written).serialize(instrument))
    assert preflight(redis_server, settings_for(redis_server.port, encoding=written))["encoding"].status == "PASS"
    with pytest.raises(PreflightFailed) as raised:
        preflight(redis_server, settings_for(redis_server.port, encoding=configured))
    assert raised.value.exit_code == 7
    assert (f"encoding: cache.encoding={configured}, but trader TESTER-001's state in Redis is {written} "
            f"(e.g. trader-TESTER-001:instruments:EUR/USD.SIM)") in str(raised.value)
    assert f"set cache.encoding={written}" in str(raised.value)
    client.flushall()


def test_message_bus_in_the_same_database_with_flush_fails(redis_server):
    assert preflight(redis_server, msgbus_same_db=True)["msgbus-db"].status == "PASS"
    with pytest.raises(PreflightFailed, match="msgbus-db"):
        preflight(redis_server, settings_for(redis_server.port, flush_on_start=True), msgbus_same_db=True)


def test_replica_fails_the_role_check(redis_server, tmp_path):
    replica = RedisProcess(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    try:
        with pytest.raises(PreflightFailed, match="role"):
            preflight(replica)
    finally:
        replica.kill()


@pytest.mark.slow
def test_sentinel_checks(sentinel_topology):
    settings = LauncherConfig(trader_id="TESTER-001")
    settings.cache.store = Store.sentinel
    settings.cache.sentinel.nodes = sentinel_topology.sentinel_addresses
    settings.cache.sentinel.master_name = sentinel_topology.master_name
    settings.cache.sentinel.min_replica_acks = 1  # the redis_sentinel profile's value: its one replica
    conn = connection_settings(settings.cache)
    client = wait_for_redis(conn, timeout_s=10)  # the master, found through the sentinels
    try:
        results = {r.check: r for r in run_preflight(client, settings, conn)}
        for name in ("sentinel-master", "sentinel-quorum", "sentinel-replicas", "replica-acks"):
            assert results[name].status == "PASS", results[name]
        assert "3 of 3" in results["sentinel-quorum"].reason
        # A master name no sentinel knows (yet) is transient for wait_for_redis: retried until the timeout.
        unknown = LauncherConfig(trader_id="TESTER-001")
        unknown.cache.store = Store.sentinel
        unknown.cache.sentinel.nodes = sentinel_topology.sentinel_addresses
        unknown.cache.sentinel.master_name = "notyet"
        with pytest.raises(RedisUnavailable, match="no master known to the sentinels"):
            wait_for_redis(connection_settings(unknown.cache), timeout_s=1.0)

        sentinel_topology.sentinel_procs[0].kill()
        results = {r.check: r for r in run_preflight(client, settings, conn)}
        assert results["sentinel-quorum"].status == "PASS"
        assert "2 of 3" in results["sentinel-quorum"].reason

        sentinel_topology.replica_procs[0].kill()
        results = {r.check: r for r in run_preflight(client, settings, conn)}
        assert results["sentinel-replicas"].status == "WARN"

        sentinel_topology.sentinel_procs[1].kill()
        with pytest.raises(PreflightFailed, match="sentinel-quorum"):
            run_preflight(client, settings, conn)

        settings.cache.sentinel.master_name = "nosuchmaster"
        conn = connection_settings(settings.cache)
        with pytest.raises(PreflightFailed, match="sentinel-master"):
            run_preflight(client, settings, conn)
    finally:
        client.close()


def test_replica_acks_below_the_promotable_replicas_fails(tmp_path):
    """Two replicas and min_replica_acks=1: Sentinel may promote the one that did not acknowledge."""
    topology = SentinelTopology(tmp_path / "two", replicas=2).start()
    try:
        settings = LauncherConfig(trader_id="TESTER-001")
        settings.cache.store = Store.sentinel
        settings.cache.sentinel.nodes = topology.sentinel_addresses
        settings.cache.sentinel.master_name = topology.master_name
        settings.cache.sentinel.min_replica_acks = 1
        conn = connection_settings(settings.cache)
        client = wait_for_redis(conn, timeout_s=10)
        try:
            with pytest.raises(PreflightFailed) as raised:
                run_preflight(client, settings, conn)
            assert "replica-acks" in str(raised.value) and "min_replica_acks=2" in str(raised.value)
            assert raised.value.exit_code == 7

            settings.cache.sentinel.min_replica_acks = 2
            assert {r.check: r for r in run_preflight(client, settings, conn)}["replica-acks"].status == "PASS"

            # A replica that may never be promoted need not acknowledge.
            settings.cache.sentinel.min_replica_acks = 1
            topology.replica_procs[1].client().config_set("replica-priority", 0)
            poll(lambda: _priority_seen(topology, topology.replica_procs[1].port), 15, "sentinels seeing replica-priority 0")
            assert {r.check: r for r in run_preflight(client, settings, conn)}["replica-acks"].status == "PASS"
        finally:
            client.close()
    finally:
        topology.stop()


def _priority_seen(topology, port: int) -> bool:
    replicas = topology.sentinel_procs[0].client().sentinel_slaves(topology.master_name)
    return any(int(r.get("port", 0)) == port and int(r.get("slave-priority", 100)) == 0 for r in replicas)
