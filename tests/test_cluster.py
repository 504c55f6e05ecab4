"""
Redis Cluster on a real six-node cluster (the `redis_cluster` session fixture), no mocks: the
trader's keys share one hash tag, the backend's pool follows the primary that owns its slot
across a manual failover, a SIGKILL of that primary and a slot migration, and with
min_replica_acks=1 nothing acknowledged is lost (compared with what the cache holds).
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
import redis
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import TraderId
from prometheus_client import generate_latest

from launcher.bootstrap.wait import wait_for_redis
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.config.compose import compose_config
from launcher.config.compose import to_settings
from launcher.errors import ConfigError
from launcher.errors import RedisUnavailable
from launcher.monitoring.metrics import LauncherMetrics
from launcher.servers.redis_process import ClusterTopology
from launcher.servers.redis_process import RedisProcess
from launcher.state import layout
from launcher.state.loader import state_trader_key
from launcher.state.loader import store_connection
from launcher.store.cluster import slot_of
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect
from launcher.store.connection import parse_address
from tests.support.launcher_cli import run_launcher
from tests.support.trading_state import OrderStream
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import dump_state
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


TIMEOUT_S = 1.0
MAX_BACKOFF_S = 0.2
ACK_TIMEOUT_MS = 500


def _settings(*overrides: str):
    return to_settings(compose_config(["cache=redis_cluster", *overrides]))


def _cluster_connection(cluster, trader_id: TraderId) -> ConnectionSettings:
    return ConnectionSettings(
        cluster_nodes=tuple(parse_address(a) for a in cluster.seed_addresses),
        slot_key=layout.trader_key(trader_id.value, hash_tag=True),
        timeout_s=TIMEOUT_S,
    )


def _cluster_db(cluster, tmp_path, trader_id: TraderId) -> ResilientCacheDatabase:
    return ResilientCacheDatabase(
        trader_id, UUID4(), make_serializer(), cache_config(cluster.nodes[0].port, buffer_interval_ms=10),
        connection=_cluster_connection(cluster, trader_id), spill_dir=str(tmp_path / "spill"),
        max_backoff_s=MAX_BACKOFF_S, close_timeout_s=30, min_replica_acks=1, replica_ack_timeout_ms=ACK_TIMEOUT_MS,
    )


# -- configuration and layout ---------------------------------------------------------------------


def test_cluster_profile_reads_seed_nodes_and_replica_acks(monkeypatch):
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "10.0.0.1:7000, 10.0.0.2:7001")
    settings = _settings()
    conn = store_connection(settings)
    assert conn.is_cluster and not conn.is_sentinel
    assert conn.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert conn.slot_key == "{trader-TRADER-001}"
    assert settings.cache.replica_acks() == (1, 1000)
    assert "cluster://10.0.0.1:7000,10.0.0.2:7001" in conn.describe()


def test_cluster_profile_refusals_are_config_errors():
    with pytest.raises(ConfigError, match="cache.cluster.nodes"):
        _settings()
    with pytest.raises(ConfigError, match="native cannot be used with cache=redis_cluster"):
        _settings("cache.cluster.nodes=[127.0.0.1:7000]", "cache.backend=native")
    with pytest.raises(ConfigError, match="only database 0"):
        _settings("cache.cluster.nodes=[127.0.0.1:7000]", "cache.redis.db=1")
    with pytest.raises(ConfigError, match="cache.cluster.nodes"):
        _settings("cache.cluster.nodes=[no-port]")


def test_hash_tag_only_with_the_cluster_profile():
    cluster = _settings("cache.cluster.nodes=[127.0.0.1:7000]")
    single = to_settings(compose_config(["cache=redis_dev"]))
    assert state_trader_key(cluster) == "{trader-TRADER-001}"
    assert state_trader_key(single) == "trader-TRADER-001"
    # Every key of the trader (any collection, with or without instance id) is in one slot.
    tagged = layout.trader_key("TRADER-001", "inst-1", None, hash_tag=True)
    keys = [layout.full_key(tagged, c) for c in (layout.ORDERS + ":O-1", layout.INDEX_ORDERS, layout.LEASE)]
    assert {slot_of(k) for k in keys} == {slot_of("{trader-TRADER-001}")}
    assert layout.scan_pattern("{trader-TR[1]*-001}") == "{trader-TR\\[1\\]\\*-001}:*"


# -- the pool pinned to the slot's owner ----------------------------------------------------------


def test_pool_connects_to_the_owner_of_the_trader_slot(redis_cluster):
    trader = TraderId("CLUSTER-001")
    conn = _cluster_connection(redis_cluster, trader)
    client = connect(conn)
    try:
        key = layout.full_key(conn.slot_key, layout.INDEX_ORDERS)
        client.sadd(key, "O-1")
        pipe = client.pipeline(transaction=True)  # MULTI/EXEC: every key in the one slot
        pipe.sadd(key, "O-2").sadd(layout.full_key(conn.slot_key, layout.INDEX_ORDERS_OPEN), "O-2")
        pipe.execute()
        owner = redis_cluster.slot_owner(slot_of(conn.slot_key))
        assert owner.client().smembers(key) == {b"O-1", b"O-2"}
        assert client.connection_pool.get_master_address() == (owner.host, owner.port)
    finally:
        client.close()


def test_a_seed_that_is_not_a_cluster_node_is_named(redis_server):
    conn = ConnectionSettings(cluster_nodes=(("127.0.0.1", redis_server.port),), slot_key="{trader-X-001}", timeout_s=1.0)
    with pytest.raises(redis.exceptions.ResponseError, match="not a Redis Cluster node"):
        connect(conn).ping()


# -- failover and slot migration while writing ----------------------------------------------------


def _stream_through(db, cluster, trigger, start_ns: int) -> list:
    """Stream orders, run `trigger` mid-stream, then wait for acknowledged writes to continue."""
    with OrderStream(new_cache(db), start_ns) as stream:
        poll(lambda: db.stats().writes_acknowledged > 200, 30, "writes before the event")
        trigger()
        acked = db.stats().writes_acknowledged
        poll(lambda: db.stats().writes_acknowledged > acked + 200, 60, "acknowledged writes after the event")
    assert stream.error is None, stream.error
    return stream.orders


def _closed_and_complete(db, cluster, orders: list):
    """Close the backend; everything was acknowledged where the slot lives now, nothing re-written. Its stats."""
    db.close()
    stats = db.stats()
    assert stats.failovers_followed >= 1 and stats.pending_writes == 0
    assert stats.repairs == 0  # the slot's new owner had every acknowledged write
    assert_exactly_once(cluster.slot_owner(slot_of(db.trader_key)).client(), db.trader_key, orders)
    cluster.wait_healthy()
    return stats


@pytest.mark.slow
def test_manual_failover_of_the_trader_shard_loses_nothing(redis_cluster, tmp_path):
    db = _cluster_db(redis_cluster, tmp_path, TraderId("CLUSTER-002"))
    first = write_orders(new_cache(db), 5, prefix="pre", start_ns=1_600_000_000_000_000_000)
    assert db.wait_until_persisted(10)
    slot = slot_of(db.trader_key)
    old = redis_cluster.slot_owner(slot)

    def failover() -> None:
        redis_cluster.manual_failover(redis_cluster.replicas_of(old)[0])

    orders = _stream_through(db, redis_cluster, failover, 1_700_000_000_000_000_000)
    _closed_and_complete(db, redis_cluster, first + orders)
    assert redis_cluster.slot_owner(slot) is not old


@pytest.mark.slow
def test_sigkill_of_the_trader_primary_loses_nothing_acknowledged(redis_cluster, tmp_path):
    db = _cluster_db(redis_cluster, tmp_path, TraderId("CLUSTER-003"))
    slot = slot_of(db.trader_key)
    old = redis_cluster.slot_owner(slot)

    def kill_primary() -> None:
        old.kill()
        redis_cluster.wait_owner_change(slot, old, timeout_s=30)
        old.start()  # rejoins as a replica of the promoted one: WAIT 1 can succeed again

    try:
        orders = _stream_through(db, redis_cluster, kill_primary, 1_710_000_000_000_000_000)
    finally:
        if not old.running:
            old.start()
    assert _closed_and_complete(db, redis_cluster, orders).outages >= 1


@pytest.mark.slow
def test_migrating_the_trader_slot_mid_run_loses_nothing(redis_cluster, tmp_path):
    db = _cluster_db(redis_cluster, tmp_path, TraderId("CLUSTER-004"))
    slot = slot_of(db.trader_key)
    old = redis_cluster.slot_owner(slot)
    target = next(n for n in redis_cluster.nodes
                  if n is not old and n.running and n.client().info("replication")["role"] == "master")
    moved: list[int] = []

    orders = _stream_through(db, redis_cluster, lambda: moved.append(redis_cluster.migrate_slot(slot, target)),
                             1_720_000_000_000_000_000)
    _closed_and_complete(db, redis_cluster, orders)
    assert moved and moved[0] > 0
    assert redis_cluster.slot_owner(slot) is target
    # The shard's metrics: where the trader is now, and that the writer met redirects and followed.
    metrics = LauncherMetrics("resilient", trader_id="CLUSTER-004")
    metrics.snapshot.database = lambda: db
    scraped = generate_latest(metrics.registry).decode()
    assert f'redis_cluster_shard{{primary="{target.address}",slot="{slot}"}} 1.0' in scraped
    assert float(re.search(r"^redis_cluster_owner_changes_total (\S+)", scraped, re.M).group(1)) >= 1
    redirects = {kind: float(re.search(rf'redis_cluster_redirects_total{{kind="{kind}"}} (\S+)', scraped).group(1))
                 for kind in ("MOVED", "ASK", "TRYAGAIN")}
    assert redirects["MOVED"] + redirects["ASK"] + redirects["TRYAGAIN"] >= 1, redirects


@pytest.mark.slow
def test_whole_shard_down_retains_writes_and_loses_nothing(redis_cluster, tmp_path):
    """Primary and replica of the trader's shard killed (CLUSTERDOWN, no owner anywhere), then back from their AOFs."""
    db = _cluster_db(redis_cluster, tmp_path, TraderId("CLUSTER-005"))
    primary = redis_cluster.slot_owner(slot_of(db.trader_key))
    replica = redis_cluster.replicas_of(primary)[0]

    def shard_down() -> None:
        replica.kill()
        primary.kill()
        poll(lambda: db.stats().outage_active, 30, "the writer noticing the outage")
        primary.start()
        replica.start()
        redis_cluster.wait_healthy(60)

    try:
        orders = _stream_through(db, redis_cluster, shard_down, 1_730_000_000_000_000_000)
        db.close()
    finally:
        for node in (primary, replica):
            if not node.running:
                node.start()
    stats = db.stats()
    assert stats.outages >= 1 and stats.pending_writes == 0
    # appendfsync everysec on both: the last second before the kill may be gone from both AOFs;
    # the backend re-writes it from memory (repairs), so Redis ends up with every event once.
    assert_exactly_once(redis_cluster.slot_owner(slot_of(db.trader_key)).client(), db.trader_key, orders)
    redis_cluster.wait_healthy()


