"""
The one reader of the persisted state (``launcher.state``), on a real redis-server: a trader
id with glob characters reads only its own keys, in the backend's loads, verify and inspect;
emulated orders transformed when they triggered reload as NautilusTrader's adapter loads them,
also on the start-up reuse path; garbage at an order key is one clear line and exit code 4.
"""

from __future__ import annotations

import pytest
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.enums import TriggerType
from nautilus_trader.model.events import OrderEmulated
from nautilus_trader.model.events import OrderReleased
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.orders import LimitOrder
from nautilus_trader.model.orders import MarketOrder
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from launcher.bootstrap.inspect import render_inspection
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.state import layout
from launcher.state.entities import CorruptState
from launcher.state.loader import load_state
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import native_adapter
from tests.support.trading_state import new_cache
from tests.support.trading_state import order_fingerprint
from tests.support.trading_state import write_orders
from tests.test_bootstrap_verify import settings_for


GLOB_TRADER = "TR[1]*-001"
# Keys an unescaped MATCH of ``trader-TR[1]*-001:*`` takes instead of the trader's own:
# ``[1]`` is the class {1}, ``*`` any text.
LOOKALIKES = ("TR1X-001", "TR1-001")


def _database(port: int, tmp_path, trader_id: str, **options) -> ResilientCacheDatabase:
    return ResilientCacheDatabase(TraderId(trader_id), UUID4(), make_serializer(), cache_config(port),
                                  spill_dir=str(tmp_path / f"spill-{len(options)}-{abs(hash(trader_id))}"), **options)


def _write(port: int, tmp_path, trader_id: str, count: int, strategy: str) -> list:
    database = _database(port, tmp_path, trader_id)
    cache = new_cache(database)
    instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    cache.add_instrument(instrument)
    orders = write_orders(cache, count, events=4, instrument=instrument, strategy_id=strategy, prefix=strategy)
    assert database.wait_until_persisted(10)
    database.close()
    return orders


def test_a_trader_id_with_glob_characters_reads_only_its_own_keys(redis_server, tmp_path):
    ours = _write(redis_server.port, tmp_path, GLOB_TRADER, 3, "S-001")
    for n, other in enumerate(LOOKALIKES, start=2):
        _write(redis_server.port, tmp_path, other, 2, f"S-00{n}")
    client = redis_server.client()
    # The trap is set: unescaped, the trader's own pattern takes the other traders' keys, not its own.
    unescaped = {k.decode() for k in client.scan_iter(match=f"trader-{GLOB_TRADER}:orders:*")}
    assert len(unescaped) == 4 and not any(k.startswith(f"trader-{GLOB_TRADER}:") for k in unescaped)
    expected = {o.client_order_id for o in ours}

    reader = _database(redis_server.port, tmp_path, GLOB_TRADER)
    try:
        assert set(reader.load_orders()) == expected
        assert len(reader.load_instruments()) == 1
        assert sorted(reader.keys("orders:*")) == sorted(f"trader-{GLOB_TRADER}:orders:{c.value}" for c in expected)
    finally:
        reader.close()

    state = load_state(client, settings_for(redis_server.port, trader_id=GLOB_TRADER))
    assert set(state.orders) == {c.value for c in expected}
    assert set(state.instruments) == {"AUD/USD.SIM"}
    assert not state.problems, state.problems

    text = render_inspection(client, settings_for(redis_server.port, trader_id=GLOB_TRADER))
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("  O-") and "events" in line}
    assert listed == {c.value for c in expected}


def test_scan_pattern_matches_only_the_trader_itself():
    pattern = layout.scan_pattern(f"trader-{GLOB_TRADER}")
    assert pattern == "trader-TR\\[1\\]\\*-001:*"
    assert layout.scan_pattern("trader-T?\\x", "orders:*") == "trader-T\\?\\\\x:orders:*"


def _emulated_then_transformed(cache) -> dict:
    """As NautilusTrader's OrderEmulator releases them: emulated, transformed, then released."""
    instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    cache.add_instrument(instrument)
    factory = OrderFactory(trader_id=TraderId("TESTER-000"), strategy_id=StrategyId("S-001"), clock=TestClock())
    limit = factory.limit(instrument.id, OrderSide.BUY, Quantity.from_int(1_000), Price.from_str("0.70000"),
                          emulation_trigger=TriggerType.BID_ASK)
    touched = factory.limit_if_touched(instrument.id, OrderSide.SELL, Quantity.from_int(2_000), Price.from_str("0.71000"),
                                       Price.from_str("0.71010"), emulation_trigger=TriggerType.LAST_PRICE)
    out = {}
    for n, (order, transform) in enumerate(((limit, MarketOrder.transform_py), (touched, LimitOrder.transform_py)), 1):
        cache.add_order(order)
        order.apply(OrderEmulated(order.trader_id, order.strategy_id, order.instrument_id, order.client_order_id,
                                  UUID4(), n * 10))
        cache.update_order(order)
        transformed = transform(order, n * 10 + 1)
        cache.add_order(transformed, None, None, True)
        transformed.apply(OrderReleased(order.trader_id, order.strategy_id, order.instrument_id, order.client_order_id,
                                        Price.from_str("0.70000"), UUID4(), n * 10 + 2))
        cache.update_order(transformed)
        out[transformed.client_order_id] = transformed
    return out


