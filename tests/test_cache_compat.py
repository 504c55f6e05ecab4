"""
Two-way compatibility of ResilientCacheDatabase with NautilusTrader's native Redis adapter.

One NautilusTrader ``Cache`` drives the same objects (same UUIDs, timestamps) through a tee
into the native adapter (server A) and the resilient backend (server B). Then:

* the key sets, Redis types and raw contents of A and B are identical byte for byte
  (besides the launcher's own ``launcher:*`` keys, which only B has);
* the native adapter loads B (written by us) and we load A (written by native): every
  loaded object matches, for every load method;
* our decoded events re-serialize to exactly the stored bytes.

For msgpack and json, with integer-string and ISO 8601 timestamps.
"""

from __future__ import annotations

import pandas as pd
import pytest
import pytz
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ComponentId
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import view
from launcher.servers.redis_process import RedisProcess
from launcher.state import layout as L
from launcher.state.codec import EventDecoder
from launcher.state.codec import EventEncoder
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import CacheTee
from tests.support.trading_state import account_fingerprint
from tests.support.trading_state import cache_config
from tests.support.trading_state import dump_state
from tests.support.trading_state import make_serializer
from tests.support.trading_state import native_adapter
from tests.support.trading_state import new_cache
from tests.support.trading_state import order_fingerprint
from tests.support.trading_state import position_fingerprint
from tests.support.trading_state import trader_key_for
from tests.support.trading_state import write_orders
from tests.support.trading_state import write_scenario


FORMATS = [("msgpack", False), ("json", False), ("msgpack", True), ("json", True)]


class World:
    """Both servers after the scenario, plus the objects written."""


@pytest.fixture(scope="module", params=FORMATS, ids=lambda p: f"{p[0]}-{'iso' if p[1] else 'int'}")
def world(request, tmp_path_factory):
    encoding, iso = request.param
    tmp = tmp_path_factory.mktemp(f"compat-{encoding}-{iso}")
    a = RedisProcess(tmp / "native", appendonly=False).start()
    b = RedisProcess(tmp / "resilient", appendonly=False).start()
    w = World()
    w.encoding, w.iso, w.tmp = encoding, iso, tmp
    w.instance_id = UUID4()
    w.cfg_a, w.cfg_b = cache_config(a.port, encoding, iso), cache_config(b.port, encoding, iso)
    w.serializer = make_serializer(encoding, iso)
    native = native_adapter(w.cfg_a, w.instance_id)
    ours = ResilientCacheDatabase(TRADER_ID, w.instance_id, make_serializer(encoding, iso), w.cfg_b, spill_dir=str(tmp / "spill"))
    tee = CacheTee(native, ours)
    w.objects = write_scenario(new_cache(tee), tee)
    assert ours.wait_until_persisted(10)
    w.meta_while_running = b.client().hgetall(f"{trader_key_for(w.cfg_b)}:{L.MANIFEST_META}")
    native.close()
    ours.close()
    w.a, w.b = a, b
    w.trader_key = trader_key_for(w.cfg_a)
    # Cross readers: native reads what we wrote, we read what native wrote.
    w.native_on_b = native_adapter(w.cfg_b, w.instance_id)
    w.ours_on_a = ResilientCacheDatabase(TRADER_ID, w.instance_id, make_serializer(encoding, iso), w.cfg_a,
                                         spill_dir=str(tmp / "spill-reader"))
    yield w
    w.native_on_b.close()
    w.ours_on_a.close()
    a.kill()
    b.kill()


