"""
What ``python -m launcher`` does with composed settings, by ``mode``:

run        wait for Redis, preflight checks, check the trader's spill files (read only), take
           the single-writer lease, replay the spill files of dead processes, verify the
           recovered state, then build, run and stop the node (cache=memory skips straight
           to building the node)
verify     wait, preflight, check the spill files, verify; print the recovery report; exit 0
           sound / 4 problems (a pending spill file is one: mode=verify never replays)
inspect    wait; print the persisted state in the spec's logical view
retention  wait; apply (or with retention.dry_run list) the retention windows once
migrate    wait, preflight, check the spill files (a pending one refuses: its writes are not in the
           source yet); copy the trader's state to migrate.to under both leases, verified
           before and after (launcher/bootstrap/migrate.py)
check      build the node offline (every client constructed, nothing connected, nothing read
           from or written to Redis), print a one-screen summary, exit 0 (launcher/node/check.py)

A `NodeSession` holds one run's state in attributes and does it in named steps, as
NautilusTrader's TradingNode has build/run/stop/dispose: wait, preflight, spill_check, lease,
replay, verify, build, run, stop, dispose. Every expected failure is a LauncherError with an
exit code (launcher/errors.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import redis
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from launcher.cache.history import ClosedHistory
from launcher.cache.kernel_hook import RebuiltState
from launcher.cache.kernel_hook import ResilientFactory
from launcher.config.node_config import build_node_config
from launcher.config.schema import Backend
from launcher.config.schema import ClosedOrders
from launcher.config.schema import Encoding
from launcher.config.schema import Execution
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Mode
from launcher.config.schema import VenueKind
from launcher.config.schema import VerifyMode
from launcher.errors import ConfigError
from launcher.errors import LeaseLost
from launcher.errors import VerifyFailed
from launcher.errors import WritesRefused
from launcher.node.runner import CacheCounts
from launcher.node.runner import NodeRun
from launcher.servers.embedded import maybe_start_embedded
from launcher.state.gc_pause import StartupHeap
from launcher.state.loader import DeferClosed
from launcher.state.loader import state_trader_key
from launcher.state.loader import store_connection
from launcher.stop_signals import StopSignals
from launcher.store.connection import master_address


if TYPE_CHECKING:  # imported by the steps that use them: a mode loads only what it needs
    from launcher.bootstrap.lease import Lease
    from launcher.bootstrap.verify import RecoveryReport
    from launcher.cache.spilled import PendingSpill
    from launcher.monitoring.runtime import Monitoring


log = logging.getLogger("launcher")
# Minutes added to reconciliation.lookback_mins before a closed order may wait (venue clocks and delays).
_LOOKBACK_MARGIN_MINS = 10
# How often the session looks whether the start is over, to freeze the start-up heap (seconds).
_HEAP_POLL_S = 0.05


def configure_logging(level: str = "INFO") -> None:
    """Launcher lines (bootstrap, checks, reports) go to stdout beside NautilusTrader's own log."""
    logger = logging.getLogger("launcher")
    if not any(getattr(h, "_launcher", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        handler._launcher = True  # noqa: SLF001
        logger.addHandler(handler)
        logger.propagate = False
    level = {"WARN": "WARNING", "TRACE": "DEBUG", "OFF": "CRITICAL"}.get(level.upper(), level.upper())
    logger.setLevel(level)


def execute(settings: LauncherConfig) -> int:
    """
    Run the selected mode and return the process exit code (raises LauncherError on failure,
    Interrupted on SIGINT/SIGTERM before the node trades).
    """
    configure_logging(settings.run.log_level.value)
    signals = StopSignals().install()
    try:
        with NodeSession(settings, signals) as session:
            return session.execute()
    finally:
        signals.restore()


class NodeSession:
    """
    One launcher run for one trader. Steps, in order (each uses what the earlier ones left in
    the attributes): `wait` for Redis, `preflight` checks, `spill_check` (the trader's spill
    files, read only), `lease` (the single-writer lease, with monitoring and the not yet built
    node), `replay` the spill files of dead processes, `verify` the recovered state, `build`
    the node, `run` it until it is asked to stop, `stop` (what follows a stopped node),
    `dispose` (release everything the steps acquired, in reverse order; also on failure, as a
    context manager).
    """

    def __init__(self, settings: LauncherConfig, signals: StopSignals) -> None:
        self.settings = settings
        self.signals = signals
        self.conn = store_connection(settings)
        self.instance_id = UUID4()
        self.client: redis.Redis | None = None
        self.monitoring: Monitoring | None = None
        self.rebuilt = RebuiltState()
        self.node_config: TradingNodeConfig | None = None
        self.node_run: NodeRun | None = None
        self.writer_lease: Lease | None = None
        self.lease_lost: str | None = None
        self.report: RecoveryReport | None = None
        self.pending_spills: list[PendingSpill] = []
        self.manifest_key: str | None = None
        self.final_counts: dict | None = None
        self._retention_closer: Callable[[], None] | None = None
        self._stack = ExitStack()
        # The collector is off from the state's load until the start is over (launcher.state.gc_pause).
        self.heap = StartupHeap()
        self._stack.callback(self.heap.resume)

    def __enter__(self) -> NodeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    @property
    def native(self) -> bool:
        return self.conn is not None and self.settings.cache.backend == Backend.native

    def execute(self) -> int:
        """Dispatch on the mode; the exit code."""
        mode = self.settings.mode
        if mode == Mode.check:
            from launcher.node.check import check_node  # noqa: PLC0415

            print(check_node(self.settings, build_node_config(self.settings)), flush=True)
            return 0
        if self.conn is None:
            if mode != Mode.run:
                raise ConfigError("mode", f"mode={mode.value} needs a Redis cache profile "
                                          "(cache=redis_dev, cache=redis_sentinel or cache=redis_cluster)")
            log.info("cache=memory: nothing is persisted; state is lost when the node stops")
            self.heap.pause()
            self.build()
            self.run()
            return self.stop()
        self.wait()
        self.preflight()
        if mode == Mode.verify:
            self.spill_check()
            report = self.verify(enforce=False)
            unreplayed = [spill for spill in self.pending_spills if not spill.applied]
            if unreplayed:
                raise VerifyFailed(_pending_message(unreplayed, self.settings.trader_id, "verify"))
            return 0 if not report.problems else 4
        if mode == Mode.inspect:
            from launcher.bootstrap.inspect import render_inspection  # noqa: PLC0415
            from launcher.cache.write.spill import SpillFileDamaged  # noqa: PLC0415

            try:
                self.spill_check()  # read only: pending files are logged beside the inspection
            except SpillFileDamaged as e:
                log.warning("%s", e)
            print(render_inspection(self.client, self.settings))
            return 0
        if mode == Mode.retention:
            from launcher.retention.apply import run_retention_once  # noqa: PLC0415

            self.spill_check()
            if self.pending_spills and not self.settings.retention.dry_run:
                # A dead process's writes are not in Redis yet: deleting what they complete would
                # leave the replay a fragment (an order without its first event) and refuse the next start.
                raise VerifyFailed(_pending_message(self.pending_spills, self.settings.trader_id, "retention"))
            return run_retention_once(self.client, self.settings)
        if mode == Mode.migrate:
            from launcher.bootstrap.migrate import migrate  # noqa: PLC0415

            self.spill_check()
            if self.pending_spills:
                # Writes of a dead process are not in the source yet: a copy now would miss them.
                raise VerifyFailed(_pending_message(self.pending_spills, self.settings.trader_id, "migrate"))
            return migrate(self.client, self.settings, self.instance_id.value)
        self.spill_check()
        self.lease()
        self.replay()
        self.heap.pause()
        self.verify(enforce=True)
        self.build()
        self.run()
        return self.stop()

    def wait(self) -> None:
        """Start the embedded server if configured, then wait for Redis to answer."""
        from launcher.bootstrap.wait import wait_for_redis  # noqa: PLC0415

        embedded = maybe_start_embedded(self.settings.cache)
        if embedded is not None:
            self._stack.callback(embedded.stop)
        cache = self.settings.cache
        log.info("Cache store: %s (backend %s, durability %s)", self.conn.describe(), cache.backend.value,
                 cache.durability.value)
        self.client = wait_for_redis(self.conn, self.settings.bootstrap.wait_timeout_s)
        self._stack.callback(self.client.close)

    def preflight(self) -> None:
        from launcher.bootstrap.preflight import run_preflight  # noqa: PLC0415

        run_preflight(self.client, self.settings, self.conn)

    def spill_check(self) -> None:
        """
        The trader's spill files, read only, before anything is written: a damaged one is exit 4
        (`SpillFileDamaged`), and so, for a run, is a stale one (`SpillFileStale`); what is pending
        is logged and kept in `pending_spills` (mode=verify reports it).
        """
        from launcher.cache.spilled import inspect_pending  # noqa: PLC0415
        from launcher.cache.spilled import refuse_stale  # noqa: PLC0415

        self.pending_spills = inspect_pending(self.client, self._spill_dir(), self._spill_key())
        for spill in self.pending_spills:
            log.warning("Pending spill file (writes of a process that died during an outage): %s", spill.describe())
        if self.settings.mode == Mode.run:
            refuse_stale(self.pending_spills)

    def replay(self) -> None:
        """
        Under the lease, before verify: replay the spill files nobody alive holds into Redis,
        through the resilient backend's idempotent path, so that verify sees what the node
        loads. Staleness is checked again: only now does the lease keep other launchers out.
        """
        from launcher.cache.spilled import replay_spill_files  # noqa: PLC0415
        from launcher.cache.write.spill import spill_files  # noqa: PLC0415

        if not spill_files(self._spill_dir(), self._spill_key()):
            return
        cache = self.settings.cache
        options = self._write_options()
        serializer = MsgSpecSerializer(
            encoding=msgspec.json if cache.encoding == Encoding.json else msgspec.msgpack,
            timestamps_as_str=True,  # as NautilusTrader's kernel builds it
            timestamps_as_iso8601=cache.timestamps_as_iso8601,
        )
        replayed = replay_spill_files(
            self.client, connection=self.conn, trader_key=self._spill_key(), spill_dir=self._spill_dir(),
            serializer=serializer, min_replica_acks=options["min_replica_acks"],
            replica_ack_timeout_ms=options["replica_ack_timeout_ms"],
            timeout_s=self.settings.bootstrap.wait_timeout_s, log=lambda: log,
        )
        if replayed:
            log.info("Replayed %d spilled write(s) of a dead process into Redis before verifying", replayed)

    def _spill_dir(self) -> Path:
        from launcher.cache.write.spill import resolve_spill_dir  # noqa: PLC0415

        return resolve_spill_dir(self.settings.cache.spill_dir)

    def _spill_key(self) -> str:
        """The trader key the spill files are named after (the resilient backend's, this instance's)."""
        return state_trader_key(self.settings, self.instance_id.value)

    def lease(self) -> None:
        """Monitoring and the (not yet built) node, then the single-writer lease, renewed from now on."""
        from launcher.bootstrap.lease import acquire_lease  # noqa: PLC0415

        self._prepare()
        self.monitoring.watch_redis(self.client)
        self.writer_lease = acquire_lease(self.client, self.settings, self.instance_id.value)
        self._stack.callback(self.writer_lease.release)
        self.monitoring.watch_lease(self.writer_lease)
        # Renew from the moment the lease is ours: verifying and building can outlast a short TTL.
        self.writer_lease.start_renewing(self._on_lease_lost)

    def _on_lease_lost(self, reason: str) -> None:
        self.lease_lost = reason
        self.node_run.request_stop(f"single-writer lease lost ({reason}); stopping trading")

    def verify(self, *, enforce: bool) -> RecoveryReport | None:
        """
        The recovery report, printed (mode=verify: `enforce` False, the exit code says it).
        Before a run, flush_on_start replaces verification, and the orders, positions and
        accounts verify rebuilt go to the node's cache database.
        """
        from launcher.bootstrap.verify import enforce as enforce_report  # noqa: PLC0415
        from launcher.bootstrap.verify import verify_state  # noqa: PLC0415
        from launcher.cache.write.acked import acked_path  # noqa: PLC0415
        from launcher.cache.write.acked import forget_record  # noqa: PLC0415

        settings = self.settings
        if enforce and settings.cache.flush_on_start:
            # Flushed here, before the node is built, so nothing is loaded and then deleted, and
            # the lease survives the FLUSHDB (NautilusTrader's own flush would delete it too).
            deleted = self.writer_lease.flush_database()
            forget_record(acked_path(self._spill_dir(), self._spill_key()))  # flushed on purpose: nothing went back
            log.warning("cache.flush_on_start=true: FLUSHED the Redis database (%d keys deleted); "
                        "verification skipped", deleted)
            return None
        if enforce and settings.bootstrap.verify == VerifyMode.off:
            return None
        # Spill files are pending here only under mode=verify (a run replayed them in `replay`).
        defer = self._defer_closed() if enforce else None
        report = verify_state(self.client, settings, pending_spills=[] if enforce else self.pending_spills,
                              defer=defer)
        print(report.render(), flush=True)
        if not enforce:
            return report
        enforce_report(report, settings.bootstrap.verify)
        if defer is not None and report.state is not None:
            self._record_verified(defer, report.state.deferred_orders)
        self.monitoring.recovery(report)
        if report.state is not None and self.node_run.cache_database_factory is not None:
            # The node's loads take the orders, positions and accounts verify rebuilt wherever Redis still holds the
            # very bytes they were rebuilt from (resilient backend; the lease keeps other
            # launchers from writing meanwhile, and the comparison catches anyone else).
            self.rebuilt.give(report.state.rebuilt())
        report.state = None
        self.report = report
        return report

    def _defer_closed(self) -> DeferClosed | None:
        """
        Which closed orders verify may leave for the node to build after it started trading
        (``cache.closed_orders=deferred``, resilient backend). With reconciliation against a
        real venue, only those older than its look-back (plus a margin): the venue's reports may
        name any order inside it, and the node must know those before it reconciles.
        """
        settings = self.settings
        if settings.cache.backend != Backend.resilient or settings.cache.closed_orders != ClosedOrders.deferred:
            return None
        rec = settings.reconciliation
        if rec.enabled and settings.venue.kind != VenueKind.sim and settings.venue.execution == Execution.venue:
            if rec.lookback_mins is None:
                log.info("Closed orders are built before trading: reconciliation asks %s for every order report it "
                         "has (reconciliation.lookback_mins unset), and any closed order may be named",
                         settings.venue.name)
                return None
            return DeferClosed(time.time_ns() - (rec.lookback_mins + _LOOKBACK_MARGIN_MINS) * 60_000_000_000,
                               self._verified_orders())
        return DeferClosed(time.time_ns(), self._verified_orders())

    def _verified_orders(self) -> dict[str, bytes]:
        """The closed orders an earlier start built, by the digest of their bytes (launcher/bootstrap/verified.py)."""
        from launcher.bootstrap.verified import read_verified  # noqa: PLC0415
        from launcher.bootstrap.verified import verified_path  # noqa: PLC0415

        entries, problem = read_verified(verified_path(self._spill_dir(), self._spill_key()))
        if problem is not None:
            log.warning("Record of verified closed orders not used (every closed order is built): %s", problem)
        return entries

    def _record_verified(self, defer: DeferClosed, deferred: dict) -> None:
        """Keep the digests of the closed orders that wait in this start, for the next one."""
        from launcher.bootstrap.verified import verified_path  # noqa: PLC0415
        from launcher.bootstrap.verified import write_verified  # noqa: PLC0415

        entries = {id_: order.digest for id_, order in deferred.items()}
        reused = sum(1 for id_, digest in entries.items() if defer.verified.get(id_) == digest)
        if reused:
            log.info("Closed orders: %d of %d waiting ones were built by an earlier start from the same bytes "
                     "(not built again)", reused, len(entries))
        if entries == defer.verified:
            return
        try:
            write_verified(verified_path(self._spill_dir(), self._spill_key()), entries)
        except OSError as e:
            log.warning("Record of verified closed orders not written (the next start builds them all): %s", e)

    def build(self) -> None:
        """Build the node (it loads the persisted state), compare with the report, install retention."""
        self._prepare()
        if self.conn is not None:
            self.manifest_key = state_trader_key(self.settings, self.instance_id.value)
        if self.native:
            from launcher.bootstrap.manifest import mark_not_final  # noqa: PLC0415

            mark_not_final(self.client, self.manifest_key, instance_id=self.instance_id.value)
        started = time.perf_counter()
        self.node_run.build()
        self.monitoring.node_built(time.perf_counter() - started)
        for database in self._databases():
            # Writes Redis refuses for good (NOPERM, WRONGTYPE) must not go on piling up: stop
            # trading the way a lost lease does; the retained writes are spilled at close.
            database.on_refused(self._on_writes_refused)
        # Closed orders verify left unbuilt join the node's cache once it trades (launcher/cache/history.py).
        later = 0
        for database in self._databases():
            later += len(database.closed_history)
            history = ClosedHistory(self.node_run.node, database)
            self.monitoring.watch_closed_orders(history)
            history.start()
        self._settle_heap_when_started()
        if self.report is not None:
            _compare_counts(self.report.counts, self.node_run.loaded_counts, closed_later=later)
        self._install_retention()
        if self.native:
            # Read before dispose: disposing resets the node's cache.
            self.node_run.on_stopped = self._keep_final_counts

    def _settle_heap_when_started(self) -> None:
        """
        Once the node is RUNNING, freeze the start-up heap. Not later: closed orders still joining
        the cache then (a few seconds at 100k) are built with the collector on, so cyclic garbage
        that trading makes meanwhile is collected, never frozen.
        """
        node = self.node_run.node
        if not self.heap.paused:
            return

        def check() -> None:
            if not self.heap.paused:
                return
            if node.trader.is_running:
                frozen = self.heap.settle()
                log.info("Start-up over: %d objects it built set aside from garbage collection", frozen)
            else:  # a loop that stops runs this no more; dispose turns the collector back on
                node.get_event_loop().call_later(_HEAP_POLL_S, check)

        node.get_event_loop().call_soon(check)

    def _databases(self) -> list:
        """The resilient backend's databases the kernel built (none with the native adapter)."""
        return list(getattr(self.node_run.cache_database_factory, "instances", None) or [])

    def _on_writes_refused(self, reason: str, _message: str) -> None:
        self.node_run.request_stop(f"Redis refused the launcher's writes ({reason}); stopping trading")

    def _keep_final_counts(self, node: TradingNode) -> None:
        from launcher.bootstrap.manifest import counts_from_cache  # noqa: PLC0415

        self.final_counts = counts_from_cache(node.cache)

    def run(self) -> None:
        """Run until SIGINT/SIGTERM/SIGHUP, run.duration_s or a lost lease; the node is disposed on the way out."""
        self.node_run.run(duration_s=self.settings.run.duration_s)

    def stop(self) -> int:
        """After the node stopped: retention's last follow-ups, the lease verdict, the final manifest."""
        self._close_retention()  # its last Redis follow-ups land before the final manifest below
        if self.lease_lost is not None:
            raise LeaseLost(f"node stopped: single-writer lease lost ({self.lease_lost})")
        if refused := next((d for d in self._databases() if d.refusal is not None), None):
            raise WritesRefused(f"Redis refused the launcher's writes ({refused.refusal[1]}); trading stopped, "
                                f"unacknowledged writes spilled to {refused.spill_path}")
        if self.final_counts is not None:
            from launcher.bootstrap.manifest import write_manifest  # noqa: PLC0415

            # Written after dispose, which drained the native adapter's buffer.
            write_manifest(self.client, self.manifest_key, self.final_counts, instance_id=self.instance_id.value,
                           final=True)
        log.info("Node stopped cleanly (%s)", self.node_run.stop_reason or "signal")
        return 0

    def dispose(self) -> None:
        """Release what the steps acquired, last first (retention, lease, monitoring, client, embedded server)."""
        self._stack.close()

    def _prepare(self) -> None:
        """Monitoring and the node's config and (not yet built) NodeRun, once."""
        if self.node_run is not None:
            return
        from launcher.monitoring.runtime import Monitoring  # noqa: PLC0415

        self.monitoring = Monitoring(self.settings).start()
        self._stack.callback(self.monitoring.close)
        self.monitoring.set_info(instance_id=self.instance_id.value)
        address = None
        factory = None
        if self.conn is not None:
            if self.native and self.conn.is_sentinel:
                address = master_address(self.conn)
                log.warning("cache.backend=native cannot follow Sentinel: writing to the current master %s:%s only",
                            *address)
            factory = self._cache_database_factory()
        node_config = build_node_config(self.settings, redis_address=address)
        # flush_on_start is done by the launcher under the lease (see verify), never by the kernel.
        self.node_config = msgspec.structs.replace(
            node_config,
            instance_id=self.instance_id,  # the kernel, the lease and the manifest agree on it
            cache=msgspec.structs.replace(node_config.cache, flush_on_start=False),
        )
        self.node_run = NodeRun(self.node_config, cache_database_factory=factory, signals=self.signals)
        self.monitoring.watch_factory(factory)

    def _cache_database_factory(self) -> ResilientFactory | None:
        """The resilient backend's factory for the kernel, or None to keep NautilusTrader's adapter."""
        if self.settings.cache.backend != Backend.resilient:
            return None
        return ResilientFactory(self.rebuilt, **self._write_options(), listener=self.monitoring.cache_listener())

    def _write_options(self) -> dict:
        """The resilient write path's options from the cache settings (the backend's and the replay's)."""
        cache = self.settings.cache
        min_replica_acks, replica_ack_timeout_ms = cache.replica_acks()
        return {
            "connection": self.conn,
            "durability": cache.durability.value,
            "min_replica_acks": min_replica_acks,
            "replica_ack_timeout_ms": replica_ack_timeout_ms,
            "max_pending_writes": cache.max_pending_writes,
            "spill_dir": cache.spill_dir,
        }

    def _install_retention(self) -> None:
        """Retention (and capped tick streams) in the built node; closed by `stop` or `dispose`."""
        from launcher.retention.node import install_retention  # noqa: PLC0415

        if self.settings.retention.enabled:
            self.monitoring.retention_enabled()
        databases = getattr(self.node_run.cache_database_factory, "instances", None)
        close = install_retention(
            self.node_run.node, self.settings, client=self.client, trader_key=self.manifest_key,
            on_pass=self.monitoring.retention_pass, on_streams=self.monitoring.watch_streams,
            barrier=databases[0].wait_until_persisted if databases else None,
        )
        self._retention_closer = close
        self._stack.callback(self._close_retention)

    def _close_retention(self) -> None:
        """Close retention once (after the run, and again harmlessly on dispose)."""
        close, self._retention_closer = self._retention_closer, None
        if close is not None:
            close()


def _pending_message(pending: list[PendingSpill], trader_id: object, mode: str) -> str:
    """One line: the pending spill files, and what to do (only mode=run replays them)."""
    files = "; ".join(spill.describe() for spill in pending)
    why = {"verify": "mode=verify only reads", "migrate": "a copy now would miss them",
           "retention": "retention now could delete what they complete"}[mode]
    return (
        f"{len(pending)} spill file(s) of trader {trader_id} hold writes not replayed into Redis yet: {files}; "
        f"{why}: start the node (mode=run) to replay them - a stale one is refused and must be "
        f"moved out of the spill directory first - then run mode={mode} again"
    )


def _compare_counts(expected: dict, counts: CacheCounts, closed_later: int = 0) -> None:
    expected = {**expected, "orders_closed": expected.get("orders_closed", 0) - closed_later}
    actual = {
        "orders_open": counts.orders_open,
        "orders_closed": counts.orders_closed,
        "positions_open": counts.positions_open,
        "positions_closed": counts.positions_closed,
        "accounts": counts.accounts,
    }
    mismatched = {k: (expected.get(k), v) for k, v in actual.items() if expected.get(k) != v}
    if mismatched:
        log.error("Node loaded counts differ from the recovery report (report, node): %s", mismatched)
    else:
        log.info("Node loaded exactly what the recovery report counted: %s", actual)
