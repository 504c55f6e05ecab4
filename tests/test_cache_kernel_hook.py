"""The kernel hook: a TradingNode built inside use_cache_database() persists through our backend."""

from __future__ import annotations

import nautilus_trader.system.kernel as kernel_module
from nautilus_trader.config import CacheConfig
from nautilus_trader.config import DatabaseConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.config import TradingNodeConfig
from nautilus_trader.live.node import TradingNode

from launcher.cache.kernel_hook import RebuiltState
from launcher.cache.kernel_hook import ResilientFactory
from launcher.cache.kernel_hook import use_cache_database
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.state import layout as L


def test_trading_node_built_inside_the_hook_uses_the_resilient_backend(redis_server, tmp_path):
    original = kernel_module.CacheDatabaseAdapter
    factory = ResilientFactory(spill_dir=str(tmp_path / "spill"), durability="sync")
    config = TradingNodeConfig(
        trader_id="HOOK-001",
        cache=CacheConfig(database=DatabaseConfig(host="127.0.0.1", port=redis_server.port), buffer_interval_ms=20),
        logging=LoggingConfig(log_level="ERROR"),
    )
    with use_cache_database(factory):
        assert kernel_module.CacheDatabaseAdapter is factory
        node = TradingNode(config=config)
    assert kernel_module.CacheDatabaseAdapter is original  # restored
    try:
        assert len(factory.instances) == 1
        database = factory.instances[0]
        assert isinstance(database, ResilientCacheDatabase)
        assert database.durability == "sync" and database.trader_key == "trader-HOOK-001"
        node.cache.add("hooked", b"through-the-node")  # sync: persisted when this returns
        client = redis_server.client()
        assert client.get("trader-HOOK-001:general:hooked") == b"through-the-node"
        assert client.hget(f"trader-HOOK-001:{L.MANIFEST_META}", "final") == b"0"
        assert database.stats().writes_acknowledged >= 2
    finally:
        node.dispose()
    meta = redis_server.client().hgetall(f"trader-HOOK-001:{L.MANIFEST_META}")
    assert meta[b"final"] == b"1" and meta[b"instance_id"] == node.kernel.instance_id.value.encode()


def test_hook_restores_the_adapter_when_construction_fails():
    original = kernel_module.CacheDatabaseAdapter

    def broken(**kwargs):
        raise RuntimeError("boom")

    try:
        with use_cache_database(broken):
            raise ValueError("node construction failed")
    except ValueError:
        pass
    assert kernel_module.CacheDatabaseAdapter is original


def test_rebuilt_orders_go_to_the_next_database_only():
    """Verify's handoff to the kernel: the first load takes the orders, a later one decodes for itself."""
    rebuilt = RebuiltState()
    assert rebuilt.take() is None
    orders = {"O-1": ([b"event"], object())}
    rebuilt.give(orders)
    assert rebuilt.take() is orders
    assert rebuilt.take() is None