def test_same_keys_types_and_bytes_as_native(world):
    state_a = dump_state(world.a.client(), world.trader_key)
    state_b = dump_state(world.b.client(), world.trader_key)
    assert set(state_a) == set(state_b)
    for key in sorted(state_a):
        assert state_a[key] == state_b[key], key
    tk = world.trader_key
    expected_types = {
        f"{tk}:{L.INDEX_ORDER_IDS}": "set", f"{tk}:{L.INDEX_ORDERS}": "set", f"{tk}:{L.INDEX_ORDERS_OPEN}": "set",
        f"{tk}:{L.INDEX_ORDERS_CLOSED}": "set", f"{tk}:{L.INDEX_ORDERS_EMULATED}": "set",
        f"{tk}:{L.INDEX_ORDERS_INFLIGHT}": "set", f"{tk}:{L.INDEX_POSITIONS}": "set",
        f"{tk}:{L.INDEX_POSITIONS_OPEN}": "set", f"{tk}:{L.INDEX_POSITIONS_CLOSED}": "set",
        f"{tk}:{L.INDEX_ORDER_POSITION}": "hash", f"{tk}:{L.INDEX_ORDER_CLIENT}": "hash",
        f"{tk}:{L.HEARTBEAT}": "string", f"{tk}:general:launcher-general": "string",
        f"{tk}:strategies:{world.objects['strategy'].id.value}:state": "string",
        f"{tk}:snapshots:positions:P-1": "list", f"{tk}:snapshots:orders:{world.objects['snapshot_order']}": "list",
        f"{tk}:synthetics:BTC-ETH.SYNTH": "string", f"{tk}:accounts:SIM-001": "list",
    }
    for key, kind in expected_types.items():
        assert state_b[key][0] == kind, key
    assert any(k.startswith(f"{tk}:actors:") and k.endswith(":state") for k in state_b)
    # Deletes removed the entity and every index entry, in both.
    for coid in world.objects["deleted_orders"]:
        assert f"{tk}:orders:{coid.value}" not in state_b
        for name in L.ORDER_SET_INDEXES:
            assert coid.value.encode() not in state_b.get(f"{tk}:{name}", ("set", []))[1]
    for pid in world.objects["deleted_positions"]:
        assert f"{tk}:positions:{pid.value}" not in state_b
    # The NETTING flip started the list over: one event (the flipping fill).
    assert len(state_b[f"{tk}:positions:AUD/USD.SIM-S-001"][1]) == 1


def _both(world, method, *args):
    return getattr(world.native_on_b, method)(*args), getattr(world.ours_on_a, method)(*args)


def test_orders_load_both_ways(world):
    ser = world.serializer
    theirs, ours = _both(world, "load_orders")
    assert set(theirs) == set(ours) == set(world.objects["orders"])
    for coid, order in world.objects["orders"].items():
        expected = order_fingerprint(order, ser)
        assert order_fingerprint(theirs[coid], ser) == expected, coid
        assert order_fingerprint(ours[coid], ser) == expected, coid
        assert type(ours[coid]) is type(order)
        single_theirs, single_ours = _both(world, "load_order", coid)
        assert order_fingerprint(single_ours, ser) == order_fingerprint(single_theirs, ser) == expected


def test_positions_load_both_ways(world):
    ser = world.serializer
    theirs, ours = _both(world, "load_positions")
    assert set(theirs) == set(ours) == set(world.objects["positions"])
    for pid, position in world.objects["positions"].items():
        expected = position_fingerprint(position, ser)
        assert position_fingerprint(theirs[pid], ser) == expected
        assert position_fingerprint(ours[pid], ser) == expected
        single_theirs, single_ours = _both(world, "load_position", pid)
        assert position_fingerprint(single_ours, ser) == position_fingerprint(single_theirs, ser) == expected


def test_accounts_load_both_ways(world):
    ser = world.serializer
    theirs, ours = _both(world, "load_accounts")
    assert set(theirs) == set(ours) == set(world.objects["accounts"])
    for aid, account in world.objects["accounts"].items():
        expected = account_fingerprint(account, ser)
        assert account_fingerprint(theirs[aid], ser) == expected
        assert account_fingerprint(ours[aid], ser) == expected
        single_theirs, single_ours = _both(world, "load_account", aid)
        assert account_fingerprint(single_ours, ser) == expected


