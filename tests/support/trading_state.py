"""
Test helpers for the cache backends (test-only: nothing under launcher/ imports this module):

* `make_serializer` - the serializer exactly as NautilusTrader's kernel builds it;
* `native_adapter` - NautilusTrader's own ``CacheDatabaseAdapter`` on a given server;
* `CacheTee` - a ``CacheDatabaseFacade`` forwarding every call to several databases, so one
  ``Cache`` drives identical writes (same objects, same UUIDs) into each;
* `write_scenario` - realistic state through a ``Cache``: every order event type, a
  transformed (emulated) order, HEDGING and NETTING positions incl. a flip, cash and margin
  accounts, instruments, currencies, a synthetic, strategy/actor state, general objects,
  snapshots, heartbeat, every index, and deletes;
* `dump_state` - every key of a trader with its Redis type and raw content, for byte-for-byte
  comparison;
* fingerprints of loaded orders/positions/accounts for equality checks;
* `write_orders` - many small orders through a ``Cache`` (benchmarks, outage tests).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Any

import msgspec
import pandas as pd
import redis
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.facade import CacheDatabaseFacade
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import MessageBus
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import CurrencyType
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import TimeInForce
from nautilus_trader.model.enums import TriggerType
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.events import OrderCancelRejected
from nautilus_trader.model.events import OrderDenied
from nautilus_trader.model.events import OrderEmulated
from nautilus_trader.model.events import OrderModifyRejected
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.identifiers import ComponentId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.identifiers import VenueOrderId
from nautilus_trader.model.objects import AccountBalance
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.objects import Money
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.orders import LimitOrder
from nautilus_trader.model.orders import MarketOrder
from nautilus_trader.model.position import Position
from nautilus_trader.portfolio.portfolio import Portfolio
from nautilus_trader.serialization.serializer import MsgSpecSerializer
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs
from nautilus_trader.trading.strategy import Strategy

from launcher.state import layout


TRADER_ID = TraderId("TESTER-000")
STRATEGY_ID = StrategyId("S-001")


def make_serializer(encoding: str = "msgpack", timestamps_as_iso8601: bool = False) -> MsgSpecSerializer:
    """The cache serializer exactly as ``NautilusKernel`` builds it."""
    return MsgSpecSerializer(
        encoding=msgspec.msgpack if encoding == "msgpack" else msgspec.json,
        timestamps_as_str=True,
        timestamps_as_iso8601=timestamps_as_iso8601,
    )


def cache_config(port: int, encoding: str = "msgpack", timestamps_as_iso8601: bool = False, **kwargs: Any) -> CacheConfig:
    return CacheConfig(
        database=DatabaseConfig(host="127.0.0.1", port=port, connection_timeout=2, response_timeout=2),
        encoding=encoding,
        timestamps_as_iso8601=timestamps_as_iso8601,
        **kwargs,
    )


def launcher_settings(port: int) -> Any:
    """The launcher's settings for TRADER_ID on the Redis at `port`, matching `cache_config`'s defaults (epoch ns timestamps)."""
    from launcher.config.schema import LauncherConfig

    settings = LauncherConfig(trader_id=TRADER_ID.value)
    settings.cache.redis.host = "127.0.0.1"
    settings.cache.redis.port = port
    settings.cache.timestamps_as_iso8601 = False
    return settings


def native_adapter(config: CacheConfig, instance_id: UUID4 | None = None, trader_id: TraderId = TRADER_ID) -> Any:
    """NautilusTrader's own Redis adapter, configured as the kernel would."""
    from nautilus_trader.cache.database import CacheDatabaseAdapter

    return CacheDatabaseAdapter(
        trader_id=trader_id,
        instance_id=instance_id or UUID4(),
        serializer=make_serializer(config.encoding, config.timestamps_as_iso8601),
        config=config,
    )


