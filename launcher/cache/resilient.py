"""
`ResilientCacheDatabase`: a NautilusTrader ``CacheDatabaseFacade`` for Redis that loses
nothing while the process lives, says so when Redis is away, and recovers state fast.

Layout
    Byte-for-byte NautilusTrader's (``launcher/state/layout.py``): the same keys, Redis types
    and ``MsgSpecSerializer`` payloads as ``nautilus_trader.cache.database.CacheDatabaseAdapter``
    for the same trader key, so either backend loads what the other wrote. On top, the
    launcher manifest (``launcher:manifest:*``) is kept in the same MULTI/EXEC as the writes.

Writes (see ``launcher/cache/write/`` for the mechanics)
    ``durability="buffered"``: the hot path only builds the write (keys, the entity's event
    count and index flags read at call time) and enqueues it; the writer thread serializes the
    (immutable) event with NautilusTrader's serializer and sends a MULTI/EXEC batch every
    ``buffer_interval_ms`` (as soon as possible when unset). Mutable payloads (strategy/actor
    state, snapshots) are serialized on the caller's thread. ``durability="sync"``: the call
    returns only once Redis applied the write - acknowledged by ``min_replica_acks`` replicas, when set, unless
    none answered within the WAIT timeout (then a WARN says writes are unreplicated) - it blocks for as long
    as Redis is unreachable, which is the price of that guarantee. Retained writes are resent
    idempotently after connection loss, lost replies, READONLY (failover) or short WAITs; past
    ``max_pending_writes`` they spill to an fsync'd file that is replayed on reconnect and by
    the next instance for the same trader key before it loads anything.

Spill choice
    When the in-memory FIFO reaches ``max_pending_writes``, every retained write not yet on disk
    (the in-flight batch, then the whole FIFO) is appended to the spill file in one write +
    fsync, on the calling thread. Rationale: the bound is exact (the writer thread may be stuck
    in a connect timeout and cannot be relied on to move data), the cost is one fsync per
    ``max_pending_writes`` writes and only during a long outage, and the file always holds the
    oldest retained writes in order, so a crash can only lose newer ones. One file per trader
    key (``{spill_dir}/{trader_key}.spill``), owned through an advisory lock for the instance's
    lifetime; files left by dead instances are adopted and replayed first, and refused (exit 4)
    when stale (`launcher.cache.spilled`). During an outage retained writes also go there at most
    one buffer interval apart. Nothing is ever dropped: a write Redis refuses for good (NOPERM,
    WRONGTYPE) stops the writer, spills everything and calls the `on_refused` handlers (the
    launcher stops the node and exits 8). An interpreter that exits without ``close()`` still
    flushes (atexit, bounded).

Loads
    One escaped SCAN (``launcher.state.layout.scan_pattern``) + pipelined LRANGE/MGET in chunks
    on one connection (``launcher.state.reader.BulkReader``), decoded by
    ``launcher.state.codec.EventDecoder`` (exactly what the serializer returns, faster), and
    rebuilt by ``launcher.state.entities``, the builders verify uses too: orders as
    ``OrderUnpacker.from_init`` + events (a later ``OrderInitialized`` transforms the order as
    in the native adapter), positions from their fills and instrument. A key that does not
    load (wrong Redis type, a payload that does not decode, events that do not replay) raises
    ``CorruptState`` naming it: the launcher exits 4 with one line. One SCAN of the trader's
    keys serves the start-up loads while the database is unchanged (`_keyspace`); the cyclic GC is paused during bulk loads and what they
    built goes to the oldest generation (`gc_paused`). Every load first waits (bounded) until
    retained writes - including a replayed spill file - are acknowledged, so it sees the latest
    state.

Outages
    One WARN when Redis becomes unreachable (with the number of retained writes), one INFO when
    writes resume (how many were re-sent, how long the outage lasted). Passwords never appear
    in logs (``ConnectionSettings.describe()``).
"""

from __future__ import annotations

import atexit
import contextlib
import time
import weakref
from collections.abc import Iterator
from typing import Any

import redis
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.facade import CacheDatabaseFacade
from nautilus_trader.common.component import Logger
from nautilus_trader.core.datetime import format_iso8601
from nautilus_trader.model.enums import TriggerType
from nautilus_trader.model.enums import currency_type_to_str
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.position import Position

from launcher.cache.listener import CacheListener
from launcher.cache.listener import CacheStats
from launcher.cache.spilled import adopt_spill_files
from launcher.cache.write.acked import AckedRecord
from launcher.cache.write.acked import acked_path
from launcher.cache.write.commands import APPEND
from launcher.cache.write.commands import DeleteEvent
from launcher.cache.write.commands import Lazy
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import Snapshot
from launcher.cache.write.spill import SpillFileDamaged
from launcher.cache.write.spill import resolve_spill_dir
from launcher.cache.write.spill import spill_path as _primary_spill_path
from launcher.cache.write.writer import LiveEntities
from launcher.cache.write.writer import Writer
from launcher.retry import write_backoff
from launcher.state import layout as L
from launcher.state.codec import EventDecoder
from launcher.state.codec import EventEncoder
from launcher.state.codec import deserialize_checked
from launcher.state.codec import detect_encoding
from launcher.state.entities import CorruptState
from launcher.state.entities import build_account
from launcher.state.entities import build_currency
from launcher.state.entities import build_order
from launcher.state.entities import build_position
from launcher.state.entities import decode_order
from launcher.state.entities import describe
from launcher.state.gc_pause import gc_paused
from launcher.state.reader import BulkReader
from launcher.store.cluster import slot_of
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect
from launcher.store.connection import health_check


_NO_TRIGGER = TriggerType.NO_TRIGGER
KIND_META_FINAL = "meta_final"


# Seconds a SCAN of the trader's keys serves the loads that follow it (see `_keyspace`).
_KEYSPACE_REUSE_S = 2.0