# -- python -m launcher cache=redis_cluster -------------------------------------------------------


@pytest.mark.slow
def test_node_run_on_the_cluster_persists_and_recovers(redis_cluster, tmp_path):
    nodes = ",".join(redis_cluster.seed_addresses[:2])
    common = ["cache=redis_cluster", f"cache.cluster.nodes=[{nodes}]", "trader_id=CLNODE-001"]
    first = run_launcher([*common, "run.duration_s=3", "run.post_stop_s=0.2", "strategy=churn", "strategy.params.actions_per_second=20",
                          "monitoring.enabled=false"], cwd=tmp_path)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-3000:]
    assert "PASS cluster-state" in log and "PASS replica-acks" in log, log[-3000:]
    owner = redis_cluster.slot_owner(slot_of("{trader-CLNODE-001}"))
    client = owner.client()
    order_keys = client.keys("{trader-CLNODE-001}:orders:*")
    assert order_keys, log[-3000:]
    assert client.scard("{trader-CLNODE-001}:index:orders") == len(order_keys)
    assert not client.keys("trader-CLNODE-001:*")  # the hash tag, never NautilusTrader's bare prefix

    verify = run_launcher([*common, "mode=verify"], cwd=tmp_path)
    assert verify.returncode == 0, (verify.stdout + verify.stderr)[-3000:]
    assert "Recovery report" in verify.stdout

    inspect = run_launcher([*common, "mode=inspect"], cwd=tmp_path)
    assert inspect.returncode == 0, (inspect.stdout + inspect.stderr)[-3000:]
    assert f"on primary {owner.address}" in inspect.stdout

    retention = run_launcher([*common, "mode=retention", "retention.dry_run=true"], cwd=tmp_path)
    assert retention.returncode == 0, (retention.stdout + retention.stderr)[-3000:]

    second = run_launcher([*common, "run.duration_s=1", "run.post_stop_s=0.2", "strategy=churn", "monitoring.enabled=false"], cwd=tmp_path)
    log2 = second.stdout + second.stderr
    assert second.returncode == 0, log2[-3000:]
    assert "Node loaded exactly what the recovery report counted" in log2, log2[-3000:]