class CacheTee(CacheDatabaseFacade):
    """Forwards every facade call to each of `databases` (same objects, same order)."""

    def __init__(self, *databases: Any) -> None:
        super().__init__(CacheConfig())
        self.databases = databases

    def _all(self, name: str, *args: Any) -> None:
        for db in self.databases:
            getattr(db, name)(*args)

    def close(self): self._all("close")
    def flush(self): self._all("flush")
    def add(self, key, value): self._all("add", key, value)
    def add_currency(self, currency): self._all("add_currency", currency)
    def add_instrument(self, instrument): self._all("add_instrument", instrument)
    def add_synthetic(self, synthetic): self._all("add_synthetic", synthetic)
    def add_account(self, account): self._all("add_account", account)
    def add_order(self, order, position_id=None, client_id=None): self._all("add_order", order, position_id, client_id)
    def add_position(self, position): self._all("add_position", position)
    def index_venue_order_id(self, client_order_id, venue_order_id): self._all("index_venue_order_id", client_order_id, venue_order_id)
    def index_order_position(self, client_order_id, position_id): self._all("index_order_position", client_order_id, position_id)
    def update_account(self, account): self._all("update_account", account)
    def update_order(self, order): self._all("update_order", order)
    def update_position(self, position): self._all("update_position", position)
    def update_actor(self, actor): self._all("update_actor", actor)
    def update_strategy(self, strategy): self._all("update_strategy", strategy)
    def snapshot_order_state(self, order): self._all("snapshot_order_state", order)
    def snapshot_position_state(self, position, ts_snapshot, unrealized_pnl=None): self._all("snapshot_position_state", position, ts_snapshot, unrealized_pnl)
    def delete_order(self, client_order_id): self._all("delete_order", client_order_id)
    def delete_position(self, position_id): self._all("delete_position", position_id)
    def delete_account_event(self, account_id, event_id): self._all("delete_account_event", account_id, event_id)
    def delete_actor(self, component_id): self._all("delete_actor", component_id)
    def delete_strategy(self, strategy_id): self._all("delete_strategy", strategy_id)
    def heartbeat(self, timestamp): self._all("heartbeat", timestamp)


class _StateStrategy(Strategy):
    def on_save(self) -> dict[str, bytes]:
        return {"counter": b"42", "mode": b"scenario"}


class _StateActor(Actor):
    def on_save(self) -> dict[str, bytes]:
        return {"seen": b"7"}


def _account_state(account_id: AccountId, account_type: Any, total: int, ts: int, margins: list | None = None) -> AccountState:
    usd = Currency.from_str("USD")
    return AccountState(
        account_id=account_id,
        account_type=account_type,
        base_currency=usd,
        reported=True,
        balances=[AccountBalance(Money(total, usd), Money(0, usd), Money(total, usd))],
        margins=margins or [],
        info={},
        event_id=UUID4(),
        ts_event=ts,
        ts_init=ts,
    )


