"""
A restart finds the spill file of a dead process (issue 12 items 6 and 9): `mode=run` replays
it BEFORE verifying, so the state the node trades on is the verified one; `mode=verify` only
reads, reports the pending file and fails; a damaged file is refused before anything is
written (no lease either); a stale file (another node advanced the same trader since it was
written) is refused, naming the entities, without touching Redis and keeping the file. (A
damaged file is refused before the lease: tests/test_cache_spill.py.)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.spilled import inspect_pending
from launcher.cache.spilled import stale_entities
from launcher.cache.write.acked import acked_path
from launcher.cache.write.commands import Append
from launcher.cache.write.spill import SpillFile
from launcher.cache.write.spill import claim_spill_file
from launcher.cache.write.spill import encode_record
from launcher.cache.write.spill import legacy_spill_files
from launcher.cache.write.spill import spill_files
from launcher.cache.write.spill import spill_path
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import ConnectionSettings
from tests.support.launcher_cli import run_launcher
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders
from tests.test_cache_spill import _die_with_a_spill_file


TRADER_KEY = f"trader-{TRADER_ID.value}"
SPILL_NAME = f"{TRADER_KEY}.spill"


def _args(port: int, spill_dir: Path, *more: str, trader_id: str = TRADER_ID.value) -> list[str]:
    return ["cache=redis_dev", f"cache.redis.port={port}", "cache.redis.embedded=never", f"trader_id={trader_id}",
            f"cache.spill_dir={spill_dir}", "run.duration_s=1", "run.post_stop_s=0.2", *more]


def _changes(client) -> int:
    """Redis's count of writes since the last save (never saved here: every write, the lease's included)."""
    return int(client.info("persistence")["rdb_changes_since_last_save"])


def _records(path: Path, tmp_path: Path) -> int:
    """Whole records in the spill file at `path` (counted on a copy: opening truncates a torn tail)."""
    copy = tmp_path / "count.spill"
    shutil.copyfile(path, copy)
    spill = SpillFile(copy)
    try:
        return spill.open()
    finally:
        spill.close()


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def dead_node(tmp_path):
    """A node that died with a spill file while Redis was down; Redis is up again. (server, spill file, in_file)."""
    server = RedisProcess(tmp_path / "redis")
    spill_dir = tmp_path / "spill"
    in_file, _ = _die_with_a_spill_file(tmp_path, server, str(spill_dir), spill_dir / SPILL_NAME)
    server.start()
    try:
        yield server, spill_dir / SPILL_NAME, in_file
    finally:
        server.kill()


def test_mode_verify_reports_a_pending_spill_file_fails_and_writes_nothing(dead_node, tmp_path):
    server, path, _ = dead_node
    data = path.read_bytes()
    records = _records(path, tmp_path)
    client = server.client()
    before = _changes(client)
    result = run_launcher(_args(server.port, path.parent, "mode=verify"), cwd=tmp_path)
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    line = _one_error_line(result)
    assert str(path) in line and f"{records} record" in line and "not replayed" in line
    assert f"{path} ({records} record" in result.stdout  # the report lists it
    assert path.read_bytes() == data
    assert _changes(client) == before  # only read: no lease, no replay


def test_mode_retention_refuses_while_a_spill_file_is_pending_and_deletes_nothing(dead_node, tmp_path):
    """Retention must not delete what a dead process's unreplayed writes complete (the replay would leave fragments)."""
    server, path, _ = dead_node
    data = path.read_bytes()
    client = server.client()
    before = _changes(client)
    keys = sorted(client.keys(f"{TRADER_KEY}:*"))
    # Windows of zero: every closed order and position would go.
    result = run_launcher(_args(server.port, path.parent, "mode=retention", "retention.orders_days=0",
                                "retention.positions_closed_hours=0", "retention.account_events_days=0"), cwd=tmp_path)
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    line = _one_error_line(result)
    assert str(path) in line and "mode=retention again" in line
    assert sorted(client.keys(f"{TRADER_KEY}:*")) == keys and _changes(client) == before
    assert path.read_bytes() == data
    inspected = run_launcher(_args(server.port, path.parent, "mode=inspect"), cwd=tmp_path)
    assert inspected.returncode == 0 and f"Pending spill file (writes of a process that died during an outage): {path}" \
        in inspected.stdout + inspected.stderr, (inspected.stdout + inspected.stderr)[-3000:]
    dry = run_launcher(_args(server.port, path.parent, "mode=retention", "retention.dry_run=true"), cwd=tmp_path)
    assert dry.returncode == 0 and "Pending spill file" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
    assert _changes(client) == before