def test_instruments_currencies_synthetics_general_state_and_indexes(world):
    ser = world.serializer
    for method in ("load_instruments", "load_synthetics"):
        theirs, ours = _both(world, method)
        assert set(theirs) == set(ours) and theirs
        for key in theirs:
            assert ser.serialize(theirs[key]) == ser.serialize(ours[key])
    theirs, ours = _both(world, "load_currencies")
    assert theirs == ours and "XYZ" in ours
    assert ours["XYZ"].precision == 4 and ours["XYZ"].name == "Scenario coin"
    assert _both(world, "load_currency", "XYZ")[1] == theirs["XYZ"]
    for instrument in world.objects["instruments"]:
        theirs_i, ours_i = _both(world, "load_instrument", instrument.id)
        assert ser.serialize(ours_i) == ser.serialize(theirs_i) == ser.serialize(instrument)
    synthetic = world.objects["synthetic"]
    assert ser.serialize(_both(world, "load_synthetic", synthetic.id)[1]) == ser.serialize(synthetic)
    theirs, ours = _both(world, "load")
    assert theirs == ours == {"launcher-general": b"\x00\x01raw bytes"}
    for method in ("load_index_order_position", "load_index_order_client"):
        theirs, ours = _both(world, method)
        assert theirs == ours and ours
    strategy, actor = world.objects["strategy"], world.objects["actor"]
    # (json stores bytes as base64 text: both adapters return the same thing)
    expected = {"counter": b"42", "mode": b"scenario"} if world.encoding == "msgpack" else {"counter": "NDI=", "mode": "c2NlbmFyaW8="}
    assert _both(world, "load_strategy", strategy.id) == (expected, expected)
    expected = {"seen": b"7"} if world.encoding == "msgpack" else {"seen": "Nw=="}
    assert _both(world, "load_actor", actor.id) == (expected, expected)
    assert world.ours_on_a.load_actor(ComponentId("NOBODY")) == {}
    assert world.ours_on_a.load_order(world.objects["deleted_orders"][0]) is None
    assert world.ours_on_a.load_instrument(InstrumentId.from_str("NONE/USD.SIM")) is None
    assert sorted(world.ours_on_a.keys("index:*")) == sorted(world.native_on_b.keys("index:*"))


def test_load_all_has_every_collection(world):
    result = world.ours_on_a.load_all()
    assert set(result) == {"currencies", "instruments", "synthetics", "accounts", "orders", "positions"}
    assert set(result["orders"]) == set(world.objects["orders"])
    assert set(result["positions"]) == set(world.objects["positions"])
    assert set(result["accounts"]) == set(world.objects["accounts"])
    assert len(result["instruments"]) == 2 and len(result["synthetics"]) == 1 and "XYZ" in result["currencies"]


def test_decoded_events_reserialize_to_the_stored_bytes(world):
    """Our fast decoder builds events that serialize back to exactly what Redis holds."""
    client, tk, ser = world.a.client(), world.trader_key, world.serializer
    decoder = EventDecoder(ser)
    types = set()
    for key in client.scan_iter(match=f"{tk}:orders:*"):
        for raw in client.lrange(key, 0, -1):
            event = decoder.decode(raw)
            types.add(type(event).__name__)
            assert ser.serialize(event) == raw
    for pattern in ("positions:*", "accounts:*"):
        for key in client.scan_iter(match=f"{tk}:{pattern}"):
            for raw in client.lrange(key, 0, -1):
                assert ser.serialize(decoder.decode(raw)) == raw
    assert decoder.fallbacks == 0
    assert types >= {
        "OrderInitialized", "OrderDenied", "OrderEmulated", "OrderReleased", "OrderSubmitted", "OrderAccepted",
        "OrderRejected", "OrderCanceled", "OrderExpired", "OrderTriggered", "OrderPendingUpdate",
        "OrderPendingCancel", "OrderModifyRejected", "OrderCancelRejected", "OrderUpdated", "OrderFilled",
    }