def test_native_backend_with_the_cluster_is_exit_2_with_one_line(tmp_path):
    result = run_launcher(["cache=redis_cluster", "cache.cluster.nodes=[127.0.0.1:7000]", "cache.backend=native"],
                          cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "native cannot be used with cache=redis_cluster" in errors[0], result.stderr


# -- python -m launcher mode=migrate --------------------------------------------------------------


def _dump_all(client: redis.Redis, pattern: str) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter(match=pattern, count=1000)}


@pytest.mark.slow
def test_migrate_single_server_to_cluster_and_back_verified_source_untouched(redis_cluster, tmp_path):
    source = RedisProcess(tmp_path / "source").start()
    back = RedisProcess(tmp_path / "back").start()
    nodes = ",".join(redis_cluster.seed_addresses[:2])
    try:
        single = ["cache=redis_dev", f"cache.redis.port={source.port}", "cache.redis.embedded=never",
                  "trader_id=MIGRATE-001"]
        run = run_launcher([*single, "run.duration_s=2", "run.post_stop_s=0.2", "strategy=churn", "monitoring.enabled=false"], cwd=tmp_path)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        before = _dump_all(source.client(), "trader-MIGRATE-001:*")
        assert any(b":orders:" in k for k in before)
        lease = "trader-MIGRATE-001:launcher:lease"
        state = {k: v for k, v in dump_state(source.client(), "trader-MIGRATE-001", include_launcher=True).items()
                 if k != lease}

        # The target's settings are the source profile's with the target's addresses: its preflight
        # asks for the shard's replicas to acknowledge, as the cluster profile does.
        to_cluster = run_launcher([*single, "mode=migrate", f"migrate.to='cluster://{nodes}'",
                                   "cache.cluster.min_replica_acks=1"], cwd=tmp_path)
        log = to_cluster.stdout + to_cluster.stderr
        assert to_cluster.returncode == 0, log[-3000:]
        assert "copied and verified" in log and "the source is untouched" in log
        assert _dump_all(source.client(), "trader-MIGRATE-001:*") == before  # the source is only read
        owner = redis_cluster.slot_owner(slot_of("{trader-MIGRATE-001}"))
        copied = dump_state(owner.client(), "{trader-MIGRATE-001}", include_launcher=True)
        assert {k.replace("{trader-MIGRATE-001}", "trader-MIGRATE-001"): v for k, v in copied.items()} == state

        again = run_launcher([*single, "mode=migrate", f"migrate.to='cluster://{nodes}'",
                              "cache.cluster.min_replica_acks=1"], cwd=tmp_path)
        assert again.returncode == 2, (again.stdout + again.stderr)[-3000:]
        assert "already holds" in again.stderr and len(again.stderr.strip().splitlines()) == 1

        clustered = ["cache=redis_cluster", f"cache.cluster.nodes=[{nodes}]", "trader_id=MIGRATE-001"]
        verify = run_launcher([*clustered, "mode=verify"], cwd=tmp_path)
        assert verify.returncode == 0, (verify.stdout + verify.stderr)[-3000:]
        home = run_launcher([*clustered, "mode=migrate", f"migrate.to=redis://127.0.0.1:{back.port}"], cwd=tmp_path)
        assert home.returncode == 0, (home.stdout + home.stderr)[-3000:]
        assert dump_state(back.client(), "trader-MIGRATE-001", include_launcher=True) == state
    finally:
        source.kill()
        back.kill()


