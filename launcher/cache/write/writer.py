"""
The write path of the resilient cache backend: retained writes, a background writer thread,
idempotent atomic batches, backoff/reconnect, replica acknowledgement and the spill file.

Model
-----
Every facade write becomes one `Op`: a short list of Redis commands that must apply together
(the entity's data, its indexes and its launcher manifest field). `Writer.submit` only appends
the op to an in-memory FIFO (buffered mode) or additionally waits for its acknowledgement
(sync mode). One writer thread takes ops in FIFO order and sends them as a single
``MULTI ... EXEC`` transaction per batch on one connection, optionally followed by
``WAIT min_replica_acks timeout`` on the same connection. An op is released only when its
batch was acknowledged (EXEC reply read, and WAIT satisfied when asked for); until then it is
retained, so a lost connection, a lost reply, a READONLY (demoted master) or a WAIT that fell
short all lead to the same thing: back off (tenacity policy), reconnect (through Sentinel when
configured) and send the same batch again.

Idempotent resends
------------------
Only list appends are not naturally idempotent (SET/SADD/SREM/HSET/HDEL/DEL are assignments,
and batches are never reordered, so applying a batch twice in a row leaves what applying it
once does). The *first* send of a batch this process made cannot find any of its appends
already applied, so it uses plain ``RPUSH``/``RPUSHX`` exactly as the native adapter does and
checks each reply: the list's new length must equal the entity's event count N. Every later send
of the same batch (after a lost connection or reply, READONLY, a short WAIT) and every replay of
spilled writes goes through one Lua script per append instead: append event N only if
``LLEN == N-1``; if the list already holds the same bytes at position N it reports "already
there" (a resend); if the position does not match (e.g. an account whose in-memory events were
purged) it looks for the same bytes near the tail before appending at the end, so a write is
never duplicated and never dropped.

When a list does not hold what memory says (Redis lost acknowledged events - a failover without
``min_replica_acks``, a restart without persistence, FLUSHDB - or an update was written twice),
the list is rewritten from the entity's events in memory (``DEL`` + ``RPUSH`` of its first N
events + manifest, one transaction), with one WARN per batch. Accounts are only rebuilt when
their list is gone altogether (NautilusTrader may purge account events from memory).

Memory bound and spill file
---------------------------
Retained writes are bounded by ``max_pending_writes``: when the in-memory FIFO reaches it (a
long outage), every retained write not yet on disk - the in-flight batch if it came from
memory, then the whole FIFO - is appended to the spill file and fsync'd, on the caller's thread
(one write + fsync per ``max_pending_writes`` writes; payloads were serialized ahead by the
writer thread while it waited out the outage). The file therefore always holds the *oldest*
retained writes, in order: a crash can only lose a suffix (newer writes still in memory), never
a write older than one that survives. The writer drains the file before memory. The file is
replayed on reconnect and, if a process dies with one, by the next instance for the same trader
key before it loads state (see `ResilientCacheDatabase`). A resend of spilled writes is
idempotent for the same reasons as above, so a replay interrupted by a crash is simply replayed
again. Writes are never dropped silently: when ``close()`` cannot reach Redis within its bounded
wait, everything still retained goes to the spill file and one ERROR line says how many writes
and where.

Sync mode and WAIT
------------------
In sync mode the caller waits for its op's sequence number to be acknowledged; with
``min_replica_acks`` > 0 a batch is acknowledged only when ``WAIT`` reports enough replicas, so
the acknowledgement means "on the master and on N replicas". Acknowledged writes survive a
failover when every replica a failover may promote is among the N (set ``min_replica_acks`` to
the number of replicas); until a promoted master has a replica again, writes are applied but not
acknowledged, i.e. retained (and spilled past the memory bound).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import tenacity
from hiredis import pack_command as _pack_tuple

from launcher.cache.listener import CacheListener
from launcher.cache.listener import CacheStats
from launcher.cache.write.resp import exchange
from launcher.cache.write.resp import pack_command
from launcher.cache.write.spill import SpillFile
from launcher.cache.write.spill import encode_record


# -- Lua ------------------------------------------------------------------------------------

# KEYS: list, manifest hash. ARGV: field, n (1-based position of this event), payload,
# create (1: RPUSH semantics, 0: RPUSHX semantics), repairable (1: report a gap, don't write).
APPEND_SCRIPT = b"""
local n = tonumber(ARGV[2])
local len = redis.call('LLEN', KEYS[1])
if len == n - 1 and (len > 0 or ARGV[4] == '1') then
  redis.call('RPUSH', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 0
end
if len >= n and n >= 1 and redis.call('LINDEX', KEYS[1], n - 1) == ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 1
end
if len > 0 and redis.call('LPOS', KEYS[1], ARGV[3], 'RANK', -1, 'MAXLEN', 64) then
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 2
end
if len < n - 1 and ARGV[5] == '1' then
  return -1 - len
end
if len == 0 and ARGV[4] ~= '1' then
  return -1000000000
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], n)
return 3
"""

# Snapshots have no event count: append unless the same bytes are among the last entries.
SNAPSHOT_SCRIPT = b"""
if redis.call('LPOS', KEYS[1], ARGV[1], 'RANK', -1, 'MAXLEN', 64) then
  return 1
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 0
"""

# Removes account events by id, several at a time (the writer coalesces the deletes of one account
# within a batch into one call, see `Writer._pack`): one pass over the list, then LTRIM of the
# removed events that are its head (retention: the oldest go), tombstones (LSET) + one LREM for
# the others (entry by entry LREM in the unlikely case that an entry equals the tombstone).
# Every entry whose decoded ``event_id`` is one of the ids goes (copies included); nothing else
# does. With canonical UUID ids (NautilusTrader's), only candidates are decoded: entries where
# some ``event_id`` key is followed (past separator bytes: msgpack's string header, JSON's
# ``":"``) by one of the ids - both serializers write the key and a UUID unescaped. Other ids:
# every entry is decoded. Idempotent (a resend finds nothing left to remove).
# KEYS: account list, manifest hash. ARGV: field, encoding ("json"/"msgpack"), event id, ...
DELETE_EVENT_SCRIPT = b"""
local UUID = '%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x'
local AFTER_KEY = '^[^%w%-]*(' .. UUID .. ')'
local TOMB = '\\255launcher:deleted-account-event\\255'
local want = {}
local uuids = true
for i = 3, #ARGV do
  local id = ARGV[i]
  want[id] = true
  if string.len(id) ~= 36 or not string.find(id, '^' .. UUID .. '$') then
    uuids = false
  end
