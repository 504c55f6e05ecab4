"""
Sentinel: the backend discovers the master through the sentinels and follows failovers with
no restart. With min_replica_acks=1 a batch counts as acknowledged only once a replica has it,
so a failover loses nothing that was acknowledged, and writes continue on the new master.
"""

from __future__ import annotations

import pytest

from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.testing import TRADER_ID
from launcher.cache.testing import OrderStream
from launcher.cache.testing import assert_exactly_once
from launcher.cache.testing import cache_config
from launcher.cache.testing import make_serializer
from launcher.cache.testing import new_cache
from launcher.cache.testing import poll
from launcher.cache.testing import write_orders
from launcher.servers.redis_process import SentinelTopology
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import parse_address


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    """
    The `sentinel_topology` fixture's topology (one master, one replica, three sentinels),
    shared by this module's tests to start it once: each test asks the sentinels which node is
    the master now.

    One replica and ``min_replica_acks=1``: the only node a failover can promote is the one
    that acknowledged every batch. (With more replicas than ``min_replica_acks`` the promoted
    replica may be one that did not - acknowledged writes could then be lost by the failover;
    set ``min_replica_acks`` to the number of replicas.)
    """
    made = SentinelTopology(tmp_path_factory.mktemp("failover") / "sentinel", replicas=1).start()
    try:
        yield made
    finally:
        made.stop()


def _sentinel_db(topology, tmp_path, **kwargs) -> ResilientCacheDatabase:
    settings = ConnectionSettings(
        sentinels=tuple(parse_address(a) for a in topology.sentinel_addresses),
        master_name=topology.master_name,
        timeout_s=1.0,
    )
    return ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(topology.master.port, buffer_interval_ms=10),
        connection=settings, spill_dir=str(tmp_path / "spill"), max_backoff_s=0.2, close_timeout_s=20, **kwargs,
    )


def _stream_through_failover(db, topology, trigger, recover=None, start_ns: int = 1_700_000_000_000_000_000) -> tuple[list, int]:
    """
    Stream orders, trigger a failover, let the topology recover (the old master rejoins as a
    replica, so WAIT 1 can succeed again: until then batches reach the new master but are not
    acknowledged, so they stay retained), and check that acknowledged writes continue on the
    new master.
    """
    old_port = topology.current_master_port()
    with OrderStream(new_cache(db), start_ns) as stream:
        poll(lambda: db.stats().writes_acknowledged > 200, 20, "writes before the failover")
        trigger(old_port)
        new_port = topology.wait_new_master(old_port, timeout_s=30)
        if recover is not None:
            recover(old_port)
        poll(lambda: db.stats().server_address == ("127.0.0.1", new_port), 60, "acknowledged writes on the new master")
        acked = db.stats().writes_acknowledged
        poll(lambda: db.stats().writes_acknowledged > acked + 200, 30, "more acknowledged writes on the new master")
    assert stream.error is None, stream.error
    return stream.orders, new_port


def test_sentinel_failover_command_during_writes(topology, tmp_path):
    db = _sentinel_db(topology, tmp_path, min_replica_acks=1, replica_ack_timeout_ms=500)
    first = write_orders(new_cache(db), 5, prefix="pre", start_ns=1_600_000_000_000_000_000)
    assert db.wait_until_persisted(10)
    assert db.stats().server_address == ("127.0.0.1", topology.current_master_port())

    def failover(old_port: int) -> None:
        topology.sentinel_procs[0].client().execute_command("SENTINEL", "FAILOVER", topology.master_name)

    orders, new_port = _stream_through_failover(db, topology, failover)
    db.close()
    stats = db.stats()
    assert stats.failovers_followed >= 1 and stats.pending_writes == 0
    assert stats.repairs == 0  # the new master had every acknowledged write: nothing to re-write
    assert_exactly_once(topology.server_on_port(new_port).client(), db.trader_key, first + orders)


def test_master_sigkill_during_writes_loses_nothing_acknowledged(topology, tmp_path):
    db = _sentinel_db(topology, tmp_path, min_replica_acks=1, replica_ack_timeout_ms=500)

    def kill_master(old_port: int) -> None:
        topology.server_on_port(old_port).kill()

    def restart_old_master(old_port: int) -> None:
        topology.server_on_port(old_port).start()  # sentinel turns it into a replica of the new master

    orders, new_port = _stream_through_failover(db, topology, kill_master, restart_old_master, 1_710_000_000_000_000_000)
    db.close()
    stats = db.stats()
    assert stats.failovers_followed >= 1 and stats.pending_writes == 0 and stats.outages >= 1
    assert stats.repairs == 0
    assert_exactly_once(topology.server_on_port(new_port).client(), db.trader_key, orders)
