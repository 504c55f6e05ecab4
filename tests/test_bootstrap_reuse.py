"""
The node's first load takes the orders verify rebuilt only where Redis still holds the very
bytes they were rebuilt from; anything written in between is rebuilt from Redis. Real server.
"""

from __future__ import annotations

import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.state.loader import load_state
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import cache_config
from tests.support.trading_state import launcher_settings
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import order_fingerprint
from tests.support.trading_state import write_orders


def _database(port: int, tmp_path, **options) -> ResilientCacheDatabase:
    return ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(port),
                                  spill_dir=str(tmp_path / "spill"), **options)


def test_the_first_load_reuses_only_orders_whose_events_are_unchanged(redis_server, tmp_path):
    writer = _database(redis_server.port, tmp_path)
    cache = new_cache(writer)
    orders = write_orders(cache, 30, events=3)
    assert writer.wait_until_persisted(10)

    state = load_state(redis_server.client(), launcher_settings(redis_server.port))  # what verify rebuilt
    rebuilt = state.rebuilt_orders()
    assert len(rebuilt) == 30

    # Written after verify: one more event for two orders, and one order that verify never saw.
    for order in orders[:2]:
        order.apply(TestEventStubs.order_canceled(order, account_id=AccountId("SIM-001")))
        cache.update_order(order)
    late = write_orders(cache, 1, events=2, prefix="late", start_ns=1_800_000_000_000_000_000)[0]
    assert writer.wait_until_persisted(10)
    writer.close()

    reader = _database(redis_server.port, tmp_path, rebuilt_orders=rebuilt)
    try:
        loaded = reader.load_orders()
        again = reader.load_orders()  # only the first load may reuse
    finally:
        reader.close()
    assert len(loaded) == 31
    for order in orders[2:]:
        assert loaded[order.client_order_id] is rebuilt[order.client_order_id.value][1]
    for order in [*orders[:2], late]:
        assert loaded[order.client_order_id] is not rebuilt.get(order.client_order_id.value, (None, None))[1]
    serializer = make_serializer()
    for order in [*orders, late]:  # whichever way it loaded: exactly what Redis holds
        assert order_fingerprint(loaded[order.client_order_id], serializer) == order_fingerprint(order, serializer)
        assert order_fingerprint(again[order.client_order_id], serializer) == order_fingerprint(order, serializer)
        assert again[order.client_order_id] is not loaded[order.client_order_id]
    assert loaded[orders[0].client_order_id].is_closed and loaded[orders[0].client_order_id].event_count == 4


@pytest.mark.slow
def test_a_restart_loads_the_orders_once(tmp_path, redis_server):
    import re

    from tests.support.launcher_cli import run_launcher
    from tests.test_bootstrap_e2e import output
    from tests.test_bootstrap_e2e import redis_args

    args = redis_args(redis_server.port, "REUSE-001", "strategy=churn", "run.post_stop_s=0.2")
    first = run_launcher([*args, "run.duration_s=3"], cwd=tmp_path)
    assert first.returncode == 0, output(first)[-3000:]
    # The restarts are checked on what they load before trading: a second of it is enough.
    again = run_launcher([*args, "run.duration_s=1"], cwd=tmp_path)
    log = output(again)
    assert again.returncode == 0, log[-3000:]
    taken = re.search(r"Orders: (\d+) of (\d+) taken as verify rebuilt them", log)
    assert taken is not None, log[-3000:]
    assert int(taken[1]) == int(taken[2]) > 0
    unverified = run_launcher([*args, "run.duration_s=1", "bootstrap.verify=off"], cwd=tmp_path)
    assert unverified.returncode == 0, output(unverified)[-3000:]
    assert "taken as verify rebuilt them" not in output(unverified)


def test_the_first_load_reuses_positions_and_accounts_only_while_their_bytes_are_unchanged(redis_server, tmp_path):
    from nautilus_trader.model.identifiers import PositionId
    from nautilus_trader.model.position import Position

    from launcher.bench.measure import Objects

    writer = _database(redis_server.port, tmp_path)
    objs = Objects(TRADER_ID.value)
    writer.add_currency(objs.usd)
    writer.add_instrument(objs.instrument)
    account = objs.account()
    writer.add_account(account)
    positions = []
    for i in range(4):
        order = objs.limit()
        writer.add_order(order)
        for event in (objs.submitted(order), objs.accepted(order)):
            order.apply(event)
            writer.update_order(order)
        fill = objs.filled(order, PositionId(f"P-{i}"))
        order.apply(fill)
        writer.update_order(order)
        positions.append(Position(objs.instrument, fill))
        writer.add_position(positions[-1])
    assert writer.wait_until_persisted(10)

    state = load_state(redis_server.client(), launcher_settings(redis_server.port))  # what verify rebuilt
    assert not state.problems, state.problems
    rebuilt = state.rebuilt()
    assert set(rebuilt.positions) == {f"P-{i}" for i in range(4)} and set(rebuilt.accounts) == {"SIM-001"}

    # Written after verify: one more fill for position P-0 and one more state for the account.
    order = objs.limit()
    writer.add_order(order)
    for event in (objs.submitted(order), objs.accepted(order)):
        order.apply(event)
        writer.update_order(order)
    fill = objs.filled(order, PositionId("P-0"))
    order.apply(fill)
    writer.update_order(order)
    positions[0].apply(fill)
    writer.update_position(positions[0])
    account.apply(objs.account_state(999_000))
    writer.update_account(account)
    assert writer.wait_until_persisted(10)
    writer.close()

    def load(**handed):
        reader = _database(redis_server.port, tmp_path, **handed)
        try:
            return reader.load_accounts(), reader.load_positions(), reader.load_positions()
        finally:
            reader.close()

    accounts, loaded, again = load(rebuilt_positions=rebuilt.positions, rebuilt_accounts=rebuilt.accounts)
    for i in (1, 2, 3):
        assert loaded[PositionId(f"P-{i}")] is rebuilt.positions[f"P-{i}"][1]
        assert again[PositionId(f"P-{i}")] is not loaded[PositionId(f"P-{i}")]  # only the first load may reuse
    assert loaded[PositionId("P-0")] is not rebuilt.positions["P-0"][1]
    assert loaded[PositionId("P-0")].event_count == 2 and loaded[PositionId("P-0")].quantity == positions[0].quantity
    (loaded_account,) = accounts.values()
    assert loaded_account is not rebuilt.accounts["SIM-001"][1]
    assert loaded_account.event_count == account.event_count == 2
    for i in range(4):  # whichever way it loaded: what Redis holds
        assert loaded[PositionId(f"P-{i}")].to_dict() == positions[i].to_dict()

    # The instrument a position was rebuilt with changed in Redis meanwhile: that position is rebuilt.
    key = f"trader-{TRADER_ID.value}:instruments:{objs.instrument.id.value}"
    payload = redis_server.client().get(key)
    stale = {id_: (events[:-1] + [payload + b"x"], position) for id_, (events, position) in rebuilt.positions.items()}
    accounts, loaded, _ = load(rebuilt_positions=stale)
    assert all(loaded[PositionId(f"P-{i}")] is not stale[f"P-{i}"][1] for i in range(4))
