"""
Closed orders after the start (``cache.closed_orders=deferred``): verify checks plainly closed
orders from their events without building them, the node starts without them, and they join
its cache once it trades, writing nothing. Real servers; the node tests run the launcher.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from launcher.bench import measure as M
from launcher.bootstrap.verified import read_verified
from launcher.bootstrap.verified import verified_path
from launcher.bootstrap.verified import write_verified
from launcher.bootstrap.verify import check_index_states
from launcher.bootstrap.verify import check_position_fills
from launcher.bootstrap.verify import count_state
from launcher.bootstrap.verify import nautilus_integrity_check
from launcher.state import layout
from launcher.state.loader import DeferClosed
from launcher.state.loader import load_state
from tests.support.launcher_cli import run_launcher
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import cache_config
from tests.support.trading_state import launcher_settings
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders
from tests.test_bootstrap_e2e import output
from tests.test_bootstrap_e2e import redis_args


def _write(redis_server, tmp_path):
    from nautilus_trader.core.uuid import UUID4

    from launcher.cache.resilient import ResilientCacheDatabase

    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(tmp_path / "spill"))
    cache = new_cache(db)
    cache.add_instrument(TestInstrumentProvider.default_fx_ccy("AUD/USD"))
    filled = write_orders(cache, 20, events=4)  # closed: filled (each opens its own position P-i)
    accepted = write_orders(cache, 5, events=3, prefix="open", strategy_id="S-002")  # open
    canceled = write_orders(cache, 5, events=3, prefix="cxl", strategy_id="S-003")
    for order in canceled:
        order.apply(TestEventStubs.order_canceled(order, account_id=AccountId("SIM-001")))
        cache.update_order(order)
    for order in filled[:4]:  # four orders opened positions
        cache.add_position(Position(cache.instrument(order.instrument_id), order.last_event), OmsType.HEDGING)
    assert db.wait_until_persisted(10)
    db.close()
    return filled, accepted, canceled


def test_verify_checks_plainly_closed_orders_without_building_them(redis_server, tmp_path):
    filled, accepted, canceled = _write(redis_server, tmp_path)
    settings = launcher_settings(redis_server.port)
    eager = load_state(redis_server.client(), settings)
    state = load_state(redis_server.client(), settings, defer=DeferClosed(time.time_ns()))

    kept_for_positions = {o.client_order_id.value for o in filled[:4]}  # one order per position stays built
    closed = {o.client_order_id.value for o in [*filled, *canceled]}
    assert set(state.deferred_orders) == closed - kept_for_positions
    assert set(state.orders) == kept_for_positions | {o.client_order_id.value for o in accepted}
    assert {state.deferred_orders[o.client_order_id.value].closed.status for o in canceled} == {"CANCELED"}
    # The report counts the same state either way; NautilusTrader's integrity check passes on the built part.
    counts = count_state(state)
    assert {k: v for k, v in counts.items() if k != "orders_deferred"} == count_state(eager)
    assert counts["orders_deferred"] == len(closed - kept_for_positions)
    assert nautilus_integrity_check(state) is True
    assert check_index_states(state) == [] and check_position_fills(state) == []
    # Not old enough: nothing waits.
    assert load_state(redis_server.client(), settings, defer=DeferClosed(0)).deferred_orders == {}


def test_a_damaged_or_misindexed_closed_order_is_still_found_before_trading(redis_server, tmp_path):
    filled, _, canceled = _write(redis_server, tmp_path)
    client = redis_server.client()
    key = f"{layout.trader_key(TRADER_ID.value)}:{layout.ORDERS}:{filled[10].client_order_id.value}"
    client.rpush(key, client.lindex(key, -1))  # the fill again: a duplicate event
    index = f"{layout.trader_key(TRADER_ID.value)}:{layout.INDEX_ORDERS_OPEN}"
    client.sadd(index, canceled[0].client_order_id.value)  # a canceled order listed as open

    state = load_state(client, launcher_settings(redis_server.port), defer=DeferClosed(time.time_ns()))
    assert filled[10].client_order_id.value not in state.deferred_orders  # not plainly closed: replayed, and refused
    assert any(p.id == filled[10].client_order_id.value and "duplicate" in p.problem for p in state.problems)
    problems = check_index_states(state)
    assert [p.id for p in problems] == [canceled[0].client_order_id.value]
    assert "CANCELED" in problems[0].problem and layout.INDEX_ORDERS_OPEN in problems[0].problem


def _digest(client, trader_key: str) -> str:
    """Every order list's bytes and every index, hashed: what a restart must not change."""
    h = hashlib.sha256()
    for key in sorted(client.scan_iter(f"{trader_key}:{layout.ORDERS}:*", count=1000)):
        h.update(key)
        for item in client.lrange(key, 0, -1):
            h.update(item)
    for name in (*layout.ORDER_SET_INDEXES,):
        h.update(repr(sorted(client.smembers(f"{trader_key}:{name}"))).encode())
    for name in layout.ORDER_HASH_INDEXES:
        h.update(repr(sorted(client.hgetall(f"{trader_key}:{name}").items())).encode())
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["deferred", "eager"])
def test_a_restarted_node_trades_first_and_then_holds_every_closed_order(redis_server, tmp_path, mode):
    trader = f"HIST-{mode.upper()}"
    dbs = M.Databases(M.Server("127.0.0.1", redis_server.port), 20)
    written = M.write_state(dbs, trader, 600, 4, 0.1)  # 600 filled orders, 60 open positions
    client = redis_server.client()
    before = _digest(client, f"trader-{trader}")
    result = tmp_path / "flood.json"
    args = redis_args(redis_server.port, trader, "strategy=flood", "strategy.params.max_orders=0",
                      f"strategy.params.result_path={result}", "venue.account_type=CASH", "venue.base_currency=USD",
                      "venue.instruments=[AUD/USD]", "run.duration_s=6", f"cache.closed_orders={mode}",
                      f"cache.spill_dir={tmp_path / 'spill'}", "monitoring.enabled=false")
    run = run_launcher(args, cwd=tmp_path)
    log = output(run)
    assert run.returncode == 0, log[-3000:]
    cache = json.loads(result.read_text())["cache"]
    assert cache == {"orders": 600, "orders_closed": 600, "positions": written["positions"]}, log[-3000:]
    later = re.search(r"(\d+) closed ones are built after the node started trading", log)
    if mode == "deferred":
        assert later is not None and int(later[1]) == 600 - written["positions"], log[-3000:]
        running = log.index("TradingNode: RUNNING")
        assert log.index(f"Closed orders: all {int(later[1])} added to the node's cache") > running
    else:
        assert later is None and "Closed orders:" not in log
    # The start-up heap is frozen once the node trades (launcher.state.gc_pause).
    assert log.index("Start-up over:") > log.index("TradingNode: RUNNING"), log[-3000:]
    assert "differ from the recovery report" not in log
    assert _digest(client, f"trader-{trader}") == before  # taking them in wrote nothing
    if mode == "deferred":
        # The next start reads the same bytes: the orders verify built are not built again.
        recorded, problem = read_verified(verified_path(tmp_path / "spill", f"trader-{trader}"))
        assert problem is None and len(recorded) == int(later[1])
        again = run_launcher(["run.duration_s=1" if a == "run.duration_s=6" else a for a in args], cwd=tmp_path)
        log = output(again)
        assert again.returncode == 0, log[-3000:]
        assert f"Closed orders: {int(later[1])} of {int(later[1])} waiting ones were built by an earlier start" in log
        assert _digest(client, f"trader-{trader}") == before


