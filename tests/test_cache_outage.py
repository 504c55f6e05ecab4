"""
Redis outages: the resilient backend retains, resends idempotently and loses nothing; the
native adapter (contrast, documented) loses what was written while Redis was down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from nautilus_trader.core.uuid import UUID4

from launcher.cache.listener import CacheListener
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import OrderStream
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import native_adapter
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


REPO_ROOT = Path(__file__).resolve().parents[1]


class OutageProbe(CacheListener):
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[tuple[int, float]] = []

    def on_outage_start(self, pending_writes, error):
        self.starts.append(pending_writes)

    def on_outage_end(self, resent_writes, outage_s):
        self.ends.append((resent_writes, outage_s))


def resilient(server, tmp_path, **kwargs):
    config = cache_config(server.port, buffer_interval_ms=kwargs.pop("buffer_interval_ms", 5))
    kwargs.setdefault("connection", ConnectionSettings(host="127.0.0.1", port=server.port, timeout_s=1.0))
    kwargs.setdefault("close_timeout_s", 15.0)
    kwargs.setdefault("max_backoff_s", 0.25)
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), config, spill_dir=str(tmp_path / "spill"), **kwargs)
    db._log = LogRecorder()
    return db


def test_sigkill_while_writes_stream_in_loses_and_duplicates_nothing(redis_server_always, tmp_path):
    probe = OutageProbe()
    db = resilient(redis_server_always, tmp_path, listener=probe)
    log = db._log
    with OrderStream(new_cache(db)) as stream:
        poll(lambda: db.stats().writes_acknowledged > 400, 20, "writes before the kill")
        redis_server_always.kill()  # SIGKILL: no shutdown, in-flight replies lost
        killed_at = db.stats().writes_enqueued
        poll(lambda: db.stats().outage_active, 10, "the outage to be noticed")
        poll(lambda: db.stats().writes_enqueued > killed_at + 200, 20, "writes during the outage")
        time.sleep(2.0)  # the outage itself: the server stays down for 2 s
        redis_server_always.start()  # restarts from its AOF
        resumed_at = db.stats().writes_acknowledged
        poll(lambda: not db.stats().outage_active, 20, "writes to resume")
        poll(lambda: db.stats().writes_acknowledged > resumed_at + 400, 20, "writes after the restart")
    assert stream.error is None, stream.error
    db.close()
    assert db.pending_writes() == 0
    assert_exactly_once(redis_server_always.client(), db.trader_key, stream.orders)
    stats = db.stats()
    assert stats.outages == 1 and stats.reconnects == 1 and stats.last_outage_s >= 2.0
    assert len(probe.starts) == 1 and len(probe.ends) == 1 and probe.ends[0][1] >= 2.0
    # One WARN when Redis went away, one INFO when writes resumed - not a line per write.
    assert log.count("WARN", "unreachable") == 1
    assert log.count("INFO", "writes resumed") == 1
    assert sum(1 for level, _ in log.lines if level in ("WARN", "ERROR")) == 1
    assert not list((tmp_path / "spill").glob("*.spill"))  # nothing left on disk (only the lock file)


def write_while_down(server, database):
    """Writes before, during (server down for 2 s) and after an outage; returns the three groups."""
    cache = new_cache(database)
    before = write_orders(cache, 5, prefix="b")
    client = server.client()
    poll(lambda: all(client.llen(f"trader-TESTER-000:orders:{o.client_order_id.value}") == 4 for o in before),
         10, "the first writes to be persisted")
    server.kill()
    during = write_orders(cache, 5, prefix="d", start_ns=1_750_000_000_000_000_000)
    time.sleep(2.0)  # the outage
    server.start()
    after = write_orders(cache, 5, prefix="a", start_ns=1_760_000_000_000_000_000)
    database.close()
    return before, during, after


def test_resilient_keeps_writes_made_while_redis_is_down(redis_server_always, tmp_path):
    db = resilient(redis_server_always, tmp_path, buffer_interval_ms=50)
    before, during, after = write_while_down(redis_server_always, db)
    assert_exactly_once(redis_server_always.client(), db.trader_key, before + during + after)
    assert db._log.count("WARN", "unreachable") == 1 and db._log.count("INFO", "writes resumed") == 1


def test_native_adapter_loses_writes_made_while_redis_is_down(redis_server_always):
    """The contrast this backend exists for: NautilusTrader's adapter drops the failed batch."""
    native = native_adapter(cache_config(redis_server_always.port, buffer_interval_ms=50))
    before, during, after = write_while_down(redis_server_always, native)
    client = redis_server_always.client()
    lengths = {name: [client.llen(f"trader-TESTER-000:orders:{o.client_order_id.value}") for o in group]
               for name, group in (("before", before), ("during", during), ("after", after))}
    assert lengths["before"] == [4] * 5 and lengths["after"] == [4] * 5
    lost = sum(4 - n for n in lengths["during"])
    assert lost > 0, f"native adapter unexpectedly kept every write: {lengths}"