def write_scenario(cache: Cache, database: Any) -> dict[str, Any]:
    """
    Drive realistic writes through `cache` (whose database is `database`); return the objects.

    Some facade calls NautilusTrader's ``Cache`` never makes itself (``index_venue_order_id``,
    ``heartbeat``, actor/strategy state, deletes) are made on `database` directly.
    """
    clock = TestClock()
    clock.set_time(1_700_000_000_123_456_789)
    msgbus = MessageBus(trader_id=TRADER_ID, clock=clock)
    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=STRATEGY_ID, clock=clock)
    audusd = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    ethusdt = TestInstrumentProvider.ethusdt_perp_binance()
    synthetic = TestInstrumentProvider.synthetic_instrument()
    account_id = AccountId("SIM-001")
    objects: dict[str, Any] = {"orders": {}, "positions": {}, "accounts": {}, "deleted_orders": [], "deleted_positions": []}

    def ts() -> int:
        clock.advance_time(clock.timestamp_ns() + 1_000_123)
        return clock.timestamp_ns()

    # Currencies, instruments, synthetic, general objects
    cache.add_currency(Currency("XYZ", 4, 0, "Scenario coin", CurrencyType.CRYPTO))
    cache.add_currency(Currency.from_str("AUD"))
    cache.add_instrument(audusd)
    cache.add_instrument(ethusdt)
    cache.add_synthetic(synthetic)
    cache.add("launcher-general", b"\x00\x01raw bytes")

    # Accounts: cash (two updates) and margin (with a margin balance)
    cash = TestExecStubs.cash_account(account_id)
    cache.add_account(cash)
    for total in (999_000, 998_500):
        cash.apply(_account_state(account_id, cash.type, total, ts()))
        cache.update_account(cash)
    margin = TestExecStubs.margin_account(AccountId("MARGIN-001"))
    cache.add_account(margin)
    margin.apply(TestEventStubs.margin_account_state(AccountId("MARGIN-001")))
    cache.update_account(margin)
    objects["accounts"] = {cash.id: cash, margin.id: margin}

    def step(order: Any, event: Any) -> None:
        order.apply(event)
        cache.update_order(order)

    def fill(order: Any, instrument: Any, qty: str, position_id: PositionId, trade: str, px: str | None = None) -> Any:
        event = TestEventStubs.order_filled(
            order, instrument, position_id=position_id, last_qty=Quantity.from_str(qty),
            trade_id=TradeId(trade), last_px=Price.from_str(px) if px else None, account_id=account_id,
            ts_event=ts(),
        )
        step(order, event)
        return event

    orders = objects["orders"]
    venue_ids = iter(VenueOrderId(f"V-{i}") for i in range(1, 100))

    def new(order: Any, position_id: PositionId | None = None, client_id: ClientId | None = None) -> Any:
        cache.add_order(order, position_id, client_id)
        orders[order.client_order_id] = order
        return order

    def submit_accept(order: Any) -> None:
        step(order, TestEventStubs.order_submitted(order, account_id=account_id, ts_event=ts()))
        step(order, TestEventStubs.order_accepted(order, account_id=account_id, venue_order_id=next(venue_ids), ts_event=ts()))

    # 1: limit -> modify (pending update, updated) -> partially filled -> filled, HEDGING position P-1
    p1 = PositionId("P-1")
    o1 = new(factory.limit(audusd.id, OrderSide.BUY, Quantity.from_int(100_000), Price.from_str("0.70000")), p1, ClientId("SIM"))
    submit_accept(o1)
    step(o1, TestEventStubs.order_pending_update(o1, ts_event=ts()))
    step(o1, TestEventStubs.order_updated(o1, quantity=Quantity.from_int(150_000), price=Price.from_str("0.70010"), ts_event=ts()))
    f1 = fill(o1, audusd, "50000", p1, "T-1", "0.70010")
    position1 = Position(audusd, f1)
    cache.add_position(position1, OmsType.HEDGING)
    f2 = fill(o1, audusd, "100000", p1, "T-2", "0.70010")
    position1.apply(f2)
    cache.update_position(position1)
    # ... closed by a sell
    o1b = new(factory.market(audusd.id, OrderSide.SELL, Quantity.from_int(150_000)), p1)
    submit_accept(o1b)
    position1.apply(fill(o1b, audusd, "150000", p1, "T-3", "0.70050"))
    cache.update_position(position1)
    cache.snapshot_position_state(position1, ts(), Money(75, Currency.from_str("USD")), open_only=False)
    cache.snapshot_order_state(o1)
    objects["snapshot_order"] = o1.client_order_id.value

    # 2: rejected
    o2 = new(factory.limit(audusd.id, OrderSide.SELL, Quantity.from_int(10_000), Price.from_str("0.80000"), post_only=True))
    step(o2, TestEventStubs.order_submitted(o2, account_id=account_id, ts_event=ts()))
    step(o2, TestEventStubs.order_rejected(o2, account_id=account_id, ts_event=ts()))
    # 3: pending cancel -> canceled, with a cancel rejected in between
    o3 = new(factory.limit(audusd.id, OrderSide.BUY, Quantity.from_int(20_000), Price.from_str("0.60000")))
    submit_accept(o3)
    step(o3, TestEventStubs.order_pending_cancel(o3, ts_event=ts()))
    step(o3, OrderCancelRejected(o3.trader_id, o3.strategy_id, o3.instrument_id, o3.client_order_id, o3.venue_order_id,
                                 account_id, "TOO_LATE", UUID4(), ts(), ts()))
    step(o3, TestEventStubs.order_pending_cancel(o3, ts_event=ts()))
    step(o3, TestEventStubs.order_canceled(o3, account_id=account_id, ts_event=ts()))
    # 4: GTD -> expired
    o4 = new(factory.limit(audusd.id, OrderSide.BUY, Quantity.from_int(30_000), Price.from_str("0.61000"),
                           time_in_force=TimeInForce.GTD, expire_time=_dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)))
    submit_accept(o4)
    step(o4, TestEventStubs.order_expired(o4, ts_event=ts()))
    # 5: denied
    o5 = new(factory.market(audusd.id, OrderSide.BUY, Quantity.from_int(1_000_000)))
    step(o5, OrderDenied(o5.trader_id, o5.strategy_id, o5.instrument_id, o5.client_order_id, "EXCEEDS_MAX_NOTIONAL", UUID4(), ts()))
    # 6: stop-limit -> triggered, modify rejected; stays open (inflight index on pending update)
    o6 = new(factory.stop_limit(ethusdt.id, OrderSide.BUY, Quantity.from_str("1.000"), Price.from_str("2000.00"),
                                Price.from_str("1990.00")))
    submit_accept(o6)
    step(o6, TestEventStubs.order_triggered(o6, ts_event=ts()))
    step(o6, TestEventStubs.order_pending_update(o6, ts_event=ts()))
    step(o6, OrderModifyRejected(o6.trader_id, o6.strategy_id, o6.instrument_id, o6.client_order_id, o6.venue_order_id,
                                 account_id, "NO_CHANGE", UUID4(), ts(), ts()))
    step(o6, TestEventStubs.order_pending_update(o6, ts_event=ts()))  # left in flight
    # 7: emulated stop-limit -> emulated -> released -> transformed to LIMIT -> submitted/accepted
    o7 = new(factory.stop_limit(audusd.id, OrderSide.SELL, Quantity.from_int(40_000), Price.from_str("0.65000"),
                                Price.from_str("0.65100"), emulation_trigger=TriggerType.BID_ASK))
    step(o7, OrderEmulated(o7.trader_id, o7.strategy_id, o7.instrument_id, o7.client_order_id, UUID4(), ts()))
    step(o7, TestEventStubs.order_released(o7, released_price=Price.from_str("0.65100")))
    t7 = LimitOrder.transform_py(o7, ts(), o7.price)
    cache.add_order(t7, None, None, True)
    orders[t7.client_order_id] = t7
    submit_accept(t7)
    # 8: emulated market-if-touched -> transformed to MARKET (stays emulated in the index until released)
    o8 = new(factory.market_if_touched(audusd.id, OrderSide.BUY, Quantity.from_int(5_000), Price.from_str("0.69000"),
                                       emulation_trigger=TriggerType.LAST_PRICE))
    step(o8, OrderEmulated(o8.trader_id, o8.strategy_id, o8.instrument_id, o8.client_order_id, UUID4(), ts()))
    step(o8, TestEventStubs.order_released(o8, released_price=Price.from_str("0.69000")))
    t8 = MarketOrder.transform_py(o8, ts())
    cache.add_order(t8, None, None, True)
    orders[t8.client_order_id] = t8

    # 11: emulated limit, still held by the emulator (stays in the emulated index)
    o11 = new(factory.limit(audusd.id, OrderSide.SELL, Quantity.from_int(7_000), Price.from_str("0.75000"),
                            emulation_trigger=TriggerType.BID_ASK))
    step(o11, OrderEmulated(o11.trader_id, o11.strategy_id, o11.instrument_id, o11.client_order_id, UUID4(), ts()))

    # NETTING: open 100k, flip with a 250k sell (old position closed, same id reopened short)
    pn = PositionId("AUD/USD.SIM-S-001")
    o9 = new(factory.market(audusd.id, OrderSide.BUY, Quantity.from_int(100_000)), pn)
    submit_accept(o9)
    net = Position(audusd, fill(o9, audusd, "100000", pn, "T-9"))
    cache.add_position(net, OmsType.NETTING)
    o10 = new(factory.market(audusd.id, OrderSide.SELL, Quantity.from_int(250_000)), pn)
    submit_accept(o10)
    step(o10, TestEventStubs.order_filled(o10, audusd, position_id=pn, last_qty=Quantity.from_int(250_000),
                                          trade_id=TradeId("T-10"), account_id=account_id, ts_event=ts()))
    closing = TestEventStubs.order_filled(o10, audusd, position_id=pn, last_qty=Quantity.from_int(100_000),
                                          trade_id=TradeId("T-10a"), account_id=account_id, ts_event=ts())
    net.apply(closing)
    cache.update_position(net)
    flipped = Position(audusd, TestEventStubs.order_filled(o10, audusd, position_id=pn, last_qty=Quantity.from_int(150_000),
                                                            trade_id=TradeId("T-10b"), account_id=account_id, ts_event=ts()))
    cache.add_position(flipped, OmsType.NETTING)
    objects["positions"] = {position1.id: position1, flipped.id: flipped}
    objects["closed_netting_position"] = net

    # Indexes NautilusTrader's Cache leaves to the adapter
    database.index_venue_order_id(o1.client_order_id, o1.venue_order_id)
    database.index_order_position(o3.client_order_id, PositionId("P-3"))

    # Strategy and actor state
    portfolio = Portfolio(msgbus=msgbus, cache=cache, clock=clock)
    strategy = _StateStrategy()
    strategy.register(trader_id=TRADER_ID, portfolio=portfolio, msgbus=msgbus, cache=cache, clock=clock)
    actor = _StateActor()
    actor.register_base(portfolio=portfolio, msgbus=msgbus, cache=cache, clock=clock)
    database.update_strategy(strategy)
    database.update_actor(actor)
    database.heartbeat(pd.Timestamp("2026-05-04T03:02:01.123456789", tz="UTC"))

    # Deletes: an order and a position written then removed with every index entry
    od = new(factory.limit(audusd.id, OrderSide.BUY, Quantity.from_int(1_000), Price.from_str("0.50000")), PositionId("P-DEL"),
             ClientId("SIM"))
    submit_accept(od)
    database.index_venue_order_id(od.client_order_id, od.venue_order_id)
    pd_ = Position(audusd, fill(od, audusd, "1000", PositionId("P-DEL"), "T-DEL"))
    cache.add_position(pd_, OmsType.HEDGING)
    database.delete_order(od.client_order_id)
    database.delete_position(pd_.id)
    del orders[od.client_order_id]
    objects["deleted_orders"].append(od.client_order_id)
    objects["deleted_positions"].append(pd_.id)
    database.delete_strategy(StrategyId("GONE-001"))
    database.delete_actor(ComponentId("GONE-ACTOR"))
    objects.update(strategy=strategy, actor=actor, instruments=[audusd, ethusdt], synthetic=synthetic)
    return objects