def _events(order, *later) -> tuple[str, list[bytes]]:
    """The stored payloads of `order` after applying `later` (NautilusTrader's serializer, as the backend writes)."""
    for event in later:
        order.apply(event)
    serializer = make_serializer()
    return order.client_order_id.value, [serializer.serialize(e) for e in order.events]


def _limit(qty: int = 100_000, **options):
    from nautilus_trader.common.component import TestClock
    from nautilus_trader.common.factories import OrderFactory
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.identifiers import StrategyId
    from nautilus_trader.model.objects import Price
    from nautilus_trader.model.objects import Quantity

    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=StrategyId("S-001"), clock=TestClock())
    return factory.limit(TestInstrumentProvider.default_fx_ccy("AUD/USD").id, OrderSide.BUY, Quantity.from_int(qty),
                         Price.from_str("0.70000"), **options)


def _fill(order, qty: int, trade: str):
    from nautilus_trader.model.identifiers import TradeId
    from nautilus_trader.model.objects import Quantity

    return TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD"), trade_id=TradeId(trade),
                                       last_qty=Quantity.from_int(qty))


def _working(order):
    order.apply(TestEventStubs.order_submitted(order, account_id=AccountId("SIM-001")))
    order.apply(TestEventStubs.order_accepted(order, account_id=AccountId("SIM-001")))
    return order


