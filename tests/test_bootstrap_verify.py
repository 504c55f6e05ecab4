"""
verify_state against real state written by NautilusTrader's own CacheDatabaseAdapter into a
real redis-server, then damaged the ways Redis loses things.

``write_sample_state`` is shared with the other bootstrap tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field

import msgspec
import pytest
from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.database import CacheDatabaseAdapter
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.enums import AccountType
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.identifiers import VenueOrderId
from nautilus_trader.model.objects import AccountBalance
from nautilus_trader.model.objects import Money
from nautilus_trader.model.position import Position
from nautilus_trader.serialization.serializer import MsgSpecSerializer
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.bootstrap.manifest import write_manifest_from_cache
from launcher.bootstrap.verify import enforce
from launcher.bootstrap.verify import verify_state
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.config.schema import LauncherConfig
from launcher.config.schema import VerifyMode
from launcher.errors import VerifyFailed
from launcher.state import layout
from launcher.state.entities import CorruptState
from launcher.state.manifest import read_manifest
from tests.support.trading_state import cache_config


# -- shared helpers -------------------------------------------------------------------------------


def settings_for(port: int, trader_id: str = "TESTER-001", **cache: object) -> LauncherConfig:
    settings = LauncherConfig(trader_id=trader_id)
    settings.cache.redis.host = "127.0.0.1"
    settings.cache.redis.port = port
    for name, value in cache.items():
        setattr(settings.cache, name, value)
    return settings


@dataclass
class SampleState:
    trader_key: str
    open_orders: list[str] = field(default_factory=list)
    closed_orders: list[str] = field(default_factory=list)
    open_positions: list[str] = field(default_factory=list)
    closed_positions: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    instruments: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)


def account_state(account_id: AccountId, total: int, ts: int) -> AccountState:
    return AccountState(
        account_id=account_id,
        account_type=AccountType.CASH,
        base_currency=USD,
        reported=True,
        balances=[AccountBalance(Money(total, USD), Money(0, USD), Money(total, USD))],
        margins=[],
        info={},
        event_id=UUID4(),
        ts_event=ts,
        ts_init=ts,
    )


def write_sample_state(port: int, trader_id: str = "TESTER-001", *, manifest: bool = True) -> SampleState:
    """
    Drive NautilusTrader's Cache backed by its native CacheDatabaseAdapter (msgpack, as the
    kernel configures it) into: 2 instruments, 1 account with 3 states, 5 orders (2 open,
    3 closed), 2 positions (1 open, 1 closed), 1 saved strategy state. Writes the manifest
    from the same Cache like the launcher does after a clean stop.
    """
    serializer = MsgSpecSerializer(encoding=msgspec.msgpack, timestamps_as_str=True, timestamps_as_iso8601=True)
    config = CacheConfig(
        database=DatabaseConfig(host="127.0.0.1", port=port),
        encoding="msgpack",
        timestamps_as_iso8601=True,
        buffer_interval_ms=0,
    )
    adapter = CacheDatabaseAdapter(TraderId(trader_id), UUID4(), serializer, config)
    cache = Cache(database=adapter, config=config)
    key = layout.trader_key(trader_id)
    sample = SampleState(trader_key=key)

    audusd = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    eurusd = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    for instrument in (audusd, eurusd):
        cache.add_instrument(instrument)
        sample.instruments.append(instrument.id.value)

    account_id = AccountId("SIM-001")
    account = AccountFactory.create(account_state(account_id, 1_000_000, 1))
    cache.add_account(account)
    for n, total in enumerate((999_000, 998_500), start=2):
        account.apply(account_state(account_id, total, n))
        cache.update_account(account)
    sample.accounts.append(account_id.value)

    strategy_id = StrategyId("S-001")
    seq = iter(range(1, 1000))

    def new_order(instrument, side: OrderSide, oid: str):
        order = TestExecStubs.limit_order(
            instrument=instrument, order_side=side, client_order_id=ClientOrderId(oid),
            trader_id=TraderId(trader_id), strategy_id=strategy_id,
        )
        cache.add_order(order)
        order.apply(TestEventStubs.order_submitted(order, account_id=account_id))
        cache.update_order(order)
        order.apply(TestEventStubs.order_accepted(order, account_id=account_id, venue_order_id=VenueOrderId(f"V-{oid}")))
        cache.update_order(order)
        return order

    def fill(order, instrument, position_id: str):
        event = TestEventStubs.order_filled(
            order, instrument, account_id=account_id, position_id=PositionId(position_id),
            trade_id=TradeId(f"T-{next(seq)}"),
        )
        order.apply(event)
        cache.update_order(order)
        return event

    # P-1: opened by O-1 (filled), still open. O-2 open limit order on the same instrument.
    o1 = new_order(audusd, OrderSide.BUY, "O-1")
    p1 = Position(audusd, fill(o1, audusd, "P-1"))
    cache.add_position(p1, OmsType.HEDGING)
    new_order(audusd, OrderSide.SELL, "O-2")
    # P-2: opened by O-3, closed by O-4 (both filled).
    o3 = new_order(eurusd, OrderSide.BUY, "O-3")
    p2 = Position(eurusd, fill(o3, eurusd, "P-2"))
    cache.add_position(p2, OmsType.HEDGING)
    o4 = new_order(eurusd, OrderSide.SELL, "O-4")
    p2.apply(fill(o4, eurusd, "P-2"))
    cache.update_position(p2)
    # O-5: open, nothing filled.
    new_order(eurusd, OrderSide.BUY, "O-5")
    adapter.close()  # the adapter writes asynchronously: close() drains its queue

    sample.open_orders = ["O-2", "O-5"]
    sample.closed_orders = ["O-1", "O-3", "O-4"]
    sample.open_positions = ["P-1"]
    sample.closed_positions = ["P-2"]
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    client.set(layout.full_key(key, f"{layout.STRATEGIES}:{strategy_id.value}:state"), serializer.serialize({"fast": b"10"}))
    sample.strategies.append(strategy_id.value)
    if manifest:
        write_manifest_from_cache(client, key, cache, instance_id="test-instance", final=True)
    client.close()
    return sample


# -- tests ----------------------------------------------------------------------------------------


@pytest.fixture
def sample(redis_server) -> SampleState:
    return write_sample_state(redis_server.port)


def test_clean_state_has_no_problems_and_correct_counts(redis_server, sample, tmp_path):
    settings = settings_for(redis_server.port)
    settings.bootstrap.report_path = str(tmp_path / "reports" / "recovery.json")
    report = verify_state(redis_server.client(), settings)
    assert report.problems == [], report.render()
    assert report.counts["orders_open"] == 2
    assert report.counts["orders_closed"] == 3
    assert report.counts["positions_open"] == 1
    assert report.counts["positions_closed"] == 1
    assert report.counts["accounts"] == 1
    assert report.counts["instruments"] == 2
    assert report.counts["strategies"] == 1
    assert report.integrity_check is True
    assert report.manifest["present"] and report.manifest["final"]
    assert report.load_time_s > 0
    assert "RESULT: SOUND" in report.render()
    written = json.loads((tmp_path / "reports" / "recovery.json").read_text())
    assert written["status"] == "sound"
    assert written["counts"] == report.counts
    enforce(report, VerifyMode.strict)  # no raise


def test_damage_is_reported_by_id_and_strict_fails(redis_server, sample):
    client = redis_server.client()
    key = sample.trader_key
    # 1. An order key that the indexes reference is gone.
    client.delete(layout.full_key(key, "orders:O-5"))
    # 2. The last event of an order the manifest counts is gone.
    client.rpop(layout.full_key(key, "orders:O-2"))
    # 3. An index entry for a position that does not exist.
    client.sadd(layout.full_key(key, layout.INDEX_POSITIONS), "P-404")

    report = verify_state(client, settings_for(redis_server.port))
    by_id = {}
    for p in report.problems:
        by_id.setdefault((p.entity, p.id), []).append(p.problem)
    assert ("order", "O-5") in by_id, report.render()
    assert any("does not exist" in t for t in by_id[("order", "O-5")])
    assert any("LOST" in t for t in by_id[("order", "O-5")])
    assert ("order", "O-2") in by_id, report.render()
    assert any("LOST 1 event" in t for t in by_id[("order", "O-2")])
    assert ("position", "P-404") in by_id, report.render()
    assert any(layout.INDEX_POSITIONS in t for t in by_id[("position", "P-404")])

    with pytest.raises(VerifyFailed) as raised:
        enforce(report, VerifyMode.strict)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{len(report.problems)} problems")
    assert raised.value.exit_code == 4
    enforce(report, VerifyMode.warn)  # logs, does not raise
    enforce(report, VerifyMode.off)


def test_undecodable_event_and_lost_position_fill(redis_server, sample):
    client = redis_server.client()
    key = sample.trader_key
    client.rpush(layout.full_key(key, "orders:O-1"), b"\xc1not-msgpack")
    # The closing fill of P-2 is gone from the position (and the manifest counted it).
    client.rpop(layout.full_key(key, "positions:P-2"))
    report = verify_state(client, settings_for(redis_server.port))
    problems = {(p.entity, p.id): p.problem for p in report.problems}
    assert "events do not replay" in problems[("order", "O-1")]
    # P-2 now holds only its opening fill: open by state but indexed as closed, and short of the manifest.
    texts = [p.problem for p in report.problems if p.id == "P-2"]
    assert any("LOST 1 event" in t for t in texts), report.render()
    assert any("index disagrees" in t for t in texts), report.render()


def test_position_fill_missing_from_its_order(redis_server, sample):
    client = redis_server.client()
    key = sample.trader_key
    # Drop O-4's fill (its last event) but leave the position that holds it.
    client.rpop(layout.full_key(key, "orders:O-4"))
    client.hincrby(layout.full_key(key, layout.MANIFEST_ORDERS), "O-4", -1)  # hide the manifest's view
    report = verify_state(client, settings_for(redis_server.port))
    texts = [p.problem for p in report.problems if (p.entity, p.id) == ("position", "P-2")]
    assert any("is not among the fills of order O-4" in t for t in texts), report.render()


def test_two_traders_on_one_redis_do_not_see_each_other(redis_server):
    a = write_sample_state(redis_server.port, "ALPHA-001")
    write_sample_state(redis_server.port, "ALPHA-001-B")
    client = redis_server.client()
    # Damage only B's state.
    client.delete(layout.full_key(layout.trader_key("ALPHA-001-B"), "orders:O-5"))
    report_a = verify_state(client, settings_for(redis_server.port, "ALPHA-001"))
    assert report_a.problems == [], report_a.render()
    assert report_a.counts["orders"] == len(a.open_orders) + len(a.closed_orders)
    report_b = verify_state(client, settings_for(redis_server.port, "ALPHA-001-B"))
    assert [(p.entity, p.id) for p in report_b.problems] == [("order", "O-5"), ("order", "O-5")]


def test_empty_store_is_sound(redis_server):
    report = verify_state(redis_server.client(), settings_for(redis_server.port))
    assert report.problems == []
    assert report.counts["orders"] == 0
    assert "none" in report.render()


def test_flush_on_start_skips_verify_in_run_mode(redis_server, sample):
    settings = settings_for(redis_server.port, flush_on_start=True)
    report = verify_state(redis_server.client(), settings)
    assert report.skipped and "flush_on_start" in report.skipped
    assert "SKIPPED" in report.render()
    enforce(report, VerifyMode.strict)
    assert redis_server.client().exists(layout.full_key(sample.trader_key, "orders:O-1"))


def test_manifest_round_trip(redis_server, sample):
    manifest = read_manifest(redis_server.client(), sample.trader_key)
    assert manifest.present and manifest.final and manifest.instance_id == "test-instance"
    assert manifest.orders == {"O-1": 4, "O-2": 3, "O-3": 4, "O-4": 4, "O-5": 3}
    assert manifest.positions == {"P-1": 1, "P-2": 2}
    assert manifest.accounts == {"SIM-001": 3}


def test_reopened_netting_position_listed_as_closed_too_is_not_damage(redis_server, sample):
    # NautilusTrader re-adds a reopened NETTING position id to index:positions_open without
    # removing it from index:positions_closed; that is its normal state, not a loss.
    client = redis_server.client()
    client.sadd(layout.full_key(sample.trader_key, layout.INDEX_POSITIONS_CLOSED), "P-1")
    report = verify_state(client, settings_for(redis_server.port))
    assert report.problems == [], report.render()


def test_manifest_is_not_replaced_by_an_empty_cache(redis_server, sample):
    client = redis_server.client()
    assert not write_manifest_from_cache(client, sample.trader_key, Cache(), instance_id="disposed", final=True)
    manifest = read_manifest(client, sample.trader_key)
    assert manifest.instance_id == "test-instance" and len(manifest.orders) == 5


def test_an_enum_name_nautilus_trader_does_not_know_is_a_finding_not_an_abort(redis_server, sample, tmp_path):
    # NautilusTrader's enum parsers abort the process (a Rust panic) on an unknown name: a stored
    # order side, liquidity side, account type or asset class damaged so would have ended verify
    # and the node's load with a backtrace (exit 134) instead of exit 4 naming the key.
    client = redis_server.client()
    key = sample.trader_key

    def damage(redis_key: str, index: int | None, field_name: str, value: str) -> None:
        raw = client.get(redis_key) if index is None else client.lindex(redis_key, index)
        payload = msgspec.msgpack.decode(raw)
        payload[field_name] = value
        encoded = msgspec.msgpack.encode(payload)
        client.set(redis_key, encoded) if index is None else client.lset(redis_key, index, encoded)

    damage(layout.full_key(key, "orders:O-5"), 0, "order_side", "SIDEWAYS")  # OrderInitialized
    damage(layout.full_key(key, "orders:O-3"), -1, "liquidity_side", "BOTH")  # OrderFilled
    damage(layout.full_key(key, "accounts:SIM-001"), 0, "account_type", "PIGGY_BANK")
    instrument_key = next(k.decode() for k in client.scan_iter(layout.full_key(key, "instruments:*")))
    damage(instrument_key, None, "asset_class", "TULIPS")

    report = verify_state(client, settings_for(redis_server.port))
    problems = {(p.entity, p.id): p.problem for p in report.problems}
    assert "SIDEWAYS" in problems[("order", "O-5")], report.render()
    assert "BOTH" in problems[("order", "O-3")], report.render()
    assert "PIGGY_BANK" in problems[("account", "SIM-001")], report.render()
    assert any("TULIPS" in text for (entity, _), text in problems.items() if entity == "instrument"), report.render()
    with pytest.raises(VerifyFailed):
        enforce(report, VerifyMode.strict)
    # The node's own load (the resilient backend) refuses such an order or account like any
    # undecodable one (exit 4, the key named) and logs such an instrument, as NautilusTrader's adapter does.
    db = ResilientCacheDatabase(TraderId("TESTER-001"), UUID4(), MsgSpecSerializer(
        encoding=msgspec.msgpack, timestamps_as_str=True, timestamps_as_iso8601=True),
        cache_config(redis_server.port, timestamps_as_iso8601=True), spill_dir=str(tmp_path / "spill"))
    try:
        # The first damaged order the load meets (SCAN's order) stops it, either one.
        with pytest.raises(CorruptState, match="orders:O-5.*SIDEWAYS|orders:O-3.*BOTH"):
            db.load_orders()
        with pytest.raises(CorruptState, match="accounts:SIM-001.*PIGGY_BANK"):
            db.load_accounts()
        assert len(db.load_instruments()) == 1
    finally:
        db.close()