def test_manifest_in_the_same_batches(world):
    client, tk = world.b.client(), world.trader_key
    orders = {k.decode(): int(v) for k, v in client.hgetall(f"{tk}:{L.MANIFEST_ORDERS}").items()}
    assert orders == {coid.value: o.event_count for coid, o in world.objects["orders"].items()}
    for coid, count in orders.items():
        assert client.llen(f"{tk}:orders:{coid}") == count
    positions = {k.decode(): int(v) for k, v in client.hgetall(f"{tk}:{L.MANIFEST_POSITIONS}").items()}
    assert positions == {pid.value: p.event_count for pid, p in world.objects["positions"].items()}
    accounts = {k.decode(): int(v) for k, v in client.hgetall(f"{tk}:{L.MANIFEST_ACCOUNTS}").items()}
    assert accounts == {aid.value: a.event_count for aid, a in world.objects["accounts"].items()}
    meta = client.hgetall(f"{tk}:{L.MANIFEST_META}")
    assert world.meta_while_running[b"final"] == b"0"
    assert meta[b"final"] == b"1" and meta[b"instance_id"] == world.instance_id.value.encode()
    assert int(meta[b"updated_ns"]) >= int(world.meta_while_running[b"updated_ns"])


def test_trader_prefix_and_instance_id_options_match_native(tmp_path):
    a = RedisProcess(tmp_path / "a", appendonly=False).start()
    b = RedisProcess(tmp_path / "b", appendonly=False).start()
    try:
        instance_id = UUID4()
        cfg_a = cache_config(a.port, use_trader_prefix=False, use_instance_id=True)
        cfg_b = cache_config(b.port, use_trader_prefix=False, use_instance_id=True)
        native = native_adapter(cfg_a, instance_id, TraderId("PFX-001"))
        ours = ResilientCacheDatabase(TraderId("PFX-001"), instance_id, make_serializer(), cfg_b, spill_dir=str(tmp_path / "s"))
        assert ours.trader_key == f"PFX-001:{instance_id.value}"
        tee = CacheTee(native, ours)
        write_orders(new_cache(tee), 3)
        native.close()
        ours.close()
        state_a, state_b = dump_state(a.client(), ours.trader_key), dump_state(b.client(), ours.trader_key)
        assert state_a == state_b and len(state_a) > 3
    finally:
        a.kill()
        b.kill()


def test_delete_account_event_removes_exactly_that_event(tmp_path):
    """Native's delete_account_event is a no-op; ours removes the event (and only it)."""
    server = RedisProcess(tmp_path / "r", appendonly=False).start()
    try:
        cfg = cache_config(server.port, "json")
        ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer("json"), cfg, spill_dir=str(tmp_path / "s"))
        cache = new_cache(ours)
        from nautilus_trader.test_kit.stubs.events import TestEventStubs
        from nautilus_trader.test_kit.stubs.execution import TestExecStubs

        account = TestExecStubs.cash_account(AccountId("SIM-001"))
        cache.add_account(account)
        for _ in range(3):
            account.apply(TestEventStubs.cash_account_state(AccountId("SIM-001")))
            cache.update_account(account)
        doomed = account.events[1].id.value
        ours.delete_account_event(AccountId("SIM-001"), doomed)
        ours.delete_account_event(AccountId("SIM-001"), doomed)  # idempotent
        assert ours.wait_until_persisted(5)
        key = f"{ours.trader_key}:accounts:SIM-001"
        remaining = server.client().lrange(key, 0, -1)
        assert len(remaining) == 3 and not any(doomed.encode() in raw for raw in remaining)
        assert server.client().hget(f"{ours.trader_key}:{L.MANIFEST_ACCOUNTS}", "SIM-001") == b"3"
        ours.close()
    finally:
        server.kill()


def test_flush_is_flushdb_in_order(tmp_path):
    server = RedisProcess(tmp_path / "r", appendonly=False).start()
    try:
        ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port, buffer_interval_ms=50),
                                      spill_dir=str(tmp_path / "s"))
        cache = new_cache(ours)
        write_orders(cache, 5)
        server.client().set("unrelated", b"x")
        ours.flush()  # returns once FLUSHDB was applied, after the earlier writes
        assert server.client().dbsize() == 1  # only the manifest meta re-written after FLUSHDB
        write_orders(cache, 2, prefix="b", start_ns=1_800_000_000_000_000_000)
        ours.close()
        assert len(list(server.client().scan_iter(match=f"{ours.trader_key}:orders:*"))) == 2
    finally:
        server.kill()


def iso_to_ns_reference(value: str) -> int:
    """The serializer's own conversion of ISO 8601 text (pandas), the reference for the fast path."""
    return pd.Timestamp(value, tz=pytz.utc).value


