"""
After a failover the writer reconciles the new master against the node's own memory: a
promotion of a replica that lagged (it never acknowledged the last writes) loses nothing
while the node lives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.bootstrap.verify import verify_state
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write import acked
from launcher.cache.write.acked import read_record
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import list_counts
from launcher.retention.apply import run_retention_once
from launcher.retry import poll
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import SentinelTopology
from launcher.state import layout
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import parse_address
from tests.support.launcher_cli import run_launcher
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import OrderStream
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import launcher_settings
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders
from tests.test_bootstrap_verify import settings_for
from tests.test_retention import write_aged_state
from tests.test_retention_policy import NOW


pytestmark = pytest.mark.slow

# Sentinel refreshes a replica's INFO (its replica-priority) every 10 s by default (1 s in
# SentinelTopology); a forced failover then
# takes a few seconds (failover-timeout 3 s); budgets are generous for a loaded machine.
SENTINEL_SEES_S = 30.0
FAILOVER_S = 60.0


def _offset(client: redis.Redis) -> int:
    info = client.info("replication")
    return int(info.get("slave_repl_offset", info.get("master_repl_offset", 0)))


def test_a_failover_to_a_lagging_replica_loses_nothing(tmp_path):
    topology = SentinelTopology(tmp_path / "sentinel", replicas=2).start()
    try:
        never, lagging = topology.replica_procs
        # Only the lagging replica may be promoted (what replica-priority or a native backend allows).
        never.client().config_set("replica-priority", 0)
        for sentinel in topology.sentinel_procs:
            poll(lambda s=sentinel: any(int(r["slave-priority"]) == 0 and int(r["port"]) == never.port
                                        for r in s.client().sentinel_slaves(topology.master_name)),
                 SENTINEL_SEES_S, "the sentinels seeing replica-priority 0")
        settings = ConnectionSettings(sentinels=tuple(parse_address(a) for a in topology.sentinel_addresses),
                                      master_name=topology.master_name, timeout_s=1.0)
        db = ResilientCacheDatabase(
            TRADER_ID, UUID4(), make_serializer(), cache_config(topology.master.port, buffer_interval_ms=10),
            connection=settings, spill_dir=str(tmp_path / "spill"), max_backoff_s=0.2, close_timeout_s=30,
            min_replica_acks=1, replica_ack_timeout_ms=500,
        )
        db._log = LogRecorder()
        cache = new_cache(db)
        early = write_orders(cache, 5, events=2)
        account = TestExecStubs.cash_account(AccountId("SIM-001"))
        cache.add_account(account)
        assert db.wait_until_persisted(10)
        master = topology.master.client()
        poll(lambda: _offset(lagging.client()) >= _offset(master), 10, "the lagging replica catching up first")
        # Cut the lagging replica off (a partition): it cannot authenticate to reconnect, while
        # the other replica resumes at once. Sentinel still promotes a replica whose link has
        # been down for less than 10 x down-after-milliseconds.
        lag = lagging.client()
        lag.config_set("masteruser", "partitioned")
        lag.config_set("masterauth", "partitioned")
        master.execute_command("CLIENT", "KILL", "TYPE", "replica")
        poll(lambda: lag.info("replication")["master_link_status"] == "down", 10, "the lagging replica cut off")
        for order in early:  # acknowledged by the other replica only
            order.apply(TestEventStubs.order_accepted(order))
            cache.update_order(order)
        late = write_orders(cache, 5, events=3, prefix="late", start_ns=1_800_000_000_000_000_000)
        account.apply(TestEventStubs.cash_account_state(AccountId("SIM-001")))
        cache.update_account(account)
        assert db.wait_until_persisted(10)
        assert db.stats().unreplicated_writes == 0  # every write acknowledged (WAIT 1)

        topology.sentinel_procs[0].client().execute_command("SENTINEL", "FAILOVER", topology.master_name)
        assert topology.wait_new_master(topology.master.port, FAILOVER_S) == lagging.port
        poll(lambda: master.info("replication")["role"] == "slave", FAILOVER_S, "the old master demoted")
        new_master = lagging.client()
        assert len(new_master.lrange(f"{db.trader_key}:orders:{early[0].client_order_id.value}", 0, -1)) == 2  # lagged

        # The node goes on: its next write reaches the new master, which the writer reconciles.
        order = early[0]
        order.apply(TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD")))
        cache.update_order(order)
        poll(lambda: db.stats().failovers_followed >= 1 and db.pending_writes() == 0, FAILOVER_S,
             "the writer following the failover")
        db.close()
        assert_exactly_once(new_master, db.trader_key, [*early, *late])
        serializer = make_serializer()
        assert new_master.lrange(f"{db.trader_key}:accounts:SIM-001", 0, -1) == [serializer.serialize(e) for e in account.events]
        assert db._log.count("WARN", "were behind the node's memory") == 1
    finally:
        topology.stop()


def test_a_redis_restart_that_lost_acknowledged_writes_is_reconciled_from_memory(tmp_path):
    """
    Redis restarts at the same address without what it had acknowledged (no persistence here;
    appendfsync everysec loses up to a second the same way): the node's next write finds a new
    run id, and every live entity - including those never written again - is rewritten from memory.
    """
    server = RedisProcess(tmp_path / "redis", appendonly=False).start()
    try:
        db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port, buffer_interval_ms=10),
                                    spill_dir=str(tmp_path / "spill"), max_backoff_s=0.2, close_timeout_s=30)
        db._log = LogRecorder()
        cache = new_cache(db)
        orders = write_orders(cache, 5, events=3)
        account = TestExecStubs.cash_account(AccountId("SIM-001"))
        cache.add_account(account)
        assert db.wait_until_persisted(10)
        server.kill()
        server.start()  # same port, empty
        client = server.client()
        assert client.dbsize() == 0

        order = orders[0]
        order.apply(TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD")))
        cache.update_order(order)
        poll(lambda: db.stats().server_restarts_seen >= 1 and db.pending_writes() == 0, 30,
             "the writer noticing the restart and catching up")
        db.close()
        assert_exactly_once(client, db.trader_key, orders)
        serializer = make_serializer()
        assert client.lrange(f"{db.trader_key}:accounts:SIM-001", 0, -1) == [serializer.serialize(e) for e in account.events]
        assert db._log.count("INFO", "restarted (new run id)") == 1
        assert db._log.count("WARN", "Restart of 127.0.0.1") == 1  # naming how many were behind
        assert db.stats().failovers_followed == 0
        from launcher.monitoring.metrics import _backend_families

        families = {m.name: m for m in _backend_families(db, db.stats())}
        assert families["redis_server_restarts"].samples[0].value == 1  # the operator's counter
    finally:
        server.kill()



def _restart_db(port: int, tmp_path: Path, **kwargs) -> ResilientCacheDatabase:
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=10),
                                spill_dir=str(tmp_path / "spill"), max_backoff_s=0.2, close_timeout_s=30, **kwargs)
    db._log = LogRecorder()
    return db


def test_a_clean_restart_that_kept_everything_is_counted_once_and_rewrites_nothing(tmp_path):
    """SIGTERM with AOF: the server keeps every write; one restart, one INFO line, no repair and no WARN of the check."""
    server = RedisProcess(tmp_path / "redis").start()
    try:
        db = _restart_db(server.port, tmp_path)
        cache = new_cache(db)
        orders = write_orders(cache, 5, events=3)
        assert db.wait_until_persisted(10)
        server.restart()
        order = orders[0]
        order.apply(TestEventStubs.order_filled(order, TestInstrumentProvider.default_fx_ccy("AUD/USD")))
        cache.update_order(order)
        poll(lambda: db.stats().server_restarts_seen >= 1 and db.pending_writes() == 0, 30, "the restart noticed")
        db.close()
        assert_exactly_once(server.client(), db.trader_key, orders)
        assert db.stats().server_restarts_seen == 1 and db.stats().repairs == 0
        assert db._log.count("INFO", "Restart of 127.0.0.1") == 1 and db._log.count("WARN", "Restart of") == 0
        assert db._log.count("WARN", "did not hold the expected events") == 0
    finally:
        server.kill()


@pytest.fixture
def lossy_server(tmp_path):
    """A server without persistence: killed and started again, it comes back empty."""
    server = RedisProcess(tmp_path / "redis", appendonly=False).start()
    yield server
    server.kill()


def test_two_lossy_restarts_in_a_row_are_each_reconciled(lossy_server, tmp_path):
    """The run id is remembered per restart: the second restart is noticed against the first one's id."""
    server = lossy_server
    db = _restart_db(server.port, tmp_path)
    cache = new_cache(db)
    orders = write_orders(cache, 5, events=2)
    assert db.wait_until_persisted(10)
    for restarts, order in enumerate(orders[:2], start=1):
        server.kill()
        server.start()  # empty
        order.apply(TestEventStubs.order_accepted(order))
        cache.update_order(order)
        # Until its reconciliation has run, not only been noticed: the write that notices a restart is released
        # before the check runs, and a check that met the next restart would repair that one instead.
        poll(lambda n=restarts: db.stats().server_restarts_seen >= n and db.pending_writes() == 0
             and db._log.count("WARN", "Restart of 127.0.0.1") >= n, 30, "the restart noticed and reconciled")
    db.close()
    assert_exactly_once(server.client(), db.trader_key, orders)
    assert db.stats().server_restarts_seen == 2
    assert db._log.count("WARN", "Restart of 127.0.0.1") == 2