def test_run_replays_the_spill_file_before_verifying(dead_node, tmp_path):
    server, path, in_file = dead_node
    kept = tmp_path / "kept.spill"
    shutil.copyfile(path, kept)
    result = run_launcher(_args(server.port, path.parent), cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-3000:]
    assert "Replayed" in out and "Recovery report" in out
    assert out.index("Replayed") < out.index("Recovery report")  # verify saw the complete state
    assert "Node loaded counts differ" not in out
    assert "Node loaded exactly what the recovery report counted" in out
    orders = int(re.search(r"orders:\s+(\d+)", out).group(1))
    assert orders >= len(in_file)
    assert not path.exists()
    client = server.client()
    for coid in in_file:
        assert client.llen(f"{TRADER_KEY}:orders:{coid}") == 4  # replayed exactly once
    # The same file again (a crash after the replay, before its removal): every write is already
    # there, so it is not stale.
    assert stale_entities(client, TRADER_KEY, kept) == []


def _advance_elsewhere(port: int, spill_dir: Path, count: int) -> list[str]:
    """Node B, without A's spill file: writes the same `count` orders (other events); their ids."""
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=10), spill_dir=str(spill_dir),
        connection=ConnectionSettings(host="127.0.0.1", port=port, timeout_s=1.0), max_backoff_s=0.2,
    )
    db._log = LogRecorder()
    cache = new_cache(db)
    ids = []
    for i in range(count):
        order = write_orders(cache, 1, prefix=f"B{i}", events=2, start_ns=1_700_000_000_000_000_000 + i * 1_000_000_000)[0]
        ids.append(order.client_order_id.value)
    assert db.wait_until_persisted(10)
    db.close()
    return ids


@pytest.mark.parametrize("mode", ["run", "verify"])
def test_a_stale_spill_file_is_refused_and_kept(dead_node, tmp_path, mode):
    server, path, in_file = dead_node
    advanced = _advance_elsewhere(server.port, tmp_path / "b-spill", 5)
    assert advanced == in_file[:5]  # the same orders as in A's file
    data = path.read_bytes()
    client = server.client()
    before = _changes(client)
    result = run_launcher(_args(server.port, path.parent, f"mode={mode}"), cwd=tmp_path)
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    line = _one_error_line(result)
    assert str(path) in line and "stale" in line
    assert f"orders:{advanced[0]}" in line and "5 entities" in line
    assert path.read_bytes() == data
    assert _changes(client) == before
    for coid in advanced:
        assert client.llen(f"{TRADER_KEY}:orders:{coid}") == 2  # B's history, untouched


def test_the_backend_refuses_a_stale_spill_file_too(dead_node, tmp_path):
    server, path, in_file = dead_node
    _advance_elsewhere(server.port, tmp_path / "b-spill", 1)
    data = path.read_bytes()
    with pytest.raises(Exception, match="stale") as raised:
        ResilientCacheDatabase(
            TRADER_ID, UUID4(), make_serializer(), cache_config(server.port, buffer_interval_ms=10),
            spill_dir=str(path.parent), connection=ConnectionSettings(host="127.0.0.1", port=server.port, timeout_s=1.0),
        )
    assert getattr(raised.value, "exit_code", None) == 4
    assert path.read_bytes() == data
    assert server.client().llen(f"{TRADER_KEY}:orders:{in_file[0]}") == 2