@pytest.mark.parametrize("iso", [True, False])
def test_timestamp_fast_path_equals_serializer(iso):
    """The arithmetic ISO 8601 conversion equals pandas' for the shapes the serializer writes."""
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs

    ser = make_serializer("msgpack", iso)
    decoder = EventDecoder(ser)
    order = TestExecStubs.limit_order()
    samples = [0, 1, 999, 1_000, 1_000_000, 1_700_000_000_123_456_789, 1_700_000_000_000_000_000,
               951_782_400_000_000_001, 4_102_444_799_999_999_999, 1_709_251_199_999_999_000]
    for ns in samples:
        text = pd.Timestamp(ns, unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")
        assert decoder._iso_to_ns(text) == iso_to_ns_reference(text) == ns
        event = TestEventStubs.order_submitted(order, ts_event=ns)
        raw = ser.serialize(event)
        decoded = decoder.decode(raw)
        assert decoded == event and decoded.ts_event == ns and ser.serialize(decoded) == raw
    assert decoder.fallbacks == 0


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_unexpected_payload_shapes_take_the_serializer_path(encoding):
    """Anything the fast schemas do not describe exactly is decoded by the serializer itself."""
    import msgspec
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs

    ser = make_serializer(encoding)
    codec = msgspec.json if encoding == "json" else msgspec.msgpack
    order = TestExecStubs.limit_order()
    event = TestEventStubs.order_submitted(order, ts_event=1_700_000_000_000_000_001)
    base = codec.decode(ser.serialize(event))
    variants = {  # payload -> whether it must leave the fast path entirely
        "unknown key": ({**base, "extra": 1}, True),
        "iso with offset": ({**base, "ts_event": "2023-11-14T22:13:20.000000001+00:00"}, True),
        "missing required": ({k: v for k, v in base.items() if k != "account_id"}, True),
        "int timestamp": ({**base, "ts_init": 5}, True),
        "uppercase uuid": ({**base, "event_id": base["event_id"].upper()}, False),  # UUID4.from_str, as from_dict
    }
    for name, (payload, leaves_fast_path) in variants.items():
        raw = codec.encode(payload)
        decoder = EventDecoder(ser)
        try:
            expected = ser.deserialize(raw)
        except Exception as e:  # noqa: BLE001 (then ours must raise the same way)
            with pytest.raises(type(e)):
                decoder.decode(raw)
            continue
        decoded = decoder.decode(raw)
        assert decoder.fallbacks == int(leaves_fast_path), name
        assert type(decoded) is type(expected) and decoded.to_dict(decoded) == expected.to_dict(expected), name


@pytest.mark.parametrize(("encoding", "iso"), FORMATS)
def test_fast_encoder_is_byte_identical_to_the_serializer(encoding, iso):
    import random

    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs

    ser = make_serializer(encoding, iso)
    fast = EventEncoder(ser)
    rng = random.Random(7)
    order = TestExecStubs.limit_order()
    instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    for _ in range(300):
        ns = rng.choice([0, rng.randrange(2**63), rng.randrange(10**18) // 1000 * 1000,
                         rng.randrange(10**18) // 10**9 * 10**9, rng.randrange(2**63, 2**64)])
        for event in (TestEventStubs.order_submitted(order, ts_event=ns),
                      TestEventStubs.order_filled(order, instrument, ts_event=ns)):
            try:
                expected = ser.serialize(event)
            except Exception as e:  # noqa: BLE001 (e.g. pandas cannot format ts >= 2**63 as ISO 8601)
                with pytest.raises(type(e)):
                    fast.serialize(event)
                continue
            assert fast.serialize(event) == expected, ns
    state = {"ts_custom": 5, "value": b"x"}
    assert fast.serialize(dict(state)) == ser.serialize(dict(state))  # not an event: the serializer itself


@pytest.mark.parametrize("encoding,iso", FORMATS, ids=lambda p: str(p))
def test_orders_built_from_their_initial_payload_equal_from_init(encoding, iso):
    """EventDecoder.order: LIMIT and MARKET built straight from the payload, others via from_init; all equal."""
    import msgspec
    from nautilus_trader.common.component import TestClock
    from nautilus_trader.common.factories import OrderFactory
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.enums import OrderType
    from nautilus_trader.model.enums import TimeInForce
    from nautilus_trader.model.enums import TriggerType
    from nautilus_trader.model.identifiers import ExecAlgorithmId
    from nautilus_trader.model.identifiers import StrategyId
    from nautilus_trader.model.objects import Price
    from nautilus_trader.model.objects import Quantity
    from nautilus_trader.model.orders.unpacker import OrderUnpacker

    ser = make_serializer(encoding, iso)
    clock = TestClock()
    clock.set_time(1_700_000_000_123_456_789)
    factory = OrderFactory(trader_id=TRADER_ID, strategy_id=StrategyId("S-001"), clock=clock)
    audusd, btc = InstrumentId.from_str("AUD/USD.SIM"), InstrumentId.from_str("BTCUSDT.BINANCE")
    qty, px = Quantity.from_int(100_000), Price.from_str("0.70000")
    fast = [
        factory.limit(audusd, OrderSide.BUY, qty, px),
        factory.limit(audusd, OrderSide.SELL, qty, px, time_in_force=TimeInForce.GTD,
                      expire_time=pd.Timestamp(1_800_000_000_000_000_000, tz="UTC"), post_only=True, reduce_only=True,
                      display_qty=Quantity.from_int(10_000), emulation_trigger=TriggerType.BID_ASK,
                      trigger_instrument_id=btc, tags=["a", "b"]),
        factory.limit(btc, OrderSide.BUY, Quantity.from_str("0.500"), Price.from_str("50000.10"), quote_quantity=True,
                      exec_algorithm_id=ExecAlgorithmId("TWAP"), exec_algorithm_params={"horizon_secs": 20}),
        factory.market(audusd, OrderSide.SELL, qty),
        factory.market(btc, OrderSide.BUY, Quantity.from_str("1.5"), time_in_force=TimeInForce.IOC, reduce_only=True,
                       quote_quantity=True, tags=["x"]),
    ]
    bracket = factory.bracket(audusd, OrderSide.BUY, qty, sl_trigger_price=Price.from_str("0.69000"),
                              tp_price=Price.from_str("0.71000"), entry_order_type=OrderType.LIMIT,
                              entry_price=px)
    fast += [o for o in bracket.orders if o.order_type in (OrderType.LIMIT, OrderType.MARKET)]
    slow = [o for o in bracket.orders if o.order_type not in (OrderType.LIMIT, OrderType.MARKET)]
    slow.append(factory.stop_limit(audusd, OrderSide.SELL, qty, px, Price.from_str("0.69500")))
    assert slow and any(o.linked_order_ids for o in fast)

    decoder = EventDecoder(ser)
    for order in fast:
        raw = ser.serialize(order.init_event)
        ours = decoder.order(raw)
        theirs = OrderUnpacker.from_init(ser.deserialize(raw))
        assert type(ours) is type(theirs) is type(order)
        assert order_fingerprint(ours, ser) == order_fingerprint(theirs, ser)
        assert ours.init_id == theirs.init_id == order.init_id
        assert ser.serialize(ours.init_event) == ser.serialize(theirs.init_event) == raw
    assert decoder.fallbacks == 0, "LIMIT and MARKET must take the fast path"
    for order in slow:
        raw = ser.serialize(order.init_event)
        assert order_fingerprint(decoder.order(raw), ser) == order_fingerprint(OrderUnpacker.from_init(ser.deserialize(raw)), ser)
    # A LIMIT payload from_init refuses (no price) fails the same way on the fast path's fallback.
    module = msgspec.json if encoding == "json" else msgspec.msgpack
    broken = module.decode(ser.serialize(fast[0].init_event))
    broken["options"] = {"expire_time_ns": 0}
    raw = module.encode(broken)
    with pytest.raises(KeyError):
        OrderUnpacker.from_init(ser.deserialize(raw))
    with pytest.raises(KeyError):
        decoder.order(raw)


def test_loads_reuse_one_scan_until_the_keys_change(redis_server, tmp_path):
    """Start-up loads share one SCAN of the trader's keys; a write (of this instance or another client) makes the next load rescan."""
    server = redis_server
    cfg = cache_config(server.port)
    writer = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cfg, spill_dir=str(tmp_path / "w"))
    write_orders(new_cache(writer), 3)
    writer.close()
    ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cfg, spill_dir=str(tmp_path / "s"))
    client = server.client()
    scans = lambda: int(client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))  # noqa: E731
    before = scans()
    assert len(ours.load_orders()) == 3
    ours.load_accounts(), ours.load_positions(), ours.load_currencies()
    assert scans() - before == 1, "one SCAN serves the loads that follow it"
    cache = new_cache(ours)
    write_orders(cache, 2, prefix="b", start_ns=1_800_000_000_000_000_000)
    assert len(ours.load_orders()) == 5  # own writes: rescanned, nothing missed
    assert scans() - before == 2
    # Another client's new keys are seen too, also when it deleted as many as it created.
    other = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cfg, spill_dir=str(tmp_path / "o"))
    write_orders(new_cache(other), 1, prefix="c", start_ns=1_900_000_000_000_000_000)
    other.close()
    assert len(ours.load_orders()) == 6
    size = client.dbsize()
    client.rename(f"{ours.trader_key}:orders:{next(iter(ours.load_orders())).value}", f"{ours.trader_key}:orders:O-RENAMED")
    assert client.dbsize() == size
    assert len(ours.load_orders()) == 6  # read from the renamed key: the key list was scanned again
    ours.close()


