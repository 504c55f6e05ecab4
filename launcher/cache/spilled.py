"""
Spill files left by dead processes: checked before anything is written, then replayed.

Pending files
    `inspect_pending` reads (never locks, creates nor truncates) every spill file of a trader
    key: damage raises `SpillFileDamaged` (exit 4), and each file is compared with Redis for
    staleness. ``mode=verify`` reports what it finds; ``mode=run`` checks before the lease.

Staleness
    Every spilled `Append` carries the entity's event count ``n`` and its payload. A file is
    stale for an entity when Redis already holds a DIFFERENT event at position ``n`` - another
    node advanced the same trader after the file was written (node A died with the file during
    an outage, node B traded the same orders elsewhere, then A's machine started a node with the
    old file). Replaying it would append old events after newer ones, exactly where the
    idempotent append script falls back to appending at the end. Same bytes at ``n`` (or among
    the list's last 64 entries, where the script finds them too) is a write already applied - a
    replay interrupted by a crash - and is not stale. A stale file is refused (`SpillFileStale`,
    exit 4) naming the entities, before anything is written; the file is kept for a human to
    decide which history is right.

Replay
    `adopt_spill_files` is what the resilient backend does at construction: claim the trader
    key's file, refuse stale files, adopt the files of dead instances. `replay_spill_files`
    does the same and sends the file through a `Writer` (the backend's idempotent path) until
    it is drained: the launcher's ``replay`` step, under the lease, before verify.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import redis

from launcher.cache.listener import CacheListener
from launcher.cache.listener import CacheStats
from launcher.cache.write.acked import AckedRecord
from launcher.cache.write.acked import acked_path
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import view
from launcher.cache.write.spill import SpillFile
from launcher.cache.write.spill import claim_spill_file
from launcher.cache.write.spill import read_records
from launcher.cache.write.spill import spill_files
from launcher.cache.write.writer import Writer
from launcher.errors import RedisUnavailable
from launcher.errors import VerifyFailed
from launcher.retry import write_backoff
from launcher.state import layout
from launcher.state.codec import EventEncoder
from launcher.store.connection import ConnectionSettings


_CHUNK = 1000  # appends checked per pipelined round trip
_SHOWN = 3  # entities named in the one-line refusal
_NEAR_TAIL = 64  # as far back as the append script looks for the same bytes (MAXLEN of its LPOS)


class SpillFileStale(VerifyFailed):
    """A spill file whose events Redis has already been advanced past by someone else (exit 4); kept untouched."""


@dataclass
class PendingSpill:
    """A spill file of the trader: whole records, bytes of a torn tail, the entities it is stale for."""

    path: Path
    records: int
    torn_bytes: int = 0
    stale: list[str] = field(default_factory=list)
    unapplied: int = 0  # appends whose event Redis does not hold yet

    @property
    def applied(self) -> bool:
        """
        Every event of the file is in Redis already: it only waits for replicas to acknowledge
        (a master without replicas keeps applied writes in the file until they do).
        """
        return not self.stale and self.unapplied == 0

    def describe(self) -> str:
        """``path (N records)``, plus the staleness when there is one."""
        text = f"{self.path} ({self.records} record{'' if self.records == 1 else 's'}"
        if self.stale:
            text += f", STALE for {entities_text(self.stale)}"
        elif self.applied:
            text += ", every event already in Redis: waiting for replicas to acknowledge"
        return text + ")"


def inspect_pending(client: redis.Redis, spill_dir: str | Path, trader_key: str) -> list[PendingSpill]:
    """
    Every spill file of `trader_key` under `spill_dir`, read only (files and Redis); raises
    `SpillFileDamaged` for a damaged file, RedisUnavailable when Redis stops answering.
    """
    pending = []
    for path in spill_files(spill_dir, trader_key):
        records, torn, _ = read_records(path)
        if records:
            stale, unapplied = _stale_or_unavailable(client, trader_key, path)
            pending.append(PendingSpill(path, records, torn, stale, unapplied))
    return pending


def refuse_stale(pending: list[PendingSpill]) -> None:
    """Raise `SpillFileStale` (one line) for the first stale file in `pending`."""
    for spill in pending:
        if spill.stale:
            raise SpillFileStale(_stale_message(spill.path, spill.stale))


def stale_entities(client: redis.Redis, trader_key: str, path: str | Path) -> list[str]:
    """
    The entities (list keys without ``{trader_key}:``, e.g. ``orders:O-1``) the spill file at
    `path` is stale for, in file order; [] when replaying it only adds what Redis lacks.
    """
    appends = _comparable_appends(path)
    suspects: list[Append] = []
    for start in range(0, len(appends), _CHUNK):
        chunk = appends[start:start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for cmd in chunk:
            pipe.llen(cmd.list_key)
            pipe.lindex(cmd.list_key, int(cmd.n) - 1)
        replies = pipe.execute()
        suspects += [cmd for cmd, length, held in zip(chunk, replies[::2], replies[1::2])
                     if length >= int(cmd.n) and held != cmd.payload]
    stale: dict[str, None] = {}
    for start in range(0, len(suspects), _CHUNK):
        chunk = suspects[start:start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for cmd in chunk:
            pipe.execute_command("LPOS", cmd.list_key, cmd.payload, "RANK", -1, "MAXLEN", _NEAR_TAIL)
        for cmd, position in zip(chunk, pipe.execute()):
            if position is None:
                stale.setdefault(cmd.list_key.removeprefix(f"{trader_key}:"))
    return list(stale)


def unapplied_events(client: redis.Redis, path: str | Path) -> int:
    """
    How many of the file's appended events Redis does not hold (at their position, or near the
    tail where the append script would find them). A list the file starts over is judged by its
    last generation in the file, the one a replay leaves.
    """
    commands = [stored for value in read_records(path)[2] for stored in Op.from_record(value).cmds]
    latest: dict[str, list[Append]] = {}
    for stored in commands:
        cmd = view(stored)
        if type(cmd) is Append and cmd.payload is not None:
            latest.setdefault(cmd.list_key, []).append(cmd)
        elif cmd is None and stored[0] in (b"DEL", b"UNLINK"):
            for key in stored[1:]:
                latest[_text(key)] = []
    appends = [cmd for cmds in latest.values() for cmd in cmds]
    missing = 0
    for start in range(0, len(appends), _CHUNK):
        chunk = appends[start:start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for cmd in chunk:
            pipe.lindex(cmd.list_key, int(cmd.n) - 1)
            pipe.execute_command("LPOS", cmd.list_key, cmd.payload, "RANK", -1, "MAXLEN", _NEAR_TAIL)
        replies = pipe.execute()
        missing += sum(1 for cmd, held, near in zip(chunk, replies[::2], replies[1::2])
                       if held != cmd.payload and near is None)
    return missing


def _comparable_appends(path: str | Path) -> list[Append]:
    """
    The file's appends that Redis's current lists can be compared with, in file order. A list
    the file deletes anywhere (a NETTING position id reopening starts its list over) ends up as
    the replay rebuilds it, whether or not part of the file was already replayed, so none of
    its appends say anything about staleness.
    """
    commands = [stored for value in read_records(path)[2] for stored in Op.from_record(value).cmds]
    restarted = {_text(key) for stored in commands if view(stored) is None and stored[0] in (b"DEL", b"UNLINK")
                 for key in stored[1:]}
    return [cmd for stored in commands
            if type(cmd := view(stored)) is Append and cmd.payload is not None and cmd.list_key not in restarted]


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


def adopt_spill_files(client: redis.Redis, spill_dir: str | Path, trader_key: str,
                      log: Callable[[], Any]) -> SpillFile:
    """
    Claim the spill file of `trader_key` (locked for the caller's lifetime), refuse any file of
    a dead instance that is stale (`SpillFileStale`, nothing changed), and adopt the files of
    dead instances into it. When Redis cannot be reached the check is left to a later start and
    says so (the backend may be built during an outage).
    """
    mine, orphans = claim_spill_file(spill_dir, trader_key)
    try:
        for path in ([mine.path] if mine.exists else []) + orphans:
            try:
                stale = stale_entities(client, trader_key, path)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                log().warning(f"Redis unreachable: spill file {path} is replayed without a staleness check")
                continue
            if stale:
                raise SpillFileStale(_stale_message(path, stale))
        for orphan in orphans:
            if moved := mine.absorb(orphan):
                log().warning(f"Adopted {moved} spilled write(s) left in {orphan} by an instance that is gone")
    except VerifyFailed:
        mine.unlock()
        raise
    return mine


def replay_spill_files(client: redis.Redis, *, connection: ConnectionSettings, trader_key: str, spill_dir: str | Path,
                       serializer: Any, min_replica_acks: int, replica_ack_timeout_ms: int, timeout_s: float,
                       log: Callable[[], Any]) -> int:
    """
    Replay the spill files nobody alive holds for `trader_key` into Redis through the
    backend's idempotent write path; the number of writes replayed. Raises `SpillFileStale`
    or `SpillFileDamaged` before writing anything, RedisUnavailable when the replay does not
    finish within `timeout_s` seconds (what is left stays in the file for the next start).
    """
    spill = adopt_spill_files(client, spill_dir, trader_key, log)
    writer = Writer(
        client=client, describe=connection.describe(), spill=spill, sync=False, buffer_interval_s=0.0,
        max_pending_writes=1, min_replica_acks=min_replica_acks, replica_ack_timeout_ms=replica_ack_timeout_ms,
        socket_timeout_s=connection.timeout_s, close_timeout_s=connection.timeout_s, max_batch_ops=1000,
        backoff=write_backoff(1.0), serializer=EventEncoder(serializer), listener=CacheListener(),
        stats=CacheStats(), log=log, name=f"replay-{trader_key}",
        # The replayed writes count in this machine's record of what Redis acknowledged (a list
        # they start over must not be expected back at its old length).
        acked=AckedRecord(acked_path(spill_dir, trader_key),
                          {f"{trader_key}:{layout.ORDERS}:": layout.ORDERS, f"{trader_key}:{layout.POSITIONS}:": layout.POSITIONS}),
    )
    try:
        writer.start()
    except VerifyFailed:
        spill.unlock()
        raise
    count = writer.pending()
    applied = writer.wait_applied(timeout_s)
    unreplicated = writer.unreplicated
    left = writer.close()
    if not applied or left > unreplicated:
        raise RedisUnavailable(
            f"the replay of spill file {spill.path} did not finish within {timeout_s:g} s: {left} write(s) stay in it "
            "and are replayed by the next start",
        )
    if left:
        # Applied, so verify sees them; with too few replicas they stay in the file, and the node's
        # backend, which takes the file over, resends them until replicas acknowledge.
        log().warning(
            f"{left} replayed write(s) are in Redis but not yet acknowledged by {min_replica_acks} replica(s): "
            f"they stay in {spill.path} until replicas acknowledge them",
        )
    return count


def _stale_or_unavailable(client: redis.Redis, trader_key: str, path: Path) -> tuple[list[str], int]:
    try:
        return stale_entities(client, trader_key, path), unapplied_events(client, path)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering while checking spill file {path}: {e}") from None


def entities_text(stale: list[str]) -> str:
    """``N entities (first three, and M more)``."""
    shown = ", ".join(stale[:_SHOWN])
    more = f", and {len(stale) - _SHOWN} more" if len(stale) > _SHOWN else ""
    return f"{len(stale)} entit{'y' if len(stale) == 1 else 'ies'} ({shown}{more})"


def _stale_message(path: Path, stale: list[str]) -> str:
    return (
        f"spill file {path} is stale for {entities_text(stale)}: Redis already holds other events where it would "
        "append (another node advanced this trader after the file was written); nothing was replayed and the file "
        "was kept: decide which history is right, then move the file out of the spill directory and start again"
    )