end
local json = ARGV[2] == 'json'
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local gone = {}
local tomb_in_use = false
for i = 1, #items do
  local item = items[i]
  if item == TOMB then
    tomb_in_use = true
  end
  local candidate = not uuids
  local init = 1
  while uuids do
    local _, last = string.find(item, 'event_id', init, true)
    if not last then
      break
    end
    local id = string.match(item, AFTER_KEY, last + 1)
    if id and want[id] then
      candidate = true
      break
    end
    init = last + 1
  end
  if candidate then
    local ok, decoded
    if json then
      ok, decoded = pcall(cjson.decode, item)
    else
      ok, decoded = pcall(cmsgpack.unpack, item)
    end
    if ok and type(decoded) == 'table' and type(decoded['event_id']) == 'string' and want[decoded['event_id']] then
      gone[#gone + 1] = i
    end
  end
end
local removed = #gone
if removed == 0 then
  return 0
end
local head = 0
while head < removed and gone[head + 1] == head + 1 do
  head = head + 1
end
if tomb_in_use then
  for k = 1, removed do
    redis.call('LREM', KEYS[1], 1, items[gone[k]])
  end
else
  if head > 0 then
    redis.call('LTRIM', KEYS[1], head, -1)
  end
  if head < removed then
    for k = head + 1, removed do
      redis.call('LSET', KEYS[1], gone[k] - 1 - head, TOMB)
    end
    redis.call('LREM', KEYS[1], 0, TOMB)
  end
end
redis.call('HSET', KEYS[2], ARGV[1], redis.call('LLEN', KEYS[1]))
return removed
"""

APPEND_SHA = hashlib.sha1(APPEND_SCRIPT).hexdigest().encode()  # noqa: S324 (Redis script id)
SNAPSHOT_SHA = hashlib.sha1(SNAPSHOT_SCRIPT).hexdigest().encode()  # noqa: S324
DELETE_EVENT_SHA = hashlib.sha1(DELETE_EVENT_SCRIPT).hexdigest().encode()  # noqa: S324

GAP_NO_LIST = -1_000_000_000

# Command tags inside an op (anything else: a raw Redis command whose name is bytes).
TAG_APPEND = "A"  # ("A", list_key, manifest_key, field, n, payload, create)
TAG_SNAPSHOT = "S"  # ("S", list_key, payload)
TAG_DELETE_EVENT = "D"  # ("D", list_key, manifest_key, field, event_id, encoding)


_PREAMBLE = b"".join(
    pack_command((b"SCRIPT", b"LOAD", script)) for script in (APPEND_SCRIPT, SNAPSHOT_SCRIPT, DELETE_EVENT_SCRIPT)
)
_PREAMBLE_REPLIES = 3
_MULTI = pack_command((b"MULTI",))
_EXEC = pack_command((b"EXEC",))

_SERVER_STATE_ERRORS = ("READONLY", "OOM", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "BUSY", "CLUSTERDOWN")


ACCOUNT_KINDS = frozenset({"add_account", "update_account"})
_GUARDED = object()  # marks results of ops sent one by one through the script


# Raw commands of the facade whose keys are all of their arguments after the name (DEL) or
# only the first one (the rest are members/fields/values).
_KEYS_ONLY = frozenset({b"DEL", b"UNLINK"})
_FIRST_KEY = frozenset({b"SET", b"SADD", b"SREM", b"HSET", b"HDEL", b"RPUSH", b"RPUSHX", b"LPUSH"})


# Assignments that can be coalesced (see `Writer._pack`): command -> family, for exactly this
# many arguments (one member/field; SET without options).
_SET_FAMILY, _HASH, _STRING = object(), object(), object()
_ASSIGNMENTS = {b"SADD": (_SET_FAMILY, 3), b"SREM": (_SET_FAMILY, 3), b"HSET": (_HASH, 4), b"HDEL": (_HASH, 3),
                b"SET": (_STRING, 3)}
_HDEL = object()  # a hash field's last assignment was a delete


def _text(key: Any) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, (bytes, bytearray, memoryview)) else str(key)


class _Run:
    """
    The assignments of one batch to one key (one family) since the last command that may
    observe or change that key otherwise: the last value of each member/field, in first-seen
    order. Members are compared as text (a str and the bytes of the same text are one Redis
    member); the spelling first seen is the one sent.
    """

    __slots__ = ("family", "key", "members", "spelling", "op")

    def __init__(self, family: object, key: Any) -> None:
        self.family = family
        self.key = key
        self.members: dict[Any, Any] = {}  # member text -> True/False (SADD/SREM), value or _HDEL, SET value
        self.spelling: dict[str, Any] | None = None  # member text -> the bytes first seen, when not str
        self.op = 0  # index of the last op that assigned (named when Redis rejects the command)

    def commands(self) -> list[tuple]:
        """The run's net effect: one variadic command per kind of assignment (they commute)."""
        key, members, spelling = self.key, self.members, self.spelling
        if self.family is _STRING:
            return [(b"SET", key, members[None])]
        if spelling is not None:
            members = {spelling.get(m, m): v for m, v in members.items()}
        if self.family is _SET_FAMILY:
            added = [m for m, v in members.items() if v]
            removed = [m for m, v in members.items() if not v]
            return ([(b"SADD", key, *added)] if added else []) + ([(b"SREM", key, *removed)] if removed else [])
        assigned = [x for f, v in members.items() if v is not _HDEL for x in (f, v)]
        deleted = [f for f, v in members.items() if v is _HDEL]
        return ([(b"HSET", key, *assigned)] if assigned else []) + ([(b"HDEL", key, *deleted)] if deleted else [])


def _run_keys(cmd: Any) -> tuple | None:
    """The keys `cmd` (not a coalescible assignment) may touch; None when they are not known."""
    tag = cmd[0]
    if tag == TAG_APPEND or tag == TAG_DELETE_EVENT:  # list + manifest (script or RPUSH + HSET)
        return (cmd[1], cmd[2])
    if tag == TAG_SNAPSHOT or tag in _FIRST_KEY:
        return (cmd[1],)
    if tag in _KEYS_ONLY:
        return cmd[1:]
    return None  # FLUSHDB or anything whose keys are not known here


def _close_delete_groups(deletes: dict, cmd: tuple) -> None:
    """Close the open account-event delete groups that `cmd` may not commute with."""
    tag = cmd[0]
    if tag == TAG_APPEND:  # list, manifest field
        touched, fields = (cmd[1],), ((cmd[2], cmd[3]),)
    elif tag == TAG_SNAPSHOT:
        touched, fields = (cmd[1],), ()
    elif tag == TAG_DELETE_EVENT:
        touched, fields = (cmd[1],), ((cmd[2], cmd[3]),)
    elif tag in _KEYS_ONLY:
        touched, fields = cmd[1:], ()
    elif tag in _FIRST_KEY:
        touched, fields = cmd[1:2], ()
    else:  # FLUSHDB or anything whose keys are not known here
        deletes.clear()
        return
    for key in [k for k, (_, target, _) in deletes.items()
                if target[0] in touched or target[1] in touched or (target[1], target[2]) in fields]:
        del deletes[key]


class NotAcknowledged(Exception):
    """The batch was applied but not (yet) acknowledged by enough replicas."""


class ServerUnavailable(Exception):
    """The server refused the batch for a transient reason (READONLY, OOM, LOADING, ...)."""


class _Stopped(Exception):
    """The writer is closing and its bounded wait is over."""


_RETRIABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    NotAcknowledged,
    ServerUnavailable,
    OSError,
)