def test_only_plainly_closed_orders_are_recognised_from_their_events():
    from nautilus_trader.model.objects import Quantity

    from launcher.state.codec import EventDecoder

    decoder = EventDecoder(make_serializer())
    closed = decoder.closed_order

    # Partly filled, then canceled: closed, with its fill's trade id.
    order = _working(_limit())
    found = closed(*_events(order, _fill(order, 40_000, "T-1"), TestEventStubs.order_canceled(order)))
    assert found is not None and found.status == "CANCELED" and found.trade_ids == {"T-1"}
    # Filled in two parts to exactly the quantity: FILLED.
    order = _working(_limit())
    found = closed(*_events(order, _fill(order, 40_000, "T-1"), _fill(order, 60_000, "T-2")))
    assert found is not None and found.status == "FILLED" and found.trade_ids == {"T-1", "T-2"}
    # Still open, partly filled, or amended: built before trading.
    assert closed(*_events(_working(_limit()))) is None
    order = _working(_limit())
    assert closed(*_events(order, _fill(order, 40_000, "T-1"))) is None
    order = _working(_limit())
    order.apply(TestEventStubs.order_updated(order, quantity=Quantity.from_int(50_000)))
    assert closed(*_events(order, _fill(order, 50_000, "T-1"))) is None
    # Events that do not belong together: a repeated trade id, a foreign order's id, a payload that is not one.
    order = _working(_limit())
    coid, raw = _events(order, _fill(order, 40_000, "T-1"), _fill(order, 60_000, "T-2"))
    assert closed(coid, [*raw[:-1], raw[-2]]) is None  # the first fill twice (same event id)
    assert closed("O-OTHER", raw) is None
    assert closed(coid, [*raw[:-1], b"\x00garbage"]) is None
    assert closed(coid, raw[1:]) is None  # no OrderInitialized first
    assert closed(coid, [*raw, raw[-1]]) is None  # something after the completing fill
    # Orders that depend on others or on the emulator stay built (here: emulated).
    from nautilus_trader.model.enums import TriggerType

    emulated = _working(_limit(emulation_trigger=TriggerType.DEFAULT))
    assert closed(*_events(emulated, TestEventStubs.order_canceled(emulated))) is None


def test_the_node_builds_now_a_waiting_order_whose_list_changed_since_verify(redis_server, tmp_path):
    from nautilus_trader.core.uuid import UUID4

    from launcher.cache.resilient import ResilientCacheDatabase

    filled, _, _ = _write(redis_server, tmp_path)
    state = load_state(redis_server.client(), launcher_settings(redis_server.port), defer=DeferClosed(time.time_ns()))
    rebuilt = state.rebuilt()
    changed = filled[10].client_order_id
    assert changed.value in rebuilt.deferred_orders
    # Since verify, the list lost its fill (the order is open again as Redis holds it).
    redis_server.client().ltrim(f"{layout.trader_key(TRADER_ID.value)}:{layout.ORDERS}:{changed.value}", 0, 2)

    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(tmp_path / "spill"), rebuilt_orders=rebuilt.orders,
                                deferred_orders=rebuilt.deferred_orders)
    try:
        loaded = db.load_orders()
        links = db.load_index_order_position()
    finally:
        db.close()
    waiting = {key.rsplit(":", 1)[1] for key, _ in db.closed_history}
    assert waiting == set(rebuilt.deferred_orders) - {changed.value}
    assert changed in loaded and loaded[changed].is_open  # built from what Redis holds now
    assert set(loaded) | {ClientOrderId(i) for i in waiting} == {ClientOrderId(i) for i in state.order_keys}
    assert not {k.value for k in links} & waiting  # their index entries wait with them


