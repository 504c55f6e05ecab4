"""
The running node's retention pass (``RetentionActor.run_pass``) with explicit timestamps, on
a NautilusTrader Cache backed by either backend on a real redis-server: the node's memory
and Redis lose the same items, and Redis verifies afterwards - including after a crash
right after the pass (the manifest is not rewritten by a clean stop).
"""

from __future__ import annotations

import time

import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.database import CacheDatabaseAdapter
from nautilus_trader.common.component import MessageBus
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.portfolio.portfolio import Portfolio

from launcher.bootstrap.manifest import write_manifest_from_cache
from launcher.bootstrap.verify import verify_state
from launcher.retention.actor import RedisFollowUp
from launcher.retention.actor import RetentionActor
from launcher.state import layout
from tests.support.trading_state import make_serializer
from tests.test_bootstrap_verify import settings_for
from tests.test_retention_policy import DEFAULTS
from tests.test_retention_policy import NOW
from tests.test_retention_policy import build_aged_state


@pytest.mark.parametrize("backend", ["native", "resilient"])
def test_pass_removes_from_memory_and_redis_and_state_verifies(redis_server, tmp_path, backend):
    trader_id = "NODE-001"
    config = CacheConfig(
        database=DatabaseConfig(host="127.0.0.1", port=redis_server.port),
        encoding="msgpack", timestamps_as_iso8601=True, buffer_interval_ms=0,
    )
    serializer = make_serializer("msgpack", timestamps_as_iso8601=True)
    if backend == "native":
        database = CacheDatabaseAdapter(TraderId(trader_id), UUID4(), serializer, config)
    else:
        from launcher.cache.resilient import ResilientCacheDatabase

        database = ResilientCacheDatabase(TraderId(trader_id), UUID4(), serializer, config, spill_dir=str(tmp_path))
    cache = Cache(database=database, config=config)
    s = build_aged_state(cache, trader_id=trader_id)
    client = redis_server.client()
    tk = layout.trader_key(trader_id)
    # The state is hours old in the story; here it was just written, by a backend that writes
    # asynchronously: let it land first (in a real node these writes are a day older than the pass).
    hash_key = layout.full_key(tk, layout.INDEX_ORDER_POSITION)
    deadline = time.monotonic() + 10
    while None in client.hmget(hash_key, *sorted(s.stale_order_position)):
        assert time.monotonic() < deadline, "the backend never wrote the order->position index"
        time.sleep(0.01)
    if backend == "native":
        # As after the previous clean stop; this test then "crashes" (no final manifest).
        write_manifest_from_cache(client, tk, cache, instance_id="previous", final=True)

    barrier = None if backend == "native" else database.wait_until_persisted
    follow_up = RedisFollowUp(client, tk, serializer, native=backend == "native", barrier=barrier)
    actor = RetentionActor(DEFAULTS, 1.0, follow_up, delete_account_events=backend != "native")
    clock = TestClock()
    msgbus = MessageBus(TraderId(trader_id), clock)
    actor.register_base(Portfolio(msgbus, cache, clock), msgbus, cache, clock)

    result = actor.run_pass(NOW)
    assert result.removed == {"orders": 4, "positions": 2, "account_events": 4}
    assert result.kept_for_position == 2
    # Memory: gone, and the rest still there.
    assert all(cache.order(ClientOrderId(o)) is None for o in s.remove_orders)
    assert all(cache.order(ClientOrderId(o)) is not None for o in s.keep_orders)
    assert all(cache.position(PositionId(p)) is None for p in s.remove_positions)
    assert len(cache.account(AccountId("SIM-001")).events) == 2
    assert len(cache.account(AccountId("OLD-001")).events) == 1

    assert follow_up.wait_idle(5)
    database.close()  # drains the backend's queue (the deletes)
    follow_up.close()
    for oid in s.remove_orders:
        assert not client.exists(layout.full_key(tk, f"{layout.ORDERS}:{oid}"))
    for pid in s.remove_positions:
        assert not client.exists(layout.full_key(tk, f"{layout.POSITIONS}:{pid}"))
    assert client.llen(layout.full_key(tk, f"{layout.ACCOUNTS}:SIM-001")) == 2
    assert client.llen(layout.full_key(tk, f"{layout.ACCOUNTS}:OLD-001")) == 1
    assert client.hmget(layout.full_key(tk, layout.INDEX_ORDER_POSITION), *sorted(s.stale_order_position)) == [None, None]
    report = verify_state(client, settings_for(redis_server.port, trader_id))
    assert report.problems == [], report.render()

    # Nothing more is due at the same instant.
    assert actor.run_pass(NOW).removed == {"orders": 0, "positions": 0, "account_events": 0}