def test_a_lossy_restart_under_sync_writes_in_flight_loses_nothing(lossy_server, tmp_path):
    """durability=sync, orders streaming while Redis is killed and comes back empty: every event of every order is there once."""
    server = lossy_server
    db = _restart_db(server.port, tmp_path, durability="sync")
    with OrderStream(new_cache(db)) as stream:
        poll(lambda: len(stream.orders) >= 20, 30, "orders written")
        server.kill()
        server.start()
        written = len(stream.orders)
        poll(lambda: len(stream.orders) >= written + 20, 30, "orders written after the restart")
    assert stream.error is None
    assert db.wait_until_persisted(30)
    db.close()
    assert_exactly_once(server.client(), db.trader_key, stream.orders)
    assert db.stats().server_restarts_seen == 1


def test_a_user_denied_info_keeps_writing_across_a_restart_without_errors(tmp_path):
    """No run id to compare (INFO refused): no restart counted, no ERROR or WARN beyond the outage's own, no password logged."""
    password = "noinfo-secret-4"
    server = RedisProcess(tmp_path / "redis",
                          extra=["--user", "noinfo", "on", f">{password}", "~*", "&*", "+@all", "-info"]).start()
    try:
        settings = ConnectionSettings(host="127.0.0.1", port=server.port, username="noinfo", password=password, timeout_s=1.0)
        db = _restart_db(server.port, tmp_path, connection=settings)
        cache = new_cache(db)
        orders = write_orders(cache, 5, events=2)
        assert db.wait_until_persisted(10)
        server.restart()  # AOF: keeps everything, the ACL user comes from the command line again
        for order in orders:
            order.apply(TestEventStubs.order_accepted(order))
            cache.update_order(order)
        assert db.wait_until_persisted(30)
        db.close()
        assert_exactly_once(server.client(), db.trader_key, orders)
        assert db.stats().server_restarts_seen == 0 and db.stats().command_errors == 0
        assert [line for line in db._log.lines if line[0] in ("WARN", "ERROR") and "Redis unreachable" not in line[1]] == []
        assert not any(password in message for _, message in db._log.lines)
    finally:
        server.kill()