def test_staleness_is_a_different_event_at_the_spilled_position(redis_server, tmp_path):
    """The rule, entity by entity: other bytes at position n (and not near the tail) is stale; anything else replays."""
    client = redis_server.client()
    path = tmp_path / "one.spill"
    spill = SpillFile(path)
    appends = {name: Append.stored(f"{TRADER_KEY}:orders:{name}", f"{TRADER_KEY}:launcher:manifest:orders", name, 2,
                                   f"{name}-2".encode(), 0) for name in ("new", "shorter", "same", "moved", "other")}
    spill.append([encode_record([b"epoch-01", seq, "update_order", [cmd]]) for seq, cmd in enumerate(appends.values())])
    spill.close()
    key = f"{TRADER_KEY}:orders:"
    client.rpush(key + "shorter", b"shorter-1")  # n=2 appends next: not stale
    client.rpush(key + "same", b"same-1", b"same-2", b"same-3")  # already applied at n: not stale
    client.rpush(key + "moved", b"moved-1", b"x", b"moved-2")  # found near the tail (the script skips it)
    client.rpush(key + "other", b"other-1", b"OTHER-2")  # another node's event 2: stale
    assert stale_entities(client, TRADER_KEY, path) == ["orders:other"]


def test_a_list_the_file_starts_over_is_not_stale(redis_server, tmp_path):
    """A NETTING position id that reopens: the file deletes the list and appends from 1, so Redis's older fills say nothing."""
    client = redis_server.client()
    key = f"{TRADER_KEY}:positions:P-1"
    client.rpush(key, b"fill-1", b"fill-2", b"fill-3")  # the closed generation, in Redis before the outage
    path = tmp_path / "reopen.spill"
    spill = SpillFile(path)
    reopen = [(b"DEL", key),
              Append.stored(key, f"{TRADER_KEY}:launcher:manifest:positions", "P-1", 1, b"new-fill-1", 1)]
    spill.append([encode_record([b"epoch-01", 0, "add_position", reopen])])
    spill.close()
    assert stale_entities(client, TRADER_KEY, path) == []
    # Without the delete the same append would be stale: position 1 holds another fill.
    other = tmp_path / "other.spill"
    spill = SpillFile(other)
    spill.append([encode_record([b"epoch-01", 0, "update_position", reopen[1:]])])
    spill.close()
    assert stale_entities(client, TRADER_KEY, other) == ["positions:P-1"]


def test_a_file_whose_events_are_all_in_redis_only_waits_for_replicas(redis_server, tmp_path):
    """A master without replicas keeps applied writes in the spill file: verify must not call that state incomplete."""
    client = redis_server.client()
    key = f"{TRADER_KEY}:orders:O-1"
    client.rpush(key, b"O-1-1", b"O-1-2")
    spill = SpillFile(tmp_path / f"{TRADER_KEY}.spill")
    spill.append([encode_record([b"epoch-01", 0, "update_order", [
        Append.stored(key, f"{TRADER_KEY}:launcher:manifest:orders", "O-1", 2, b"O-1-2", 0)]])])
    spill.close()
    [pending] = inspect_pending(client, tmp_path, TRADER_KEY)
    assert pending.applied and "waiting for replicas" in pending.describe()
    # One event Redis lacks makes it a pending file again.
    spill = SpillFile(tmp_path / f"{TRADER_KEY}.spill")
    spill.append([encode_record([b"epoch-01", 1, "update_order", [
        Append.stored(key, f"{TRADER_KEY}:launcher:manifest:orders", "O-1", 3, b"O-1-3", 0)]])])
    spill.close()
    [pending] = inspect_pending(client, tmp_path, TRADER_KEY)
    assert not pending.applied and pending.unapplied == 1