@pytest.mark.parametrize("encoding", ["json"])
def test_outage_with_json_encoding(redis_server_always, tmp_path, encoding):
    config = cache_config(redis_server_always.port, encoding, True, buffer_interval_ms=20)
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(encoding, True), config, spill_dir=str(tmp_path / "s"),
                                connection=ConnectionSettings(host="127.0.0.1", port=redis_server_always.port, timeout_s=1.0),
                                max_backoff_s=0.25)
    before, during, after = write_while_down(redis_server_always, db)
    assert_exactly_once(redis_server_always.client(), db.trader_key, before + during + after, make_serializer(encoding, True))
    loaded = db.load_orders()
    assert {o.client_order_id for o in before + during + after} == set(loaded)


OUTAGE_CHILD = textwrap.dedent(
    """
    import sys, time
    from nautilus_trader.core.uuid import UUID4
    from launcher.cache.resilient import ResilientCacheDatabase
    from launcher.store.connection import ConnectionSettings
    from tests.support.trading_state import TRADER_ID, cache_config, make_serializer, new_cache, write_orders
    port, spill_dir, interval_ms = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=interval_ms),
                                connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=1.0),
                                spill_dir=spill_dir, max_backoff_s=0.25)
    cache = new_cache(db)
    i = 0
    while True:
        order = write_orders(cache, 1, prefix=f"c{i}", start_ns=1_700_000_000_000_000_000 + i * 1_000_000_000)[0]
        # The order's four writes were submitted before this wall-clock time.
        print(order.client_order_id.value, time.time(), db.stats().outage_active, flush=True)
        i += 1
        time.sleep(0.002)
    """,
)


def test_sigkill_during_an_outage_loses_at_most_one_buffer_interval(redis_server_always, tmp_path):
    """Retained writes go to the fsync'd spill file once per buffer interval while Redis is away."""
    server = redis_server_always
    interval_s = 0.2
    spill_dir = tmp_path / "spill"
    child = subprocess.Popen(
        [sys.executable, "-c", OUTAGE_CHILD, str(server.port), str(spill_dir), str(int(interval_s * 1000))],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        poll(lambda: lines.append(child.stdout.readline()) or len(lines) > 50, 30, "orders before the outage")
        server.kill()
        poll(lambda: lines.append(child.stdout.readline()) or lines[-1].split()[2] == "True", 20, "the outage")
        outage_seen = len(lines)
        poll(lambda: lines.append(child.stdout.readline()) or len(lines) > outage_seen + 200, 30, "writes during it")
        killed_at = time.time()
        child.kill()  # SIGKILL: no close(), no atexit
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    lines += child.stdout.read().splitlines()
    child.stdout.close()
    server.start()
    db = resilient(server, tmp_path)  # adopts and replays the dead process's spill file
    assert db.wait_until_persisted(10)
    db.close()
    client = server.client()
    key = db.trader_key
    # Whole lines only: SIGKILL may cut the child's last line short.
    old = [line.split()[0] for line in lines if len(line.split()) == 3 and float(line.split()[1]) < killed_at - interval_s]
    assert len(old) > outage_seen + 100  # most of them written during the outage
    manifest = client.hgetall(f"{key}:launcher:manifest:orders")
    missing = [coid for coid in old if client.llen(f"{key}:orders:{coid}") != 4 or manifest.get(coid.encode()) != b"4"]
    assert not missing, f"{len(missing)} of {len(old)} orders older than one interval lost, e.g. {missing[:3]}"