def test_migrate_target_is_checked_at_composition():
    with pytest.raises(ConfigError, match="migrate.to: mode=migrate needs a target"):
        _settings("cache.cluster.nodes=[127.0.0.1:7000]", "mode=migrate")
    with pytest.raises(ConfigError, match="migrate.to: 'redis://a:1,b:2' names 2 address"):
        _settings("cache.cluster.nodes=[127.0.0.1:7000]", "mode=migrate", "migrate.to='redis://a:1,b:2'")
    with pytest.raises(ConfigError, match="migrate.to: 'ftp://x:1' is not one of"):
        _settings("cache.cluster.nodes=[127.0.0.1:7000]", "mode=migrate", "migrate.to=ftp://x:1")


def test_a_trader_id_that_would_empty_the_hash_tag_is_refused_at_composition():
    # Without the trader- prefix, '}X-001' made the key '{}X-001}:...': an empty hash tag, so Redis hashed
    # every whole key to a slot of its own and the run ended with exit 3 ("slot ... not served").
    for args in (["cache.cluster.nodes=[127.0.0.1:7000]"],
                 ["cache=redis_dev", "mode=migrate", "migrate.to='cluster://127.0.0.1:7000'"]):
        with pytest.raises(ConfigError, match="trader_id: '}X-001' starts with '}'"):
            _settings(*args, "cache.use_trader_prefix=false", "trader_id='}X-001'")
        assert _settings(*args, "trader_id='}X-001'").trader_id == "}X-001"  # with the prefix, the tag holds 'trader-}X-001'