def test_traders_whose_ids_differ_only_in_unsafe_characters_never_share_a_spill_file(redis_server, tmp_path):
    """
    A/B-001 and A_B-001 got one file name ('_' for every unsafe character): A/B-001's pending
    writes blocked A_B-001's retention, and a run of A_B-001 would have replayed them.
    """
    other = "trader-A/B-001"
    assert spill_path(tmp_path, other) != spill_path(tmp_path, "trader-A_B-001")
    assert acked_path(tmp_path, other) != acked_path(tmp_path, "trader-A_B-001")
    assert spill_path(tmp_path, TRADER_KEY).name == SPILL_NAME  # safe names are unchanged
    spill_dir = tmp_path / "spill"
    spill = SpillFile(spill_path(spill_dir, other))
    spill.append([encode_record([b"epoch-01", 0, "update_order", [
        Append.stored(f"{other}:orders:O-1", f"{other}:launcher:manifest:orders", "O-1", 1, b"O-1-1", 0)]])])
    spill.close()
    result = run_launcher(_args(redis_server.port, spill_dir, "mode=retention", trader_id="A_B-001"), cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Pending spill file" not in result.stdout + result.stderr


def test_a_spill_file_left_under_the_old_shared_name_is_found_by_its_own_trader_only(redis_server, tmp_path):
    """
    An older version named A/B-001's file trader-A_B-001.spill: after the upgrade its pending
    writes must still stop A/B-001's retention and be replayed by A/B-001's start, not skipped
    as nobody's. (To A_B-001 that name is still its own file, as before the upgrade.)
    """
    owner, other = "trader-A/B-001", "trader-A_B-001"
    spill_dir = tmp_path / "spill"
    legacy = spill_dir / "trader-A_B-001.spill"
    assert spill_path(spill_dir, other) == legacy != spill_path(spill_dir, owner)
    spill = SpillFile(legacy)
    spill.append([encode_record([b"epoch-01", 0, "add_order", [
        Append.stored(f"{owner}:orders:O-1", f"{owner}:launcher:manifest:orders", "O-1", 1, b"O-1-1", 1)]])])
    spill.close()
    assert spill_files(spill_dir, owner) == [legacy]
    assert legacy_spill_files(spill_dir, other) == []
    assert legacy_spill_files(spill_dir, "trader-A+B-001") == []  # same old name, none of its writes
    refused = run_launcher(_args(redis_server.port, spill_dir, "mode=retention", trader_id="A/B-001"), cwd=tmp_path)
    assert refused.returncode == 4 and legacy.name in refused.stdout + refused.stderr, (refused.stdout + refused.stderr)[-3000:]
    mine, orphans = claim_spill_file(spill_dir, owner)
    try:
        assert orphans == [legacy] and mine.path == spill_path(spill_dir, owner)
    finally:
        mine.unlock()


@pytest.mark.parametrize("mode", ["retention", "inspect"])
@pytest.mark.parametrize("damage", ["bad_byte", "directory"])
def test_a_damaged_or_unreadable_spill_file_stops_retention_but_not_inspect(redis_server, tmp_path, damage, mode):
    """Retention: exit 4, one line naming the file, nothing deleted; inspect: a warning, then its inspection (exit 0)."""
    spill_dir = tmp_path / "spill"
    path = spill_dir / SPILL_NAME
    if damage == "directory":  # unreadable (tests run as root: chmod would not stop them)
        path.mkdir(parents=True)
    else:
        spill = SpillFile(path)
        spill.append([encode_record([b"epoch-01", n, "update_order", [
            Append.stored(f"{TRADER_KEY}:orders:O-1", f"{TRADER_KEY}:launcher:manifest:orders", "O-1", n + 1,
                          f"O-1-{n + 1}".encode(), 0)]]) for n in range(3)])
        spill.close()
        data = bytearray(path.read_bytes())
        data[20] ^= 0x01  # inside the first record, two whole ones after it
        path.write_bytes(data)
    kept = path.is_dir() or path.read_bytes()
    client = redis_server.client()
    client.rpush(f"{TRADER_KEY}:orders:O-1", b"O-1-1")
    before = _changes(client)
    args = ["retention.orders_days=0", "retention.positions_closed_hours=0"] if mode == "retention" else []
    result = run_launcher(_args(redis_server.port, spill_dir, f"mode={mode}", *args), cwd=tmp_path)
    if mode == "retention":
        assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
        line = _one_error_line(result)
        assert str(path) in line and ("cannot be read" if damage == "directory" else "damaged at bytes 8-") in line
    else:
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "Traceback" not in result.stderr and f"WARNING] launcher: spill file {path}" in result.stdout
        assert "Persisted state of trader" in result.stdout.split("WARNING")[-1]  # the inspection follows the warning
    assert _changes(client) == before
    assert (path.is_dir() or path.read_bytes()) == kept


@pytest.mark.parametrize("mode", ["retention", "inspect"])
def test_a_spill_dir_that_is_a_regular_file_holds_no_pending_writes(redis_server, tmp_path, mode):
    """Nothing can be spilled there: retention and inspect go on (exit 0), without a traceback."""
    spill_dir = tmp_path / "spill"
    spill_dir.write_text("not a directory")
    result = run_launcher(_args(redis_server.port, spill_dir, f"mode={mode}"), cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr and "Pending spill file" not in result.stdout
    assert spill_dir.read_text() == "not a directory"
