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
retained, so a lost connection, a lost reply, a READONLY (demoted master) or an OOM all lead to
the same thing: back off (the `launcher.retry.write_backoff` wait the writer is given),
reconnect (through Sentinel when configured) and send the same batch again. A WAIT that fell
short does not (see "Sync mode and WAIT"). The stages an op passes through are
`launcher.cache.write.commands.Stage`; what one batch sends is `launcher.cache.write.batch`.

Refusals
--------
No write is dropped or counted acknowledged because Redis refused it. A refusal of the server
state (READONLY, OOM, LOADING, ... - in the queue or inside EXEC) is retried as above; OOM is an
ERROR when it starts and every `_REFUSING_SUMMARY_S` while it lasts (`CacheStats.refusing`). A
refusal retrying cannot fix (NOPERM, WRONGTYPE, any other error reply: `Refused`) stops the
writer: one ERROR names the command and key, everything retained goes to the spill file, the
`on_refused` callback and listener are told (the launcher stops the node and exits 8), later
writes are spilled as they come. A payload the serializer cannot handle can be neither written
nor spilled: it is counted lost (`CacheStats.writes_lost`), an ERROR, and reported the same
way, while the other writes go on. Every failed write is counted by reason
(`CacheStats.write_errors`).

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
events + manifest + the entity's index entries as its state says, one transaction), with one
WARN per batch. Accounts are only rebuilt when their list is gone altogether (NautilusTrader may
purge account events from memory).

