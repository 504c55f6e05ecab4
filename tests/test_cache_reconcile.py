"""
After a failover the writer reconciles the new master against the node's own memory: a
promotion of a replica that lagged (it never acknowledged the last writes) loses nothing
while the node lives.
"""

from __future__ import annotations

import pytest
import redis
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.retry import poll
from launcher.servers.redis_process import SentinelTopology
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import parse_address
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders


pytestmark = pytest.mark.slow

# Sentinel refreshes a replica's INFO (its replica-priority) every 10 s; a forced failover then
# takes a few seconds (failover-timeout 3 s); budgets are generous for a loaded machine.
SENTINEL_SEES_S = 30.0
FAILOVER_S = 60.0


def _offset(client: redis.Redis) -> int:
    info = client.info("replication")
    return int(info.get("slave_repl_offset", info.get("master_repl_offset", 0)))


def test_a_failover_to_a_lagging_replica_loses_nothing(tmp_path):
    topology = SentinelTopology(tmp_path / "sentinel", replicas=2).start()
    try:
        never, lagging = topology.replica_procs
        # Only the lagging replica may be promoted (what replica-priority or a native backend allows).
        never.client().config_set("replica-priority", 0)
        for sentinel in topology.sentinel_procs:
            poll(lambda s=sentinel: any(int(r["slave-priority"]) == 0 and int(r["port"]) == never.port
                                        for r in s.client().sentinel_slaves(topology.master_name)),
                 SENTINEL_SEES_S, "the sentinels seeing replica-priority 0")
        settings = ConnectionSettings(sentinels=tuple(parse_address(a) for a in topology.sentinel_addresses),
                                      master_name=topology.master_name, timeout_s=1.0)
        db = ResilientCacheDatabase(
            TRADER_ID, UUID4(), make_serializer(), cache_config(topology.master.port, buffer_interval_ms=10),
            connection=settings, spill_dir=str(tmp_path / "spill"), max_backoff_s=0.2, close_timeout_s=30,
            min_replica_acks=1, replica_ack_timeout_ms=500,
        )
        db._log = LogRecorder()
        cache = new_cache(db)
        early = write_orders(cache, 5, events=2)
        assert db.wait_until_persisted(10)
        master = topology.master.client()
        poll(lambda: _offset(lagging.client()) >= _offset(master), 10, "the lagging replica catching up first")
        # Cut the lagging replica off (a partition): it cannot authenticate to reconnect, while
        # the other replica resumes at once. Sentinel still promotes a replica whose link has
        # been down for less than 10 x down-after-milliseconds.
        lag = lagging.client()
        lag.config_set("masteruser", "partitioned")
        lag.config_set("masterauth", "partitioned")
        master.execute_command("CLIENT", "KILL", "TYPE", "replica")
        poll(lambda: lag.info("replication")["master_link_status"] == "down", 10, "the lagging replica cut off")
        for order in early:  # acknowledged by the other replica only
            order.apply(TestEventStubs.order_accepted(order))
            cache.update_order(order)
        late = write_orders(cache, 5, events=3, prefix="late", start_ns=1_800_000_000_000_000_000)
        assert db.wait_until_persisted(10)
        assert db.stats().unreplicated_writes == 0  # every write acknowledged (WAIT 1)

        topology.sentinel_procs[0].client().execute_command("SENTINEL", "FAILOVER", topology.master_name)
        assert topology.wait_new_master(topology.master.port, FAILOVER_S) == lagging.port
        poll(lambda: master.info("replication")["role"] == "slave", FAILOVER_S, "the old master demoted")
        new_master = lagging.client()
        assert len(new_master.lrange(f"{db.trader_key}:orders:{early[0].client_order_id.value}", 0, -1)) == 2  # lagged

        # The node goes on: its next write reaches the new master, which the writer reconciles.
        order = early[0]
        order.apply(TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD")))
        cache.update_order(order)
        poll(lambda: db.stats().failovers_followed >= 1 and db.pending_writes() == 0, FAILOVER_S,
             "the writer following the failover")
        db.close()
        assert_exactly_once(new_master, db.trader_key, [*early, *late])
        assert db._log.count("WARN", "were behind the node's memory") == 1
    finally:
        topology.stop()

