"""
When Redis does not hold what the backend wrote (events lost by the server, a list written
twice), the entity's list is rewritten from the events held in memory, loudly; what cannot be
rebuilt is reported, never papered over.
"""

from __future__ import annotations

from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import TriggerType
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.state import layout as L
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders


def _db(server, tmp_path) -> ResilientCacheDatabase:
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port),
                                spill_dir=str(tmp_path / "spill"))
    db._log = LogRecorder()
    return db


def test_events_lost_by_the_server_are_rewritten_from_memory(redis_server, tmp_path):
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    orders = write_orders(cache, 3, events=2)  # initialized, submitted
    assert db.wait_until_persisted(10)
    client = redis_server.client()
    key = lambda o: f"{db.trader_key}:orders:{o.client_order_id.value}"  # noqa: E731
    client.ltrim(key(orders[0]), 0, 0)  # the server "lost" event 2
    client.delete(key(orders[1]))  # ... and a whole list
    for order in orders:
        order.apply(TestEventStubs.order_accepted(order))
        cache.update_order(order)
    assert db.wait_until_persisted(10)
    db.close()
    assert_exactly_once(client, db.trader_key, orders)
    assert db.stats().repairs == 2
    assert db._log.count("WARN", "rewriting them from memory") == 1  # one line for the batch


def test_an_update_written_twice_leaves_no_duplicate(redis_server, tmp_path):
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    order = write_orders(cache, 1, events=3)[0]
    db.update_order(order)  # the same last event once more (NautilusTrader's adapter would RPUSHX it again)
    db.close()
    assert_exactly_once(redis_server.client(), db.trader_key, [order])
    assert len(db.load_orders()) == 1  # loads: no "duplicate event" corruption


def test_an_account_list_lost_by_the_server_is_rebuilt_from_memory(redis_server, tmp_path):
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    account = TestExecStubs.cash_account(AccountId("SIM-001"))
    cache.add_account(account)
    assert db.wait_until_persisted(10)
    client = redis_server.client()
    client.delete(f"{db.trader_key}:accounts:SIM-001")
    account.apply(TestEventStubs.cash_account_state(AccountId("SIM-001")))
    cache.update_account(account)
    db.close()
    serializer = make_serializer()
    stored = client.lrange(f"{db.trader_key}:accounts:SIM-001", 0, -1)
    assert stored == [serializer.serialize(e) for e in account.events]
    assert db.stats().repairs == 1
    assert client.hget(f"{db.trader_key}:{L.MANIFEST_ACCOUNTS}", "SIM-001") == b"2"


def test_a_purged_account_keeps_appending(redis_server, tmp_path):
    """Fewer events in memory than in Redis (NautilusTrader purged some): appends still land."""
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    account = TestExecStubs.cash_account(AccountId("SIM-001"))
    cache.add_account(account)
    for _ in range(3):
        account.apply(TestEventStubs.cash_account_state(AccountId("SIM-001")))
        cache.update_account(account)
    assert db.wait_until_persisted(10)
    account.purge_account_events(ts_now=10**18, lookback_secs=0)  # memory keeps the newest only
    account.apply(TestEventStubs.cash_account_state(AccountId("SIM-001")))
    cache.update_account(account)
    db.close()
    stored = redis_server.client().lrange(f"{db.trader_key}:accounts:SIM-001", 0, -1)
    assert len(stored) == 5 and stored[-1] == make_serializer().serialize(account.last_event)
    assert db.stats().repairs == 0 and db.stats().misplaced_appends == 1


def test_a_repaired_order_gets_its_index_entries_back(redis_server, tmp_path):
    """The server lost an order's list and its index entries: the repair restores both."""
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    order = write_orders(cache, 1, events=3)[0]  # initialized, submitted, accepted (open, has a venue order id)
    assert db.wait_until_persisted(10)
    client = redis_server.client()
    coid = order.client_order_id.value
    client.delete(f"{db.trader_key}:orders:{coid}")
    for name in L.ORDER_SET_INDEXES:
        client.srem(f"{db.trader_key}:{name}", coid)
    order.apply(TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD"), position_id=PositionId("P-1")))
    cache.update_order(order)
    assert db.wait_until_persisted(10)
    db.close()
    assert db.stats().repairs == 1
    assert_exactly_once(client, db.trader_key, [order])
    for name in (L.INDEX_ORDERS, L.INDEX_ORDER_IDS, L.INDEX_ORDERS_CLOSED):
        assert client.sismember(f"{db.trader_key}:{name}", coid), name
    assert client.hget(f"{db.trader_key}:{L.INDEX_ORDER_POSITION}", coid) == b"P-1"



def test_updates_write_the_index_entries_a_repair_restores(redis_server, tmp_path):
    """
    update_order / update_position build their index entries inline (hot path), a repair with
    `_index_commands`: in every state both say the same (the repair adds the entity's
    membership of index:orders / index:positions and its order -> position entry).
    """
    db = _db(redis_server, tmp_path)
    cache = new_cache(db)
    compared: list[tuple[str, set, set]] = []
    send = db._submit

    def compare_then_send(op):
        if op.kind in ("update_order", "update_position"):  # as the entity is now, at submission
            key = op.cmds[0][1]
            compared.append((op.kind, set(op.cmds[1:]), set(db._index_commands(key, op.entity))))
        return send(op)

    db._submit = compare_then_send
    instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    order = write_orders(cache, 1, events=4)[0]  # submitted (in flight), accepted (open, venue id), filled (closed)
    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=StrategyId("S-001"), clock=TestClock())
    emulated = factory.limit(instrument.id, OrderSide.BUY, Quantity.from_int(1000), Price.from_str("0.70000"),
                             emulation_trigger=TriggerType.BID_ASK)
    cache.add_order(emulated)
    db.update_order(emulated)  # initialized and emulated: neither open nor closed
    position = Position(instrument, order.last_event)
    cache.add_position(position, OmsType.NETTING)
    closer = factory.limit(instrument.id, OrderSide.SELL, Quantity.from_int(100_000), Price.from_str("0.70000"))
    closer.apply(TestEventStubs.order_submitted(closer))
    closer.apply(TestEventStubs.order_accepted(closer))
    for n, qty in enumerate((40_000, 60_000)):  # part of it back (open), then the rest (closed)
        position.apply(TestEventStubs.order_filled(closer, instrument, position_id=position.id,
                                                   trade_id=TradeId(f"T-CLOSE-{n}"), last_qty=Quantity.from_int(qty)))
        cache.update_position(position)
    assert db.wait_until_persisted(10)
    db.close()
    assert position.is_closed
    assert [kind for kind, _, _ in compared] == ["update_order"] * 4 + ["update_position"] * 2
    for kind, written, restored in compared:
        only_repair = {cmd for cmd in restored if cmd[0] == b"HSET" or cmd[1] in (
            db._idx[L.INDEX_ORDERS], db._idx[L.INDEX_POSITIONS])}
        assert written == restored - only_repair, kind