def new_cache(database: Any) -> Cache:
    return Cache(database=database, config=CacheConfig())


def dump_state(client: redis.Redis, trader_key: str, *, include_launcher: bool = False) -> dict[str, tuple[str, Any]]:
    """Every key under `trader_key` -> (Redis type, raw content: bytes, list, sorted list, dict)."""
    out: dict[str, tuple[str, Any]] = {}
    for raw_key in client.scan_iter(match=f"{trader_key}:*", count=1000):
        key = raw_key.decode()
        if not include_launcher and key.startswith(f"{trader_key}:launcher:"):
            continue
        kind = client.type(raw_key).decode()
        if kind == "string":
            content: Any = client.get(raw_key)
        elif kind == "list":
            content = client.lrange(raw_key, 0, -1)
        elif kind == "set":
            content = sorted(client.smembers(raw_key))
        elif kind == "hash":
            content = dict(sorted(client.hgetall(raw_key).items()))
        else:
            content = kind
        out[key] = (kind, content)
    return out


def order_fingerprint(order: Any, serializer: Any) -> tuple:
    """What must match between two loads of the same order (ids of re-created events excluded)."""
    state = order.to_dict()
    state.pop("init_id", None)
    events = []
    for i, event in enumerate(order.events):
        data = type(event).to_dict(event)
        if i > 0 and type(event).__name__ == "OrderInitialized":
            data.pop("event_id", None)  # a transform creates a fresh init event id
        events.append(serializer.serialize(data))
    return repr(sorted(state.items(), key=lambda kv: kv[0])), tuple(events)