def test_emulated_orders_transformed_on_release_reload_as_the_native_adapter_loads_them(redis_server, tmp_path):
    config = cache_config(redis_server.port)
    writer = _database(redis_server.port, tmp_path, "TESTER-000")
    written = _emulated_then_transformed(new_cache(writer))
    assert writer.wait_until_persisted(10)
    writer.close()
    serializer = make_serializer()

    native = native_adapter(config)
    try:
        theirs = native.load_orders()
    finally:
        native.close()
    assert sorted(o.order_type for o in theirs.values()) == [OrderType.MARKET, OrderType.LIMIT]

    state = load_state(redis_server.client(), settings_for(redis_server.port, trader_id="TESTER-000",
                                                           timestamps_as_iso8601=False))
    assert not state.problems, state.problems
    for reuse in (None, state.rebuilt_orders()):
        reader = _database(redis_server.port, tmp_path, "TESTER-000", **({"rebuilt_orders": reuse} if reuse else {}))
        try:
            ours = reader.load_orders()
            single = {coid: reader.load_order(coid) for coid in written}
        finally:
            reader.close()
        assert set(ours) == set(theirs) == set(written)
        if reuse:  # verify's rebuild of a transformed order is the one the node's first load takes
            assert all(ours[coid] is state.orders[coid.value] for coid in written)
        for coid, order in theirs.items():
            for loaded in (ours[coid], single[coid], state.orders[coid.value]):
                assert loaded.order_type == order.order_type, (coid, loaded.order_type)
                assert type(loaded) is type(order)
                assert order_fingerprint(loaded, serializer) == order_fingerprint(order, serializer)


def _garble(client, key: str, kind: str) -> None:
    """Put garbage at `key`: a string or a hash where a list belongs, or a list whose bytes do not decode."""
    client.delete(key)
    if kind == "string":
        client.set(key, b"garbage")
    elif kind == "hash":
        client.hset(key, "garbage", "1")
    else:
        client.rpush(key, b"\xc1not-a-payload", b"\xc1")


@pytest.mark.parametrize("kind", ["string", "hash", "undecodable"])
def test_garbage_at_an_order_key_is_corrupt_state_naming_the_key(redis_server, tmp_path, kind):
    orders = _write(redis_server.port, tmp_path, "TESTER-000", 3, "S-001")
    client = redis_server.client()
    key = f"trader-TESTER-000:orders:{orders[1].client_order_id.value}"
    _garble(client, key, kind)

    reader = _database(redis_server.port, tmp_path, "TESTER-000")
    try:
        with pytest.raises(CorruptState) as raised:
            reader.load_orders()
        with pytest.raises(CorruptState):
            reader.load_order(orders[1].client_order_id)
        assert reader.load_order(orders[0].client_order_id) is not None
    finally:
        reader.close()
    assert raised.value.key == key and raised.value.exit_code == 4
    assert key in str(raised.value) and "\n" not in str(raised.value)

    state = load_state(client, settings_for(redis_server.port, trader_id="TESTER-000"))
    assert [(p.entity, p.id) for p in state.problems] == [("order", orders[1].client_order_id.value)]
    assert set(state.orders) == {orders[0].client_order_id.value, orders[2].client_order_id.value}


@pytest.mark.parametrize(("verify", "kind"), [("warn", "string"), ("off", "undecodable")])
def test_the_launcher_exits_4_with_one_line_naming_a_garbage_order_key(redis_server, tmp_path, verify, kind):
    from tests.support.launcher_cli import run_launcher
    from tests.test_bootstrap_e2e import output
    from tests.test_bootstrap_e2e import redis_args

    trader = f"GARBAGE-{verify.upper()}"
    orders = _write(redis_server.port, tmp_path, trader, 3, "S-001")
    client = redis_server.client()
    key = f"trader-{trader}:orders:{orders[1].client_order_id.value}"
    _garble(client, key, kind)
    before = client.dump(key)

    result = run_launcher(redis_args(redis_server.port, trader, "strategy=churn", "run.duration_s=3",
                                     f"bootstrap.verify={verify}"), cwd=tmp_path)
    assert result.returncode == 4, output(result)[-3000:]
    assert "Traceback" not in output(result), output(result)[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], output(result)[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert client.dump(key) == before  # the launcher left the evidence as it was


def test_classify_takes_entities_and_states_by_exact_collection_only():
    from launcher.state import layout

    tk = "trader-T-1"
    keys = [
        f"{tk}:orders:O-1", f"{tk}:orders:O:2", f"{tk}:positions:P-1", f"{tk}:accounts:SIM-001",
        f"{tk}:instruments:AUD/USD.SIM", f"{tk}:currencies:USD", f"{tk}:general:k",
        f"{tk}:strategies:S-1:state", f"{tk}:actors:A-1:state", f"{tk}:strategies:S-2",  # the last: no :state
        f"{tk}:strategies::state", f"{tk}:orders:", f"{tk}:snapshots:orders:O-1", f"{tk}:index:orders",
        f"{tk}:launcher:lease", f"{tk}-B:orders:O-9", f"{tk}:instance:orders:O-8", "orders:O-7",
    ]
    assert layout.classify(tk, keys) == {
        "orders": {"O-1": f"{tk}:orders:O-1", "O:2": f"{tk}:orders:O:2"},
        "positions": {"P-1": f"{tk}:positions:P-1"},
        "accounts": {"SIM-001": f"{tk}:accounts:SIM-001"},
        "instruments": {"AUD/USD.SIM": f"{tk}:instruments:AUD/USD.SIM"},
        "currencies": {"USD": f"{tk}:currencies:USD"},
        "general": {"k": f"{tk}:general:k"},
        "strategies": {"S-1": f"{tk}:strategies:S-1:state"},
        "actors": {"A-1": f"{tk}:actors:A-1:state"},
    }