def test_a_closed_order_whose_payload_would_not_build_is_found_before_trading(redis_server, tmp_path):
    # Well-formed payloads with a value the node's build refuses (a fill's price that is no number,
    # a fill without its venue order id) passed the light check, so the damage surfaced only after
    # the node traded (an ERROR), not before it (exit 4).
    import msgspec

    filled, _, _ = _write(redis_server, tmp_path)
    client = redis_server.client()
    damaged = {}
    for order, change in ((filled[10], {"last_px": "garbage"}), (filled[11], {"venue_order_id": None})):
        key = f"{layout.trader_key(TRADER_ID.value)}:{layout.ORDERS}:{order.client_order_id.value}"
        fill = msgspec.msgpack.decode(client.lindex(key, -1))
        for name, value in change.items():
            fill.pop(name) if value is None else fill.__setitem__(name, value)
        client.lset(key, -1, msgspec.msgpack.encode(fill))
        damaged[order.client_order_id.value] = key

    state = load_state(client, launcher_settings(redis_server.port), defer=DeferClosed(time.time_ns()))
    assert not set(damaged) & set(state.deferred_orders)
    assert {p.id for p in state.problems} == set(damaged), state.problems
    assert len(state.deferred_orders) == 16 - 2 + 5  # the other closed orders still wait


def test_a_waiting_order_rewritten_to_the_same_length_since_verify_is_built_from_what_verify_checked(
        redis_server, tmp_path):
    # Another process breaking the lease rewrites a closed order's fill in place (same number of
    # events): the node's load compares only lengths, so the order waits, and it must then be
    # built from the bytes verify checked, never from bytes nobody checked.
    import msgspec
    from nautilus_trader.core.uuid import UUID4

    from launcher.cache.resilient import ResilientCacheDatabase

    filled, _, _ = _write(redis_server, tmp_path)
    state = load_state(redis_server.client(), launcher_settings(redis_server.port), defer=DeferClosed(time.time_ns()))
    rebuilt = state.rebuilt()
    changed = filled[10].client_order_id.value
    checked = rebuilt.deferred_orders[changed]
    key = f"{layout.trader_key(TRADER_ID.value)}:{layout.ORDERS}:{changed}"
    fill = msgspec.msgpack.decode(checked[-1])
    fill["last_px"] = "garbage"
    redis_server.client().lset(key, -1, msgspec.msgpack.encode(fill))

    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(tmp_path / "spill"), rebuilt_orders=rebuilt.orders,
                                deferred_orders=rebuilt.deferred_orders)
    try:
        db.load_orders()
    finally:
        db.close()
    waiting = dict(db.closed_history)
    assert waiting[key] == checked  # verify's bytes, which build


def test_an_order_left_to_wait_always_builds_with_the_status_its_events_say():
    # The light reading alone took event sequences NautilusTrader's order refuses (events out of
    # order, one missing, a request rejected twice) for plainly closed orders: random sequences,
    # valid and not, must never be left to wait unless the node's build takes them, with that status.
    import random

    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.events import OrderCancelRejected
    from nautilus_trader.model.events import OrderDenied
    from nautilus_trader.model.events import OrderModifyRejected

    from launcher.state.codec import EventDecoder
    from launcher.state.entities import build_order
    from launcher.state.entities import decode_order
    from launcher.state.loader import deferrable_order

    serializer = make_serializer()
    decoder = EventDecoder(serializer)
    order = _working(_limit())
    ids = (order.trader_id, order.strategy_id, order.instrument_id, order.client_order_id)
    makers = {
        "submitted": lambda: TestEventStubs.order_submitted(order, account_id=AccountId("SIM-001")),
        "accepted": lambda: TestEventStubs.order_accepted(order, account_id=AccountId("SIM-001")),
        "rejected": lambda: TestEventStubs.order_rejected(order, account_id=AccountId("SIM-001")),
        "denied": lambda: OrderDenied(*ids, "no", UUID4(), 0),
        "pending_update": lambda: TestEventStubs.order_pending_update(order),
        "pending_cancel": lambda: TestEventStubs.order_pending_cancel(order),
        "modify_rejected": lambda: OrderModifyRejected(*ids, order.venue_order_id, order.account_id, "no", UUID4(), 0, 0),
        "cancel_rejected": lambda: OrderCancelRejected(*ids, order.venue_order_id, order.account_id, "no", UUID4(), 0, 0),
        "canceled": lambda: TestEventStubs.order_canceled(order, account_id=AccountId("SIM-001")),
        "expired": lambda: TestEventStubs.order_expired(order),
        "part": lambda: _fill(order, 40_000, f"T-{next(trades)}"),
        "rest": lambda: _fill(order, 60_000, f"T-{next(trades)}"),
        "all": lambda: _fill(order, 100_000, f"T-{next(trades)}"),
    }
    init = serializer.serialize(order.init_event)
    rng = random.Random(7)
    trades = iter(range(1, 10**6))
    recognised = 0
    for _ in range(3000):
        names = rng.choices(list(makers), k=rng.randint(1, 6))
        raw = [init, *(serializer.serialize(makers[name]()) for name in names)]
        key = f"orders:{order.client_order_id.value}"
        deferred = deferrable_order(key, order.client_order_id.value, raw, decoder, 2**63)
        if deferred is None:
            continue
        recognised += 1
        built = build_order(key, decode_order(key, raw, EventDecoder(serializer)))  # raises if it does not build
        assert built.is_closed and built.status_string() == deferred.closed.status, names
    assert recognised > 100  # the common lifecycles are still recognised