def test_a_payload_the_serializer_refuses_is_reported_once_and_the_rest_persists(redis_server, tmp_path):
    """Payloads are serialized ahead while a batch is in flight; one that fails is dropped loudly, once, in its batch."""
    from types import SimpleNamespace

    server = redis_server
    ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port, buffer_interval_ms=5),
                                  spill_dir=str(tmp_path / "s"))
    cache = new_cache(ours)
    before = write_orders(cache, 300)
    ours.add_instrument(SimpleNamespace(id=SimpleNamespace(value="BAD.SIM")))  # not serializable
    after = write_orders(cache, 300, prefix="b", start_ns=1_800_000_000_000_000_000)
    assert ours.wait_until_persisted(10)
    assert ours.stats().command_errors == 1
    client = server.client()
    assert not client.exists(f"{ours.trader_key}:instruments:BAD.SIM")
    for order in before + after:
        assert client.llen(f"{ours.trader_key}:orders:{order.client_order_id.value}") == 4
    ours.close()


def test_loads_leave_the_garbage_collector_as_they_found_it(redis_server, tmp_path):
    """Loads pause the GC and move what they built to the oldest generation, unless the process froze objects itself."""
    import gc

    cfg = cache_config(redis_server.port)
    writer = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cfg, spill_dir=str(tmp_path / "w"))
    write_orders(new_cache(writer), 200)
    writer.close()
    ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cfg, spill_dir=str(tmp_path / "s"))
    try:
        assert gc.isenabled()
        orders = list(ours.load_orders().values())
        assert len(orders) == 200 and gc.isenabled() and all(gc.is_tracked(o) for o in orders)
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert all(id(o) in oldest for o in orders), "what the load built is not left to the young collections"
        gc.freeze()  # the process's own frozen objects are not touched
        frozen = gc.get_freeze_count()
        assert len(ours.load_orders()) == 200
        # A frozen object that dies meanwhile (its refcount) lowers the count by one; freezing the
        # load's objects would raise it by thousands, and unfreezing would drop it to 0.
        assert gc.isenabled() and frozen - 100 <= gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
        ours.close()