@pytest.mark.slow
def test_password_protected_cluster_seeds_and_primary_use_the_credentials(tmp_path):
    cluster = ClusterTopology(tmp_path / "auth-cluster", password="cl-secret-1").start()
    try:
        conn = ConnectionSettings(cluster_nodes=(parse_address(cluster.seed_addresses[0]),), slot_key="{trader-AUTH-001}",
                                  password="cl-secret-1", timeout_s=TIMEOUT_S)
        client = connect(conn)
        client.set("{trader-AUTH-001}:general:k", b"v")
        assert cluster.slot_owner(slot_of(conn.slot_key)).client().get("{trader-AUTH-001}:general:k") == b"v"
        assert "cl-secret-1" not in conn.describe() and "cl-secret-1" not in repr(conn)
        client.close()
        wrong = connect(dataclasses.replace(conn, password="nope"))
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="authentication failed") as info:
            wait_for_redis(dataclasses.replace(conn, password="nope"), timeout_s=20)
        assert time.monotonic() - started < 10 and "nope" not in str(info.value)  # no waiting for what cannot change
    finally:
        cluster.stop()


def test_a_user_refused_cluster_slots_fails_the_wait_at_once_naming_it(redis_cluster):
    seed = redis_cluster.nodes[0]
    seed.client().acl_setuser("noslots", enabled=True, passwords=["+noslots-secret-2"], keys=["*"],
                              commands=["+@all", "-cluster"])
    try:
        conn = ConnectionSettings(cluster_nodes=(("127.0.0.1", seed.port),), slot_key="{trader-ACL-001}",
                                  username="noslots", password="noslots-secret-2", timeout_s=TIMEOUT_S)
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="not permitted") as info:
            wait_for_redis(conn, timeout_s=20)
        assert time.monotonic() - started < 10 and "noslots-secret-2" not in str(info.value)
    finally:
        seed.client().acl_deluser("noslots")