def test_a_closed_order_an_earlier_start_built_is_built_again_only_when_its_bytes_changed(redis_server, tmp_path):
    import msgspec

    filled, _, _ = _write(redis_server, tmp_path)
    client = redis_server.client()
    settings = launcher_settings(redis_server.port)
    first = load_state(client, settings, defer=DeferClosed(time.time_ns()))
    verified = {id_: order.digest for id_, order in first.deferred_orders.items()}
    assert len(verified) == 16 + 5 and not first.problems
    # One waiting order's fill is damaged since: its digest no longer matches, so it is built and reported.
    changed = filled[10].client_order_id.value
    key = f"{layout.trader_key(TRADER_ID.value)}:{layout.ORDERS}:{changed}"
    fill = msgspec.msgpack.decode(client.lindex(key, -1))
    fill["last_px"] = "garbage"
    client.lset(key, -1, msgspec.msgpack.encode(fill))
    second = load_state(client, settings, defer=DeferClosed(time.time_ns(), verified))
    assert set(second.deferred_orders) == set(verified) - {changed}
    assert [p.id for p in second.problems] == [changed]
    # What skips the build is the record: the damaged bytes' own digest, planted, lets them wait.
    planted = {**verified, changed: second_digest(client, key)}
    third = load_state(client, settings, defer=DeferClosed(time.time_ns(), planted))
    assert changed in third.deferred_orders and not third.problems


def second_digest(client, key: str) -> bytes:
    from launcher.state.loader import events_digest

    return events_digest(client.lrange(key, 0, -1))


def test_the_record_of_verified_orders_is_read_as_empty_when_damaged_foreign_or_unreadable(tmp_path):
    path = verified_path(tmp_path / "spill", "trader-A/B-001")
    assert read_verified(path) == ({}, None)  # none yet
    write_verified(path, {"O-1": b"d" * 16})
    assert read_verified(path) == ({"O-1": b"d" * 16}, None)
    assert not list(path.parent.glob("*.partial"))
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-3]))  # torn
    entries, problem = read_verified(path)
    assert entries == {} and "damaged" in problem
    import msgspec

    path.write_bytes(msgspec.msgpack.encode({"built_by": "nautilus_trader 0.0.1, rules 1", "orders": {"O-1": b"d" * 16}}))
    assert read_verified(path) == ({}, None)  # another NautilusTrader judged those bytes
    path.unlink()
    path.mkdir()
    entries, problem = read_verified(path)
    assert entries == {} and "cannot be read" in problem


def test_a_record_of_verified_orders_that_cannot_be_read_or_written_only_costs_builds(redis_server, tmp_path):
    # A directory where the record should be (a damaged install, another tool's mistake): the start
    # builds every closed order, says twice that the record is not used and not written, and trades.
    trader = "HIST-NOREC"
    dbs = M.Databases(M.Server("127.0.0.1", redis_server.port), 20)
    M.write_state(dbs, trader, 100, 4, 0.1)
    spill_dir = tmp_path / "spill"
    record = verified_path(spill_dir, f"trader-{trader}")
    record.mkdir(parents=True)
    result = tmp_path / "flood.json"
    args = redis_args(redis_server.port, trader, "strategy=flood", "strategy.params.max_orders=0",
                      f"strategy.params.result_path={result}", "venue.account_type=CASH", "venue.base_currency=USD",
                      "venue.instruments=[AUD/USD]", "run.duration_s=2", f"cache.spill_dir={spill_dir}",
                      "monitoring.enabled=false")
    run = run_launcher(args, cwd=tmp_path)
    log = output(run)
    assert run.returncode == 0, log[-3000:]
    assert "Record of verified closed orders not used (every closed order is built)" in log
    assert "Record of verified closed orders not written" in log
    assert "built by an earlier start" not in log
    assert json.loads(result.read_text())["cache"]["orders"] == 100
    assert record.is_dir() and not any(record.iterdir())  # left as it was
