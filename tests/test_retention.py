"""
The one-shot retention (``mode=retention``) on real redis-server processes, against state
written through NautilusTrader's Cache by either backend with explicit timestamps (nothing
waits for days): what goes and what stays on both sides of each window, the boundaries,
open items, every account's newest event, indexes and manifest afterwards, verify after,
a dry run that changes nothing, the single-writer lease, and the command line.
"""

from __future__ import annotations

import time

import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.database import CacheDatabaseAdapter
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import TraderId

from launcher.bootstrap.lease import acquire_lease
from launcher.bootstrap.manifest import write_manifest_from_cache
from launcher.bootstrap.verify import verify_state
from launcher.errors import LeaseHeld
from launcher.retention.apply import run_retention_once
from launcher.state import layout
from launcher.state.manifest import read_manifest
from tests.support.launcher_cli import run_launcher
from tests.support.trading_state import make_serializer
from tests.test_bootstrap_verify import settings_for
from tests.test_retention_policy import DAY
from tests.test_retention_policy import NOW
from tests.test_retention_policy import AgedState
from tests.test_retention_policy import build_aged_state


def write_aged_state(port: int, backend: str, tmp_path, *, now: int = NOW, trader_id: str = "RETAIN-001") -> AgedState:
    """`build_aged_state` through a Cache backed by the given backend on a real server."""
    config = CacheConfig(
        database=DatabaseConfig(host="127.0.0.1", port=port),
        encoding="msgpack",
        timestamps_as_iso8601=True,
        buffer_interval_ms=0,
    )
    serializer = make_serializer("msgpack", timestamps_as_iso8601=True)
    if backend == "native":
        database = CacheDatabaseAdapter(TraderId(trader_id), UUID4(), serializer, config)
    else:
        from launcher.cache.resilient import ResilientCacheDatabase

        database = ResilientCacheDatabase(TraderId(trader_id), UUID4(), serializer, config, spill_dir=str(tmp_path / "spill"))
    cache = Cache(database=database, config=config)
    state = build_aged_state(cache, now=now, trader_id=trader_id)
    database.close()  # drains the backend's queue
    if backend == "native":  # the launcher writes the native backend's manifest after a clean stop
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        write_manifest_from_cache(client, layout.trader_key(trader_id), cache, instance_id="test", final=True)
        client.close()
    return state