Failover reconciliation
-----------------------
A repair needs an append to reveal the gap; a failover to a replica that lagged leaves gaps in
entities nobody writes again. So when the master's address changes (`_note_address`) the writer
reconciles the new master against `LiveEntities` - the newest object of every live order,
position and account, recorded as writes leave the memory FIFO and by the facade's loads -
before anything newer: one pipelined ``LLEN`` round per `_LLEN_CHUNK` lists (once the spill
file's older writes were sent), then every entity
whose list holds fewer events than the writes applied before had left it with
(`_applied_counts`, seeded by the facade's loads) is rewritten from memory up to that count
(list, manifest, index entries) through guarded batches, with one WARN naming how many were
behind. Writes retained from before are then sent guarded too (the rewrite may hold
their events already). Accounts whose events were purged in memory are rewritten only when their
list is shorter than memory: Redis is never shortened.

Acknowledged-writes record
--------------------------
Every acknowledged batch's event counts per order and position are appended to the local
record (`launcher.cache.write.acked`, fsync'd, on this thread, outside the lock), compacted at a
clean close: verify compares Redis with it to name a store that went back in time.

Memory bound and spill file
---------------------------
Retained writes are bounded by ``max_pending_writes``: when the in-memory FIFO reaches it (a
long outage), every retained write not yet on disk - the in-flight batch if it came from
memory, then the whole FIFO - is appended to the spill file and fsync'd, on the caller's thread
(one write + fsync per ``max_pending_writes`` writes; payloads were serialized ahead by the
writer thread while it waited out the outage).

Outages
-------
From the first failed send of an outage until writes are acknowledged again, the same spill
happens at most one buffer interval apart (`_spill_due`): on the caller's thread when it
submits, from the writer's backoff wait when nobody does. A process that dies during an outage
loses at most the writes of the last buffer interval (one WARN for the outage, one INFO when it
ends; no line per spill). The bound starts when the writer notices the outage: at once for a
refused or reset connection, after the socket timeout for a silent network. The file therefore always holds the *oldest*
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
With ``min_replica_acks`` > 0 a batch is acknowledged only when ``WAIT`` reports enough
replicas, so the acknowledgement means "on the master and on N replicas". Acknowledged writes
survive a failover when every replica a failover may promote is among the N (set
``min_replica_acks`` to the number of replicas). When WAIT reports fewer within
``replica_ack_timeout_ms`` (e.g. a failover left the new master without a replica), the batch is
APPLIED but unreplicated: the writer goes on with the next batch, so writes always reach the
current master. Unreplicated writes stay retained - in the spill file (fsync'd, appended as
consumed records when they came from memory), so they count in ``pending`` but take no memory -
and one WARN per episode says so (`CacheStats.unreplicated_writes`, the
``cache_writes_unreplicated`` gauge). After any reconnect they are read from the file again and
resent, idempotently and before anything newer (order matters for assignments), since the new
connection may reach another master; guarded resends set the manifest meta's ``updated_ns`` so
that a fresh connection's WAIT has a write to wait for. A later WAIT on the same connection that
reports enough replicas acknowledges every write applied before it (the replication stream is
ordered; one INFO); while no write comes, an empty batch asks WAIT every
`_UNREPLICATED_PROBE_S`. A process killed meanwhile loses nothing: the master holds the writes,
and the file replays them.

A sync caller waits for its write to be APPLIED: when WAIT reports enough replicas that is the
acknowledgement (on the master and N replicas); when it does not (no replica connected), the
caller returns after the WAIT timeout with its write applied on the master only, and the WARN
above tells the operator. Once writes are refused for good (see "Refusals") a sync caller
returns with its write SPILLED (the node is being stopped). WAIT rides in the batch's exchange,
so each such batch reports its round trip as both ``write_batch`` and ``wait_replicas`` (the
latter: from sending the batch until the replicas' answer).
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import redis
import tenacity

from launcher.cache.listener import CacheListener
from launcher.cache.listener import CacheStats
from launcher.cache.write import scripts
from launcher.cache.write.acked import AckedRecord
from launcher.cache.write.batch import Packed
from launcher.cache.write.batch import Replies
from launcher.cache.write.batch import appends_by_op
from launcher.cache.write.batch import build
from launcher.cache.write.batch import queued_commands
from launcher.cache.write.batch import split
from launcher.cache.write.commands import ACCOUNT_KINDS
from launcher.cache.write.commands import APPEND
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import Stage
from launcher.cache.write.commands import list_counts
from launcher.cache.write.commands import view
from launcher.cache.write.spill import SpillFile
from launcher.store.cluster import is_redirect
from launcher.store.cluster import note_redirect
from launcher.store.resp import exchange
from launcher.store.resp import pack_command


# Refusals of the server's state, which ends without the launcher (retried; MISCONF: a failing
# RDB save with stop-writes-on-bgsave-error).
_SERVER_STATE_ERRORS = ("READONLY", "OOM", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "BUSY", "CLUSTERDOWN",
                        "MISCONF")

def error_reason(error: Any) -> str:
    """One of `launcher.cache.listener.ERROR_REASONS` for an error reply of Redis."""
    text = str(error)
    for reason in ("oom", "noperm", "wrongtype"):
        if text.startswith(reason.upper()):
            return reason
    return "other"


class ServerUnavailable(Exception):
    """The server refused the batch for a transient reason (READONLY, OOM, LOADING, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = error_reason(message)


class Refused(Exception):
    """
    Redis refused a write in a way retrying cannot fix (NOPERM after an ACL change, WRONGTYPE
    on a key the launcher owns, an unknown command), or a payload cannot be serialized (a bug
    upstream). The writer stops sending: the writes stay retained and go to the spill file.
    `reason` is one of `launcher.cache.listener.ERROR_REASONS` or ``"unserializable"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Seconds between the ERROR lines repeating that Redis still refuses writes (OOM).
_REFUSING_SUMMARY_S = 60.0

# Seconds between WAITs for unreplicated writes while no new write comes to carry one.
_UNREPLICATED_PROBE_S = 1.0

# LLENs per pipelined round of a failover reconciliation.
_LLEN_CHUNK = 10_000


_RETRIABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    ServerUnavailable,
    OSError,
)


@dataclass(frozen=True)
class LiveEntities:
    """
    The entities the node holds in memory (the authority while it lives): `latest` maps the
    list key of every live order, position and account to the newest object written or
    loaded (the writer keeps it: see `Writer._note_live_locked` and `Writer.note_loaded`;
    a delete or FLUSHDB removes it); `locate` gives a list key's manifest hash and field;
    `index_commands` an entity's index entries as its state says (none for accounts).
    """

    latest: dict[str, Any]
    locate: Callable[[str], tuple[str, str]]
    index_commands: Callable[[str, Any], tuple]


@dataclass
class _Batch:
    ops: list[Op]
    from_spill: bool = False  # its ops are records of the spill file (read from it, or spilled in flight)
    spill_start: int = 0  # file offset of its first record
    spill_end: int = 0  # file offset after its records
    spill_records: int = 0
    replay: bool = False  # read from the spill file
    attempts: int = 0
    guarded: bool = False  # always use the idempotent append script (repairs)


@dataclass
class _Sent:
    """
    What a send reports: per op, the (command index, reply) of its appends; or, when Redis
    refused commands in a way retrying cannot fix, those (description, error) and nothing
    released.
    """

    appends: list
    guarded: bool  # the appends went through the script (its reply codes), else plain RPUSH (lengths)
    refused: list = field(default_factory=list)
    replicated: bool = True  # WAIT (when asked for) reported enough replicas: ACKNOWLEDGED, else only APPLIED


class _Inspection:
    """The appends of one acknowledged batch whose lists may not hold what memory says."""

    def __init__(self) -> None:
        self.suspect: dict[str, int] = {}  # list key -> index of the first op that revealed it
        self.missing_lists: list[str] = []  # "key#n" of updates to lists gone that cannot be rebuilt


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
    buffer_interval_s, socket_timeout_s, close_timeout_s : float
        Seconds.
    backoff : tenacity wait
        The wait between resends (`launcher.retry.write_backoff`).
    unspilled_kinds : tuple of str
        Kinds of op that only count when Redis acknowledges them before `close` ends (the
        clean-stop marker): spills leave them in memory, `close` drops them if not sent.
    wait_marker_key : str, optional
        A hash the writer may set ``updated_ns`` of (the manifest meta) when it re-sends
        unreplicated writes, so that the WAIT of that send covers them.
    on_refused : callable, optional
        ``(reason, message)``, called (writer thread) when writes cannot be written and
        retrying cannot fix it (see `Refused`): trading must stop.
    live : LiveEntities, optional
        The entities the node holds in memory: a rewritten list gets its index entries back,
        and a new master is reconciled against them after a failover.
    acked : AckedRecord, optional
        The local high-water record: every acknowledged batch's event counts are appended to
        it (fsync'd, writer thread); compacted at a clean close.
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
        backoff: tenacity.wait.wait_base,
        serializer: Any,
        listener: CacheListener,
        stats: CacheStats,
        log: Callable[[], Any],
        name: str,
        on_refused: Callable[[str, str], None] | None = None,
        unspilled_kinds: tuple[str, ...] = (),
        wait_marker_key: str | None = None,
        live: LiveEntities | None = None,
        acked: AckedRecord | None = None,
    ) -> None:
        self._client = client
        self._describe = describe
        self._spill = spill
        self._sync = sync
        self._interval = max(0.0, buffer_interval_s)
        self._max_pending = max(1, int(max_pending_writes))
        self._min_acks = max(0, int(min_replica_acks))
        self._ack_timeout_ms = max(1, int(replica_ack_timeout_ms))
        self._wait = (self._min_acks, self._ack_timeout_ms) if self._min_acks else None  # WAIT's arguments
        self._socket_timeout_s = socket_timeout_s
        self._close_timeout_s = close_timeout_s
        self._max_batch = max(1, int(max_batch_ops))
        self._serializer = serializer
        self._listener = listener
        self.stats = stats
        self._log = log
        self._on_refused = on_refused
        self._unspilled = unspilled_kinds
        self._live = live
        self._acked_record = acked
        self._acked_record_failed = False  # one ERROR when the record cannot be written
        self._reconcile_due = False  # a failover was noticed: reconcile the new master (writer thread)
        # The server behind the connection: its run id, read once per new socket. A new run id at
        # the same address is a restart, which may have lost acknowledged writes (appendfsync).
        self._identified_sock: Any = None
        self._reconcile_cause = "Failover to"  # how the reconciliation's log lines name the event
        self._run_id: str | None = None
        # List key -> the event count the last applied write left it with (writer thread; the
        # facade seeds what it loaded): what a new master must hold at least.
        self._applied_counts: dict[str, int] = {}
        self._guard_through = 0  # writes up to this seq are sent guarded (retained across a reconciliation)
        # A hash field every resend of unreplicated writes sets, so that its WAIT has a write of
        # this connection to wait for (WAIT waits for the connection's last propagated write).
        self._wait_marker = (b"HSET", wait_marker_key, b"updated_ns") if wait_marker_key else None

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # writer waits for work / backoff
        self._acked = threading.Condition(self._lock)  # sync callers wait for acknowledgement
        self._queue: collections.deque[Op] = collections.deque()
        self._inflight: _Batch | None = None
        self._seq = 0
        self._acked_seq = 0  # every write up to it ACKNOWLEDGED (this epoch's seq)
        self._applied_seq = 0  # every write up to it at least APPLIED (what a sync caller waits for)
        # APPLIED but not ACKNOWLEDGED writes (WAIT fell short): the spill file's records from
        # offset `_unreplicated_from` to its read offset (read from it, or appended when
        # applied), re-read from there after any reconnect; none in memory.
        self._unreplicated = 0  # writes (facade writes: for the counts)
        self._unreplicated_records = 0  # their records in the file (for the rewind)
        self._unreplicated_from = 0
        self._resend_unreplicated = False
        self._unreplicated_warned = False  # one WARN per episode of unreplicated writes
        self._replicated_again = False  # the last release acknowledged unreplicated writes
        self._probe_due = 0.0  # monotonic s of the next WAIT for unreplicated writes when idle
        self._epoch = os.urandom(8)
        self._idle = False
        self._urgent = False
        self._closing = False
        self._drop_kinds: tuple[str, ...] = ()
        self._close_deadline = 0.0
        self._dead: BaseException | None = None
        self._refusal: Refused | None = None  # set once Redis refused writes for good (see `Refused`)
        self._stopped = False  # dead or refused: nothing is sent any more, every write is spilled
        self._refusing_logged_at = 0.0  # monotonic s of the last ERROR about a transient refusal (OOM)
        self._conn: Any = None
        self._address: tuple[str, int] | None = None
        self._outage_start: float | None = None
        # Monotonic s from when retained writes in memory go to the spill file: one buffer
        # interval apart while an outage lasts, never otherwise (see "Outages" above).
        self._spill_due = math.inf
        self._spilled_episode = 0  # writes spilled since the spill file was last drained (one WARN per episode)
        self.coalesced_commands = 0  # assignment commands sent batches did not need (see `launcher.cache.write.batch`)
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        # Resend until acknowledged; only a close whose bounded wait is over stops it.
        self._retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_RETRIABLE), wait=backoff,
                                           stop=self._should_stop, sleep=self._backoff_sleep,
                                           before_sleep=self._on_retry, reraise=True)

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
                    f"Spill file {self._spill.path}: dropped a torn record of {self._spill.torn_bytes} byte(s) "
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
        applied it - acknowledged by ``min_replica_acks`` replicas, or, when WAIT timed out
        short of them, APPLIED and reported unreplicated (see "Sync mode and WAIT"); once
        writes are refused for good, once it is SPILLED. ``wait=False`` never blocks
        (bookkeeping writes such as the manifest meta, which must not hang a constructor or a
        bounded close()).
        """
        wait = self._sync if wait is None else wait
        op.t0 = time.monotonic()
        with self._lock:
            self._seq += 1
            op.seq = self._seq
            op.epoch = self._epoch
            self._queue.append(op)
            self.stats.writes_enqueued += 1
            if (self._stopped or self._closing and not self._thread.is_alive()
                    or len(self._queue) >= self._max_pending or op.t0 >= self._spill_due):
                self._spill_queue_locked()
            if wait:
                self._urgent = True
                if self._idle:
                    self._work.notify()
                while self._applied_seq < op.seq:
                    if self._refusal is not None:
                        break  # SPILLED (above); the node is being stopped (see `Refused`)
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
                if remaining <= 0 or self._stopped:
                    return False
                self._acked.wait(min(remaining, 0.5))
        return True

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until nothing is retained (memory and spill file); False on timeout."""
        return self._wait_until(lambda: self._pending_locked() == 0, timeout_s)

    def flush_record(self) -> None:
        """Every acknowledged batch noted so far is written to the acknowledged-writes record (fsync'd)."""
        if self._acked_record is not None:
            try:
                self._acked_record.flush()
            except OSError:
                pass  # reported once by `_note_acked` through the record's `failed`

    def wait_applied(self, timeout_s: float) -> bool:
        """
        Wait until every write is APPLIED in Redis; False on timeout. Writes the replicas have not
        acknowledged may remain: they stay in the spill file, resent and tracked by whoever owns it next.
        """
        return self._wait_until(lambda: self._pending_locked() == self._unreplicated, timeout_s)

    @property
    def unreplicated(self) -> int:
        """Writes APPLIED but not yet acknowledged by ``min_replica_acks`` replicas (kept in the spill file)."""
        with self._lock:
            return self._unreplicated

    def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not done():
                self._urgent = True
                if self._idle:
                    self._work.notify()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped:
                    return False
                self._acked.wait(min(remaining, 0.5))
        return True

    @property
    def refusal(self) -> Refused | None:
        """Why Redis refused this writer's writes for good (None while it has not)."""
        return self._refusal

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
        self._materialize(ops)
        packed = build(ops, False, self._wait)
        return packed.data, packed.replies

    def refresh_stats(self) -> None:
        """Bring the pending/spilled gauges of `stats` up to date."""
        with self._lock:
            self._refresh_pending_locked()

    def close(self, drop_kinds: tuple[str, ...] = ()) -> int:
        """
        Flush everything retained (bounded by `close_timeout_s`), stop the thread, and return
        the number of writes left in the spill file, not acknowledged (0 when everything reached
        Redis and its replicas; unreplicated writes are among them). Ops of
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
            left = self._spill.unread + self._unreplicated  # unreplicated: kept in the file, replayed too
            if self._acked_record is not None:
                try:
                    self._acked_record.flush()  # what its thread had not written yet
                except OSError as e:
                    self._log().error(f"Cannot write the acknowledged-writes record {self._acked_record.path}: {e}")
            if not left and self._acked_record is not None and not self._thread.is_alive():
                try:
                    self._acked_record.compact()
                except OSError as e:
                    self._log().error(f"Cannot compact the acknowledged-writes record {self._acked_record.path}: {e}")
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
                    # After the spill file's older writes: what they hold is already applied then.
                    while self._reconcile_due and not self._spill.unread:
                        self._reconcile()
                except _RETRIABLE:
                    # Closing and the bounded wait is over: keep everything in the spill file.
                    with self._lock:
                        self._spill_all_locked(self._drop_kinds)
                    break
                except Refused as e:
                    self._refuse(e)
                    break
        except BaseException as e:  # noqa: BLE001 (a bug: never lose the writes because of it)
            self._dead = e
            self._stopped = True
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
                    start = self._spill.read_offset
                    values, end = self._spill.read(self._max_batch)
                    ops = [Op.from_record(v) for v in values]
                    self._inflight = _Batch(ops, from_spill=True, spill_start=start, spill_end=end,
                                            spill_records=len(ops), replay=True)
                    return self._inflight
                if self._queue:
                    wait_s = 0.0
                    if not (self._sync or self._urgent or self._closing) and len(self._queue) < self._max_batch:
                        wait_s = self._interval - (time.monotonic() - self._queue[0].t0)
                    if wait_s <= 0:
                        n = min(len(self._queue), self._max_batch)
                        ops = [self._queue.popleft() for _ in range(n)]
                        self._note_live_locked(ops)
                        if not self._queue:
                            self._urgent = False
                        self._inflight = _Batch(ops)
                        if self._unreplicated_records:
                            self._write_ahead_locked(self._inflight)
                        return self._inflight
                    self._idle = True
                    self._work.wait(wait_s)
                    self._idle = False
                    continue
                self._urgent = False
                if self._unreplicated_records and (self._closing or self._probe_due <= time.monotonic()):
                    # Nothing new to send: ask the replicas again (an empty batch's WAIT).
                    self._probe_due = time.monotonic() + _UNREPLICATED_PROBE_S
                    self._inflight = _Batch([])
                    return self._inflight
                if self._closing:
                    return None
                self._idle = True
                self._work.wait(_UNREPLICATED_PROBE_S if self._unreplicated_records else 1.0)
                self._idle = False

    def _write_ahead_locked(self, batch: _Batch) -> None:
        """
        While writes are unreplicated the file must hold everything the master applied since:
        a batch goes to the file (fsync'd) before it is sent. Otherwise a process dying between
        a batch's EXEC and its spill would leave Redis with writes newer than the file, and the
        next start's replay of the file's older assignments (index moves) would undo them.
        """
        self._materialize(batch.ops)
        records = [op.record(self._serializer) for op in batch.ops if op.cmds and op.kind not in self._unspilled]
        if not records:
            return
        start = self._spill.append(records)
        self.stats.spilled_total += len(records)
        batch.from_spill = True
        batch.spill_start, batch.spill_end, batch.spill_records = start, start + sum(map(len, records)), len(records)
        for op in batch.ops:
            if op.stage < Stage.SPILLED:
                op.stage = Stage.SPILLED
        self._refresh_pending_locked()

    def _deliver(self, batch: _Batch) -> None:
        for attempt in self._retrying:
            with attempt:
                if batch.attempts:
                    self.stats.resent_batches += 1
                batch.attempts += 1
                if self._resend_unreplicated:
                    self._resend_unreplicated = False
                    if self._rewind_unreplicated(batch):
                        return  # the unreplicated writes and this batch are read from the file again
                # First send of writes made by this process: nothing of them can be in Redis
                # yet, so plain RPUSH/RPUSHX (as the native adapter) and check the new length.
                # A resend, or a replay of spilled writes, uses the idempotent script.
                guarded = (batch.guarded or batch.replay or batch.attempts > 1
                           or bool(batch.ops) and batch.ops[0].seq <= self._guard_through)
                ops = batch.ops
                if guarded and self._wait is not None and self._wait_marker is not None:
                    ops = [*ops, Op("wait_marker", [(*self._wait_marker, time.time_ns())])]
                sent = self._send(ops, guarded)
                if sent.refused:
                    raise self._refused(sent.refused)
        self._acknowledge(batch, ops, sent)

    def note_loaded(self, loaded: dict[str, Any]) -> None:
        """
        The entities a load built (list key -> order/position/account) are live, and their event
        counts applied (unless a write of this process already set them).
        """
        if self._live is not None:
            with self._lock:  # ordered with the writes leaving the FIFO (`_note_live_locked`)
                self._live.latest.update(loaded)
        applied = self._applied_counts
        for key, entity in loaded.items():
            applied.setdefault(key, entity.event_count)

    def _note_live_locked(self, ops: Iterable[Op]) -> None:
        """
        `ops` leave the memory FIFO (taken for a send, or spilled), oldest first: each write's
        entity becomes the live object of its list; a ``DEL`` of an entity-less write (the
        facade's deletes) or a ``FLUSHDB`` forgets it. Kept here rather than per facade write,
        which is on the caller's thread; under the lock, so a spill never records an older
        object over a newer one (a NETTING flip's new position).
        """
        latest = self._live.latest if self._live is not None else None
        if latest is None:
            return
        for op in ops:
            entity = op.entity
            if entity is not None:
                for cmd in op.cmds:
                    if cmd[0] == APPEND:
                        latest[cmd[1]] = entity
                        break
                continue
            for cmd in op.cmds:
                name = cmd[0]
                if name == b"DEL":
                    for key in cmd[1:]:
                        latest.pop(key, None)
                elif name == b"FLUSHDB":
                    latest.clear()

    def _note_applied(self, ops: list[Op]) -> None:
        flushed, counts = list_counts(ops)
        applied = self._applied_counts
        if flushed:
            applied.clear()
        for key, n in counts.items():
            if n:
                applied[key] = n
            else:
                applied.pop(key, None)  # deleted: no entry left behind per deleted entity

    def _note_acked(self, ops: list[Op], lowered_only: bool) -> None:
        """Append what Redis acknowledged to the local record; a disk error is one ERROR, never a lost write."""
        failure: OSError | None = None
        try:
            self._acked_record.note(ops, lowered_only)
        except OSError as e:
            failure = e
        failure = failure or self._acked_record.failed  # the record's own thread writes the file
        if failure is not None and not self._acked_record_failed:
            self._acked_record_failed = True
            self._log().error(
                f"Cannot write the acknowledged-writes record {self._acked_record.path}: {failure}; verify on this machine "
                "may under-report a Redis that went back in time",
            )

    def _rewind_unreplicated(self, batch: _Batch) -> bool:
        """
        After a reconnect, the unreplicated writes go again before anything newer (their order
        matters for assignments): the master may be another one now, or one restarted without
        them; on the same master the idempotent resend changes nothing. They are the file's
        records before its read offset, so the read offset goes back to the first of them, and
        `batch` - newer - goes to the file after them unless it is read from there. False when
        nothing is unreplicated.
        """
        with self._lock:
            if not self._unreplicated_records:
                return False
            if not batch.from_spill and batch.ops:
                self._append_consumed_locked(batch.ops, consumed=False)
            self._spill.rewind(self._unreplicated_from, self._unreplicated_records)
            self._unreplicated = self._unreplicated_records = 0
            self._inflight = None
            self._refresh_pending_locked()
        return True

    def _append_consumed_locked(self, ops: list[Op], consumed: bool) -> tuple[int, int]:
        """
        Append `ops` to the spill file (fsync'd) at its read offset - the file has nothing
        unread - and return the offset of the first and the number of records; `consumed`:
        already applied, so the read offset moves past them.
        """
        self._materialize(ops)
        records = [op.record(self._serializer) for op in ops if op.cmds and op.kind not in self._unspilled]
        start = self._spill.append(records)
        self.stats.spilled_total += len(records)
        if consumed:
            self._spill.advance(start + sum(map(len, records)), len(records))
        return start, len(records)

    def _refused(self, refused: list[tuple[str, Exception]]) -> Refused:
        """The refusal of one send: counted per reason, named by its first refused command."""
        for _, error in refused:
            reason = error_reason(error)
            self.stats.write_errors[reason] = self.stats.write_errors.get(reason, 0) + 1
        self.stats.command_errors += len(refused)
        what, error = refused[0]
        more = f" (and {len(refused) - 1} more refused command(s))" if len(refused) > 1 else ""
        return Refused(error_reason(error), f"{error} on {what}{more}")

    def _refuse(self, refusal: Refused) -> None:
        """
        Redis refused writes for good: stop sending, keep everything retained in the spill file
        (fsync'd, oldest first), and tell the listener (the launcher stops the node, exits 8).
        """
        with self._lock:
            self._refusal = refusal
            self._stopped = True
            self.stats.refused = refusal.reason
            self._spill_all_locked(())
            left = self._spill.unread + self._unreplicated
            self._acked.notify_all()
        self._log().error(
            f"Redis refused the launcher's writes, retrying cannot fix it: {refusal}; trading must stop. "
            f"{left} unacknowledged write(s) kept in {self._spill.path} (fsync'd), replayed by the next start",
        )
        self._report_refusal(refusal.reason, str(refusal))

    def _report_refusal(self, reason: str, message: str) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(reason, message)
            except Exception as e:  # noqa: BLE001 (the refusal is logged and kept whatever a handler does)
                self._log().error(f"Handler of the cache write refusal failed: {e!r}")
        self._notify("on_refused", reason, message)

    def _should_stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._closing and time.monotonic() >= self._close_deadline

    def _backoff_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._prepare_retained(deadline)
        with self._lock:
            if self._closing:
                deadline = min(deadline, self._close_deadline)
            while True:
                now = time.monotonic()
                if now >= self._spill_due:
                    # Writes submitted since the last spill (none may come to do it on submit).
                    self._spill_queue_locked()
                    self._spill_due = now + self._interval
                remaining = min(deadline, self._spill_due) - now
                if deadline <= now:
                    return
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
        `deadline` (monotonic seconds; None: no limit). Idempotent; a payload that fails here is
        left for `_materialize`, which drops it loudly.
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
        self._resend_unreplicated = True  # the next connection may reach another master
        oom = isinstance(error, ServerUnavailable) and error.reason == "oom"
        if oom:
            self.stats.write_errors["oom"] = self.stats.write_errors.get("oom", 0) + 1
            self.stats.command_errors += 1
        now = time.monotonic()
        if self._outage_start is None:
            self._outage_start = now
            # Once Redis has not acknowledged a batch, what memory retains goes to disk.
            self._spill_due = now
            pending = self.pending()
            self.stats.outages += 1
            self.stats.outage_active = True
            what = "not acknowledging" if isinstance(error, ServerUnavailable) else "unreachable"
            if not oom:
                self._log().warning(
                    f"Redis {what} ({self._describe}): {error}; {pending} write(s) retained, "
                    f"retrying with backoff (nothing is dropped); while this lasts they go to {self._spill.path} "
                    "(fsync'd) every buffer interval",
                )
            self._notify("on_outage_start", pending, str(error))
        if oom != (self.stats.refusing == "oom") or oom and now - self._refusing_logged_at >= _REFUSING_SUMMARY_S:
            self._on_refusing(error if oom else None, now)

    def _on_refusing(self, oom: ServerUnavailable | None, now: float) -> None:
        """
        Redis refuses writes until memory is freed (OOM under noeviction): an ERROR when it
        starts and then every `_REFUSING_SUMMARY_S` while it lasts, a WARN when it turns into
        another failure (the end of the outage says when writes resumed).
        """
        pending = self.pending()
        errors = self.stats.write_errors.get("oom", 0)
        if oom is None:
            self.stats.refusing = ""
            self._log().warning(f"Redis no longer answers OOM ({self._describe}); {pending} write(s) retained")
            return
        if self.stats.refusing == "oom":
            self._log().error(
                f"Redis still refuses cache writes with OOM ({self._describe}) after "
                f"{now - self._outage_start:.0f}s: {pending} write(s) retained, {errors} refused attempt(s)",
            )
        else:
            self.stats.refusing = "oom"
            self._log().error(
                f"Redis refuses cache writes ({self._describe}): {oom}; {pending} write(s) retained, retried with "
                "backoff until it accepts them (raise maxmemory or free memory; nothing is dropped)",
            )
        self._refusing_logged_at = now

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

    def _materialize(self, ops: Any) -> None:
        """
        Serialize the payloads still lazy. An op the serializer cannot handle (a bug upstream)
        can be neither written nor spilled: it is counted as lost, an ERROR, and reported as a
        refusal (the launcher stops trading and exits 8); the other writes go on.
        """
        serializer = self._serializer
        for op in ops:
            if op.lazy:
                try:
                    op.materialize(serializer)
                except Exception as e:  # noqa: BLE001
                    op.drop()
                    self.stats.command_errors += 1
                    self.stats.write_errors["other"] = self.stats.write_errors.get("other", 0) + 1
                    self.stats.writes_lost += 1
                    message = f"cache write {op.kind} cannot be written: its payload cannot be serialized: {e!r}"
                    self._log().error(f"Lost {message}; trading must stop")
                    self._report_refusal("unserializable", message)

    def _round(self, ops: list[Op], guarded: bool) -> tuple[Packed, Replies]:
        """One MULTI/EXEC (+WAIT) round trip."""
        self._materialize(ops)
        packed = build(ops, guarded, self._wait)
        self.coalesced_commands += packed.coalesced
        conn = self._connection()
        timeout = self._socket_timeout_s + self._ack_timeout_ms / 1000.0 if self._wait else None
        overlapped = [0.0]  # preparing the next batch is not part of the round trip

        def prepare_next() -> None:
            started = time.monotonic()
            self._prepare_next()
            overlapped[0] = time.monotonic() - started

        t0 = time.monotonic()
        replies = split(packed, exchange(conn, packed.data, packed.replies, timeout, prepare_next))
        rtt = time.monotonic() - t0 - overlapped[0]
        self._round_trip("write_batch", rtt)
        if packed.waits:
            # WAIT rides in the same exchange: this round trip ended with the replicas' answer.
            self._round_trip("wait_replicas", rtt)
        self.stats.last_batch_round_trip_s = rtt
        for reply in replies.setup:
            if isinstance(reply, Exception):
                # Scripts unavailable (ACL, scripting disabled) would make appends fail inside
                # EXEC: keep everything retained and say so instead.
                if error_reason(reply) == "noperm":
                    raise self._refused([("the write batch's SCRIPT LOAD or MULTI", reply)])
                raise ServerUnavailable(f"cannot prepare the write batch: {reply}")
        return packed, replies

    def _replicated(self, wait: Any) -> bool:
        """Whether WAIT (when asked for) reported enough replicas; raises when WAIT itself failed."""
        if wait is None:
            return True
        if isinstance(wait, Exception):
            if error_reason(wait) == "noperm":
                raise self._refused([("WAIT", wait)])
            raise ServerUnavailable(f"WAIT failed: {wait}")
        self.stats.last_wait_replicas = int(wait)
        return int(wait) >= self._min_acks

    def _refusals(self, replies: Replies) -> list[tuple[int, Exception]]:
        """
        (queued command index, error) of every command Redis refused: when queued (then EXEC
        applied nothing) or inside EXEC (then it applied the rest); -1: EXEC itself. Raises
        `ServerUnavailable` when the server state is to blame (READONLY, OOM, ...: retried).
        """
        errors = [(k, r) for k, r in enumerate(replies.queued) if isinstance(r, Exception)]
        results = replies.results
        if isinstance(results, Exception):
            if not errors:  # EXECABORT follows queued errors, which say why
                errors.append((-1, results))
        elif any(issubclass(t, Exception) for t in set(map(type, results))):  # one C pass
            errors += [(k, r) for k, r in enumerate(results) if isinstance(r, Exception)]
        redirect = next((e for _, e in errors if is_redirect(e)), None)
        if redirect is not None:
            # A cluster redirect (MOVED/ASK: the slot moved or is moving) is not a refusal of
            # the batch: nothing was applied; resend after reconnecting to the slot's owner.
            note_redirect(self._client.connection_pool, redirect)
            raise ServerUnavailable(str(redirect))
        for _, e in errors:
            if isinstance(e, redis.exceptions.ReadOnlyError) or str(e).startswith(_SERVER_STATE_ERRORS):
                raise ServerUnavailable(str(e))
        return errors

    def _send(self, ops: list[Op], guarded: bool) -> _Sent:
        """
        One send of `ops`: APPLIED when EXEC ran every command, then ACKNOWLEDGED when WAIT (if
        asked for) reported enough replicas (else `_Sent.replicated` is False). Raises when the
        server state is to blame (retried); a command Redis refuses otherwise (NOPERM,
        WRONGTYPE: retrying cannot fix it) is reported in `_Sent.refused` and nothing is
        released.
        """
        packed, replies = self._round(ops, guarded)
        refused = self._refusals(replies)
        if refused:
            return _Sent([None] * len(ops), guarded, _describe_refused(ops, packed, refused))
        for op in ops:
            op.stage = Stage.APPLIED
        self._note_address(self._connection())
        replicated = self._replicated(replies.wait)
        if replicated:
            for op in ops:
                op.stage = Stage.ACKNOWLEDGED
        return _Sent(appends_by_op(ops, packed, replies.results)[0], guarded, replicated=replicated)

    def _note_address(self, conn: Any) -> None:
        address = (getattr(conn, "host", None), getattr(conn, "port", None))
        moved = address != self._address
        if moved:
            old, self._address = self._address, address
            self.stats.server_address = address
            if old is not None:
                self.stats.failovers_followed += 1
                self._reconcile_due = True
                self._reconcile_cause = "Failover to"
                self._log().warning(f"Cache writes now go to {address[0]}:{address[1]} (was {old[0]}:{old[1]})")
                self._notify("on_failover", old, address)
            self._notify("on_reconnect", address)
        self._note_run_id(conn, moved)

    def _note_run_id(self, conn: Any, moved: bool) -> None:
        """
        Once per new socket: the server's run id. A new one at the same address means Redis
        restarted, and with ``appendfsync everysec`` (or no persistence) it may have lost writes
        it had acknowledged: reconciled against the node's memory like a failover. A server that
        refuses INFO is not identified (restarts then show only through the repairs of later appends).
        """
        sock = getattr(conn, "_sock", None)
        if sock is None or sock is self._identified_sock:
            return
        try:
            reply = exchange(conn, pack_command((b"INFO", b"server")), 1, self._socket_timeout_s)[0]
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return  # the next round reconnects and asks again
        self._identified_sock = sock
        run_id = _run_id(reply)
        previous, self._run_id = self._run_id, run_id if run_id is not None else self._run_id
        if moved or run_id is None or previous is None or run_id == previous:
            return
        self.stats.server_restarts_seen += 1
        self._reconcile_due = True
        self._reconcile_cause = "Restart of"
        # INFO: the check that follows says WARN, naming them, if entities were behind.
        self._log().info(
            f"Redis at {self._address[0]}:{self._address[1]} restarted (new run id): it may have lost writes it had "
            "acknowledged; checking the node's live entities against it",
        )

    def _round_trip(self, operation: str, seconds: float) -> None:
        self.stats.round_trip_s[operation] = seconds
        self._notify("on_round_trip", operation, seconds)

    # -- after acknowledgement ------------------------------------------------------------------

    def _acknowledge(self, batch: _Batch, ops: list[Op], sent: _Sent) -> None:
        self._note_applied(ops)
        repairs = self._inspect(ops, sent)
        if self._acked_record is not None:
            # Noted (in memory; its own thread writes the file) before any waiter is released, so a
            # caller of `wait_until_persisted` can have it on disk with `flush`.
            self._note_acked(ops, lowered_only=not sent.replicated)
        now = time.monotonic()
        with self._lock:
            before = self._unreplicated
            pending, spilled = self._release_locked(batch, sent.replicated)
            unreplicated = self._unreplicated
            # Under the lock: a spilling caller re-arms `_spill_due` only while it is armed. While
            # writes are unreplicated, memory is spilled every buffer interval as in an outage.
            self._spill_due = now + self._interval if self._unreplicated_records else math.inf
        if unreplicated != before or self._replicated_again:
            self._on_unreplicated(before, unreplicated)
        if self._outage_start is not None:
            self._end_outage(now, pending + len(batch.ops), spilled)
        if sent.replicated:  # (unreplicated writes are reported when a replica acknowledges them)
            if batch.replay:
                self._notify("on_replay", len(batch.ops), str(self._spill.path))
            self._notify("on_batch_acknowledged", len(batch.ops), sum(len(op.cmds) for op in batch.ops),
                         self.stats.last_batch_round_trip_s)
            self._latency(batch.ops, now)
        self._notify("on_pending", pending)
        if repairs:
            self._deliver(_Batch(repairs, guarded=True))

    def _release_locked(self, batch: _Batch, replicated: bool) -> tuple[int, int]:
        """
        The batch was applied: forget it (and its spill records) when `replicated`, with every
        write unreplicated before it (the WAIT of this connection covers them all); else keep
        its writes as unreplicated. Returns (writes still retained, spilled this episode).
        """
        if batch.from_spill:
            self._spill.advance(batch.spill_end, batch.spill_records)
            if batch.replay:
                self.stats.replayed_total += len(batch.ops)
        max_seq = 0
        for op in batch.ops:
            if op.epoch == self._epoch and op.seq > max_seq:
                max_seq = op.seq
        if max_seq > self._applied_seq:
            self._applied_seq = max_seq
        # An op without commands could not be serialized (lost, counted apart).
        writes = sum(1 for op in batch.ops if op.cmds and op.kind != "repair")
        released_unreplicated = 0
        if not replicated:
            # Into the file (fsync'd) when read from memory - a failover may still lose them and
            # this process may die - and resent from there after any reconnect.
            if batch.ops:
                if batch.from_spill:
                    start, records = batch.spill_start, batch.spill_records
                else:
                    start, records = self._append_consumed_locked(batch.ops, True)
                if not self._unreplicated_records:
                    self._unreplicated_from = start
                self._unreplicated_records += records
                self._unreplicated += writes
            writes = 0
        elif self._unreplicated_records:
            # This connection's WAIT covers every write it applied before (the replication
            # stream is ordered; after a reconnect they were all sent again on it).
            released_unreplicated, self._unreplicated, self._unreplicated_records = self._unreplicated, 0, 0
            self._replicated_again = True
            self._acked_seq = self._applied_seq
        if replicated and max_seq > self._acked_seq:
            self._acked_seq = max_seq
        self._inflight = None
        spilled = self._spilled_episode
        # The file keeps unreplicated writes (a next instance replays them) until a replica has them.
        if (batch.from_spill or released_unreplicated) and self._spill.unread == 0 and not self._unreplicated_records:
            self._spill.remove()
            self._spilled_episode = 0
        self.stats.writes_acknowledged += writes + released_unreplicated
        self.stats.batches += 1
        pending = self._refresh_pending_locked()
        self._acked.notify_all()
        return pending, spilled

    def _on_unreplicated(self, before: int, now: int) -> None:
        """One WARN when writes start to be unreplicated, one INFO when replicas have them all again."""
        self._notify("on_unreplicated", now)
        if now and not self._unreplicated_warned:
            self._unreplicated_warned = True
            self._log().warning(
                f"Redis applied writes that only {self.stats.last_wait_replicas} of min_replica_acks={self._min_acks} "
                f"replica(s) acknowledged within {self._ack_timeout_ms} ms ({self._describe}): they are unreplicated "
                "(a failover now could lose them), kept for an idempotent resend after any reconnect; sync writes "
                "return once applied until a replica acknowledges again",
            )
        elif self._replicated_again:
            self._replicated_again = False
            if self._unreplicated_warned:
                self._unreplicated_warned = False
                self._log().info(f"Replicas acknowledge again: the {before} unreplicated write(s) are acknowledged")

    def _end_outage(self, now: float, resent: int, spilled: int) -> None:
        outage = now - self._outage_start
        self._outage_start = None
        self.stats.outage_active = False
        self.stats.refusing = ""
        self.stats.last_outage_s = outage
        self.stats.reconnects += 1
        self._log().info(
            f"Redis writes resumed ({self._describe}) after a {outage:.2f}s outage: "
            f"{resent} retained write(s) re-sent" + (f" ({spilled} through the spill file)" if spilled else ""),
        )
        self._notify("on_outage_end", resent, outage)

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

    # -- repair -----------------------------------------------------------------------------------

    def _inspect(self, ops: list[Op], sent: _Sent) -> list[Op]:
        """
        Check every append's outcome. Plain appends (first send) report the list's new length,
        which must be the entity's event count; the script (resends, replays) reports a code.
        Lists whose content no longer matches the entity - Redis lost events (failover without
        replica acknowledgement, a restart without persistence, FLUSHDB) or holds one twice -
        are rewritten from the entity's events in memory when it is at hand (the repair ops).
        """
        found = self._classify(ops, sent)
        if found.missing_lists:
            # An update for an entity whose list Redis no longer has and that cannot be rebuilt
            # from memory (an account, a replayed spill record): like RPUSHX, it is not written.
            self._log().warning(
                f"{len(found.missing_lists)} update(s) for entities Redis has no list of were not appended "
                f"(e.g. {found.missing_lists[:3]})",
            )
        return self._repairs(ops, found.suspect) if found.suspect else []

    def _classify(self, ops: list[Op], sent: _Sent) -> _Inspection:
        found = _Inspection()
        for i, op_appends in enumerate(sent.appends):
            if not op_appends:
                continue
            op = ops[i]
            for j, reply in op_appends:
                cmd = view(op.cmds[j])
                no_list = self._gap(int(cmd.n), int(reply), sent.guarded)
                if no_list is None:
                    continue
                if op.entity is None or (op.kind in ACCOUNT_KINDS and not no_list):
                    # Accounts: NautilusTrader may purge events from memory, so only a list that
                    # is gone altogether is rebuilt from the account.
                    if no_list:
                        self.stats.command_errors += 1
                        found.missing_lists.append(f"{cmd.list_key}#{cmd.n}")
                    elif not sent.guarded:
                        self.stats.misplaced_appends += 1  # e.g. an account whose events were purged in memory
                    continue
                found.suspect.setdefault(cmd.list_key, i)
        return found

    def _gap(self, n: int, reply: int, guarded: bool) -> bool | None:
        """None when append number `n` is in place (counted), else whether its list is gone altogether."""
        if not guarded:
            return None if reply == n else reply == 0  # RPUSH/RPUSHX: the list's new length
        if reply == scripts.APPENDED:
            return None
        if reply in (scripts.ALREADY_THERE, scripts.FOUND_NEAR_TAIL):
            self.stats.duplicates_skipped += 1
            return None
        if reply == scripts.APPENDED_MISPLACED:
            self.stats.misplaced_appends += 1
            return None
        return reply == scripts.GAP_NO_LIST  # else -1 - len: a gap, nothing written

    def _repairs(self, ops: list[Op], suspect: dict[str, int]) -> list[Op]:
        """An op rewriting each suspect list from its entity's events in memory, where that is possible."""
        latest, replaced = _latest_appends(ops, suspect)
        repairs: list[Op] = []
        unrepairable: list[str] = []
        for key in suspect:
            entity, cmd = latest[key]
            want = int(cmd.n)
            events = list(entity.events)
            if key in replaced or len(events) < want:
                unrepairable.append(key)
                continue
            repairs.append(self._rewrite(key, cmd.manifest_key, cmd.field, entity, events[:want]))
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

    def _rewrite(self, key: str, manifest_key: str, field: str, entity: Any, events: list) -> Op:
        """An op replacing the list at `key` by `events`, with its manifest count and index entries."""
        payloads = [self._serializer.serialize(e) for e in events]
        index = self._live.index_commands(key, entity) if self._live is not None else ()
        return Op("repair", [(b"DEL", key), (b"RPUSH", key, *payloads), (b"HSET", manifest_key, field, len(events)),
                             *index])

    # -- failover reconciliation ------------------------------------------------------------------

    def _reconcile(self) -> None:
        """
        The master changed: every live entity whose list on it holds fewer events than were
        applied before (a promoted replica that had not received them) is rewritten from
        memory - its events up to that count, manifest and index entries - through guarded
        batches, before any newer write. Writes retained from before go guarded too.
        """
        self._reconcile_due = False
        if self._live is None or not self._live.latest:
            return
        entities = self._live.latest.copy()  # one C call: a spilling caller or a load may change it meanwhile
        with self._lock:
            self._guard_through = self._seq
        applied = self._applied_counts
        keys = [key for key in entities if applied.get(key)]  # else none of its writes applied yet
        for attempt in self._retrying:
            with attempt:
                lengths = self._lengths(keys)
        repairs: list[Op] = []
        behind: collections.Counter[str] = collections.Counter()
        for key, length in zip(keys, lengths):
            # Compared with what was applied, not with memory: newer events are still retained.
            if length >= applied[key]:
                continue
            entity = entities[key]
            events = list(entity.events)
            if len(events) >= applied[key]:
                # The events applied: newer ones follow through their own retained writes.
                events = events[:applied[key]]
            elif length >= len(events):
                continue  # an account whose events were purged in memory: never shorten Redis
            manifest_key, field = self._live.locate(key)
            repairs.append(self._rewrite(key, manifest_key, field, entity, events))
            behind[manifest_key.rsplit(":", 1)[-1]] += 1
            self._notify("on_repair", key, len(events))
        address = f"{self._address[0]}:{self._address[1]}" if self._address else self._describe
        if not repairs:
            self._log().info(f"{self._reconcile_cause} {address}: it holds every event of the node's {len(keys)} live entities")
            return
        self.stats.repairs += len(repairs)
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(behind.items()))
        self._log().warning(
            f"{self._reconcile_cause} {address}: {len(repairs)} of {len(keys)} live entities were behind the node's "
            f"memory ({counts}; e.g. {repairs[0].cmds[0][1]}): the server did not hold their last events; "
            "re-written from memory (list, manifest and index entries)",
        )
        for i in range(0, len(repairs), self._max_batch):
            self._deliver(_Batch(repairs[i:i + self._max_batch], guarded=True))

    def _lengths(self, keys: list[str]) -> list[float]:
        """The length of each list in `keys` on the current master, in pipelined rounds (inf: not a list)."""
        conn = self._connection()
        lengths: list[float] = []
        for i in range(0, len(keys), _LLEN_CHUNK):
            chunk = keys[i:i + _LLEN_CHUNK]
            replies = exchange(conn, b"".join([pack_command((b"LLEN", key)) for key in chunk]), len(chunk),
                               self._socket_timeout_s)
            for reply in replies:
                if isinstance(reply, Exception):
                    if str(reply).startswith(_SERVER_STATE_ERRORS):
                        raise ServerUnavailable(str(reply))
                    lengths.append(math.inf)  # WRONGTYPE: not the launcher's list, left as it is
                else:
                    lengths.append(reply)
        self._note_address(conn)  # a retry may have reached yet another master
        return lengths

    # -- retention helpers (call with the lock held) --------------------------------------------

    def _pending_locked(self) -> int:
        inflight = len(self._inflight.ops) if self._inflight and not self._inflight.from_spill else 0
        return inflight + self._spill.unread + len(self._queue) + self._unreplicated

    def _refresh_pending_locked(self) -> int:
        pending = self._pending_locked()
        self.stats.pending_writes = pending
        self.stats.spilled_writes = self._spill.unread
        self.stats.unreplicated_writes = self._unreplicated
        return pending

    def _spill_queue_locked(self, drop_kinds: tuple[str, ...] = ()) -> None:
        """
        Append every retained write that is not in the spill file yet to it (fsync'd), oldest
        first: the in-flight batch when it came from memory, then the memory FIFO. The file
        then holds a prefix-closed history: a crash can only lose writes newer than it.
        """
        records: list[bytes] = []
        skip = (*drop_kinds, *self._unspilled)
        inflight = self._inflight
        convert = inflight is not None and not inflight.from_spill
        if convert:
            # Taken from memory means the file had nothing unread: these go first.
            self._materialize(inflight.ops)
            records = [op.record(self._serializer) for op in inflight.ops if op.kind not in skip and op.cmds]
        inflight_bytes = sum(len(r) for r in records)
        inflight_records = len(records)
        self._materialize(self._queue)
        self._note_live_locked(self._queue)
        queued = [op for op in self._queue if op.kind not in skip and op.cmds]
        records += [op.record(self._serializer) for op in queued]
        # Unspilled kinds stay in memory, unless this is the close's last spill (`drop_kinds`).
        kept = [op for op in self._queue if op.kind in self._unspilled] if self._unspilled and not drop_kinds else ()
        self._queue.clear()
        self._queue.extend(kept)
        if not records:
            return
        start = self._spill.append(records)
        if self._spill_due != math.inf:
            self._spill_due = time.monotonic() + self._interval
        for op in itertools.chain(inflight.ops if convert else (), queued):
            if op.stage < Stage.SPILLED and op.kind not in skip:
                op.stage = Stage.SPILLED  # on local disk now (a write the master applied stays APPLIED)
        if convert:
            inflight.from_spill = True
            inflight.spill_start = start
            inflight.spill_end = start + inflight_bytes
            inflight.spill_records = inflight_records
        if not self._spilled_episode and not self._closing and not self._stopped and self._spill_due == math.inf:
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


def _latest_appends(ops: list[Op], suspect: dict[str, int]) -> tuple[dict[str, tuple[Any, Append]], set[str]]:
    """
    Per suspect list, the newest entity object and its append in the batch, and the lists a
    later write replaced (a position flip's first append, a DEL): their old history is moot.
    """
    latest: dict[str, tuple[Any, Append]] = {}
    replaced: set[str] = set()
    for i, op in enumerate(ops):
        for c in op.cmds:
            key = c[1] if len(c) > 1 else None
            if key not in suspect:
                continue
            cmd = view(c)
            if type(cmd) is Append:
                n = int(cmd.n)
                if n == 1 and i > suspect[key]:
                    replaced.add(key)
                if op.entity is not None and (key not in latest or n >= int(latest[key][1].n)):
                    latest[key] = (op.entity, cmd)
            elif c[0] == b"DEL" and i > suspect[key]:
                replaced.add(key)
    return latest, replaced


def _describe_refused(ops: list[Op], packed: Packed, refused: list[tuple[int, Exception]]) -> list[tuple[str, Exception]]:
    """Each refused command as "cache write <kind> (<COMMAND> <key>)" with its error (for the ERROR line)."""
    commands = queued_commands(packed)
    out = []
    for k, error in refused:
        if k < 0:
            out.append((f"EXEC of a batch of {len(ops)} write(s)", error))
            continue
        cmd = commands[k]
        name = cmd[0].decode(errors="replace").upper()
        # EVALSHA sha numkeys key...: the launcher's idempotent scripts name their list first.
        key = cmd[3] if name == "EVALSHA" and len(cmd) > 3 else cmd[1] if len(cmd) > 1 else b""
        out.append((f"cache write {ops[packed.index[k][0]].kind} ({name} {key.decode(errors='replace')})", error))
    return out


def _run_id(info: Any) -> str | None:
    """The ``run_id`` field of an ``INFO server`` reply (None: refused or absent)."""
    if not isinstance(info, bytes):
        return None
    at = info.find(b"run_id:")
    if at < 0:
        return None
    return info[at + 7 : info.find(b"\r\n", at)].decode(errors="replace") or None