def test_the_start_up_heap_is_frozen_once_and_the_collector_comes_back():
    """StartupHeap: collector off from pause, on again after settle (with what was alive frozen) or resume (nothing frozen)."""
    import gc

    from launcher.state.gc_pause import StartupHeap

    gc.unfreeze()  # CPython 3.12 freezes a few hundred objects of its own at start-up (moved out by an earlier gc_paused, or not)
    assert gc.isenabled()
    try:
        heap = StartupHeap().pause()
        assert not gc.isenabled() and heap.paused
        built = [[i] for i in range(10_000)]  # what a start builds and keeps
        frozen = heap.settle()
        # Not equal to get_freeze_count(): a frozen object another thread drops meanwhile leaves the count.
        assert gc.isenabled() and not heap.paused and frozen >= len(built) and gc.get_freeze_count() >= len(built)
        assert heap.settle() <= frozen and gc.isenabled()  # once: a second settle freezes nothing more
        heap.thaw()

        heap = StartupHeap().pause()
        heap.resume()
        assert gc.isenabled() and gc.get_freeze_count() == 0
        gc.disable()  # a process that runs without the collector keeps it off
        heap = StartupHeap().pause()
        heap.settle()
        assert not gc.isenabled()
    finally:
        StartupHeap().thaw()
        gc.enable()