def dump(client, trader_key: str) -> dict[bytes, bytes]:
    """Every key of the trader (the lease included: a dry run must not leave one) with its DUMP."""
    return {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{trader_key}:*"))}


def account_stamps(client, key: str, serializer) -> list[int]:
    return [serializer.deserialize(raw).ts_event for raw in client.lrange(key, 0, -1)]


@pytest.mark.parametrize("backend", ["native", "resilient"])
def test_retention_removes_what_is_outside_and_keeps_the_rest(redis_server, tmp_path, backend, capsys):
    s = write_aged_state(redis_server.port, backend, tmp_path)
    client = redis_server.client()
    settings = settings_for(redis_server.port, s.trader_id)
    tk = layout.trader_key(s.trader_id)
    assert verify_state(client, settings).problems == []
    order_position = layout.full_key(tk, layout.INDEX_ORDER_POSITION)
    assert {client.hget(order_position, o) for o in s.stale_order_position} == {b"P-EDGE-OUT"}

    assert run_retention_once(client, settings, now_ns=NOW) == 0
    out = capsys.readouterr().out
    assert "Retention done: removed 4 closed order(s), 2 closed position(s), 4 account event(s)" in out
    for oid in sorted(s.remove_orders):
        assert f"removed order {oid}: closed" in out

    def exists(collection: str, id_: str) -> bool:
        return bool(client.exists(layout.full_key(tk, f"{collection}:{id_}")))

    assert not any(exists(layout.ORDERS, o) for o in s.remove_orders)
    assert all(exists(layout.ORDERS, o) for o in s.keep_orders | s.open_orders)
    assert not any(exists(layout.POSITIONS, p) for p in s.remove_positions)
    assert all(exists(layout.POSITIONS, p) for p in s.keep_positions | s.open_positions)

    # Indexes name only what exists; index:order_position no longer points at removed positions.
    for name in layout.ORDER_SET_INDEXES:
        assert not {m.decode() for m in client.smembers(layout.full_key(tk, name))} & s.remove_orders, name
    for name in layout.POSITION_SET_INDEXES:
        assert not {m.decode() for m in client.smembers(layout.full_key(tk, name))} & s.remove_positions, name
    links = {k.decode(): v.decode() for k, v in client.hgetall(layout.full_key(tk, layout.INDEX_ORDER_POSITION)).items()}
    assert not set(links) & s.remove_orders
    assert not set(links.values()) & s.remove_positions
    assert not set(links) & s.stale_order_position
    assert links["O-5"] == "P-OPEN" and links["O-3"] == "P-RECENT"

    # Accounts keep what is inside the window, and always their newest event.
    serializer = make_serializer("msgpack", timestamps_as_iso8601=True)
    for aid, stamps in s.account_events.items():
        kept = account_stamps(client, layout.full_key(tk, f"{layout.ACCOUNTS}:{aid}"), serializer)
        assert kept == stamps[s.remove_account_events.get(aid, 0):], aid
    assert account_stamps(client, layout.full_key(tk, f"{layout.ACCOUNTS}:OLD-001"), serializer) == [NOW - 50 * DAY]

    # The manifest says exactly what Redis holds, and verify finds nothing.
    manifest = read_manifest(client, tk)
    assert not set(manifest.orders) & s.remove_orders and set(manifest.orders) >= s.keep_orders
    assert not set(manifest.positions) & s.remove_positions
    for aid in s.account_events:
        assert manifest.accounts[aid] == client.llen(layout.full_key(tk, f"{layout.ACCOUNTS}:{aid}"))
    report = verify_state(client, settings)
    assert report.problems == [], report.render()
    assert report.counts["orders_open"] == 1 and report.counts["positions_open"] == 1

    # Nothing more is due at the same instant: a second pass changes nothing.
    before = dump(client, tk)
    assert run_retention_once(client, settings, now_ns=NOW) == 0
    assert "removed 0 closed order(s), 0 closed position(s), 0 account event(s)" in capsys.readouterr().out
    assert dump(client, tk) == before


def test_dry_run_lists_and_changes_nothing(redis_server, tmp_path, capsys):
    s = write_aged_state(redis_server.port, "resilient", tmp_path)
    client = redis_server.client()
    settings = settings_for(redis_server.port, s.trader_id)
    settings.retention.dry_run = True
    tk = layout.trader_key(s.trader_id)
    before = dump(client, tk)
    assert run_retention_once(client, settings, now_ns=NOW) == 0
    assert dump(client, tk) == before
    out = capsys.readouterr().out
    assert "DRY RUN, nothing is changed" in out
    for oid in s.remove_orders:
        assert f"would remove order {oid}: closed" in out
    for pid in s.remove_positions:
        assert f"would remove position {pid}: closed" in out
    assert "would remove 3 of 5 events of account SIM-001" in out
    assert "would remove 1 of 2 events of account OLD-001" in out
    assert "kept 2 expired closed order(s) whose fills a kept position holds: O-3, O-5" in out
    assert "Retention dry run: would remove 4 closed order(s), 2 closed position(s), 4 account event(s)" in out


def test_refuses_while_a_node_holds_the_lease(redis_server, tmp_path):
    s = write_aged_state(redis_server.port, "native", tmp_path)
    client = redis_server.client()
    settings = settings_for(redis_server.port, s.trader_id)
    settings.bootstrap.lease_ttl_s = 1.0
    node_lease = acquire_lease(client, settings, "running-node")
    node_lease.start_renewing(lambda reason: None)
    try:
        before = dump(client, layout.trader_key(s.trader_id))
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as failure:
            run_retention_once(client, settings, now_ns=NOW)
        assert failure.value.exit_code == 5
        assert time.monotonic() - started < 5
        assert dump(client, layout.trader_key(s.trader_id)) == before
    finally:
        node_lease.release()


@pytest.mark.slow
def test_command_line_dry_run_apply_then_verify(redis_server, tmp_path):
    # Real "now": the exact-boundary items may go either way by the time the launcher runs,
    # so only items hours or days from a boundary are asserted.
    s = write_aged_state(redis_server.port, "resilient", tmp_path, now=time.time_ns(), trader_id="RETCLI-001")
    client = redis_server.client()
    tk = layout.trader_key(s.trader_id)
    args = ["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            f"trader_id={s.trader_id}"]

    before = dump(client, tk)
    dry = run_launcher([*args, "mode=retention", "retention.dry_run=true"], cwd=tmp_path)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    assert "would remove order O-1: closed" in dry.stdout
    assert dump(client, tk) == before

    applied = run_launcher([*args, "mode=retention"], cwd=tmp_path)
    assert applied.returncode == 0, (applied.stdout + applied.stderr)[-3000:]
    assert "removed position P-OLD: closed" in applied.stdout
    assert "Retention done: removed" in applied.stdout
    for oid in ("O-1", "O-2", "O-11"):
        assert not client.exists(layout.full_key(tk, f"{layout.ORDERS}:{oid}"))
    for oid in ("O-3", "O-4", "O-5", "O-6", "O-10"):
        assert client.exists(layout.full_key(tk, f"{layout.ORDERS}:{oid}"))
    assert not client.exists(layout.full_key(tk, layout.LEASE))  # released

    verified = run_launcher([*args, "mode=verify"], cwd=tmp_path)
    assert verified.returncode == 0, (verified.stdout + verified.stderr)[-3000:]
    assert "RESULT: SOUND" in verified.stdout


def test_an_account_event_damaged_after_the_plan_is_left_as_it_is(redis_server, tmp_path):
    """
    The trim reads the events it removes again under WATCH: one damaged since the plan read it
    (a payload NautilusTrader's parser would abort on, or one it cannot decode at all) is not
    one the plan names, so the list is kept whole and the run goes on (it raised: exit 1, the run cut short).
    """
    import redis as redis_lib

    from launcher.retention.apply import trim_account
    from launcher.retention.policy import AccountTrim

    serializer = make_serializer("msgpack", timestamps_as_iso8601=True)
    write_aged_state(redis_server.port, "resilient", tmp_path)
    client = redis_lib.Redis(host="127.0.0.1", port=redis_server.port)
    key = max((k.decode() for k in client.scan_iter(match="trader-RETAIN-001:accounts:*")), key=client.llen)
    events = [serializer.deserialize(raw) for raw in client.lrange(key, 0, -1)]
    assert len(events) >= 3
    trim = AccountTrim(account_id=key.rsplit(":", 1)[1], indexes=[0, 1], event_ids=[e.id.value for e in events[:2]],
                       ts_events=[e.ts_event for e in events[:2]], total=len(events), newest_ts=events[-1].ts_event)
    original = client.lrange(key, 0, -1)
    unknown_enum = serializer.serialize(events[0]).replace(b"MARGIN", b"MARGIX").replace(b"CASH", b"CASX")
    assert unknown_enum != serializer.serialize(events[0])
    for damaged in (unknown_enum, b"\xc1 not msgpack"):
        client.lset(key, 1, damaged)
        removed = trim_account(client, key, "unused", trim, serializer, update_manifest=False)
        assert removed == 0
        assert client.lrange(key, 0, -1) == [original[0], damaged, *original[2:]]
    client.close()
