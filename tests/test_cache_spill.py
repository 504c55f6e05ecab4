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
from pathlib import Path

import pytest
from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.spill import MAGIC
from launcher.cache.write.spill import SpillFile
from launcher.cache.write.spill import SpillFileDamaged
from launcher.cache.write.spill import claim_spill_file
from launcher.cache.write.spill import default_spill_dir
from launcher.cache.write.spill import encode_record
from launcher.cache.write.spill import resolve_spill_dir
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import ConnectionSettings
from tests.support.launcher_cli import run_launcher
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
    import json, os, signal, sys, time
    from nautilus_trader.core.uuid import UUID4
    from launcher.cache.resilient import ResilientCacheDatabase
    from tests.support.trading_state import TRADER_ID, cache_config, make_serializer, new_cache, write_orders
    from launcher.store.connection import ConnectionSettings

    port, spill_dir = int(sys.argv[1]), sys.argv[2] or None  # "": the installation's default location
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=10), spill_dir=spill_dir,
        connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=0.5), max_pending_writes=40,
    )
    cache = new_cache(db)
    writer = db._writer  # its thread spills only while it holds writer._lock
    written = []
    i = 0
    while True:
        order = write_orders(cache, 1, prefix=str(i), start_ns=1_700_000_000_000_000_000 + i * 1_000_000_000)[0]
        written.append([order.client_order_id.value, db.stats().writes_enqueued])
        i += 1
        writer._lock.acquire()
        writer._refresh_pending_locked()
        stats = writer.stats
        if i >= 60 and stats.pending_writes - stats.spilled_writes >= 8:  # some writes only in memory
            break
        writer._lock.release()
    # The lock kept, the report out, then frozen and killed: a crash with a spill file and writes
    # still in memory. Left to run, the writer thread spills them within one buffer interval (10 ms),
    # sooner than a loaded machine may let the test send SIGKILL.
    print(json.dumps({"spilled": stats.spilled_total, "written": written}), flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(600)
    """,
)


def _die_with_a_spill_file(tmp_path, server: RedisProcess, spill_dir: str, spill_file: Path, cwd: Path | None = None,
                           **env: str) -> tuple[list[str], list[str]]:
    """
    Run CHILD (Redis down) until it spilled, SIGKILL it; return the client order ids whose
    writes are all in the spill file (`spill_file`), and those only in the dead process' memory.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path]), **env}
    child = subprocess.Popen(
        [sys.executable, str(script), str(server.port), spill_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd or os.getcwd(),
    )
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        report = json.loads(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # What the file holds after the kill decides which writes are in it.
    assert spill_file.exists(), spill_file  # (opening it would create it)
    probe = SpillFile(spill_file)
    spilled = probe.open()
    probe.close()
    assert spilled >= report["spilled"] >= 200  # 241 writes (meta + 60 x 4), max 40 in memory
    # The file holds the oldest writes (FIFO): an order is fully in it if its last write is.
    in_file = [coid for coid, last_seq in report["written"] if last_seq <= spilled]
    in_memory_only = [coid for coid, last_seq in report["written"] if last_seq - 3 > spilled]
    assert len(in_file) >= 45 and in_memory_only
    return in_file, in_memory_only


def test_spill_file_left_by_a_killed_process_is_replayed_by_the_next_instance(tmp_path):
    server = RedisProcess(tmp_path / "redis")  # not started: Redis is down for the whole first run
    spill_dir = tmp_path / "spill"
    in_file, in_memory_only = _die_with_a_spill_file(tmp_path, server, str(spill_dir), spill_dir / "trader-TESTER-000.spill")

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


def _record(seq: int, key: str = "k") -> bytes:
    """A spilled write as the writer frames it: [epoch, seq, kind, commands]."""
    return encode_record([b"epoch-01", seq, "set", [[b"SET", f"{key}{seq}".encode(), b"v" * 40]]])


def _spill_file(path: Path, count: int, key: str = "k") -> list[int]:
    """A spill file of `count` records at `path`; the byte offset of each record."""
    spill = SpillFile(path)
    spill.open()
    offsets = [spill.append([_record(seq, key)]) for seq in range(1, count + 1)]
    spill.close()
    return offsets


def test_torn_tail_warning_counts_the_dropped_bytes(tmp_path):
    path = tmp_path / "t.spill"
    _spill_file(path, 3)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(_record(4)[:-5])  # a crash mid-append: never reported written
    again = SpillFile(path)
    assert again.open() == 3
    assert again.torn_records == 1 and again.torn_bytes == len(_record(4)) - 5
    assert path.stat().st_size == size


def test_zero_filled_tail_is_a_torn_tail_not_records(tmp_path):
    # A machine crash can leave a file extended with zeros past its last fsync'd record.
    path = tmp_path / "z.spill"
    _spill_file(path, 3)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    again = SpillFile(path)
    assert again.open() == 3 and again.torn_bytes == 4096
    records, _ = again.read(10)
    assert [r[1] for r in records] == [1, 2, 3]


# One flipped bit in record 100 of 300: its payload, its CRC, its length made longer than the
# file (which looks like a torn tail unless the reader looks further), its length made shorter.
DAMAGE = {"payload": (20, 0x01), "crc": (5, 0x01), "length_beyond_eof": (0, 0x10), "length_shorter": (3, 0x02)}


@pytest.mark.parametrize("where", sorted(DAMAGE))
def test_damage_in_the_middle_refuses_to_open_and_keeps_the_file(tmp_path, where):
    path = tmp_path / "m.spill"
    offsets = _spill_file(path, 300)
    data = bytearray(path.read_bytes())
    at, bit = DAMAGE[where]
    data[offsets[99] + at] ^= bit
    path.write_bytes(data)
    with pytest.raises(SpillFileDamaged) as caught:
        SpillFile(path).open()
    message = str(caught.value)
    assert caught.value.exit_code == 4 and "\n" not in message
    assert str(path) in message and f"bytes {offsets[99]}-{offsets[100]}" in message
    assert "200 whole record(s) after it" in message
    assert path.read_bytes() == data  # untouched: nothing truncated


def test_garbage_header_refuses_to_open_and_keeps_the_file(tmp_path):
    path = tmp_path / "g.spill"
    path.write_bytes(b"garbage!" * 10)
    with pytest.raises(SpillFileDamaged) as caught:
        SpillFile(path).open()
    assert caught.value.exit_code == 4 and str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert path.read_bytes() == b"garbage!" * 10


def _locks(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.lock"))


def test_lock_files_do_not_accumulate_over_backend_instances(redis_server, tmp_path):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    # Left by processes that died: their locks are free, so nobody alive holds them.
    (spill_dir / "trader-TESTER-000.spill.lock").touch()
    (spill_dir / "trader-TESTER-000.123-0badf00d.spill.lock").touch()
    (spill_dir / "trader-OTHER-001.spill.lock").touch()
    # A live holder (another trader's instance): its lock must survive every sweep.
    live = SpillFile(spill_dir / "trader-LIVE-001.spill")
    assert live.lock()
    for _ in range(6):
        first = _db(redis_server.port, spill_dir)
        second = _db(redis_server.port, spill_dir)  # the primary is held: a private file
        assert second.spill_path != first.spill_path
        assert len(_locks(spill_dir)) == 3  # the two instances' and the live holder's
        second.close()
        first.close()
    assert _locks(spill_dir) == ["trader-LIVE-001.spill.lock"]
    assert not list(spill_dir.glob("*.spill"))
    live.unlock()  # released by its owner: removed
    assert _locks(spill_dir) == []


def test_a_lock_removed_by_its_holder_cannot_be_taken_twice(tmp_path):
    # B opened the lock file before A removed it and released it: B must not count a lock on
    # the removed file, or B and a newcomer C would both own the spill file.
    path = tmp_path / "x.spill"
    a = SpillFile(path)
    assert a.lock()
    lock_path = path.with_name(path.name + ".lock")
    stale_fd = os.open(lock_path, os.O_RDWR)
    a.unlock()
    assert not lock_path.exists()
    b, c = SpillFile(path), SpillFile(path)
    assert b.lock() and not c.lock()
    assert os.stat(lock_path).st_ino != os.fstat(stale_fd).st_ino
    os.close(stale_fd)
    b.unlock()


def test_adoption_skips_an_orphan_someone_else_is_adopting(tmp_path):
    spill_dir = tmp_path / "spill"
    orphan = spill_dir / "trader-X.99-0000beef.spill"
    spill_dir.mkdir()
    _spill_file(orphan, 3)
    mine, orphans = claim_spill_file(spill_dir, "trader-X")
    assert orphans == [orphan]
    adopter = SpillFile(orphan)
    assert adopter.lock()  # another new instance got there first
    assert mine.absorb(orphan) == 0 and orphan.exists()
    adopter.unlock()
    assert mine.absorb(orphan) == 3 and not orphan.exists()
    mine.open()
    assert [r[1] for r in mine.read(10)[0]] == [1, 2, 3]
    mine.unlock()


def test_absorb_into_a_damaged_file_loses_nothing(tmp_path):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    primary = spill_dir / "trader-X.spill"
    primary.write_bytes(b"garbage!")
    orphan = spill_dir / "trader-X.99-0000beef.spill"
    _spill_file(orphan, 3)
    before = orphan.read_bytes()
    mine, orphans = claim_spill_file(spill_dir, "trader-X")
    with pytest.raises(SpillFileDamaged):
        mine.absorb(orphans[0])
    assert orphan.read_bytes() == before and primary.read_bytes() == b"garbage!"
    mine.unlock()


def test_default_spill_dir_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    assert default_spill_dir() == tmp_path / "state" / "spill"
    assert resolve_spill_dir(None) == tmp_path / "state" / "spill"
    assert resolve_spill_dir("relative/spill") == tmp_path / "state" / "relative" / "spill"
    assert resolve_spill_dir(str(tmp_path / "abs")) == tmp_path / "abs"
    monkeypatch.setenv("LAUNCHER_STATE_DIR", "")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_spill_dir() == tmp_path / "xdg" / "nautilus-launcher" / "spill"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_spill_dir() == tmp_path / "home" / ".local" / "state" / "nautilus-launcher" / "spill"
    monkeypatch.chdir(tmp_path)
    assert resolve_spill_dir("var/spill").is_absolute()


# -- through `python -m launcher` ---------------------------------------------------------------


def _launcher_args(port: int, trader_id: str, *more: str) -> list[str]:
    return ["cache=redis_dev", f"cache.redis.port={port}", "cache.redis.embedded=never", f"trader_id={trader_id}",
            "run.duration_s=1", "run.post_stop_s=0.2", *more]


def _dump(client) -> dict[bytes, bytes]:
    """Every key with its serialized value, except the single-writer lease (taken and released)."""
    return {k: client.dump(k) for k in client.scan_iter() if not k.endswith(b":launcher:lease")}


@pytest.mark.parametrize("mode", ["run", "verify"])
@pytest.mark.parametrize("damage", ["middle", "header"])
def test_launcher_refuses_a_damaged_spill_file_and_touches_nothing(redis_server, tmp_path, damage, mode):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    path = spill_dir / "trader-SPILL-001.spill"
    offsets = _spill_file(path, 300, key="trader-SPILL-001:replayed:")
    data = bytearray(path.read_bytes())
    if damage == "middle":
        data[offsets[99] + 20] ^= 0x01
    else:
        data[:len(MAGIC)] = b"NOTSPILL"
    path.write_bytes(data)
    client = redis_server.client()
    client.set("unrelated", b"1")
    before = _dump(client)
    changes = client.info("persistence")["rdb_changes_since_last_save"]  # every write counts (never saved here)
    result = run_launcher(_launcher_args(redis_server.port, "SPILL-001", f"cache.spill_dir={spill_dir}", f"mode={mode}"),
                          cwd=tmp_path)
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    if damage == "middle":
        assert f"bytes {offsets[99]}-{offsets[100]}" in lines[0]
    assert path.read_bytes() == data
    assert _dump(client) == before
    # Refused before the lease: not even the lease key was written.
    assert client.info("persistence")["rdb_changes_since_last_save"] == changes
    assert "lease" not in result.stdout.lower()


def test_spill_file_is_replayed_after_a_restart_from_another_directory(tmp_path):
    # The default location: neither LAUNCHER_STATE_DIR nor XDG_STATE_HOME, only HOME.
    home = tmp_path / "home"
    env = {"HOME": str(home), "LAUNCHER_STATE_DIR": "", "XDG_STATE_HOME": ""}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = RedisProcess(tmp_path / "redis")  # down while the first process spills
    spill_file = home / ".local" / "state" / "nautilus-launcher" / "spill" / "trader-TESTER-000.spill"
    in_file, _ = _die_with_a_spill_file(tmp_path, server, "", spill_file, cwd=tmp_path / "a", **env)
    assert spill_file.exists()
    assert not (tmp_path / "a" / "var").exists()
    server.start()
    try:
        result = run_launcher(_launcher_args(server.port, TRADER_ID.value), cwd=tmp_path / "b", **env)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert f"Spill file: {spill_file}" in result.stdout
        assert "replaying them first" in result.stdout
        assert not spill_file.exists()
        client = server.client()
        for coid in in_file:
            assert client.llen(f"trader-TESTER-000:orders:{coid}") == 4  # replayed exactly once
    finally:
        server.kill()
