"""
The spill file: retained writes beyond max_pending_writes go to an fsync'd file during a long
outage, are replayed on reconnect, and a file left by a killed process is replayed by the next
instance for the same trader before it loads anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.spill import MAGIC
from launcher.cache.write.spill import SpillFile
from launcher.cache.write.spill import encode_record
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


def _db(port: int, spill_dir, **kwargs) -> ResilientCacheDatabase:
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=10), spill_dir=str(spill_dir),
        connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=1.0), max_backoff_s=0.2, **kwargs,
    )
    db._log = LogRecorder()
    return db


def test_long_outage_spills_to_disk_and_replays_on_reconnect(redis_server_always, tmp_path):
    spill_dir = tmp_path / "spill"
    db = _db(redis_server_always.port, spill_dir, max_pending_writes=50, close_timeout_s=15)
    cache = new_cache(db)
    before = write_orders(cache, 5, prefix="a")
    assert db.wait_until_persisted(10)
    redis_server_always.kill()
    during = write_orders(cache, 100, prefix="b", start_ns=1_750_000_000_000_000_000)  # 400 writes > 50
    stats = db.stats()
    assert stats.spilled_total >= 350 and stats.spilled_writes >= 350
    assert stats.pending_writes == 400  # nothing dropped: in the file or in memory
    spill_file = spill_dir / "trader-TESTER-000.spill"
    assert spill_file.stat().st_size > 100_000
    assert SpillFile(spill_file).open() == stats.spilled_writes  # a reader sees whole, fsync'd records
    redis_server_always.start()
    poll(lambda: db.pending_writes() == 0, 30, "the spill file to be replayed")
    after = write_orders(cache, 5, prefix="c", start_ns=1_760_000_000_000_000_000)
    db.close()
    assert_exactly_once(redis_server_always.client(), db.trader_key, before + during + after)
    assert not spill_file.exists()
    stats = db.stats()
    assert stats.replayed_total >= 350
    assert db._log.count("WARN", "unreachable") == 1 and db._log.count("INFO", "writes resumed") == 1
    # The operator is told once that the memory bound was reached and where the writes went, and
    # how many came back through the file.
    assert db._log.count("WARN", f"reached max_pending_writes=50: spilled to {spill_file}") == 1
    assert db._log.count("INFO", "through the spill file") == 1


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from nautilus_trader.core.uuid import UUID4
    from launcher.cache.resilient import ResilientCacheDatabase
    from tests.support.trading_state import TRADER_ID, cache_config, make_serializer, new_cache, write_orders
    from launcher.store.connection import ConnectionSettings

    port, spill_dir = int(sys.argv[1]), sys.argv[2]
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=10), spill_dir=spill_dir,
        connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=0.5), max_pending_writes=40,
    )
    cache = new_cache(db)
    written = []
    i = 0
    while True:
        order = write_orders(cache, 1, prefix=str(i), start_ns=1_700_000_000_000_000_000 + i * 1_000_000_000)[0]
        written.append([order.client_order_id.value, db.stats().writes_enqueued])
        i += 1
        stats = db.stats()
        if i >= 60 and stats.pending_writes - stats.spilled_writes >= 8:  # some writes only in memory
            break
    print(json.dumps({"spilled": stats.spilled_total, "written": written}), flush=True)
    time.sleep(600)  # killed here: a crash with a spill file and writes still in memory
    """,
)


def test_spill_file_left_by_a_killed_process_is_replayed_by_the_next_instance(tmp_path):
    server = RedisProcess(tmp_path / "redis")  # not started: Redis is down for the whole first run
    spill_dir = tmp_path / "spill"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(server.port), str(spill_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd(),
    )
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        report = json.loads(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    spilled = report["spilled"]
    assert spilled >= 200  # 241 writes (meta + 60 x 4), max 40 in memory
    # The file holds the oldest writes (FIFO): an order is fully in it if its last write is.
    in_file = [coid for coid, last_seq in report["written"] if last_seq <= spilled]
    in_memory_only = [coid for coid, last_seq in report["written"] if last_seq - 3 > spilled]
    assert len(in_file) >= 45 and in_memory_only

    server.start()
    try:
        db = _db(server.port, spill_dir)
        assert not (spill_dir / "trader-TESTER-000.spill").exists()  # replayed in the constructor
        loaded = db.load_orders()
        loaded_ids = {coid.value for coid in loaded}
        assert set(in_file) <= loaded_ids
        for coid in in_file:
            assert loaded[next(k for k in loaded if k.value == coid)].event_count == 4
        assert not loaded_ids & set(in_memory_only)  # buffered writes only in memory died with the process
        client = server.client()
        for coid in in_file:
            assert client.llen(f"{db.trader_key}:orders:{coid}") == 4  # replayed exactly once
        db.close()
    finally:
        server.kill()


def test_torn_tail_is_ignored_and_truncated(tmp_path):
    path = tmp_path / "t.spill"
    spill = SpillFile(path)
    spill.open()
    spill.append([encode_record(["e", 1, "k", [[b"SET", "a", b"1"]]]), encode_record(["e", 2, "k", [[b"SET", "b", b"2"]]])])
    spill.close()
    with open(path, "ab") as f:
        f.write(encode_record(["e", 3, "k", [[b"SET", "c", b"3"]]])[:-3])  # crash mid-append
    again = SpillFile(path)
    assert again.open() == 2 and again.torn_records == 1
    records, end = again.read(10)
    assert [r[1] for r in records] == [1, 2] and end == path.stat().st_size
    assert path.read_bytes().startswith(MAGIC)