class ResilientCacheDatabase(CacheDatabaseFacade):
    """
    Resilient Redis cache database (see the module docstring).

    Parameters
    ----------
    trader_id, instance_id, serializer, config
        As for NautilusTrader's ``CacheDatabaseAdapter``.
    connection : ConnectionSettings, optional
        Where/how to connect (Sentinel, TLS, ACL, pool size, timeouts); default derived from
        ``config.database``.
    durability : {"buffered", "sync"}
    min_replica_acks : int
        WAIT for this many replicas after each batch; a batch counts as acknowledged only then.
    replica_ack_timeout_ms : int
        The WAIT timeout.
    max_pending_writes : int
        Retained writes kept in memory before spilling to disk.
    spill_dir : str, optional
        Directory of the spill file (one file per trader key); default and relative paths are
        resolved by `launcher.cache.write.spill.resolve_spill_dir` (never against the working directory).
    listener : CacheListener, optional
        Observer for metrics (no-op by default).
    close_timeout_s : float, optional
        Bounded wait of `close()` (and of the start-up replay) for Redis; default 3 x the
        socket timeout, at least 1 s.
    max_batch_ops : int
        Facade writes per MULTI/EXEC batch.
    max_backoff_s : float
        Upper bound of the exponential reconnect backoff, in seconds (`launcher.retry.write_backoff`).
    rebuilt_orders : dict, optional
        ``{client order id: (stored events, order)}`` already rebuilt from those events (the
        launcher's verify step): the first `load_orders` takes such an order as it is when
        Redis still holds exactly the same bytes for it, and rebuilds every other one.
    rebuilt_positions, rebuilt_accounts : dict, optional
        The same for the first `load_positions` (``{position id: (fills then the instrument's
        payload, position)}``) and `load_accounts` (``{account id: (events, account)}``).
    deferred_orders : dict, optional
        ``{client order id: stored events}`` of closed orders verify checked but did not build:
        the first `load_orders` leaves each out (in `closed_history`) when Redis still holds as
        many events (`_closed_history`), and the index loads leave out their entries, for
        ``launcher.cache.history`` to add after the node started trading.
    """

    def __init__(
        self,
        trader_id: Any,
        instance_id: Any,
        serializer: Any,
        config: CacheConfig | None = None,
        *,
        connection: ConnectionSettings | None = None,
        durability: str = "buffered",
        min_replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
        max_pending_writes: int = 100_000,
        spill_dir: str | None = None,
        listener: CacheListener | None = None,
        close_timeout_s: float | None = None,
        max_batch_ops: int = 1000,
        max_backoff_s: float = 1.0,
        rebuilt_orders: dict[str, tuple[list[bytes], Any]] | None = None,
        rebuilt_positions: dict[str, tuple[list[bytes], Position]] | None = None,
        rebuilt_accounts: dict[str, tuple[list[bytes], Any]] | None = None,
        deferred_orders: dict[str, list[bytes]] | None = None,
    ) -> None:
        if config is None:
            config = CacheConfig()
        if not isinstance(config, CacheConfig):
            raise TypeError(f"config must be a CacheConfig, was {type(config).__name__}")
        if durability not in ("buffered", "sync"):
            raise ValueError(f"durability must be 'buffered' or 'sync', was {durability!r}")
        if min_replica_acks < 0 or max_pending_writes < 1 or replica_ack_timeout_ms < 1:
            raise ValueError("min_replica_acks >= 0, max_pending_writes >= 1, replica_ack_timeout_ms >= 1 required")
        super().__init__(config)
        self._log = Logger(type(self).__name__)
        self._config = config
        self._serializer = serializer
        self._encoding = detect_encoding(serializer)
        self._trader_id = trader_id
        self._instance_id = instance_id
        self._rebuilt_orders = rebuilt_orders or None
        self._rebuilt_positions = rebuilt_positions or None
        self._rebuilt_accounts = rebuilt_accounts or None
        self._deferred_orders = deferred_orders or None
        # The closed orders the first load left unbuilt, for `launcher.cache.history` to add to the
        # node's cache after it started trading: (order key, stored events), and their index entries.
        self.closed_history: list[tuple[str, list[bytes]]] = []
        self.closed_history_links: dict[str, tuple[str | None, str | None]] = {}
        self._history_ids: set[str] = set()
        self._quiet = False  # True while the node's cache takes in history Redis already holds
        if connection is None:
            connection = (
                ConnectionSettings.from_database_config(config.database) if config.database is not None else ConnectionSettings()
            )
        self._trader_key = L.trader_key(trader_id.value, instance_id.value, config, hash_tag=connection.is_cluster)
        if connection.is_cluster and slot_of(self._trader_key) != slot_of(connection.slot_key or ""):
            # Writes to a slot the pool does not follow would be refused (MOVED) forever.
            raise ValueError(f"trader key '{self._trader_key}' is not in the slot of '{connection.slot_key}'")
        self._settings = connection
        self._durability = durability
        self.listener = listener or CacheListener()
        self._stats = CacheStats()
        self._closed = False
        self._refusal_handlers: list[Any] = []
        self._refusals: list[tuple[str, str]] = []
        self._instruments_seen: dict[str, tuple[bytes, Any]] = {}
        if close_timeout_s is None:
            close_timeout_s = max(1.0, 3.0 * connection.timeout_s)
        self._close_timeout_s = close_timeout_s

        k = self._trader_key + ":"
        self._k = k
        self._keyspace_cache: tuple[int, tuple[int, int] | None, float, dict[str, list[str]]] | None = None
        self._idx = {name: k + name for name in (
            L.INDEX_ORDER_IDS, L.INDEX_ORDER_POSITION, L.INDEX_ORDER_CLIENT, L.INDEX_ORDERS,
            L.INDEX_ORDERS_OPEN, L.INDEX_ORDERS_CLOSED, L.INDEX_ORDERS_EMULATED, L.INDEX_ORDERS_INFLIGHT,
            L.INDEX_POSITIONS, L.INDEX_POSITIONS_OPEN, L.INDEX_POSITIONS_CLOSED,
        )}
        self._order_prefix = f"{k}{L.ORDERS}:"
        self._position_prefix = f"{k}{L.POSITIONS}:"
        self._account_prefix = f"{k}{L.ACCOUNTS}:"
        # List key -> the newest order/position/account object written or loaded: what the
        # writer reconciles a new master against after a failover (one entry per live entity).
        # The writer keeps it (`Writer.note_loaded`, and as writes leave its memory FIFO), so a
        # facade write does not pay for it on the caller's thread.
        self._latest: dict[str, Any] = {}
        self._idx_order_ids = self._idx[L.INDEX_ORDER_IDS]
        self._idx_inflight = self._idx[L.INDEX_ORDERS_INFLIGHT]
        self._idx_open = self._idx[L.INDEX_ORDERS_OPEN]
        self._idx_closed = self._idx[L.INDEX_ORDERS_CLOSED]
        self._idx_emulated = self._idx[L.INDEX_ORDERS_EMULATED]
        self._idx_pos_open = self._idx[L.INDEX_POSITIONS_OPEN]
        self._idx_pos_closed = self._idx[L.INDEX_POSITIONS_CLOSED]
        self._mf_orders = k + L.MANIFEST_ORDERS
        self._mf_positions = k + L.MANIFEST_POSITIONS
        self._mf_accounts = k + L.MANIFEST_ACCOUNTS
        self._mf_meta = k + L.MANIFEST_META

        self._log.info(
            f"Redis {self._settings.describe()}, trader key '{self._trader_key}', durability={durability}, "
            f"encoding={self._encoding}, buffer_interval_ms={config.buffer_interval_ms}, "
            f"min_replica_acks={min_replica_acks}, max_pending_writes={max_pending_writes}",
        )

        if config.buffer_interval_ms and config.buffer_interval_ms > 1000:
            self._log.warning(
                f"High buffer_interval_ms at {config.buffer_interval_ms}, recommended range is [10, 1000] milliseconds",
            )

        self._client = connect(connection)
        spill_dir = resolve_spill_dir(spill_dir)
        # A stale file (another node advanced this trader since it was written) is refused here.
        self._spill = adopt_spill_files(self._client, spill_dir, self._trader_key, lambda: self._log)
        self._log.info(f"Spill file: {self._spill.path}")
        if self._spill.path != _primary_spill_path(spill_dir, self._trader_key):
            self._log.warning(
                f"Another live instance holds the spill file of trader key '{self._trader_key}': "
                f"this one spills to {self._spill.path}",
            )
        # What Redis acknowledged, kept on this machine (verify names a Redis that went back in
        # time against it); only the instance owning the trader's spill file keeps it.
        acked = None
        if self._spill.path == _primary_spill_path(spill_dir, self._trader_key):
            acked = AckedRecord(acked_path(spill_dir, self._trader_key),
                                {self._order_prefix: L.ORDERS, self._position_prefix: L.POSITIONS})
        self._reader = BulkReader(
            self._client,
            chunk=config.bulk_read_batch_size or 5000,
            retry_for_s=close_timeout_s,
            on_round_trip=self._load_round_trip,
        )
        self._writer = Writer(
            client=self._client,
            describe=self._settings.describe(),
            spill=self._spill,
            sync=durability == "sync",
            buffer_interval_s=(config.buffer_interval_ms or 0) / 1000.0,
            max_pending_writes=max_pending_writes,
            min_replica_acks=min_replica_acks,
            replica_ack_timeout_ms=replica_ack_timeout_ms,
            socket_timeout_s=connection.timeout_s,
            close_timeout_s=close_timeout_s,
            max_batch_ops=max_batch_ops,
            backoff=write_backoff(max_backoff_s),
            serializer=EventEncoder(serializer),  # byte-identical to `serializer`, faster for events
            listener=self.listener,
            stats=self._stats,
            log=lambda: self._log,
            name=f"cache-{self._trader_key}",
            on_refused=self._refused,
            unspilled_kinds=(KIND_META_FINAL,),  # a clean stop is recorded only if Redis has it before close ends
            live=LiveEntities(self._latest, self._locate, self._index_commands),
            acked=acked,
        )
        # Every facade write goes straight to the writer (no frame of the facade's own on the
        # hot path); close() swaps in `_submit_after_close`, which says a write came too late.
        self._submit = self._writer.submit
        leftover = self._spill.exists
        try:
            self._writer.start()
        except SpillFileDamaged:
            self._spill.unlock()
            raise
        # A spill file left by an earlier process is at the head of the FIFO: it is replayed
        # before this instance's own writes and before anything is loaded.
        if leftover:
            # Applied is what a load needs (it reads the master); replicas may acknowledge later.
            if self._writer.wait_applied(close_timeout_s):
                unreplicated = self._writer.unreplicated
                note = (f"; {unreplicated} of them wait for replicas to acknowledge (kept in the file)"
                        if unreplicated else "")
                self._log.info(f"Replayed the spilled writes of an earlier run from {self._spill.path}{note}")
            else:
                self._log.warning(
                    f"Redis not reachable yet: {self._writer.pending()} spilled write(s) from an earlier run "
                    f"stay in {self._spill.path} and are replayed when it is",
                )
        self._writer.submit(Op("meta_start", [(b"HSET", self._mf_meta, b"final", b"0", b"instance_id", instance_id.value,
                                                b"updated_ns", time.time_ns())]), wait=False)
        # Safety net: an interpreter that exits without close() still flushes (bounded) or spills.
        self._atexit_hook = _exit_hook(weakref.ref(self))
        atexit.register(self._atexit_hook)

    # -- introspection ------------------------------------------------------------------------

    @property
    def trader_key(self) -> str:
        return self._trader_key

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def serializer(self) -> Any:
        return self._serializer

    @property
    def order_prefix(self) -> str:
        """The key prefix of every order's event list (``<trader key>:orders:``)."""
        return self._order_prefix

    @property
    def spill_path(self) -> str:
        return str(self._spill.path)

    @property
    def client(self):
        """The pooled redis-py client (plain or Sentinel-managed)."""
        return self._client

    @property
    def writer(self) -> Writer:
        """The write path (retained writes, writer thread); for diagnostics and the benchmark."""
        return self._writer

    def stats(self) -> CacheStats:
        """A snapshot of the counters and state."""
        self._writer.refresh_stats()
        return CacheStats(**{**self._stats.__dict__, "round_trip_s": dict(self._stats.round_trip_s),
                             "write_errors": dict(self._stats.write_errors)})

    def pending_writes(self) -> int:
        return self._writer.pending()

    def health_check(self) -> bool:
        t0 = time.monotonic()
        ok = health_check(self._client)
        self._load_round_trip("ping", time.monotonic() - t0)
        return ok

    def wait_until_persisted(self, timeout_s: float = 10.0) -> bool:
        """
        Block until every write so far is acknowledged by Redis (False on timeout), and what it
        acknowledged is in this machine's acknowledged-writes record.
        """
        if not self._writer.wait_drained(timeout_s):
            return False
        self._writer.flush_record()
        return True

    def _load_round_trip(self, operation: str, seconds: float) -> None:
        self._stats.round_trip_s[operation] = seconds
        if type(self.listener) is not CacheListener:
            try:
                self.listener.on_round_trip(operation, seconds)
            except Exception:  # noqa: BLE001
                self._stats.listener_errors += 1

    def on_refused(self, handler: Any) -> None:
        """
        Call ``handler(reason, message)`` when writes cannot be written and retrying cannot fix
        it (NOPERM, WRONGTYPE, an unserializable payload; see `launcher.cache.write.writer.Refused`):
        the launcher stops the node. Called at once for a refusal that already happened.
        """
        self._refusal_handlers.append(handler)
        for refusal in list(self._refusals):
            handler(*refusal)

    @property
    def refusal(self) -> tuple[str, str] | None:
        """(reason, message) of the first refusal (None while Redis took every write)."""
        return self._refusals[0] if self._refusals else None

    def _refused(self, reason: str, message: str) -> None:
        self._refusals.append((reason, message))
        for handler in list(self._refusal_handlers):
            handler(reason, message)

    # -- commands -----------------------------------------------------------------------------

    def _submit_after_close(self, op: Op) -> int:
        self._log.error(f"Cache write {op.kind} after close(): spilled to {self._spill.path}")
        return self._writer.submit(op)

    def close_at_exit(self) -> None:
        """The interpreter is exiting and nobody closed this database: flush (and say so) rather than lose writes."""
        if self._closed:
            return
        pending = self.pending_writes()
        if pending:
            self._log.warning(f"Process exiting without close(): flushing {pending} retained write(s)")
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._submit = self._submit_after_close
        atexit.unregister(self._atexit_hook)
        self._log.debug("Closing: flushing retained writes")
        refusal = self._writer.refusal
        if refusal is None:  # a refused writer never records a clean stop
            self._writer.submit(Op(KIND_META_FINAL, [(b"HSET", self._mf_meta, b"final", b"1", b"instance_id",
                                                      self._instance_id.value, b"updated_ns", time.time_ns())]),
                                wait=False)
        left = self._writer.close(drop_kinds=(KIND_META_FINAL,))
        acknowledged, lost = self._stats.writes_acknowledged, self._stats.writes_lost
        lost_text = f", {lost} could not be serialized (lost)" if lost else ""
        if refusal is not None or lost:
            self._log.error(
                f"Closed after Redis refused writes ({refusal.reason if refusal else 'unserializable payload'}): {acknowledged} write(s) "
                f"acknowledged by Redis, {left} not (spilled to {self._spill.path}, replayed by the next start for "
                f"trader key '{self._trader_key}'){lost_text}",
            )
        elif left:
            self._log.error(
                f"Redis unreachable at close ({self._settings.describe()}): {left} write(s) spilled to "
                f"{self._spill.path}; they are replayed by the next start for trader key '{self._trader_key}' "
                f"({acknowledged} write(s) acknowledged by Redis)",
            )
        else:
            self._log.info(f"Closed: every write acknowledged by Redis ({acknowledged})")
        try:
            self._client.connection_pool.disconnect()
        except Exception:  # noqa: BLE001
            pass

    def flush(self) -> None:
        seq = self._writer.submit(Op("flush", [(b"FLUSHDB",), (b"HSET", self._mf_meta, b"final", b"0", b"instance_id",
                                                              self._instance_id.value, b"updated_ns", time.time_ns())]),
                                  wait=False)
        if self._writer.wait_acked(seq, self._close_timeout_s):
            self._log.info("Flushed cache database")
        else:
            self._log.error("FLUSHDB not acknowledged yet (Redis unreachable); it stays queued in order")

    def keys(self, pattern: str = "*") -> list[str]:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("pattern must be a non-empty string")
        return self._reader.scan(L.scan_pattern(self._trader_key, pattern))

    def add(self, key: str, value: bytes) -> None:
        self._submit(Op("add", [(b"SET", f"{self._k}{L.GENERAL}:{key}", value)]))

    def add_currency(self, currency: Currency) -> None:
        payload = Lazy({
            "precision": currency.precision,
            "iso4217": currency.iso4217,
            "name": currency.name,
            "currency_type": currency_type_to_str(currency.currency_type),
        })
        self._submit(Op("add_currency", [(b"SET", f"{self._k}{L.CURRENCIES}:{currency.code}", payload)], lazy=True))

    def add_instrument(self, instrument: Any) -> None:
        payload = Lazy(instrument)
        self._submit(Op("add_instrument", [(b"SET", f"{self._k}{L.INSTRUMENTS}:{instrument.id.value}", payload)], lazy=True))

    def add_synthetic(self, synthetic: Any) -> None:
        payload = Lazy(synthetic)
        self._submit(Op("add_synthetic", [(b"SET", f"{self._k}{L.SYNTHETICS}:{synthetic.id.value}", payload)], lazy=True))

    def add_account(self, account: Any) -> None:
        aid = account.id.value
        key = self._account_prefix + aid
        self._submit(Op("add_account", (
            (APPEND, key, self._mf_accounts, aid, account.event_count, None, 1),  # Append.stored, inlined
        ), account, event=account.last_event))

    def update_account(self, account: Any) -> None:
        aid = account.id.value
        key = self._account_prefix + aid
        self._submit(Op("update_account", (
            (APPEND, key, self._mf_accounts, aid, account.event_count, None, 0),  # Append.stored, inlined
        ), account, event=account.last_event))

    def add_order(self, order: Any, position_id: PositionId | None = None, client_id: ClientId | None = None) -> None:
        if self._quiet:
            return  # history Redis already holds (`quiet`)
        coid = order.client_order_id.value
        idx = self._idx
        key = self._order_prefix + coid
        cmds = [
            (APPEND, key, self._mf_orders, coid, order.event_count, None, 1),  # Append.stored, inlined
            (b"SADD", idx[L.INDEX_ORDERS], coid),
        ]
        if order.emulation_trigger != _NO_TRIGGER:
            cmds.append((b"SADD", idx[L.INDEX_ORDERS_EMULATED], coid))
        if position_id is not None:
            cmds.append((b"HSET", idx[L.INDEX_ORDER_POSITION], coid, position_id.value))
        if client_id is not None:
            cmds.append((b"HSET", idx[L.INDEX_ORDER_CLIENT], coid, client_id.value))
        self._submit(Op("add_order", tuple(cmds), order, event=order.last_event))

    def update_order(self, order: Any) -> None:
        if self._quiet:
            return  # history Redis already holds (`quiet`)
        # The hot path of every order event: one tuple built in place, no helper call (the
        # index entries are `_order_states` inlined; a test holds the two equal).
        coid = order.client_order_id.value
        key = self._order_prefix + coid
        append = (APPEND, key, self._mf_orders, coid, order.event_count, None, 0)  # Append.stored, inlined
        inflight = (b"SADD" if order.is_inflight else b"SREM", self._idx_inflight, coid)
        emulated = (b"SREM" if order.emulation_trigger == _NO_TRIGGER else b"SADD", self._idx_emulated, coid)
        if order.is_open:
            states = (inflight, (b"SREM", self._idx_closed, coid), (b"SADD", self._idx_open, coid), emulated)
        elif order.is_closed:
            states = (inflight, (b"SREM", self._idx_open, coid), (b"SADD", self._idx_closed, coid), emulated)
        else:
            states = (inflight, emulated)
        if order.venue_order_id is not None:
            cmds = (append, (b"SADD", self._idx_order_ids, coid), *states)
        else:
            cmds = (append, *states)
        self._submit(Op("update_order", cmds, order, event=order.last_event))

    def _order_states(self, order: Any, coid: str) -> tuple:
        """The in-flight, open/closed and emulated index entries of `order` as its state says."""
        inflight = (b"SADD" if order.is_inflight else b"SREM", self._idx_inflight, coid)
        emulated = (b"SREM" if order.emulation_trigger == _NO_TRIGGER else b"SADD", self._idx_emulated, coid)
        if order.is_open:
            return inflight, (b"SREM", self._idx_closed, coid), (b"SADD", self._idx_open, coid), emulated
        if order.is_closed:
            return inflight, (b"SREM", self._idx_open, coid), (b"SADD", self._idx_closed, coid), emulated
        return inflight, emulated

    def _locate(self, list_key: str) -> tuple[str, str]:
        """The manifest hash and field recording the event count of the list at `list_key`."""
        for prefix, manifest in ((self._order_prefix, self._mf_orders), (self._position_prefix, self._mf_positions),
                                 (self._account_prefix, self._mf_accounts)):
            if list_key.startswith(prefix):
                return manifest, list_key[len(prefix):]
        raise KeyError(list_key)

    def _index_commands(self, list_key: str, entity: Any) -> tuple:
        """
        Every index entry of the order or position whose list is `list_key`, as its state in
        memory says (a rewritten list gets them back; accounts have none). The order's client
        id is not held by the order, so ``index:order_client`` is left as it is.
        """
        idx = self._idx
        if list_key.startswith(self._order_prefix):
            coid = entity.client_order_id.value
            cmds = [(b"SADD", idx[L.INDEX_ORDERS], coid), *self._order_states(entity, coid)]
            if entity.venue_order_id is not None:
                cmds.append((b"SADD", self._idx_order_ids, coid))
            if entity.position_id is not None:
                cmds.append((b"HSET", idx[L.INDEX_ORDER_POSITION], coid, entity.position_id.value))
            return tuple(cmds)
        if list_key.startswith(self._position_prefix):
            pid = entity.id.value
            return ((b"SADD", idx[L.INDEX_POSITIONS], pid), *self._position_states(entity, pid))
        return ()

    def add_position(self, position: Any) -> None:
        pid = position.id.value
        key = self._position_prefix + pid
        # NETTING flips reuse the position id: the list starts over (as the native adapter does).
        self._submit(Op("add_position", (
            (b"DEL", key),
            (APPEND, key, self._mf_positions, pid, position.event_count, None, 1),  # Append.stored, inlined
            (b"SADD", self._idx[L.INDEX_POSITIONS], pid),
            (b"SADD", self._idx[L.INDEX_POSITIONS_OPEN], pid),
        ), position, event=position.last_event))

    def update_position(self, position: Any) -> None:
        pid = position.id.value
        key = self._position_prefix + pid
        append = (APPEND, key, self._mf_positions, pid, position.event_count, None, 0)  # Append.stored, inlined
        # `_position_states` inlined (a test holds the two equal): no helper call per fill.
        if position.is_open:
            cmds = (append, (b"SADD", self._idx_pos_open, pid), (b"SREM", self._idx_pos_closed, pid))
        elif position.is_closed:
            cmds = (append, (b"SADD", self._idx_pos_closed, pid), (b"SREM", self._idx_pos_open, pid))
        else:
            cmds = (append,)
        self._submit(Op("update_position", cmds, position, event=position.last_event))

    def _position_states(self, position: Any, pid: str) -> tuple:
        """The open/closed index entries of `position` as its state says."""
        if position.is_open:
            return (b"SADD", self._idx[L.INDEX_POSITIONS_OPEN], pid), (b"SREM", self._idx[L.INDEX_POSITIONS_CLOSED], pid)
        if position.is_closed:
            return (b"SADD", self._idx[L.INDEX_POSITIONS_CLOSED], pid), (b"SREM", self._idx[L.INDEX_POSITIONS_OPEN], pid)
        return ()

    def index_venue_order_id(self, client_order_id: ClientOrderId, venue_order_id: Any) -> None:
        if self._quiet:
            return  # history Redis already holds (`quiet`)
        self._submit(Op("index_venue_order_id", [(b"SADD", self._idx[L.INDEX_ORDER_IDS], client_order_id.value)]))

    def index_order_position(self, client_order_id: ClientOrderId, position_id: PositionId) -> None:
        if self._quiet:
            return  # history Redis already holds (`quiet`)
        self._submit(Op("index_order_position", [
            (b"HSET", self._idx[L.INDEX_ORDER_POSITION], client_order_id.value, position_id.value),
        ]))

    def update_actor(self, actor: Any) -> None:
        payload = self._serializer.serialize(actor.save())
        self._submit(Op("update_actor", [(b"SET", f"{self._k}{L.ACTORS}:{actor.id.value}:state", payload)]))

    def update_strategy(self, strategy: Any) -> None:
        payload = self._serializer.serialize(strategy.save())
        self._submit(Op("update_strategy", [(b"SET", f"{self._k}{L.STRATEGIES}:{strategy.id.value}:state", payload)]))

    def snapshot_order_state(self, order: Any) -> None:
        if self._quiet:
            return  # history Redis already holds (`quiet`)
        payload = self._serializer.serialize(order.to_dict())
        self._submit(Op("snapshot_order_state", [
            Snapshot.stored(f"{self._k}{L.SNAPSHOTS_ORDERS}:{order.client_order_id.value}", payload),
        ]))

    def snapshot_position_state(self, position: Any, ts_snapshot: int, unrealized_pnl: Any = None) -> None:
        state = position.to_dict()
        if unrealized_pnl is not None:
            state["unrealized_pnl"] = str(unrealized_pnl)
        state["ts_snapshot"] = ts_snapshot
        payload = self._serializer.serialize(state)
        self._submit(Op("snapshot_position_state", [
            Snapshot.stored(f"{self._k}{L.SNAPSHOTS_POSITIONS}:{position.id.value}", payload),
        ]))

    def heartbeat(self, timestamp: Any) -> None:
        self._submit(Op("heartbeat", [(b"SET", f"{self._k}{L.HEARTBEAT}", format_iso8601(timestamp))]))

    def delete_order(self, client_order_id: ClientOrderId) -> None:
        coid = client_order_id.value
        key = self._order_prefix + coid
        cmds: list = [(b"DEL", key)]
        cmds += [(b"SREM", self._idx[name], coid) for name in L.ORDER_SET_INDEXES]
        cmds += [(b"HDEL", self._idx[name], coid) for name in L.ORDER_HASH_INDEXES]
        cmds.append((b"HDEL", self._mf_orders, coid))
        self._submit(Op("delete_order", cmds))

    def delete_position(self, position_id: PositionId) -> None:
        pid = position_id.value
        key = self._position_prefix + pid
        cmds: list = [(b"DEL", key)]
        cmds += [(b"SREM", self._idx[name], pid) for name in L.POSITION_SET_INDEXES]
        cmds.append((b"HDEL", self._mf_positions, pid))
        self._submit(Op("delete_position", cmds))

    def delete_account_event(self, account_id: AccountId, event_id: str) -> None:
        aid = account_id.value
        self._submit(Op("delete_account_event", [
            DeleteEvent.stored(f"{self._k}{L.ACCOUNTS}:{aid}", self._mf_accounts, aid, event_id, self._encoding),
        ]))

    def delete_actor(self, component_id: Any) -> None:
        self._submit(Op("delete_actor", [(b"DEL", f"{self._k}{L.ACTORS}:{component_id.value}:state")]))

    def delete_strategy(self, strategy_id: Any) -> None:
        self._submit(Op("delete_strategy", [(b"DEL", f"{self._k}{L.STRATEGIES}:{strategy_id.value}:state")]))

    # -- queries ------------------------------------------------------------------------------

    def _before_read(self) -> None:
        # A load reads the master: it needs every write applied there, not yet acknowledged by replicas.
        if not self._writer.wait_applied(self._close_timeout_s):
            self._log.warning(
                f"Loading while {self._writer.pending() - self._writer.unreplicated} write(s) are not yet "
                "applied in Redis: the loaded state may not include them",
            )

    def _ids(self, collection: str) -> tuple[list[str], list[str]]:
        """The keys of `collection` and the ids they name."""
        named = self._keyspace().get(collection, {})
        return list(named.values()), list(named)

    def _keyspace(self) -> dict[str, dict[str, str]]:
        """
        The trader's keys by collection and id (``layout.classify``), from one escaped SCAN of
        the trader prefix. At start NautilusTrader loads general state, currencies,
        instruments, synthetics, accounts, orders and positions one after another, and every
        SCAN walks the whole keyspace; the loads that follow one within `_KEYSPACE_REUSE_S`
        reuse it while nothing in the database changed: this instance submitted no write, and
        the server's count of changes (``rdb_changes_since_last_save``, bumped by every write
        of any client) and of keys are what they were. Where INFO is not allowed, every load
        scans.
        """
        submitted = self._writer.submitted
        version = self._dataset_version()
        now = time.monotonic()
        cached = self._keyspace_cache
        if (cached is not None and version is not None and cached[:2] == (submitted, version)
                and now - cached[2] < _KEYSPACE_REUSE_S):
            return cached[3]
        by_collection = L.classify(self._trader_key, self._reader.scan(L.scan_pattern(self._trader_key)))
        self._keyspace_cache = (submitted, version, time.monotonic(), by_collection)
        return by_collection

    def _dataset_version(self) -> tuple[int, int] | None:
        """(keys, changes) of the database, or None when the server does not tell."""
        try:
            info, keys = self._reader.commands((b"INFO", b"persistence"), (b"DBSIZE",))
        except redis.exceptions.ResponseError:
            return None
        marker = b"rdb_changes_since_last_save:"
        at = info.find(marker) if isinstance(info, bytes) else -1
        if at < 0:
            return None
        end = info.find(b"\r\n", at)
        try:
            return int(keys), int(info[at + len(marker) : end if end >= 0 else None])
        except ValueError:
            return None

    def _live_loaded(self, loaded: dict[str, Any]) -> None:
        """The entities a load built are live: a failover is reconciled against them too."""
        self._writer.note_loaded(loaded)

    def _loaded(self, what: str, count: int, t0: float) -> None:
        if type(self.listener) is not CacheListener:
            try:
                self.listener.on_load(what, count, time.monotonic() - t0)
            except Exception:  # noqa: BLE001
                self._stats.listener_errors += 1

    def load_all(self) -> dict:
        instruments = self.load_instruments()
        return {
            "currencies": self.load_currencies(),
            "instruments": instruments,
            "synthetics": self.load_synthetics(),
            "accounts": self.load_accounts(),
            "orders": self.load_orders(),
            "positions": self.load_positions(instruments=instruments),
        }

    def load(self) -> dict:
        self._before_read()
        keys, names = self._ids(L.GENERAL)
        values = self._reader.mget(keys)
        return {name: value for name, value in zip(names, values) if value is not None}

    def load_currencies(self) -> dict:
        self._before_read()
        t0 = time.monotonic()
        keys, codes = self._ids(L.CURRENCIES)
        currencies = {}
        for code, raw in zip(codes, self._reader.mget(keys)):
            if raw is None:
                continue
            try:
                currencies[code] = build_currency(code, deserialize_checked(self._serializer, raw))
            except Exception as e:  # noqa: BLE001 (as the native adapter: log and go on)
                self._log.error(f"Failed to deserialize currency {code}: {e}")
        self._loaded("currencies", len(currencies), t0)
        return currencies

    def _load_strings(self, collection: str, what: str) -> dict:
        self._before_read()
        t0 = time.monotonic()
        keys, names = self._ids(collection)
        result = {}
        for name, raw in zip(names, self._reader.mget(keys)):
            if raw is None:
                continue
            try:
                obj = deserialize_checked(self._serializer, raw)
                result[obj.id] = obj
            except Exception as e:  # noqa: BLE001 (as the native adapter: log and go on)
                self._log.error(f"Failed to deserialize {what} {name}: {e}")
        self._loaded(what, len(result), t0)
        return result

    def load_instruments(self) -> dict:
        return self._load_strings(L.INSTRUMENTS, "instrument")

    def load_synthetics(self) -> dict:
        return self._load_strings(L.SYNTHETICS, "synthetic")

    def load_accounts(self) -> dict:
        self._before_read()
        t0 = time.monotonic()
        keys, ids = self._ids(L.ACCOUNTS)
        rebuilt, self._rebuilt_accounts = self._rebuilt_accounts, None  # good for the first load only
        for attempt in self._reader.retrying():
            with attempt:
                decoder = EventDecoder(self._serializer, self._encoding)
                accounts = {}
                loaded: dict[str, Any] = {}
                with gc_paused():
                    for start, lists in self._reader.lrange_chunks(keys, chunk=100):
                        for key, id_, raw_events in zip(keys[start:], ids[start:], lists):
                            # An account rebuilt earlier from exactly these bytes is that account.
                            account = _same_events(rebuilt.get(id_), raw_events) if rebuilt else None
                            if account is None:
                                account = build_account(key, _decode_all(key, raw_events, decoder))
                            if account is not None:
                                accounts[account.id] = account
                                loaded[key] = account
        self._live_loaded(loaded)
        self._loaded("accounts", len(accounts), t0)
        return accounts

    def load_orders(self) -> dict:
        self._before_read()
        t0 = time.monotonic()
        keys, ids = self._ids(L.ORDERS)
        rebuilt, self._rebuilt_orders = self._rebuilt_orders, None  # good for the first load only
        deferred, self._deferred_orders = self._deferred_orders, None
        history: list[tuple[str, list[bytes]]] = []
        if deferred:
            keys, ids, history = self._closed_history(keys, ids, deferred)
        for attempt in self._reader.retrying():
            with attempt:
                decoder = EventDecoder(self._serializer, self._encoding)
                orders = {}
                loaded = {}
                reused = 0
                with gc_paused():
                    for start, lists in self._reader.lrange_chunks(keys):
                        chunk_keys = keys[start : start + len(lists)]
                        chunk_ids = ids[start : start + len(lists)]
                        # An order rebuilt earlier from exactly these bytes is that order.
                        ready = [_same_events(rebuilt.get(coid), raw) for coid, raw in zip(chunk_ids, lists)] \
                            if rebuilt else [None] * len(lists)
                        # Decode the whole chunk, then build: keeping each phase's code hot is
                        # measurably faster than alternating per order.
                        decoded = [decode_order(key, raw, decoder) if done is None else None
                                   for key, raw, done in zip(chunk_keys, lists, ready)]
                        for key, events, done in zip(chunk_keys, decoded, ready):
                            if done is not None:
                                order = done
                                reused += 1
                            else:
                                order = build_order(key, events)
                            if order is not None:
                                orders[order.client_order_id] = order
                                loaded[key] = order
        if rebuilt:
            self._log.info(
                f"Orders: {reused} of {len(orders)} taken as verify rebuilt them (their events in Redis unchanged), "
                f"{len(orders) - reused} rebuilt",
            )
        self.closed_history = history
        self._history_ids = {key[len(self._order_prefix):] for key, _ in history}
        if history:
            self._log.info(f"Orders: {len(history)} closed ones are built after the node started trading")
        self._live_loaded(loaded)
        self._loaded("orders", len(orders), t0)
        return orders

    def _closed_history(self, keys: list[str], ids: list[str], deferred: dict[str, list[bytes]]
                        ) -> tuple[list[str], list[str], list[tuple[str, list[bytes]]]]:
        """
        Split off the closed orders verify checked and left unbuilt: each waits for
        ``launcher.cache.history`` with the events verify read, if Redis still holds as many
        (one pipelined LLEN each, not their bytes again: under the lease nothing else writes
        here, and an order written since has more). Returns the keys and ids still to load now,
        and the waiting ``(key, events)``.
        """
        waiting = [i for i, coid in enumerate(ids) if coid in deferred]
        lengths: list[Any] = []  # an error reply in place never equals a length: that order is loaded now
        for attempt in self._reader.retrying():
            with attempt:
                lengths = self._reader.replies([(b"LLEN", keys[i]) for i in waiting])  # pipelined in chunks
        later = {i for i, n in zip(waiting, lengths) if n == len(deferred[ids[i]])}
        history = [(keys[i], deferred[ids[i]]) for i in waiting if i in later]
        now = [i for i in range(len(keys)) if i not in later]
        return [keys[i] for i in now], [ids[i] for i in now], history

    def load_positions(self, instruments: dict | None = None) -> dict:
        self._before_read()
        t0 = time.monotonic()
        keys, ids = self._ids(L.POSITIONS)
        rebuilt, self._rebuilt_positions = self._rebuilt_positions, None  # good for the first load only
        for attempt in self._reader.retrying():
            with attempt:
                decoder = EventDecoder(self._serializer, self._encoding)
                # (key, raw fills, decoded fills or None, position verify rebuilt from these very fills or None)
                fills = []
                with gc_paused():
                    for start, lists in self._reader.lrange_chunks(keys):
                        for key, id_, raw_events in zip(keys[start:], ids[start:], lists):
                            if not raw_events:
                                continue
                            earlier = rebuilt.get(id_) if rebuilt else None
                            if earlier is not None and earlier[0][:-1] == raw_events:
                                fills.append((key, raw_events, None, earlier))
                            else:
                                fills.append((key, raw_events, _decode_all(key, raw_events, decoder), None))
        instruments = dict(instruments or {})
        first_ids = {earlier[1].instrument_id if events is None else getattr(events[0], "instrument_id", None)
                     for _, _, events, earlier in fills}
        missing = sorted(str(i) for i in first_ids if i is not None and i not in instruments)
        read_now: dict[str, bytes] = {}  # instrument id -> the payload this load read
        if missing:
            raws = self._reader.mget([f"{self._k}{L.INSTRUMENTS}:{i}" for i in missing])
            for instrument_id, raw in zip(missing, raws):
                if raw is not None:
                    instruments[InstrumentId.from_str(instrument_id)] = self._instrument(instrument_id, raw)
                    read_now[instrument_id] = raw
        positions = {}
        loaded = {}
        with gc_paused():
            for key, raw_events, events, earlier in fills:
                if earlier is not None:
                    # Taken only if the instrument it was built with is what this load read too.
                    if read_now.get(earlier[1].instrument_id.value) == earlier[0][-1]:
                        positions[earlier[1].id] = earlier[1]
                        continue
                    events = _decode_all(key, raw_events, decoder)
                position = self._build_position(key, events, instruments)
                if position is not None:
                    positions[position.id] = position
                    loaded[key] = position
        self._live_loaded(loaded)
        self._loaded("positions", len(positions), t0)
        return positions

    def _build_position(self, key: str, events: list, instruments: dict) -> Position | None:
        instrument = instruments.get(getattr(events[0], "instrument_id", None))
        if instrument is None and isinstance(events[0], OrderFilled):
            self._log.error(f"Cannot load position: no instrument found for {events[0].instrument_id}")
            return None
        return build_position(key, events, instrument)

    def load_index_order_position(self) -> dict:
        self._before_read()
        raw = self._reader.command(b"HGETALL", self._idx[L.INDEX_ORDER_POSITION])
        return {ClientOrderId(k): PositionId(v) for k, v in self._links(raw, 0)}

    def load_index_order_client(self) -> dict:
        self._before_read()
        raw = self._reader.command(b"HGETALL", self._idx[L.INDEX_ORDER_CLIENT])
        return {ClientOrderId(k): ClientId(v) for k, v in self._links(raw, 1)}

    def _links(self, raw: Any, slot: int) -> list[tuple[str, str]]:
        """An index hash's entries; those of orders in `closed_history` are kept aside for it (`slot` 0 position, 1 client)."""
        pairs = [(k.decode(), v.decode()) for k, v in _pairs(raw)]
        if not self._history_ids:
            return pairs
        kept = []
        for order_id, value in pairs:
            if order_id in self._history_ids:
                links = self.closed_history_links.get(order_id, (None, None))
                self.closed_history_links[order_id] = (value, links[1]) if slot == 0 else (links[0], value)
            else:
                kept.append((order_id, value))
        return kept

    def history_loaded(self, loaded: dict[str, Any]) -> None:
        """Closed orders added to the node's cache after start (`closed_history`) are live like loaded ones."""
        if loaded:
            self._live_loaded(loaded)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """
        Within the block the node's cache calls into this database write nothing: it is taking
        in closed orders that Redis already holds (``launcher.cache.history``). Only for the
        node's own thread, which makes every other cache write too.
        """
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def load_currency(self, code: str) -> Currency | None:
        self._before_read()
        raw = self._reader.command(b"GET", f"{self._k}{L.CURRENCIES}:{code}")
        return build_currency(code, deserialize_checked(self._serializer, raw)) if raw else None

    def load_instrument(self, instrument_id: InstrumentId) -> Any:
        self._before_read()
        raw = self._reader.command(b"GET", f"{self._k}{L.INSTRUMENTS}:{instrument_id.value}")
        return self._instrument(instrument_id.value, raw)

    def _instrument(self, key: str, raw: bytes | None) -> Any:
        """Deserialize an instrument, reusing the object when the stored bytes did not change."""
        if not raw:
            return None
        cached = self._instruments_seen.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        instrument = deserialize_checked(self._serializer, raw)
        self._instruments_seen[key] = (raw, instrument)
        return instrument

    def load_synthetic(self, instrument_id: InstrumentId) -> Any:
        if not instrument_id.is_synthetic():
            raise ValueError("instrument_id was not for a synthetic instrument")
        self._before_read()
        raw = self._reader.command(b"GET", f"{self._k}{L.SYNTHETICS}:{instrument_id.value}")
        return deserialize_checked(self._serializer, raw) if raw else None

    def load_account(self, account_id: AccountId) -> Any:
        self._before_read()
        key = f"{self._k}{L.ACCOUNTS}:{account_id.value}"
        raw_events = self._reader.command(b"LRANGE", key, b"0", b"-1")
        return build_account(key, _decode_all(key, raw_events, EventDecoder(self._serializer, self._encoding)))

    def load_order(self, client_order_id: ClientOrderId) -> Any:
        self._before_read()
        coid = client_order_id.value
        key = f"{self._k}{L.ORDERS}:{coid}"
        raw_events = self._reader.command(b"LRANGE", key, b"0", b"-1")
        return build_order(key, decode_order(key, raw_events, EventDecoder(self._serializer, self._encoding)))

    def load_position(self, position_id: PositionId) -> Position | None:
        self._before_read()
        key = f"{self._k}{L.POSITIONS}:{position_id.value}"
        raw_events = self._reader.command(b"LRANGE", key, b"0", b"-1")
        if not raw_events:
            return None
        events = _decode_all(key, raw_events, EventDecoder(self._serializer, self._encoding))
        instrument_id = getattr(events[0], "instrument_id", None)
        instrument = self.load_instrument(instrument_id) if instrument_id is not None else None
        return self._build_position(key, events, {instrument_id: instrument} if instrument else {})

    def load_actor(self, component_id: Any) -> dict:
        self._before_read()
        raw = self._reader.command(b"GET", f"{self._k}{L.ACTORS}:{component_id.value}:state")
        return self._serializer.deserialize(raw) if raw else {}

    def load_strategy(self, strategy_id: Any) -> dict:
        self._before_read()
        raw = self._reader.command(b"GET", f"{self._k}{L.STRATEGIES}:{strategy_id.value}:state")
        return self._serializer.deserialize(raw) if raw else {}


def _exit_hook(ref: weakref.ref) -> Any:
    def flush_at_exit() -> None:
        database = ref()
        if database is not None:
            database.close_at_exit()

    return flush_at_exit


def _same_events(rebuilt: tuple[list[bytes], Any] | None, raw: list[bytes]) -> Any:
    """The order of `rebuilt` when it was built from exactly the events `raw` holds, else None."""
    if rebuilt is None or rebuilt[0] != raw:
        return None
    return rebuilt[1]


def _decode_all(key: str, raw_events: list[bytes], decoder: EventDecoder) -> list:
    """Every payload of the list at `key` decoded; one that does not decode is corrupt state."""
    try:
        return [decoder.decode(raw) for raw in raw_events]
    except Exception as e:  # any payload that does not decode
        raise CorruptState(key, f"an event does not decode: {describe(e)}") from e


def _pairs(flat: list) -> list[tuple[bytes, bytes]]:
    if isinstance(flat, dict):
        return list(flat.items())
    return list(zip(flat[0::2], flat[1::2]))