class Lazy:
    """A payload serialized by the writer thread (immutable objects only: events, instruments)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


class Op:
    """
    One facade write: commands applied atomically, retained until acknowledged.

    A retained write is one object the cyclic GC tracks, however many commands it has: its
    commands are a tuple of tuples of str/bytes/int (which the GC stops tracking at its first
    pass), and the event still to serialize into its list append is held by the op itself
    (``event``; the append's payload slot is None until then). Ops outlive the young
    generations (they wait for the buffer interval and the round trip), so every tracked
    object per write is promoted to the oldest generation and makes full collections, which
    scan the node's whole heap, come sooner.
    """

    __slots__ = ("seq", "kind", "cmds", "entity", "t0", "epoch", "lazy", "event")

    def __init__(self, kind: str, cmds: tuple | list, entity: Any = None, lazy: bool = False, event: Any = None) -> None:
        self.kind = kind
        self.cmds = cmds
        self.entity = entity  # the order/position whose events can repair a gap
        self.event = event  # serialized into the TAG_APPEND whose payload is None
        self.lazy = lazy or event is not None  # a payload is still to serialize (`event` or `Lazy` arguments)
        self.seq = 0
        self.t0 = 0.0
        self.epoch = b""

    def materialize(self, serializer: Any) -> None:
        """Serialize the event and any `Lazy` arguments (idempotent)."""
        if not self.lazy:
            return
        # The writer thread and a spilling caller may both get here for one op: `event` is read
        # before `cmds` here and cleared after `cmds` is replaced below, so whoever sees no event
        # also sees the serialized commands.
        event = self.event
        cmds = self.cmds
        out = None
        if event is not None:  # the facade's event writes (orders, positions, accounts)
            payload = serializer.serialize(event)
            first = cmds[0]
            if first[0] == TAG_APPEND and first[5] is None:  # ("A", list, manifest, field, n, payload, create)
                self.cmds = ((TAG_APPEND, first[1], first[2], first[3], first[4], payload, first[6]), *cmds[1:])
                self.event = None
                self.lazy = False
                return
            for j, cmd in enumerate(cmds):
                if cmd[0] == TAG_APPEND and cmd[5] is None:
                    out = list(cmds)
                    out[j] = (TAG_APPEND, cmd[1], cmd[2], cmd[3], cmd[4], payload, cmd[6])
                    break
        else:  # `Lazy` arguments (currencies, instruments, synthetics)
            for j, cmd in enumerate(cmds):
                if Lazy in map(type, cmd):  # rebuild only the commands holding a payload
                    if out is None:
                        out = list(cmds)
                    out[j] = tuple(serializer.serialize(a.obj) if type(a) is Lazy else a for a in cmd)
        if out is not None:
            self.cmds = tuple(out)
        self.event = None
        self.lazy = False

    def record(self, serializer: Any) -> bytes:
        try:
            self.materialize(serializer)
        except Exception:  # noqa: BLE001 (same op is dropped, loudly, when it is sent)
            self.cmds, self.lazy, self.event = (), False, None
        return encode_record([self.epoch, self.seq, self.kind, self.cmds])

    @classmethod
    def from_record(cls, value: list) -> Op:
        epoch, seq, kind, cmds = value
        op = cls(kind, cmds)
        op.epoch = epoch
        op.seq = seq
        return op


@dataclass
class _Batch:
    ops: list[Op]
    from_spill: bool = False  # its ops are records of the spill file (read from it, or spilled in flight)
    spill_end: int = 0  # file offset after its records
    spill_records: int = 0
    replay: bool = False  # read from the spill file
    attempts: int = 0
    guarded: bool = False  # always use the idempotent append script (repairs)


class Writer:
    """
    Owns the retained writes and the writer thread (see the module docstring).

    Parameters
    ----------
    client : redis.Redis
        A pooled client (plain or Sentinel-managed); the writer keeps one of its connections.
    describe : str
        Log-safe description of the server (no password).
    sync : bool
        Sync durability: `submit` returns after Redis acknowledged the op.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        describe: str,
        spill: SpillFile,
        sync: bool,
        buffer_interval_s: float,
        max_pending_writes: int,
        min_replica_acks: int,
        replica_ack_timeout_ms: int,
        socket_timeout_s: float,
        close_timeout_s: float,
        max_batch_ops: int,
        max_backoff_s: float,
        serializer: Any,
        listener: CacheListener,
        stats: CacheStats,
        log: Callable[[], Any],
        name: str,
    ) -> None:
        self._client = client
        self._describe = describe
        self._spill = spill
        self._sync = sync
        self._interval = max(0.0, buffer_interval_s)
        self._max_pending = max(1, int(max_pending_writes))
        self._min_acks = max(0, int(min_replica_acks))
        self._ack_timeout_ms = max(1, int(replica_ack_timeout_ms))
        self._socket_timeout_s = socket_timeout_s
        self._close_timeout_s = close_timeout_s
        self._max_batch = max(1, int(max_batch_ops))
        self._serializer = serializer
        self._listener = listener
        self.stats = stats
        self._log = log
        self._name = name

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # writer waits for work / backoff
        self._acked = threading.Condition(self._lock)  # sync callers wait for acknowledgement
        self._queue: collections.deque[Op] = collections.deque()
        self._inflight: _Batch | None = None
        self._seq = 0
        self._acked_seq = 0
        self._epoch = os.urandom(8)
        self._idle = False
        self._urgent = False
        self._closing = False
        self._close_deadline = 0.0
        self._dead: BaseException | None = None
        self._conn: Any = None
        self._address: tuple[str, int] | None = None
        self._outage_start: float | None = None
        self._spilled_episode = 0  # writes spilled since the spill file was last drained (one WARN per episode)
        self._outage_error = ""
        self.coalesced_commands = 0  # assignment commands `_pack` did not send (superseded, or merged into a variadic one)
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RETRIABLE),
            wait=tenacity.wait_exponential_jitter(multiplier=min(0.05, max_backoff_s), max=max_backoff_s, jitter=min(0.05, max_backoff_s)),
            stop=self._should_stop,
            sleep=self._backoff_sleep,
            before_sleep=self._on_retry,
            reraise=True,
        )

    # -- caller side --------------------------------------------------------------------------

    def start(self) -> None:
        if self._spill.exists:
            with self._lock:
                count = self._spill.open()
                if count == 0:
                    self._spill.remove()
                self._refresh_pending_locked()
            if self._spill.torn_records:
                self._log().warning(
                    f"Spill file {self._spill.path}: ignored {self._spill.torn_records} torn record(s) "
                    "at its end (a crash during an append; those writes were never reported written)",
                )
            if count:
                self._log().warning(
                    f"Found {count} spilled write(s) from an earlier run in {self._spill.path}: replaying them first",
                )
        self._thread.start()

    def submit(self, op: Op, wait: bool | None = None) -> int:
        """
        Retain `op` (hot path). In sync mode (or with ``wait=True``) return only once Redis
        acknowledged it; ``wait=False`` never blocks (bookkeeping writes such as the manifest
        meta, which must not hang a constructor or a bounded close()).
        """
        wait = self._sync if wait is None else wait
        op.t0 = time.monotonic()
        with self._lock:
            self._seq += 1
            op.seq = self._seq
            op.epoch = self._epoch
            self._queue.append(op)
            self.stats.writes_enqueued += 1
            if self._dead is not None or self._closing and not self._thread.is_alive() or len(self._queue) >= self._max_pending:
                self._spill_queue_locked()
            if wait:
                self._urgent = True
                if self._idle:
                    self._work.notify()
                while self._acked_seq < op.seq:
                    if self._dead is not None or not self._thread.is_alive():
                        self._spill_queue_locked()
                        raise RuntimeError(
                            f"cache writer stopped ({self._dead!r}); write spilled to {self._spill.path}",
                        )
                    self._acked.wait(1.0)
            elif self._idle and (self._sync or self._interval == 0.0 or len(self._queue) == 1
                                 or len(self._queue) >= self._max_batch):
                self._work.notify()  # idle writer: start the buffer interval (or send now)
        return op.seq

    def request_flush(self) -> None:
        """Skip the buffer interval: send what is retained now."""
        with self._lock:
            self._urgent = True
            if self._idle:
                self._work.notify()

    def wait_acked(self, seq: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._urgent = True
            if self._idle:
                self._work.notify()
            while self._acked_seq < seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._dead is not None:
                    return False
                self._acked.wait(min(remaining, 0.5))
        return True

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until nothing is retained (memory and spill file); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._pending_locked() > 0:
                self._urgent = True
                if self._idle:
                    self._work.notify()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._dead is not None:
                    return False
                self._acked.wait(min(remaining, 0.5))
        return True

    @property
    def submitted(self) -> int:
        """Writes submitted so far (a counter; any change means the stored state may differ)."""
        return self._seq

    def pending(self) -> int:
        with self._lock:
            return self._pending_locked()

    def retained_ops(self) -> list[Op]:
        """The in-memory retained ops, oldest first (a copy; for diagnostics and the benchmark)."""
        with self._lock:
            return list(self._queue)

    def encode_batch(self, ops: list[Op]) -> tuple[bytes, int]:
        """
        One batch of `ops` exactly as the writer would send it first (serialized, coalesced,
        MULTI/EXEC) and the number of replies it gets; sends nothing (the benchmark's cost
        breakdown).
        """
        data, ncmds, _, pre = self._pack(ops, False)
        return data, self._replies(ncmds, pre)

    def refresh_stats(self) -> None:
        """Bring the pending/spilled gauges of `stats` up to date."""
        with self._lock:
            self._refresh_pending_locked()

    def close(self, drop_kinds: tuple[str, ...] = ()) -> int:
        """
        Flush everything retained (bounded by `close_timeout_s`), stop the thread, and return
        the number of writes left in the spill file (0 when everything reached Redis). Ops of
        `drop_kinds` are not spilled when Redis cannot be reached (e.g. the clean-stop marker).
        """
        with self._lock:
            if self._closing:
                return self._spill.unread
            self._closing = True
            self._drop_kinds = drop_kinds
            self._close_deadline = time.monotonic() + self._close_timeout_s
            self._work.notify_all()
        self._thread.join(self._close_timeout_s + 5.0)
        with self._lock:
            if self._thread.is_alive() or self._pending_locked():
                self._spill_all_locked(drop_kinds)
            left = self._spill.unread
            self._spill.close()
            self._spill.unlock()  # a file left behind now belongs to the next instance
        self._release_connection()
        return left

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                try:
                    self._deliver(batch)
                except _RETRIABLE + (_Stopped,) as e:
                    # Closing and the bounded wait is over: keep everything in the spill file.
                    with self._lock:
                        self._spill_all_locked(getattr(self, "_drop_kinds", ()))
                    self._outage_error = self._outage_error or repr(e)
                    break
        except BaseException as e:  # a bug: never lose the writes because of it
            self._dead = e
            self._log().error(f"Cache writer failed: {e!r}\n{traceback.format_exc()}")
            with self._lock:
                self._spill_all_locked(())
                self._acked.notify_all()
        finally:
            with self._lock:
                self._acked.notify_all()

    def _next_batch(self) -> _Batch | None:
        with self._lock:
            while True:
                if self._closing and time.monotonic() >= self._close_deadline:
                    return None
                if self._spill.unread:
                    values, end = self._spill.read(self._max_batch)
                    ops = [Op.from_record(v) for v in values]
                    self._inflight = _Batch(ops, from_spill=True, spill_end=end, spill_records=len(ops), replay=True)
                    return self._inflight
                if self._queue:
                    wait_s = 0.0
                    if not (self._sync or self._urgent or self._closing) and len(self._queue) < self._max_batch:
                        wait_s = self._interval - (time.monotonic() - self._queue[0].t0)
                    if wait_s <= 0:
                        n = min(len(self._queue), self._max_batch)
                        ops = [self._queue.popleft() for _ in range(n)]
                        if not self._queue:
                            self._urgent = False
                        self._inflight = _Batch(ops)
                        return self._inflight
                    self._idle = True
                    self._work.wait(wait_s)
                    self._idle = False
                    continue
                self._urgent = False
                if self._closing:
                    return None
                self._idle = True
                self._work.wait(1.0)
                self._idle = False

    def _deliver(self, batch: _Batch) -> None:
        for attempt in self._retrying:
            with attempt:
                if batch.attempts:
                    self.stats.resent_batches += 1
                batch.attempts += 1
                # First send of writes made by this process: nothing of them can be in Redis
                # yet, so plain RPUSH/RPUSHX (as the native adapter) and check the new length.
                # A resend, or a replay of spilled writes, uses the idempotent script.
                guarded = batch.guarded or batch.replay or batch.attempts > 1
                results = self._send(batch.ops, guarded)
        self._acknowledge(batch, results, guarded)

    def _should_stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._closing and time.monotonic() >= self._close_deadline

    def _backoff_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._prepare_retained(deadline)
        with self._lock:
            if self._closing:
                deadline = min(deadline, self._close_deadline)
            remaining = deadline - time.monotonic()
            if remaining > 0:
                self._work.wait(remaining)

    def _prepare_retained(self, deadline: float) -> None:
        """
        While waiting out an outage, serialize retained payloads ahead of time, so that a
        spill (on the caller's thread) does not have to serialize a whole FIFO at once.
        """
        self._serialize_ahead(None, deadline)

    def _prepare_next(self) -> None:
        """While a batch is in flight (Redis executing it, the GIL free), serialize the next one's payloads."""
        self._serialize_ahead(self._max_batch, None)

    def _serialize_ahead(self, limit: int | None, deadline: float | None) -> None:
        """
        Materialize the lazy ops among the first `limit` retained ones (all: None), until
        `deadline` (monotonic; None: no limit). Idempotent; a payload that fails here is left
        for `_pack`, which drops it loudly.
        """
        with self._lock:
            todo = [op for op in itertools.islice(self._queue, limit) if op.lazy]
        serializer = self._serializer
        for op in todo:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                op.materialize(serializer)
            except Exception:  # noqa: BLE001
                pass

    def _on_retry(self, retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        self._drop_connection()
        if self._outage_start is None:
            self._outage_start = time.monotonic()
            self._outage_error = repr(error)
            pending = self.pending()
            self.stats.outages += 1
            self.stats.outage_active = True
            what = "not acknowledging" if isinstance(error, (NotAcknowledged, ServerUnavailable)) else "unreachable"
            self._log().warning(
                f"Redis {what} ({self._describe}): {error}; {pending} write(s) retained, "
                "retrying with backoff (nothing is dropped)",
            )
            self._notify("on_outage_start", pending, str(error))

    # -- one round trip ---------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._client.connection_pool.get_connection()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            except Exception:  # noqa: BLE001 (best effort on a broken socket)
                pass

    def _release_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
                self._client.connection_pool.release(conn)
            except Exception:  # noqa: BLE001
                pass

    def _pack(self, ops: list[Op], guarded: bool = True) -> tuple[bytes, int, list[tuple[int, int]], int]:
        """
        The batch as RESP, its command count, the (op, command) of each, and preamble replies.

        Two rewrites, neither of which changes what any reader can observe (nobody sees inside
        one MULTI/EXEC, and the replies of the rewritten commands are not inspected):

        * Assignments to set members / hash fields / strings (single-member SADD/SREM,
          single-field HSET/HDEL, plain SET, and the manifest HSET of each first-send append)
          are gathered per key into a run (`_Run`) and sent as its net effect: the last
          assignment of each member, as one variadic command per kind (SADD, SREM, HSET, HDEL,
          SET). A run ends, and is sent, just before any command that may observe or change its
          key otherwise (a list op, a script, DEL, a command of another family on the key;
          FLUSHDB or any command whose keys are unknown ends every run), or before EXEC. Moving
          an assignment later to that point changes nothing, since no command in between
          touches its key. List appends are all kept, in order. (A batch of order updates
          sends one SADD/SREM per index set and one manifest HSET instead of ~6 commands each.)
        * Deletes of account events are coalesced per account (list key) into the call of the
          first one: {list key: (its slot in `parts`, (key, manifest, field, encoding), ids)}.
          A group closes at any other command that may touch its list or manifest field (or
          whose keys are unknown, e.g. FLUSHDB): the ids join a call moved earlier only past
          commands on other keys, which commute with it. Runs on the list or manifest are sent
          before a group's call, since a delete ends them.
        """
        parts = [b"", _MULTI]  # the SCRIPT LOAD preamble goes first when a script is used
        scripts = False
        append = parts.append
        index: list = []  # (op index, command index; -1 for a run's command) of every command, in order
        index_append = index.append
        serializer = self._serializer
        deletes: dict[Any, tuple[int, tuple, list]] = {}
        groups: list[tuple[int, tuple, list]] = []
        runs: dict[str, _Run] = {}  # key text -> its open run
        runs_get = runs.get
        runs_pop = runs.pop
        assignments_get = _ASSIGNMENTS.get
        pack = _pack_tuple
        assigned = 0

        def send_run(run: _Run) -> None:
            for command in run.commands():
                append(pack(command))
                index_append((run.op, -1))

        def assign(i: int, family: object, key: Any, member: Any, value: Any) -> None:
            text = key if type(key) is str else _text(key)
            run = runs_get(text)
            if run is None or run.family is not family:
                if run is not None:
                    send_run(run)
                run = runs[text] = _Run(family, key)
            if type(member) is not str and member is not None:
                spelled, member = member, _text(member)
                if run.spelling is None:
                    run.spelling = {}
                run.spelling.setdefault(member, spelled)
            run.members[member] = value
            run.op = i

        for i, op in enumerate(ops):
            if op.lazy:
                try:
                    op.materialize(serializer)
                except Exception as e:  # an object the serializer cannot handle: a bug upstream
                    self.stats.command_errors += 1
                    self._log().error(f"Dropped cache write {op.kind}: its payload cannot be serialized: {e!r}")
                    op.cmds, op.lazy, op.entity, op.event = (), False, None, None
            repairable = b"1" if op.entity is not None and op.kind not in ACCOUNT_KINDS else b"0"
            for j, cmd in enumerate(op.cmds):
                tag = cmd[0]
                if deletes and tag != TAG_DELETE_EVENT:
                    _close_delete_groups(deletes, cmd)
                assignment = assignments_get(tag)
                if assignment is not None and len(cmd) == assignment[1]:
                    family = assignment[0]
                    assigned += 1
                    if family is _SET_FAMILY:
                        member, value = cmd[2], tag == b"SADD"
                    elif family is _HASH:
                        member, value = cmd[2], cmd[3] if tag == b"HSET" else _HDEL
                    else:
                        member, value = None, cmd[2]
                    key = cmd[1]
                    run = runs_get(key) if type(key) is str else None
                    if run is not None and run.family is family and (type(member) is str or member is None):
                        run.members[member] = value  # the common case, inline: an open run, str names
                        run.op = i
                    else:
                        assign(i, family, key, member, value)
                    continue
                if tag == TAG_APPEND and not guarded:
                    # RPUSH/RPUSHX (touches the list), then the manifest HSET: an assignment.
                    run = runs_pop(cmd[1] if type(cmd[1]) is str else _text(cmd[1]), None) if runs else None
                    if run is not None:
                        send_run(run)
                    append(pack((b"RPUSH" if cmd[6] else b"RPUSHX", cmd[1], cmd[5])))
                    index_append((i, j))
                    assigned += 1
                    key, field = cmd[2], cmd[3]
                    run = runs_get(key) if type(key) is str else None
                    if run is not None and run.family is _HASH and type(field) is str:
                        run.members[field] = cmd[4]
                        run.op = i
                    else:
                        assign(i, _HASH, key, field, cmd[4])
                    continue
                if runs:
                    keys = _run_keys(cmd)
                    if keys is None:
                        for run in runs.values():
                            send_run(run)
                        runs.clear()
                    else:
                        for key in keys:
                            run = runs_pop(key if type(key) is str else _text(key), None)
                            if run is not None:
                                send_run(run)
                if tag == TAG_APPEND:
                    scripts = True
                    append(pack_command((b"EVALSHA", APPEND_SHA, b"2", cmd[1], cmd[2], cmd[3], cmd[4], cmd[5], cmd[6],
                                         repairable)))
                elif tag == TAG_SNAPSHOT:
                    scripts = True
                    append(pack_command((b"EVALSHA", SNAPSHOT_SHA, b"1", cmd[1], cmd[2])))
                elif tag == TAG_DELETE_EVENT:
                    scripts = True
                    target = (cmd[1], cmd[2], cmd[3], cmd[5])
                    group = deletes.get(cmd[1])
                    if group is not None and group[1] == target:
                        group[2].append(cmd[4])
                        continue  # rides on the group's call (one reply, mapped to its first op)
                    if group is not None or any(g[1][1:3] == target[1:3] for g in deletes.values()):
                        _close_delete_groups(deletes, cmd)
                    group = (len(parts), target, [cmd[4]])
                    deletes[cmd[1]] = group
                    groups.append(group)
                    append(b"")  # packed once the group is complete
                else:
                    append(pack(cmd) if type(cmd) is tuple else pack_command(cmd))
                index_append((i, j))
        for run in runs.values():
            send_run(run)
        for slot, (key, manifest, field, encoding), ids in groups:
            parts[slot] = pack_command((b"EVALSHA", DELETE_EVENT_SHA, b"2", key, manifest, field, encoding, *ids))
        self.coalesced_commands += assigned - sum(1 for i, j in index if j < 0)
        append(_EXEC)
        if self._min_acks:
            append(pack_command((b"WAIT", self._min_acks, self._ack_timeout_ms)))
        if scripts:
            # Loaded on every batch that uses one: a new master after a failover, or a server
            # restarted without its script cache, must never answer NOSCRIPT inside EXEC.
            parts[0] = _PREAMBLE
        return b"".join(parts), len(index), index, _PREAMBLE_REPLIES if scripts else 0

    def _round(self, ops: list[Op], guarded: bool = True) -> tuple[list, list, Any, Any, list]:
        """One MULTI/EXEC (+WAIT) round trip: (queued replies, exec result, wait result, index, ops)."""
        data, ncmds, index, pre = self._pack(ops, guarded)
        conn = self._connection()
        expected = self._replies(ncmds, pre)
        timeout = self._socket_timeout_s + self._ack_timeout_ms / 1000.0 if self._min_acks else None
        overlapped = [0.0]  # preparing the next batch is not part of the round trip

        def prepare_next() -> None:
            started = time.monotonic()
            self._prepare_next()
            overlapped[0] = time.monotonic() - started

        t0 = time.monotonic()
        replies = exchange(conn, data, expected, timeout, prepare_next)
        rtt = time.monotonic() - t0 - overlapped[0]
        self._round_trip("write_batch", rtt)
        self.stats.last_batch_round_trip_s = rtt
        queued = replies[pre + 1 : pre + 1 + ncmds]
        results = replies[pre + 1 + ncmds]
        wait = replies[-1] if self._min_acks else None
        for reply in replies[: pre + 1]:  # SCRIPT LOADs and MULTI
            if isinstance(reply, Exception):
                # Scripts unavailable (ACL, scripting disabled) would make appends fail inside
                # EXEC: keep everything retained and say so instead.
                raise ServerUnavailable(f"cannot prepare the write batch: {reply}")
        return queued, results, wait, index, ops

    def _replies(self, ncmds: int, pre: int) -> int:
        """Replies to a packed batch: preamble, MULTI, one per queued command, EXEC (, WAIT)."""
        return pre + 1 + ncmds + 1 + (1 if self._min_acks else 0)

    def _check_wait(self, wait: Any) -> None:
        if wait is None:
            return
        if isinstance(wait, Exception):
            raise ServerUnavailable(f"WAIT failed: {wait}")
        if int(wait) < self._min_acks:
            raise NotAcknowledged(f"WAIT: {int(wait)} of {self._min_acks} replica(s) acknowledged")

    @staticmethod
    def _refusals(queued: list, results: Any) -> list[Exception]:
        errors = [r for r in queued if isinstance(r, Exception)]
        if isinstance(results, Exception):
            errors.append(results)
        for e in errors:
            if isinstance(e, redis.exceptions.ReadOnlyError) or str(e).startswith(_SERVER_STATE_ERRORS):
                raise ServerUnavailable(str(e))
        return errors

    def _send(self, ops: list[Op], guarded: bool = True) -> list:
        queued, results, wait, index, _ = self._round(ops, guarded)
        errors = self._refusals(queued, results)
        self._check_wait(wait)
        if errors:
            # A command Redis refuses outright (a bug, not an outage): isolate it. (Nothing of
            # the refused transaction was applied; the isolated sends use the idempotent path.)
            return self._send_isolated(ops, errors)
        self._note_address(self._connection())
        return self._map_results(ops, index, results)

    def _send_isolated(self, ops: list[Op], errors: list) -> list:
        """Send each op alone; drop (loudly) only the ops Redis refuses to queue."""
        self._log().error(
            f"Redis refused a cache write batch ({len(ops)} writes): {[str(e) for e in errors][:3]}; "
            "retrying write by write",
        )
        merged: list = [_GUARDED] + [None] * len(ops)
        for i, op in enumerate(ops):
            queued, results, wait, index, _ = self._round([op], True)
            refused = self._refusals(queued, results)
            self._check_wait(wait)
            if refused:
                self.stats.command_errors += 1
                self._log().error(f"Dropped cache write {op.kind} that Redis refuses: {[str(e) for e in refused]}")
                continue
            merged[i + 1] = self._map_results([op], index, results)[0]
        self._note_address(self._connection())
        return merged

    def _map_results(self, ops: list[Op], index: list[tuple[int, int]], results: list) -> list:
        """Per op, the (command index, reply) of its appends; rejected commands are logged."""
        per_op: list = [None] * len(ops)
        errors = any(issubclass(t, Exception) for t in set(map(type, results)))  # one C pass
        cmds = [op.cmds for op in ops]
        for (i, j), result in zip(index, results):
            if errors and isinstance(result, Exception):
                self.stats.command_errors += 1
                self._log().error(f"Redis rejected a command of cache write {ops[i].kind}: {result}")
                continue
            if j >= 0 and cmds[i][j][0] == TAG_APPEND:
                found = per_op[i]
                if found is None:
                    per_op[i] = [(j, result)]
                else:
                    found.append((j, result))
        return per_op

    def _note_address(self, conn: Any) -> None:
        address = (getattr(conn, "host", None), getattr(conn, "port", None))
        if address != self._address:
            old, self._address = self._address, address
            self.stats.server_address = address
            if old is not None:
                self.stats.failovers_followed += 1
                self._log().warning(f"Cache writes now go to {address[0]}:{address[1]} (was {old[0]}:{old[1]})")
                self._notify("on_failover", old, address)
            self._notify("on_reconnect", address)

    def _round_trip(self, operation: str, seconds: float) -> None:
        self.stats.round_trip_s[operation] = seconds
        self._notify("on_round_trip", operation, seconds)

    # -- after acknowledgement ------------------------------------------------------------------

    def _acknowledge(self, batch: _Batch, results: list, guarded: bool) -> None:
        if results and results[0] is _GUARDED:  # isolated sends used the script
            results, guarded = results[1:], True
        repairs = self._inspect(batch.ops, results, guarded)
        now = time.monotonic()
        with self._lock:
            if batch.from_spill:
                self._spill.advance(batch.spill_end, batch.spill_records)
                if batch.replay:
                    self.stats.replayed_total += len(batch.ops)
            max_seq = 0
            for op in batch.ops:
                if op.epoch == self._epoch and op.seq > max_seq:
                    max_seq = op.seq
            if max_seq > self._acked_seq:
                self._acked_seq = max_seq
            self._inflight = None
            spilled = self._spilled_episode
            if batch.from_spill and self._spill.unread == 0:
                self._spill.remove()
                self._spilled_episode = 0
            self.stats.writes_acknowledged += sum(1 for op in batch.ops if op.kind != "repair")
            self.stats.batches += 1
            pending = self._refresh_pending_locked()
            self._acked.notify_all()
        if self._outage_start is not None:
            outage = now - self._outage_start
            self._outage_start = None
            self.stats.outage_active = False
            self.stats.last_outage_s = outage
            self.stats.reconnects += 1
            resent = pending + len(batch.ops)
            self._log().info(
                f"Redis writes resumed ({self._describe}) after a {outage:.2f}s outage: "
                f"{resent} retained write(s) re-sent" + (f" ({spilled} through the spill file)" if spilled else ""),
            )
            self._notify("on_outage_end", resent, outage)
        if batch.replay:
            self._notify("on_replay", len(batch.ops), str(self._spill.path))
        self._notify("on_batch_acknowledged", len(batch.ops), sum(len(op.cmds) for op in batch.ops), self.stats.last_batch_round_trip_s)
        self._latency(batch.ops, now)
        self._notify("on_pending", pending)
        if repairs:
            self._deliver(_Batch(repairs, guarded=True))

    def _latency(self, ops: list[Op], now: float) -> None:
        if type(self._listener) is CacheListener:
            return
        worst: dict[str, list] = {}
        for op in ops:
            if op.t0:
                entry = worst.setdefault(op.kind, [0, 0.0])
                entry[0] += 1
                entry[1] = max(entry[1], now - op.t0)
        for kind, (count, latency) in worst.items():
            self._notify("on_write_latency", kind, count, latency)

    def _inspect(self, ops: list[Op], results: list, guarded: bool) -> list[Op]:
        """
        Check every append's outcome. Plain appends (first send) report the list's new length,
        which must be the entity's event count; the script (resends, replays) reports a code.
        Lists whose content no longer matches the entity - Redis lost events (failover without
        replica acknowledgement, a restart without persistence, FLUSHDB) or holds one twice -
        are rewritten from the entity's events in memory when it is at hand.
        """
        suspect: dict[str, int] = {}  # list key -> index of the first op that revealed it
        missing_lists: list[str] = []
        for i, op_results in enumerate(results):
            if not op_results:
                continue
            op = ops[i]
            for j, reply in op_results:
                cmd = op.cmds[j]
                n = int(cmd[4])
                value = int(reply)
                if guarded:
                    if value == 0:
                        continue
                    if value in (1, 2):
                        self.stats.duplicates_skipped += 1
                        continue
                    if value == 3:
                        self.stats.misplaced_appends += 1
                        continue
                    lost = True  # -1 - len: a gap, nothing written; or GAP_NO_LIST
                    no_list = value == GAP_NO_LIST
                else:
                    if value == n:
                        continue
                    lost = True
                    no_list = value == 0
                if op.entity is None or (op.kind in ACCOUNT_KINDS and not no_list):
                    # Accounts: NautilusTrader may purge events from memory, so only a list that
                    # is gone altogether is rebuilt from the account.
                    if no_list:
                        self.stats.command_errors += 1
                        missing_lists.append(f"{cmd[1]}#{n}")
                    elif not guarded:
                        self.stats.misplaced_appends += 1  # e.g. an account whose events were purged in memory
                    continue
                if lost:
                    suspect.setdefault(cmd[1], i)
        if missing_lists:
            # An update for an entity whose list Redis no longer has and that cannot be rebuilt
            # from memory (an account, a replayed spill record): like RPUSHX, it is not written.
            self._log().warning(
                f"{len(missing_lists)} update(s) for entities Redis has no list of were not appended "
                f"(e.g. {missing_lists[:3]})",
            )
        if not suspect:
            return []
        # The newest entity object and event count per suspect list in this batch, and where a
        # later write replaced the list (position flip, delete): then its old history is moot.
        latest: dict[str, tuple[Any, Any, int, int]] = {}
        last_replaced: dict[str, int] = {}
        for i, op in enumerate(ops):
            for c in op.cmds:
                key = c[1] if len(c) > 1 else None
                if key not in suspect:
                    continue
                if c[0] == TAG_APPEND:
                    n = int(c[4])
                    if n == 1 and i > suspect[key]:
                        last_replaced[key] = i
                    if op.entity is not None and n >= latest.get(key, (None, None, 0, 0))[2]:
                        latest[key] = (op.entity, c, n, i)
                elif c[0] == b"DEL" and i > suspect[key]:
                    last_replaced[key] = i
        repairs: list[Op] = []
        unrepairable: list[str] = []
        for key, first_index in suspect.items():
            entity, cmd, want, _ = latest.get(key, (None, None, 0, 0))
            events = list(entity.events) if entity is not None else []
            if key in last_replaced or len(events) < want:
                unrepairable.append(key)
                continue
            payloads = [self._serializer.serialize(e) for e in events[:want]]
            repairs.append(Op("repair", [(b"DEL", key), (b"RPUSH", key, *payloads), (b"HSET", cmd[2], cmd[3], want)]))
            self.stats.repairs += 1
            self._notify("on_repair", key, want)
        if repairs:
            self._log().warning(
                f"Redis did not hold the expected events of {len(repairs)} entit{'y' if len(repairs) == 1 else 'ies'} "
                f"(e.g. {next(iter(suspect))}; lost by the server or written twice): rewriting them from memory",
            )
        if unrepairable:
            self.stats.command_errors += len(unrepairable)
            self._log().error(
                f"Redis lost events of {len(unrepairable)} list(s) that cannot be rebuilt from memory: {unrepairable[:5]}",
            )
        return repairs

    # -- retention helpers (call with the lock held) --------------------------------------------

    def _pending_locked(self) -> int:
        inflight = len(self._inflight.ops) if self._inflight and not self._inflight.from_spill else 0
        return inflight + self._spill.unread + len(self._queue)

    def _refresh_pending_locked(self) -> int:
        pending = self._pending_locked()
        self.stats.pending_writes = pending
        self.stats.spilled_writes = self._spill.unread
        return pending

    def _spill_queue_locked(self, drop_kinds: tuple[str, ...] = ()) -> None:
        """
        Append every retained write that is not in the spill file yet to it (fsync'd), oldest
        first: the in-flight batch when it came from memory, then the memory FIFO. The file
        then holds a prefix-closed history: a crash can only lose writes newer than it.
        """
        records: list[bytes] = []
        inflight = self._inflight
        convert = inflight is not None and not inflight.from_spill
        if convert:
            # Taken from memory means the file had nothing unread: these go first.
            records = [op.record(self._serializer) for op in inflight.ops if op.kind not in drop_kinds]
        inflight_bytes = sum(len(r) for r in records)
        inflight_records = len(records)
        queued = [op for op in self._queue if op.kind not in drop_kinds]
        records += [op.record(self._serializer) for op in queued]
        self._queue.clear()
        if not records:
            return
        start = self._spill.append(records)
        if convert:
            inflight.from_spill = True
            inflight.spill_end = start + inflight_bytes
            inflight.spill_records = inflight_records
        if not self._spilled_episode and not self._closing and self._dead is None:
            self._log().warning(
                f"{len(records)} retained write(s) reached max_pending_writes={self._max_pending}: spilled to "
                f"{self._spill.path} (fsync'd); they are sent first, in order, when Redis acknowledges again",
            )
        self._spilled_episode += len(records)
        self.stats.spilled_total += len(records)
        self._refresh_pending_locked()
        self._notify("on_spill", len(records), str(self._spill.path))

    def _spill_all_locked(self, drop_kinds: tuple[str, ...]) -> None:
        """Everything retained -> spill file, oldest first (in-flight, file, memory)."""
        self._spill_queue_locked(drop_kinds)
        self._inflight = None
        self._refresh_pending_locked()

    def _notify(self, method: str, *args: Any) -> None:
        listener = self._listener
        if type(listener) is CacheListener:
            return
        try:
            getattr(listener, method)(*args)
        except Exception:  # noqa: BLE001 (observers never break persisting)
            self.stats.listener_errors += 1