def _verify_args(port: int, spill_dir: Path) -> list[str]:
    return ["cache=redis_dev", f"cache.redis.port={port}", "cache.redis.embedded=never", f"trader_id={TRADER_ID.value}",
            f"cache.spill_dir={spill_dir}", "mode=verify"]


def _orders_written(server, spill_dir: Path) -> tuple[ResilientCacheDatabase, object, list]:
    """A backend spilling (and recording) in `spill_dir`, its cache, and 3 orders of 2 events acknowledged."""
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port), spill_dir=str(spill_dir))
    cache = new_cache(db)
    orders = write_orders(cache, 3, events=2)
    assert db.wait_until_persisted(10)
    return db, cache, orders


def test_verify_names_the_entities_an_older_backup_took_back(redis_server, tmp_path):
    """Redis restored from an older backup (manifest included): this machine's record names every entity that went back."""
    spill_dir = tmp_path / "spill"
    db, cache, early = _orders_written(redis_server, spill_dir)
    client = redis_server.client()
    backup = {key: client.dump(key) for key in client.scan_iter(f"{db.trader_key}:*")}
    for order in early:
        order.apply(TestEventStubs.order_accepted(order))
        cache.update_order(order)
    late = write_orders(cache, 2, events=3, prefix="late", start_ns=1_800_000_000_000_000_000)
    db.close()
    assert (spill_dir / f"{db.trader_key}.acked").exists()

    client.flushdb()  # ... and the older backup restored
    for key, value in backup.items():
        client.restore(key, 0, value)
    result = run_launcher(_verify_args(redis_server.port, spill_dir), cwd=tmp_path)
    assert result.returncode == 4, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for order in early:
        coid = order.client_order_id.value
        assert f"order {coid}: WENT BACK: Redis holds 2 event(s), this machine saw 3 acknowledged" in result.stdout
    for order in late:
        coid = order.client_order_id.value
        assert f"order {coid}: WENT BACK: Redis holds no orders:{coid}, this machine saw 3 event(s) acknowledged" \
            in result.stdout
    assert result.stdout.count("WENT BACK") == len(early) + len(late)

    fresh = run_launcher(_verify_args(redis_server.port, tmp_path / "another-machine"), cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "WENT BACK" not in fresh.stdout


def test_deleted_entities_leave_the_record(redis_server, tmp_path):
    """The facade's deletes (retention inside the node) remove entities from the record; a clean close compacts it."""
    spill_dir = tmp_path / "spill"
    db, _, orders = _orders_written(redis_server, spill_dir)
    db.delete_order(orders[0].client_order_id)
    db.close()
    record = spill_dir / f"{db.trader_key}.acked"
    assert read_record(record) == {f"orders:{o.client_order_id.value}": 2 for o in orders[1:]}
    assert len(record.read_bytes().splitlines()) == 1  # compacted at the clean close


def test_offline_retention_removes_entities_from_the_record(redis_server, tmp_path, capsys):
    s = write_aged_state(redis_server.port, "resilient", tmp_path)
    client = redis_server.client()
    settings = settings_for(redis_server.port, s.trader_id, spill_dir=str(tmp_path / "spill"))
    record = tmp_path / "spill" / f"{layout.trader_key(s.trader_id)}.acked"
    removed = {f"orders:{o}" for o in s.remove_orders} | {f"positions:{p}" for p in s.remove_positions}
    assert removed <= set(read_record(record))
    assert run_retention_once(client, settings, now_ns=NOW) == 0  # verify before and after it: no new problem
    assert not removed & set(read_record(record))
    report = verify_state(client, settings)
    assert report.problems == [], report.render()


def test_a_flush_on_start_forgets_the_record(redis_server, tmp_path):
    """cache.flush_on_start deletes the state on purpose: the next verify does not call it gone back."""
    spill_dir = tmp_path / "spill"
    db, _, orders = _orders_written(redis_server, spill_dir)
    db.close()
    record = spill_dir / f"{db.trader_key}.acked"
    assert read_record(record)
    run = run_launcher([*_verify_args(redis_server.port, spill_dir)[:-1], "mode=run", "run.duration_s=1", "run.post_stop_s=0.2",
                        "cache.flush_on_start=true"], cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not {f"orders:{o.client_order_id.value}" for o in orders} & set(read_record(record))
    verify = run_launcher(_verify_args(redis_server.port, spill_dir), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]


def test_list_counts_follow_the_ops_in_order():
    """What a batch leaves each list with: appends, a rewrite (DEL + RPUSH), a delete, and nothing before a FLUSHDB."""
    ops = [
        Op("add_order", (Append.stored("k:orders:A", "m", "A", 1, b"e1", 1), (b"SADD", "k:index:orders", "A"))),
        Op("update_order", (Append.stored("k:orders:A", "m", "A", 2, b"e2", 0),)),
        Op("repair", [(b"DEL", "k:orders:B"), (b"RPUSH", "k:orders:B", b"e1", b"e2", b"e3"), (b"HSET", "m", "B", 3)]),
        Op("delete_order", [(b"DEL", "k:orders:C")]),
    ]
    assert list_counts(ops) == (False, {"k:orders:A": 2, "k:orders:B": 3, "k:orders:C": 0})
    flushed = [ops[0], Op("flush", [(b"FLUSHDB",)]), ops[1]]
    assert list_counts(flushed) == (True, {"k:orders:A": 2})


def test_the_record_stays_bounded_and_ignores_a_torn_line(tmp_path, monkeypatch):
    monkeypatch.setattr(acked, "_COMPACT_MIN_BYTES", 200)
    path = tmp_path / "t.acked"
    record = acked.AckedRecord(path, {"k:orders:": "orders"})
    for n in range(1, 501):  # one order's 500 acknowledged batches
        record.note([Op("update_order", (Append.stored("k:orders:A", "m", "A", n, b"e", 0),))])
        record.flush()  # each batch's line on its own (the record's thread may merge several)
    assert path.stat().st_size < 4 * 200
    assert read_record(path) == {"orders:A": 500}
    with open(path, "ab") as f:
        f.write(b'{"orders:A":50')  # a crash mid-append: never fsync'd, never claimed
    assert read_record(path) == {"orders:A": 500}
    record = acked.AckedRecord(path, {"k:orders:": "orders"})  # the next run
    record.note([Op("update_order", (Append.stored("k:orders:A", "m", "A", 501, b"e", 0),))])
    record.flush()
    assert read_record(path) == {"orders:A": 501}


def test_an_unreplicated_batch_records_only_the_lists_it_shortened(tmp_path):
    """A NETTING position reopening on a master without replicas: verify must not expect the old, longer list back."""
    path = tmp_path / "t.acked"
    record = acked.AckedRecord(path, {"k:positions:": "positions"})
    record.note([Op("update_position", [Append.stored("k:positions:P", "m", "P", 2, b"f2", 0)])])
    record.flush()
    assert read_record(path) == {"positions:P": 2}
    reopen = Op("add_position", [(b"DEL", "k:positions:P"), Append.stored("k:positions:P", "m", "P", 1, b"g1", 1)])
    record.note([reopen], lowered_only=True)
    record.flush()
    assert read_record(path) == {"positions:P": 1}
    record.note([Op("update_position", [Append.stored("k:positions:P", "m", "P", 2, b"g2", 0)])], lowered_only=True)
    record.flush()
    assert read_record(path) == {"positions:P": 1}  # a longer list is recorded only once replicas acknowledge it


def test_the_writer_keeps_the_live_entities(redis_server, tmp_path):
    """
    The registry reconciliation rewrites from is kept by the writer as writes leave its memory
    FIFO (not by the caller's write): written and spilled entities are in it, a delete and a
    FLUSHDB take them out, a load puts them back.
    """
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(tmp_path / "spill"), max_pending_writes=2)  # the FIFO spills every 2nd write
    live = db._latest
    key = lambda order: f"{db.trader_key}:{layout.ORDERS}:{order.client_order_id.value}"  # noqa: E731
    cache = new_cache(db)
    orders = write_orders(cache, 3, events=2)
    assert db.wait_until_persisted(10)
    assert db.stats().spilled_total > 0  # some of them went through the spill file, whose replay has no entities
    assert live == {key(o): o for o in orders}
    account = TestExecStubs.cash_account(AccountId("SIM-001"))
    cache.add_account(account)
    db.delete_order(orders[0].client_order_id)
    assert db.wait_until_persisted(10)
    assert live == {key(o): o for o in orders[1:]} | {f"{db.trader_key}:{layout.ACCOUNTS}:SIM-001": account}
    db.flush()
    assert live == {}
    write_orders(new_cache(db), 2, events=1, prefix="again")
    assert db.wait_until_persisted(10)
    live.clear()
    loaded = db.load_orders()
    assert {key(o) for o in loaded.values()} == set(live) and len(live) == 2
    db.close()


def test_the_record_is_written_by_its_own_thread_merging_batches(tmp_path):
    """Acknowledged batches are noted at once and written later, several per line and fsync; nothing is lost or reordered."""
    path = tmp_path / "t.acked"
    record = acked.AckedRecord(path, {"k:orders:": "orders"})
    for n in range(1, 201):
        record.note([Op("update_order", (Append.stored(f"k:orders:{n % 7}", "m", str(n % 7), n, b"e", 0),))])
    record.note([Op("delete_order", [(b"DEL", "k:orders:3")])])
    record.flush()
    assert read_record(path) == {f"orders:{i}": max(n for n in range(1, 201) if n % 7 == i) for i in range(7) if i != 3}
    assert len(path.read_bytes().splitlines()) < 201  # group-committed


def test_wait_until_persisted_leaves_the_acknowledged_counts_on_disk(redis_server, tmp_path):
    """The record's own thread writes it; a caller of wait_until_persisted still finds it on disk, before any close."""
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(tmp_path / "spill"))
    try:
        orders = write_orders(new_cache(db), 20, events=3)
        assert db.wait_until_persisted(10)
        record = read_record(acked.acked_path(tmp_path / "spill", db.trader_key))
        assert record == {f"{layout.ORDERS}:{o.client_order_id.value}": 3 for o in orders}
    finally:
        db.close()


def test_an_unusable_record_file_costs_one_error_and_no_write(redis_server, tmp_path):
    """A directory where the record should be (a damaged state dir): writes are still acknowledged, one ERROR says so."""
    spill = tmp_path / "spill"
    spill.mkdir()
    probe = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                   spill_dir=str(spill))
    path = acked.acked_path(spill, probe.trader_key)
    probe.close()
    path.unlink(missing_ok=True)
    path.mkdir()
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port),
                                spill_dir=str(spill))
    db._log = LogRecorder()
    try:
        orders = write_orders(new_cache(db), 5, events=2)
        assert db.wait_until_persisted(10)
        client = redis_server.client()
        for order in orders:
            assert client.llen(f"{db.trader_key}:{layout.ORDERS}:{order.client_order_id.value}") == 2
    finally:
        db.close()
    assert db._log.count("ERROR", "acknowledged-writes record") == 1
    assert path.is_dir()  # left as it was
    settings = launcher_settings(redis_server.port)
    settings.cache.spill_dir = str(spill)
    report = verify_state(redis_server.client(), settings)  # verify reads the record too: no crash, the state is sound
    assert report.problems == [] and report.counts["orders"] == 5
