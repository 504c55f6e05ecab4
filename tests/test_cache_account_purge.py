"""
Removing many account events (NautilusTrader's ``Cache.purge_account_events`` deletes them one
``delete_account_event`` at a time, in set order): the deletes of one account within a batch
become one script call that removes them all in one pass over the list - LTRIM when they are
its head (retention: the oldest go), tombstones + one LREM otherwise. Checked exactly, and by
counting the commands Redis ran (INFO commandstats), not by timing.
"""

from __future__ import annotations

import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.scripts import DELETE_EVENT_SCRIPT
from launcher.state import layout as L
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache


SECOND = 1_000_000_000
AID = AccountId("SIM-001")


def _state(ts_event: int) -> AccountState:
    template = TestEventStubs.cash_account_state(AID)
    return AccountState(
        account_id=template.account_id,
        account_type=template.account_type,
        base_currency=template.base_currency,
        reported=template.is_reported,
        balances=template.balances,
        margins=template.margins,
        info={},
        event_id=UUID4(),
        ts_event=ts_event,
        ts_init=ts_event,
    )


def _commands(client) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}


def _setup(server, tmp_path, encoding: str, events: int, **config):
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(encoding), cache_config(server.port, encoding, **config),
                                spill_dir=str(tmp_path / "spill"))
    cache = new_cache(db)
    account = TestExecStubs.cash_account(AID)
    cache.add_account(account)  # the stub's first event (ts 0)
    for i in range(1, events):
        account.apply(_state(i * SECOND))
        cache.update_account(account)
    assert db.wait_until_persisted(60)
    key = f"{db.trader_key}:{L.ACCOUNTS}:{AID.value}"
    assert server.client().llen(key) == len(account.events) == events
    return db, cache, account, key


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_purging_thousands_of_account_events_is_exact_and_one_pass_per_batch(redis_server, tmp_path, encoding):
    db, cache, account, key = _setup(redis_server, tmp_path, encoding, 4000)
    client = redis_server.client()
    client.config_resetstat()
    batches = db.stats().batches
    before = len(account.events)
    ids_before = [e.id.value for e in account.events]
    cache.purge_account_events(ts_now=3000 * SECOND, lookback_secs=1500, purge_from_database=True)
    purged = before - len(account.events)
    assert 1000 < purged < before
    assert db.wait_until_persisted(60)

    serializer = make_serializer(encoding)
    assert client.lrange(key, 0, -1) == [serializer.serialize(e) for e in account.events]
    assert client.hget(f"{db.trader_key}:{L.MANIFEST_ACCOUNTS}", AID.value) == str(len(account.events)).encode()
    calls = _commands(client)
    # One script call per batch (at most max_batch_ops=1000 deletes each), not one per event.
    # (The purge deletes in set order: a batch removes the list's head by LTRIM, the rest by
    # one LSET each + one LREM.)
    assert calls["evalsha"] == db.stats().batches - batches <= purged // 50
    assert calls.get("lset", 0) + calls.get("ltrim", 0) <= purged
    assert db.stats().command_errors == 0

    # Resending the same deletes (e.g. after a lost reply) removes nothing more.
    for event_id in ids_before[:purged]:
        db.delete_account_event(AID, event_id)
    assert db.wait_until_persisted(10)
    assert client.lrange(key, 0, -1) == [serializer.serialize(e) for e in account.events]
    db.close()


def test_scattered_deletes_with_duplicates_and_unknown_ids_in_one_batch(redis_server, tmp_path):
    db, cache, account, key = _setup(redis_server, tmp_path, "msgpack", 2400, buffer_interval_ms=60_000)
    client = redis_server.client()
    client.config_resetstat()
    batches = db.stats().batches
    events = list(account.events)
    doomed = {e.id.value for e in events[1::3]} | {events[-1].id.value}
    for event_id in doomed:
        db.delete_account_event(AID, event_id)
    for event_id in list(doomed)[:50]:
        db.delete_account_event(AID, event_id)  # sent twice
    db.delete_account_event(AID, UUID4().value)  # never written
    db.delete_account_event(AID, "not-a-uuid")  # every entry gets decoded: still exact
    assert db.wait_until_persisted(30)  # (the 60 s buffer interval: one batch, sent now)

    serializer = make_serializer()
    expected = [serializer.serialize(e) for e in events if e.id.value not in doomed]
    assert client.lrange(key, 0, -1) == expected
    assert client.hget(f"{db.trader_key}:{L.MANIFEST_ACCOUNTS}", AID.value) == str(len(expected)).encode()
    calls = _commands(client)
    assert db.stats().batches == batches + 1  # (< max_batch_ops writes)
    assert calls["evalsha"] == 1 and calls["lrem"] == 1 and calls["lset"] == len(doomed)
    db.close()


def test_a_write_to_the_account_between_deletes_splits_the_group(redis_server, tmp_path):
    """delete, delete, append, delete in one batch: the last delete must not move before the append."""
    db, cache, account, key = _setup(redis_server, tmp_path, "msgpack", 10, buffer_interval_ms=60_000)
    client = redis_server.client()
    client.config_resetstat()
    batches = db.stats().batches
    events = list(account.events)
    db.delete_account_event(AID, events[0].id.value)
    db.delete_account_event(AID, events[1].id.value)
    account.apply(_state(100 * SECOND))
    cache.update_account(account)  # manifest := in-memory event count (11)
    db.delete_account_event(AID, events[5].id.value)  # manifest := list length (8)
    assert db.wait_until_persisted(10)

    serializer = make_serializer()
    expected = [serializer.serialize(e) for e in account.events if e.id.value not in
                {events[0].id.value, events[1].id.value, events[5].id.value}]
    assert client.lrange(key, 0, -1) == expected and len(expected) == 8
    assert client.hget(f"{db.trader_key}:{L.MANIFEST_ACCOUNTS}", AID.value) == b"8"
    assert db.stats().batches == batches + 1  # (< max_batch_ops writes)
    assert _commands(client)["evalsha"] == 2  # {0, 1} before the append, {5} after it
    db.close()


def test_the_script_falls_back_to_lrem_when_the_tombstone_is_a_real_entry(redis_server):
    """Tombstones must never remove a real entry: if one equals it, removal goes entry by entry."""
    client = redis_server.client()
    serializer = make_serializer("json")
    states = [_state(i * SECOND) for i in range(1, 7)]
    tomb = b"\xfflauncher:deleted-account-event\xff"
    client.rpush("acc", serializer.serialize(states[0]), tomb, *[serializer.serialize(s) for s in states[1:]])
    removed = client.eval(DELETE_EVENT_SCRIPT, 2, "acc", "manifest", "SIM-001", "json",
                          states[2].id.value, states[4].id.value)
    assert removed == 2
    assert client.lrange("acc", 0, -1) == [serializer.serialize(states[0]), tomb] + [
        serializer.serialize(s) for s in (states[1], states[3], states[5])
    ]
    assert client.hget("manifest", "SIM-001") == b"5"
    assert client.eval(DELETE_EVENT_SCRIPT, 2, "acc", "manifest", "SIM-001", "json", states[2].id.value) == 0