def position_fingerprint(position: Any, serializer: Any) -> tuple:
    state = position.to_dict()
    return repr(sorted(state.items(), key=lambda kv: kv[0])), tuple(serializer.serialize(e) for e in position.events)


def account_fingerprint(account: Any, serializer: Any) -> tuple:
    return (
        type(account).__name__,
        repr([str(b) for b in account.balances().values()]),
        tuple(serializer.serialize(e) for e in account.events),
    )


def write_orders(cache: Cache, count: int, *, events: int = 4, instrument: Any = None, strategy_id: str = "S-001",
                 start_ns: int = 1_700_000_000_000_000_000, prefix: str = "") -> list[Any]:
    """
    Write `count` limit orders through `cache`: added (init), then submitted, accepted and
    filled as `events` allows (1..4). Returns the orders.
    """
    instrument = instrument or TestInstrumentProvider.default_fx_ccy("AUD/USD")
    clock = TestClock()
    clock.set_time(start_ns)
    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=StrategyId(strategy_id), clock=clock)
    account_id = AccountId("SIM-001")
    usd = Currency.from_str("USD")
    out = []
    for i in range(count):
        order = factory.limit(instrument.id, OrderSide.BUY, Quantity.from_int(100_000), Price.from_str("0.70000"))
        cache.add_order(order)
        if events >= 2:
            order.apply(TestEventStubs.order_submitted(order, account_id=account_id, ts_event=start_ns + i))
            cache.update_order(order)
        if events >= 3:
            order.apply(TestEventStubs.order_accepted(order, account_id=account_id,
                                                      venue_order_id=VenueOrderId(f"V{prefix}-{i}"), ts_event=start_ns + i))
            cache.update_order(order)
        if events >= 4:
            order.apply(TestEventStubs.order_filled(order, instrument, trade_id=TradeId(f"T{prefix}-{i}"),
                                                    position_id=PositionId(f"P{prefix}-{i}"), commission=Money(2, usd),
                                                    ts_event=start_ns + i))
            cache.update_order(order)
        out.append(order)
    return out