def test_a_pause_after_the_start_up_heap_froze_does_not_count_the_frozen_heap(monkeypatch):
    """
    Closed orders join the node's cache in chunks, each under `gc_paused`, after the start-up heap
    was frozen: counting the frozen objects there (`gc.get_freeze_count()` walks each of them)
    took ~95% of that time, 0.5-0.8 ms an order at 10k-100k orders.
    """
    import gc

    from launcher.state import gc_pause

    counted = []
    count = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counted.append(1) or count())
    heap = gc_pause.StartupHeap().pause()
    try:
        heap.settle()
        counted.clear()
        for _ in range(3):
            with gc_pause.gc_paused():
                pass
        assert counted == [] and gc.isenabled()
    finally:
        heap.thaw()
    with gc_pause.gc_paused():  # and once thawed, a pause counts again (nothing is frozen to walk)
        pass
    assert counted == [1]


def test_a_dropped_event_decoder_is_freed_without_the_collector():
    """
    The start-up heap is frozen with whatever cyclic garbage it holds: verify's EventDecoder (and
    the caches it filled) must go when its last reference does, not wait for a collection.
    """
    import gc
    import weakref

    serializer = make_serializer()
    order = TestExecStubs.limit_order()
    payloads = [serializer.serialize(e) for e in order.events]
    enabled = gc.isenabled()
    gc.disable()
    try:
        decoder = EventDecoder(serializer)
        assert decoder.decode(payloads[0]) == order.init_event
        assert decoder.order(payloads[0]).client_order_id == order.client_order_id
        gone = weakref.ref(decoder)
        del decoder
        assert gone() is None, "EventDecoder is held by a reference cycle"
    finally:
        if enabled:
            gc.enable()


def test_a_retained_write_is_one_object_the_garbage_collector_tracks(redis_server, tmp_path):
    """
    Retained writes outlive the young generations, so every tracked object in one is promoted
    and brings the next full collection (a scan of the node's whole heap) closer: an event
    write's commands must be plain data the GC stops tracking, its event held by the op itself.
    """
    import gc

    ours = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port, buffer_interval_ms=60_000),
                                  spill_dir=str(tmp_path / "s"))
    try:
        cache = new_cache(ours)
        write_scenario(cache, ours)
        ops = [op for op in ours.writer.retained_ops()
               if op.kind in ("add_order", "update_order", "add_position", "update_position", "add_account", "update_account")]
        assert {op.kind for op in ops} >= {"add_order", "update_order", "add_position", "update_position", "update_account"}
        gc.collect()
        gc.collect()  # a tuple is untracked once its items are: an outer one may need a second pass
        tracked = [(op.kind, cmd) for op in ops for cmd in (op.cmds, *op.cmds) if gc.is_tracked(cmd)]
        assert tracked == []
        ours.writer.request_flush()
        assert ours.wait_until_persisted(10)
        client = redis_server.client()
        last = {}  # list key -> the payload the last write to it serialized from its op's event
        for op in ops:
            append = next(typed for typed in map(view, op.cmds) if type(typed) is Append)
            assert type(append.payload) is bytes
            last[append.list_key] = append.payload
        kept = {key: payload for key, payload in last.items() if client.exists(key)}  # the scenario deletes a few
        assert len(kept) >= len(last) - 3
        assert {key: client.lindex(key, -1) for key in kept} == kept
    finally:
        ours.close()
