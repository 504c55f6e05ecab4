"""
What ``python -m launcher`` does with composed settings, by ``mode``:

run        wait for Redis, preflight checks, take the single-writer lease, verify the
           recovered state, then run the node (cache=memory skips straight to the node)
verify     wait, preflight, verify; print the recovery report; exit 0 sound / 4 problems
inspect    wait; print the persisted state in the spec's logical view
retention  wait; apply (or with retention.dry_run list) the retention windows once

Every expected failure is a LauncherError with an exit code (launcher/errors.py).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack

import msgspec
from nautilus_trader.core.uuid import UUID4

from launcher.config.connection import connection_settings
from launcher.config.node_config import build_node_config
from launcher.config.schema import Backend
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Mode
from launcher.config.schema import VerifyMode
from launcher.config.validate import validate
from launcher.errors import ConfigError
from launcher.errors import LeaseLost
from launcher.errors import WritesRefused
from launcher.node.runner import NodeRun
from launcher.servers.embedded import maybe_start_embedded
from launcher.state.layout import trader_key
from launcher.stop_signals import StopSignals
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import master_address


log = logging.getLogger("launcher")


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
    configure_logging(settings.run.log_level)
    validate(settings)
    signals = StopSignals().install()
    try:
        conn = connection_settings(settings.cache)
        if conn is None:
            if settings.mode != Mode.run:
                raise ConfigError("mode", f"mode={settings.mode.value} needs a Redis cache profile (cache=redis_dev or cache=redis_sentinel)")
            log.info("cache=memory: nothing is persisted; state is lost when the node stops")
            return _run_memory_node(settings, signals)
        with ExitStack() as stack:
            embedded = maybe_start_embedded(settings.cache)
            if embedded is not None:
                stack.callback(embedded.stop)
            return _with_store(settings, conn, stack, signals)
    finally:
        signals.restore()


def _with_store(settings: LauncherConfig, conn: ConnectionSettings, stack: ExitStack, signals: StopSignals) -> int:
    from launcher.bootstrap.preflight import run_preflight  # noqa: PLC0415
    from launcher.bootstrap.wait import wait_for_redis  # noqa: PLC0415

    log.info("Cache store: %s (backend %s, durability %s)", conn.describe(), settings.cache.backend.value,
             settings.cache.durability.value)
    client = wait_for_redis(conn, settings.bootstrap.wait_timeout_s)
    stack.callback(client.close)
    run_preflight(client, settings, conn)

    if settings.mode == Mode.verify:
        report = _verify(client, settings, enforce_mode=None)
        return 0 if not report.problems else 4
    if settings.mode == Mode.inspect:
        from launcher.bootstrap.inspect import render_inspection  # noqa: PLC0415

        print(render_inspection(client, settings))
        return 0
    if settings.mode == Mode.retention:
        from launcher.retention.apply import run_retention_once  # noqa: PLC0415

        return run_retention_once(client, settings)

    from launcher.bootstrap.lease import acquire_lease  # noqa: PLC0415

    instance_id = UUID4()
    monitoring = _start_monitoring(settings, stack, instance_id)
    monitoring.watch_redis(client)
    run, node_config = _prepare_node(settings, conn, instance_id, signals, listener=monitoring.cache_listener())
    monitoring.watch_factory(run.cache_database_factory)
    lease = acquire_lease(client, settings, instance_id.value)
    stack.callback(lease.release)
    monitoring.watch_lease(lease)
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        lost.append(reason)
        run.request_stop(f"single-writer lease lost ({reason}); stopping trading")

    # Renew from the moment the lease is ours: verifying and building can outlast a short TTL.
    lease.start_renewing(on_lost)
    report = None
    if settings.cache.flush_on_start:
        # Flushed here, before the node is built, so nothing is loaded and then deleted, and
        # the lease survives the FLUSHDB (NautilusTrader's own flush would delete it too).
        deleted = lease.flush_database()
        log.warning("cache.flush_on_start=true: FLUSHED the Redis database (%d keys deleted); verification skipped",
                    deleted)
    elif settings.bootstrap.verify != VerifyMode.off:
        report = _verify(client, settings, enforce_mode=settings.bootstrap.verify)
        monitoring.recovery(report)
        if report.state is not None and run.cache_database_factory is not None:
            # The node's load takes the orders verify rebuilt wherever Redis still holds the
            # very bytes they were rebuilt from (resilient backend; the lease keeps other
            # launchers from writing meanwhile, and the comparison catches anyone else).
            run.cache_database_factory.for_next_instance(rebuilt_orders=report.state.rebuilt_orders())
        report.state = None
    native = settings.cache.backend == Backend.native
    manifest_key = trader_key(settings.trader_id, instance_id.value, node_config.cache)
    if native:
        from launcher.bootstrap.manifest import mark_not_final  # noqa: PLC0415

        mark_not_final(client, manifest_key, instance_id=instance_id.value)
    build_started = time.perf_counter()
    run.build()
    monitoring.node_built(time.perf_counter() - build_started)
    databases = getattr(run.cache_database_factory, "instances", None) or []
    for database in databases:
        # Writes Redis refuses for good (NOPERM, WRONGTYPE) must not go on piling up: stop
        # trading the way a lost lease does; the retained writes are spilled at close.
        database.on_refused(lambda reason, _message: run.request_stop(
            f"Redis refused the launcher's writes ({reason}); stopping trading"))
    if report is not None:
        _compare_counts(report, run.loaded_counts)
    close_retention = _install_retention(run, settings, monitoring, client=client, trader_key=manifest_key)
    stack.callback(close_retention)
    final_counts: list[dict] = []
    if native:
        from launcher.bootstrap.manifest import counts_from_cache  # noqa: PLC0415

        # Read before dispose: disposing resets the node's cache.
        run.on_stopped = lambda node: final_counts.append(counts_from_cache(node.cache))
    run.run(duration_s=settings.run.duration_s)
    close_retention()  # its last Redis follow-ups land before the final manifest below
    if lost:
        raise LeaseLost(f"node stopped: single-writer lease lost ({lost[0]})")
    if refused := next((d for d in databases if d.refusal is not None), None):
        raise WritesRefused(f"Redis refused the launcher's writes ({refused.refusal[1]}); trading stopped, "
                            f"unacknowledged writes spilled to {refused.spill_path}")
    if final_counts:
        from launcher.bootstrap.manifest import write_manifest  # noqa: PLC0415

        # Written after dispose, which drained the native adapter's buffer.
        write_manifest(client, manifest_key, final_counts[0], instance_id=instance_id.value, final=True)
    log.info("Node stopped cleanly (%s)", run.stop_reason or "signal")
    return 0


def _verify(client, settings: LauncherConfig, enforce_mode: VerifyMode | None):
    from launcher.bootstrap.verify import enforce  # noqa: PLC0415
    from launcher.bootstrap.verify import verify_state  # noqa: PLC0415

    report = verify_state(client, settings)
    print(report.render(), flush=True)
    if enforce_mode is not None:
        enforce(report, enforce_mode)
    return report


def cache_database_factory(settings: LauncherConfig, conn: ConnectionSettings, listener=None):
    """
    The resilient backend's factory for the kernel, or None to keep NautilusTrader's adapter.
    `listener` (a CacheListener) observes the backend, e.g. for Prometheus metrics.
    """
    if settings.cache.backend != Backend.resilient:
        return None
    from launcher.cache.kernel_hook import resilient_factory  # noqa: PLC0415

    return resilient_factory(
        connection=conn,
        durability=settings.cache.durability.value,
        min_replica_acks=settings.cache.sentinel.min_replica_acks if conn.is_sentinel else 0,
        replica_ack_timeout_ms=settings.cache.sentinel.replica_ack_timeout_ms,
        max_pending_writes=settings.cache.max_pending_writes,
        spill_dir=settings.cache.spill_dir,
        **({"listener": listener} if listener is not None else {}),
    )


def _prepare_node(
    settings: LauncherConfig,
    conn: ConnectionSettings | None,
    instance_id: UUID4,
    signals: StopSignals | None = None,
    listener=None,
):
    """The node's config and its (not yet built) NodeRun."""
    address = None
    factory = None
    if conn is not None:
        if settings.cache.backend == Backend.native and conn.is_sentinel:
            address = master_address(conn)
            log.warning(
                "cache.backend=native cannot follow Sentinel: writing to the current master %s:%s only",
                *address,
            )
        factory = cache_database_factory(settings, conn, listener)
    node_config = build_node_config(settings, redis_address=address)
    # flush_on_start is done by the launcher under the lease (see _with_store), never by the kernel.
    node_config = msgspec.structs.replace(
        node_config,
        instance_id=instance_id,  # the kernel, the lease and the manifest agree on it
        cache=msgspec.structs.replace(node_config.cache, flush_on_start=False),
    )
    run = NodeRun(node_config, venue=settings.venue.name, cache_database_factory=factory, signals=signals)
    return run, node_config


