"""
Sync durability: a cache write returns only once Redis acknowledged it, so a write whose call
returned survives a SIGKILL of the writing process (the server uses appendfsync always, so
its own fsync policy is not the variable).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


CHILD = textwrap.dedent(
    """
    import sys
    from nautilus_trader.common.component import TestClock
    from nautilus_trader.common.factories import OrderFactory
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.identifiers import AccountId, StrategyId, VenueOrderId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from launcher.cache.resilient import ResilientCacheDatabase
    from tests.support.trading_state import TRADER_ID, cache_config, make_serializer, new_cache

    port, spill_dir = int(sys.argv[1]), sys.argv[2]
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=100), spill_dir=spill_dir,
        durability="sync",
    )
    cache = new_cache(db)
    clock = TestClock()
    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=StrategyId("S-001"), clock=clock)
    audusd = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    account = AccountId("SIM-001")
    i = 0
    while True:
        order = factory.limit(audusd.id, OrderSide.BUY, Quantity.from_int(1000), Price.from_str("0.70000"))
        cache.add_order(order)
        print(order.client_order_id.value, 1, flush=True)  # the write returned: it is in Redis
        order.apply(TestEventStubs.order_submitted(order, account_id=account))
        cache.update_order(order)
        print(order.client_order_id.value, 2, flush=True)
        order.apply(TestEventStubs.order_accepted(order, account_id=account, venue_order_id=VenueOrderId(f"V-{i}")))
        cache.update_order(order)
        print(order.client_order_id.value, 3, flush=True)
        i += 1
    """,
)


def test_every_write_that_returned_survives_sigkill_of_the_process(redis_server_always, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(redis_server_always.port), str(tmp_path / "spill")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd(),
    )
    confirmed: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while len(confirmed) < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            coid, count = line.split()
            confirmed[coid] = int(count)
        child.send_signal(signal.SIGKILL)  # mid-stream: no close(), no flush, nothing graceful
        child.wait(10)
        for line in child.stdout.read().splitlines():  # lines printed before the kill
            coid, count = line.split()
            confirmed[coid] = int(count)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(confirmed) >= 150
    client = redis_server_always.client()
    pipe = client.pipeline(transaction=False)
    for coid in confirmed:
        pipe.llen(f"trader-TESTER-000:orders:{coid}")
    lengths = dict(zip(confirmed, pipe.execute()))
    lost = {coid: (count, lengths[coid]) for coid, count in confirmed.items() if lengths[coid] < count}
    assert not lost, f"writes reported as returned but missing in Redis: {list(lost.items())[:5]}"
    for coid, count in confirmed.items():
        assert lengths[coid] <= count + 1  # at most the write in progress when killed


def test_sync_write_blocks_until_acknowledged_and_resumes_after_outage(redis_server, tmp_path):
    """In sync mode a write during an outage returns only after Redis is back and has it."""
    import threading

    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port), spill_dir=str(tmp_path / "spill"),
        durability="sync", connection=ConnectionSettings(host="127.0.0.1", port=redis_server.port, timeout_s=1.0),
        max_backoff_s=0.1,
    )
    cache = new_cache(db)
    first = write_orders(cache, 2, prefix="a")
    redis_server.kill()
    returned = threading.Event()
    box = {}

    def blocked_write():
        box["orders"] = write_orders(cache, 1, prefix="b", start_ns=1_750_000_000_000_000_000)
        returned.set()

    thread = threading.Thread(target=blocked_write, daemon=True)
    thread.start()
    assert not returned.wait(1.0)  # Redis is down: the write has not returned
    redis_server.start()
    assert returned.wait(20)
    client = redis_server.client()
    order = box["orders"][0]
    assert client.llen(f"{db.trader_key}:orders:{order.client_order_id.value}") == 4  # there when it returned
    db.close()
    for o in first:
        assert client.llen(f"{db.trader_key}:orders:{o.client_order_id.value}") == 4


def test_sync_mode_constructor_and_close_never_hang_while_redis_is_down(tmp_path):
    from launcher.servers.redis_process import free_port

    port = free_port()  # nothing listens here
    t0 = time.monotonic()
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port), spill_dir=str(tmp_path / "spill"), durability="sync",
        connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=0.5), close_timeout_s=1.0, max_backoff_s=0.1,
    )
    db.close()  # bounded: the bookkeeping writes never block, the flush gives up after ~1 s
    assert time.monotonic() - t0 < 10
    assert db.stats().spilled_writes == 1  # the start marker; the clean-stop marker is not spilled


def test_without_a_replica_sync_writes_return_once_applied_and_a_replica_later_acknowledges_them(tmp_path):
    """
    min_replica_acks=1 and no replica: a sync write returns once the master applied it (after
    the WAIT timeout), with one WARN that writes are unreplicated; they stay retained (counted
    as pending and unreplicated) until a replica acknowledges them, then one INFO.
    """
    from launcher.servers.redis_process import LOOPBACK
    from launcher.servers.redis_process import NO_SYNC_DELAY
    from launcher.servers.redis_process import RedisProcess

    master = RedisProcess(tmp_path / "master", appendonly=False, extra=list(NO_SYNC_DELAY)).start()
    replica = None
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(master.port), spill_dir=str(tmp_path / "spill"),
        durability="sync", min_replica_acks=1, replica_ack_timeout_ms=100, max_backoff_s=0.1, close_timeout_s=5.0,
    )
    db._log = LogRecorder()
    try:
        box: dict = {}
        writer = threading.Thread(target=lambda: box.update(orders=write_orders(new_cache(db), 3)), daemon=True)
        writer.start()
        writer.join(10)
        assert not writer.is_alive(), "sync writes blocked although the master applied them"
        client = master.client()
        for order in box["orders"]:
            assert client.llen(f"{db.trader_key}:orders:{order.client_order_id.value}") == 4  # applied when it returned
        stats = db.stats()
        assert stats.unreplicated_writes >= 12 and stats.pending_writes >= 12 and stats.writes_acknowledged == 0
        assert db._log.count("WARN", "unreplicated") == 1
        replica = RedisProcess(tmp_path / "replica", appendonly=False,
                               extra=["--replicaof", LOOPBACK, str(master.port)]).start()
        poll(lambda: db.stats().unreplicated_writes == 0, 20, "a replica to acknowledge them")
        assert db.wait_until_persisted(5)
        assert db.stats().writes_acknowledged >= 12
        assert db._log.count("INFO", "Replicas acknowledge again") == 1
        db.close()
        assert db._log.count("INFO", "every write acknowledged") == 1
        assert_exactly_once(replica.client(), db.trader_key, box["orders"])
    finally:
        db.close()
        if replica is not None:
            replica.kill()
        master.kill()
