"""
The retention policy (launcher/retention/policy.py) on NautilusTrader objects with explicit
timestamps: both sides of every window, the exact boundaries, open items, an account's
newest event, orders a kept position needs, linked (contingent) orders.

`build_aged_state` drives a NautilusTrader ``Cache`` (optionally backed by a database, so
the Redis tests write the same state) and returns what the default windows must remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from types import SimpleNamespace

import pytest
from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.identifiers import VenueOrderId
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.config.node_config import check_strategy
from launcher.config.schema import LauncherConfig
from launcher.config.schema import RetentionSettings
from launcher.config.schema import Store
from launcher.errors import ConfigError
from launcher.retention.policy import RetentionWindows
from launcher.retention.policy import outside
from launcher.retention.policy import plan_retention
from tests.test_bootstrap_verify import account_state


SECOND = 1_000_000_000
HOUR = 3_600 * SECOND
DAY = 24 * HOUR
NOW = 1_790_000_000 * SECOND  # a fixed "now" (2026-09-21): nothing here depends on the wall clock
DEFAULTS = RetentionWindows.from_settings(SimpleNamespace(orders_days=7, positions_closed_hours=24, account_events_days=30))


@dataclass
class AgedState:
    """What `build_aged_state` wrote and what the default windows must remove at `now`."""

    now: int
    trader_id: str
    remove_orders: set[str] = field(default_factory=set)
    keep_orders: set[str] = field(default_factory=set)
    open_orders: set[str] = field(default_factory=set)
    remove_positions: set[str] = field(default_factory=set)
    keep_positions: set[str] = field(default_factory=set)
    open_positions: set[str] = field(default_factory=set)
    kept_for_position: set[str] = field(default_factory=set)
    account_events: dict[str, list[int]] = field(default_factory=dict)  # id -> ts_event of every event
    remove_account_events: dict[str, int] = field(default_factory=dict)  # id -> how many go
    stale_order_position: set[str] = field(default_factory=set)  # orders whose index entry names a removed position


def build_aged_state(cache: Cache, now: int = NOW, trader_id: str = "RETAIN-001") -> AgedState:
    """
    Orders, positions and account events on both sides of each default window (7 d closed
    orders, 24 h closed positions, 30 d account events), exactly on the boundaries (removed:
    NautilusTrader's ``ts + window <= now``) and one nanosecond inside (kept).
    """
    s = AgedState(now=now, trader_id=trader_id)
    audusd = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    eurusd = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    for instrument in (audusd, eurusd):
        cache.add_instrument(instrument)

    def account(aid: str, stamps: list[int], remove: int) -> None:
        account_id = AccountId(aid)
        acc = AccountFactory.create(account_state(account_id, 1_000_000, stamps[0]))
        cache.add_account(acc)
        for n, ts in enumerate(stamps[1:], start=1):
            acc.apply(account_state(account_id, 1_000_000 - n * 100, ts))
            cache.update_account(acc)
        s.account_events[aid] = stamps
        if remove:
            s.remove_account_events[aid] = remove

    # 40 d, 31 d, exactly 30 d (boundary: out), 30 d - 1 ns (in), 1 d.
    account("SIM-001", [now - 40 * DAY, now - 31 * DAY, now - 30 * DAY, now - 30 * DAY + 1, now - DAY], remove=3)
    # Every event is old: the newest stays, it is the account's state.
    account("OLD-001", [now - 60 * DAY, now - 50 * DAY], remove=1)
    account("ONE-001", [now - 90 * DAY], remove=0)

    account_id = AccountId("SIM-001")
    strategy_id = StrategyId("S-001")
    trades = iter(range(1, 1000))

    def new_order(instrument, side: OrderSide, oid: str, ts: int):
        order = TestExecStubs.limit_order(
            instrument=instrument, order_side=side, client_order_id=ClientOrderId(oid),
            trader_id=TraderId(trader_id), strategy_id=strategy_id,
        )
        cache.add_order(order)
        order.apply(TestEventStubs.order_submitted(order, account_id=account_id, ts_event=ts - SECOND))
        cache.update_order(order)
        order.apply(TestEventStubs.order_accepted(
            order, account_id=account_id, venue_order_id=VenueOrderId(f"V-{oid}"), ts_event=ts - SECOND,
        ))
        cache.update_order(order)
        return order

    def fill(order, instrument, pid: str, ts: int):
        event = TestEventStubs.order_filled(
            order, instrument, account_id=account_id, position_id=PositionId(pid),
            trade_id=TradeId(f"T-{next(trades)}"), ts_event=ts,
        )
        order.apply(event)
        cache.update_order(order)
        cache.add_position_id(PositionId(pid), instrument.id.venue, order.client_order_id, strategy_id)
        return event

    def position(pid: str, instrument, open_oid: str, open_ts: int, close_oid: str | None = None, close_ts: int = 0):
        o1 = new_order(instrument, OrderSide.BUY, open_oid, open_ts)
        p = Position(instrument, fill(o1, instrument, pid, open_ts))
        cache.add_position(p, OmsType.HEDGING)
        if close_oid is not None:
            o2 = new_order(instrument, OrderSide.SELL, close_oid, close_ts)
            p.apply(fill(o2, instrument, pid, close_ts))
            cache.update_position(p)
        return p

    def cancelled(oid: str, ts: int) -> None:
        order = new_order(eurusd, OrderSide.BUY, oid, ts)
        order.apply(TestEventStubs.order_canceled(order, account_id=account_id, ts_event=ts))
        cache.update_order(order)

    # Closed 8 d ago: the position and both orders go.
    position("P-OLD", audusd, "O-1", now - 10 * DAY, "O-2", now - 8 * DAY)
    s.remove_positions.add("P-OLD")
    s.remove_orders |= {"O-1", "O-2"}
    # Closed 2 h ago: kept; its opening order closed 9 d ago stays with it.
    position("P-RECENT", audusd, "O-3", now - 9 * DAY, "O-4", now - 2 * HOUR)
    s.keep_positions.add("P-RECENT")
    s.keep_orders |= {"O-3", "O-4"}
    s.kept_for_position.add("O-3")
    # Open for 20 days: never removed, nor the order that opened it.
    position("P-OPEN", eurusd, "O-5", now - 20 * DAY)
    s.open_positions.add("P-OPEN")
    s.keep_orders.add("O-5")
    s.kept_for_position.add("O-5")
    # Closed exactly 24 h ago: goes; its orders (3 d, 1 d) stay, their index entries must not dangle.
    position("P-EDGE-OUT", eurusd, "O-6", now - 3 * DAY, "O-7", now - 24 * HOUR)
    s.remove_positions.add("P-EDGE-OUT")
    s.keep_orders |= {"O-6", "O-7"}
    s.stale_order_position |= {"O-6", "O-7"}
    # Closed 24 h - 1 ns ago: kept.
    position("P-EDGE-IN", eurusd, "O-12", now - 3 * DAY, "O-13", now - 24 * HOUR + 1)
    s.keep_positions.add("P-EDGE-IN")
    s.keep_orders |= {"O-12", "O-13"}
    # Orders without fills: cancelled exactly 7 d ago (goes), 7 d - 1 ns ago (stays), 30 d ago (goes).
    cancelled("O-8", now - 7 * DAY)
    cancelled("O-9", now - 7 * DAY + 1)
    cancelled("O-11", now - 30 * DAY)
    s.remove_orders |= {"O-8", "O-11"}
    s.keep_orders.add("O-9")
    # Accepted 100 days ago and still working: never removed.
    new_order(eurusd, OrderSide.BUY, "O-10", now - 100 * DAY)
    s.open_orders.add("O-10")
    s.keep_orders.add("O-10")
    return s


def test_default_windows_on_both_sides_and_boundaries():
    cache = Cache()
    s = build_aged_state(cache)
    plan = plan_retention(
        orders=cache.orders(), positions=cache.positions(), accounts=cache.accounts(), now_ns=NOW, windows=DEFAULTS,
    )
    assert set(plan.positions) == s.remove_positions
    assert set(plan.orders) == s.remove_orders
    assert set(plan.kept_for_position) == s.kept_for_position
    assert not set(plan.orders) & (s.keep_orders | s.open_orders)
    assert {aid: len(t.indexes) for aid, t in plan.accounts.items()} == s.remove_account_events
    sim = plan.accounts["SIM-001"]
    assert sim.indexes == [0, 1, 2] and sim.is_prefix and sim.kept == 2
    old = plan.accounts["OLD-001"]
    assert old.indexes == [0] and old.kept == 1 and old.newest_ts == NOW - 50 * DAY
    assert plan.counts() == {"orders": 4, "positions": 2, "account_events": 4}


def test_open_items_are_never_removed_whatever_the_windows():
    cache = Cache()
    s = build_aged_state(cache)
    zero = RetentionWindows(orders_s=0, positions_closed_s=0, account_events_s=0)
    plan = plan_retention(
        orders=cache.orders(), positions=cache.positions(), accounts=cache.accounts(),
        now_ns=NOW + 365 * DAY, windows=zero,
    )
    assert not set(plan.positions) & s.open_positions
    assert not set(plan.orders) & s.open_orders
    # Every closed position goes; orders of the open position stay for it.
    assert set(plan.positions) == s.remove_positions | s.keep_positions
    assert "O-5" in plan.kept_for_position and "O-5" not in plan.orders
    # Zero window: every account keeps exactly its newest event.
    for aid, stamps in s.account_events.items():
        trim = plan.accounts.get(aid)
        assert (trim.kept if trim else len(stamps)) == 1


def test_nothing_is_due_before_the_windows():
    cache = Cache()
    build_aged_state(cache)
    plan = plan_retention(
        orders=cache.orders(), positions=cache.positions(), accounts=cache.accounts(),
        now_ns=NOW - 365 * DAY, windows=DEFAULTS,
    )
    assert plan.empty


def test_orders_of_a_kept_position_stay_until_the_position_goes():
    cache = Cache()
    build_aged_state(cache)
    # 9 d - 2 h + 24 h later P-RECENT's window has passed too: its orders go with it.
    later = NOW + 24 * HOUR
    plan = plan_retention(
        orders=cache.orders(), positions=cache.positions(), accounts=cache.accounts(), now_ns=later, windows=DEFAULTS,
    )
    assert "P-RECENT" in plan.positions
    assert "O-3" in plan.orders
    assert "O-4" not in plan.orders  # closed 26 h ago: inside the 7-day order window


def test_account_newest_event_kept_even_when_list_order_differs_from_time():
    # An out-of-order (older) event appended last is still the account's latest state.
    account_id = AccountId("SIM-001")
    acc = AccountFactory.create(account_state(account_id, 100, NOW - 10 * DAY))
    acc.apply(account_state(account_id, 90, NOW - 40 * DAY))
    plan = plan_retention(orders=[], positions=[], accounts=[acc], now_ns=NOW, windows=DEFAULTS)
    assert plan.accounts == {}  # the only old event is the last one: kept


def test_linked_contingent_order_keeps_a_closed_order():
    clock = TestClock()
    clock.set_time(NOW - 10 * DAY)
    factory = OrderFactory(trader_id=TraderId("RETAIN-001"), strategy_id=StrategyId("S-001"), clock=clock)
    instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    bracket = factory.bracket(
        instrument_id=instrument.id, order_side=OrderSide.BUY, quantity=Quantity.from_int(100_000),
        sl_trigger_price=Price.from_str("0.90000"), tp_price=Price.from_str("1.20000"),
    )
    entry, stop_loss, take_profit = bracket.orders
    account_id = AccountId("SIM-001")
    # The take-profit is cancelled 10 days ago; its OCO partner (the stop-loss) is still working.
    for order in (stop_loss, take_profit):
        order.apply(TestEventStubs.order_submitted(order, account_id=account_id, ts_event=NOW - 10 * DAY))
        order.apply(TestEventStubs.order_accepted(order, account_id=account_id, ts_event=NOW - 10 * DAY))
    take_profit.apply(TestEventStubs.order_canceled(take_profit, account_id=account_id, ts_event=NOW - 10 * DAY))
    assert take_profit.is_closed and stop_loss.is_open
    assert stop_loss.client_order_id in take_profit.linked_order_ids
    plan = plan_retention(orders=[entry, stop_loss, take_profit], positions=[], accounts=[], now_ns=NOW, windows=DEFAULTS)
    assert plan.orders == []
    assert plan.kept_for_linked == [take_profit.client_order_id.value]
    # Once the partner is gone too, the lookup no longer protects it.
    plan = plan_retention(orders=[take_profit], positions=[], accounts=[], now_ns=NOW, windows=DEFAULTS)
    assert plan.orders == [take_profit.client_order_id.value]


def test_windows_round_up_to_whole_seconds():
    w = RetentionWindows.from_settings(SimpleNamespace(orders_days=0.1, positions_closed_hours=0.0001, account_events_days=7))
    assert w.orders_s == 8_640  # not 8_641 from 8640.000000000002
    assert w.positions_closed_s == 1  # 0.36 s rounds up: never removes anything younger than configured
    assert w.account_events_s == 7 * 86_400
    assert outside(NOW - 8_640 * SECOND, w.orders_s, NOW)
    assert not outside(NOW - 8_640 * SECOND + 1, w.orders_s, NOW)


@pytest.mark.parametrize(("key", "bad"), [
    ("orders_days", -1.0), ("positions_closed_hours", -0.5), ("account_events_days", -1.0),
    ("interval_s", 0.0), ("stream_max_len", 0), ("stream_max_age_s", 0.0),
])
def test_bad_retention_settings_are_rejected_with_the_key(key, bad):
    settings = LauncherConfig()
    settings.cache.store = Store.memory
    settings.strategy.path = "strategies.ema_cross:EMACross"
    settings.strategy.config_path = "strategies.ema_cross:EMACrossConfig"
    check_strategy(settings)  # sound as it is
    sound = RetentionSettings()  # the checks live with the fields (__post_init__, run by OmegaConf.to_object)
    with pytest.raises(ConfigError) as failure:
        RetentionSettings(**{**vars(sound), key: bad})
    assert failure.value.key == f"retention.{key}"