def _run_memory_node(settings: LauncherConfig, signals: StopSignals) -> int:
    with ExitStack() as stack:
        instance_id = UUID4()
        monitoring = _start_monitoring(settings, stack, instance_id)
        run, _ = _prepare_node(settings, None, instance_id, signals)
        run.build()
        stack.callback(_install_retention(run, settings, monitoring))
        run.run(duration_s=settings.run.duration_s)
    log.info("Node stopped cleanly (%s)", run.stop_reason or "signal")
    return 0


def _start_monitoring(settings: LauncherConfig, stack: ExitStack, instance_id: UUID4):
    """Prometheus metrics for this run (a no-op object when monitoring is off); stopped at exit."""
    from launcher.monitoring.runtime import Monitoring  # noqa: PLC0415

    monitoring = Monitoring(settings).start()
    stack.callback(monitoring.close)
    monitoring.set_info(instance_id=instance_id.value)
    return monitoring


def _install_retention(run: NodeRun, settings: LauncherConfig, monitoring, *, client=None, trader_key=None):
    """Retention (and capped tick streams) in the built node; returns an idempotent closer."""
    from launcher.retention.node import install_retention  # noqa: PLC0415

    if settings.retention.enabled:
        monitoring.retention_enabled()
    databases = getattr(run.cache_database_factory, "instances", None)
    close = install_retention(
        run.node, settings, client=client, trader_key=trader_key,
        on_pass=monitoring.retention_pass, on_streams=monitoring.watch_streams,
        barrier=databases[0].wait_until_persisted if databases else None,
    )
    done: list[bool] = []

    def close_once() -> None:
        if not done:
            done.append(True)
            close()

    return close_once


def _compare_counts(report, counts) -> None:
    expected = report.counts
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