def trader_key_for(config: CacheConfig, instance_id: UUID4 | None = None, trader_id: TraderId = TRADER_ID) -> str:
    return layout.trader_key(trader_id.value, instance_id.value if instance_id else None, config)


class LogRecorder:
    """Stands in for NautilusTrader's Logger to count the lines the backend emits."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def debug(self, message, *args, **kwargs): self._add("DEBUG", message)
    def info(self, message, *args, **kwargs): self._add("INFO", message)
    def warning(self, message, *args, **kwargs): self._add("WARN", message)
    def error(self, message, *args, **kwargs): self._add("ERROR", message)

    def count(self, level: str, text: str) -> int:
        return sum(1 for lv, message in self.lines if lv == level and text in message)


def poll(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_exactly_once(client, trader_key: str, orders, serializer=None) -> None:
    """Every event of every order is in Redis once, in order, byte for byte; indexes and manifest agree."""
    serializer = serializer or make_serializer()
    pipe = client.pipeline(transaction=False)
    for order in orders:
        pipe.lrange(f"{trader_key}:orders:{order.client_order_id.value}", 0, -1)
    stored = pipe.execute()
    manifest = client.hgetall(f"{trader_key}:{layout.MANIFEST_ORDERS}")
    members = client.smembers(f"{trader_key}:{layout.INDEX_ORDERS}")
    closed = client.smembers(f"{trader_key}:{layout.INDEX_ORDERS_CLOSED}")
    for order, raw in zip(orders, stored):
        coid = order.client_order_id.value
        expected = [serializer.serialize(e) for e in order.events]
        assert raw == expected, f"{coid}: {len(raw)} stored vs {len(expected)} events"
        assert int(manifest[coid.encode()]) == order.event_count
        assert coid.encode() in members
        assert (coid.encode() in closed) == order.is_closed


class OrderStream:
    """Writes orders (4 events each) through a Cache from a thread until stopped."""

    def __init__(self, cache, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self.cache = cache
        self.start_ns = start_ns
        self.orders: list = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                self.orders += write_orders(self.cache, 1, prefix=f"s{i}", start_ns=self.start_ns + i * 1_000_000_000)
                i += 1
                time.sleep(0.001)  # pacing, not synchronisation
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def __enter__(self) -> OrderStream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
