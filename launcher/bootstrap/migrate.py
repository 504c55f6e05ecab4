"""
``mode=migrate``: copy one trader's persisted state from the configured store to the store
``migrate.to`` names (single server, Sentinel or Redis Cluster, either direction).

Order, each step a precondition of the next:

1. wait for the target and run its preflight (the source's ran before), and make sure the user
   may ``DUMP`` the source's keys and ``RESTORE`` the target's (exit 7), as ``acl-rights`` asks;
2. take the trader's single-writer lease on both sides, so no node writes either copy meanwhile,
   renewed in the background (a large state outlasts the TTL); a lease lost on either side fails
   the migration (exit 6) and removes the copy: nothing guarded it;
3. verify the source: a state with problems is not copied (exit 4);
4. refuse when the target already holds keys of the trader (exit 2): nothing is overwritten;
5. copy every key of the trader but the lease, ``DUMP`` + ``RESTORE`` (exact bytes and types),
   renamed to the target's trader key (a hash tag on a cluster, NautilusTrader's prefix elsewhere);
   a RESTORE the target refuses (OOM, NOPERM) is exit 8;
6. verify the target and compare its counts with the source's; on any difference the copied
   keys are deleted from the target again (exit 4).

The source is only read: deleting it, once the nodes run against the target, is the operator's
decision.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable

import redis

from launcher.bootstrap import rights
from launcher.bootstrap.lease import Lease
from launcher.bootstrap.lease import acquire_lease
from launcher.bootstrap.lease import lease_key
from launcher.bootstrap.preflight import run_preflight
from launcher.bootstrap.verify import RecoveryReport
from launcher.bootstrap.verify import verify_state
from launcher.bootstrap.wait import wait_for_redis
from launcher.config.connection import migrate_target
from launcher.config.schema import LauncherConfig
from launcher.errors import ConfigError
from launcher.errors import LeaseLost
from launcher.errors import PreflightFailed
from launcher.errors import RedisUnavailable
from launcher.errors import VerifyFailed
from launcher.errors import WritesRefused
from launcher.state import layout
from launcher.state.loader import state_trader_key
from launcher.state.loader import store_connection
from launcher.state.reader import BulkReader


log = logging.getLogger("launcher")

CHUNK = 500  # keys per DUMP/RESTORE pipeline round trip


def migrate(client: redis.Redis, settings: LauncherConfig, instance_id: str) -> int:
    """Copy the trader's state to ``settings.migrate.to``; the exit code (0) or a LauncherError."""
    target_settings = dataclasses.replace(settings, cache=migrate_target(settings.cache, settings.migrate.to))
    target_conn = store_connection(target_settings)
    log.info("Migrating trader %s to %s", settings.trader_id, target_conn.describe())
    target = wait_for_redis(target_conn, settings.bootstrap.wait_timeout_s)
    try:
        run_preflight(target, target_settings, target_conn)
        _refuse_missing_rights(client, state_trader_key(settings), target, state_trader_key(target_settings))
        source_lease = acquire_lease(client, settings, instance_id)
        try:
            source_lease.start_renewing(lambda _reason: None)  # the loss is checked by `_held`
            if target.get(lease_key(target_settings)) == source_lease.value.encode():
                # The lease just taken on the source is there: the same store under another address
                # (localhost for 127.0.0.1, the Sentinel master by its own address, another seed).
                raise ConfigError("migrate.to", f"{target_conn.describe()} is the source itself, where the "
                                                "trader's state already is: nothing to migrate")
            target_lease = acquire_lease(target, target_settings, instance_id)
            try:
                target_lease.start_renewing(lambda _reason: None)
                return _copy_verified(client, settings, target, target_settings,
                                      lambda: _held({"source": source_lease, "target": target_lease}))
            finally:
                target_lease.release()
        finally:
            source_lease.release()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering during the migration: {e}") from None
    finally:
        target.close()


def _refuse_missing_rights(source: redis.Redis, source_key: str, target: redis.Redis, target_key: str) -> None:
    """
    PreflightFailed unless the user may DUMP on the source and RESTORE on the target: preflight's
    acl-rights covers what a node sends, not these two, and a refusal found mid-copy costs a copy.
    """
    probe = layout.full_key(layout.GENERAL, rights.PROBE_ID)
    for side, client, command in (("source", source, ("DUMP", layout.full_key(source_key, probe))),
                                  ("target", target, ("RESTORE", layout.full_key(target_key, probe), "0", "x"))):
        try:
            refused = rights.probe_commands(client, [("", command)])
        except redis.exceptions.ResponseError as e:
            refused = [rights.Refusal("MULTI", "", str(e))]
        if refused:
            raise PreflightFailed(f"the {side}'s Redis user may not {refused[0].command} on the trader's keys "
                                  f"({refused[0].reply}): mode=migrate copies with DUMP on the source and RESTORE "
                                  "on the target")


def _held(leases: dict[str, Lease]) -> None:
    """Raise LeaseLost unless both leases are still ours: the background renewal's verdict, then one renewal now."""
    for side, lease in leases.items():
        if not lease.lost:
            lease.renew()  # a compare-and-set: a lease taken over since the last renewal is lost now
        if lease.lost:
            raise LeaseLost(f"the {side}'s single-writer lease {lease.key} was lost during the migration "
                            f"({lease.lost_reason})")


def _copy_verified(client: redis.Redis, settings: LauncherConfig, target: redis.Redis,
                   target_settings: LauncherConfig, check_leases: Callable[[], None]) -> int:
    source_report = _verified(client, settings, "source")
    source_key, target_key = state_trader_key(settings), state_trader_key(target_settings)
    already = _trader_keys(target, target_key, lease_key(target_settings))
    if already:
        raise ConfigError(
            "migrate.to",
            f"the target already holds {len(already)} key(s) of trader {settings.trader_id} (e.g. {sorted(already)[0]}): "
            "refusing to overwrite; delete them there first if they are to go",
        )
    keys = sorted(_trader_keys(client, source_key, lease_key(settings)))
    renamed = [target_key + key[len(source_key):] for key in keys]
    marker = layout.full_key(target_key, layout.MIGRATING)
    try:
        target.set(marker, json.dumps({"from": store_connection(settings).describe(), "started_ns": time.time_ns()}))
        _copy(client, target, keys, renamed, target_settings.cache.replica_acks(), check_leases)
        target.delete(marker)  # every key is there: from now on the copy is judged by what it holds
        target_report = _verified(target, target_settings, "target")
        if target_report.counts != source_report.counts:
            raise VerifyFailed(f"the target's counts {target_report.counts} differ from the source's {source_report.counts}")
        check_leases()  # a copy is only done when no node could have written either side meanwhile
    except BaseException:
        _delete(target, [*renamed, marker], target_key)
        log.error("Migration failed: the %d key(s) copied to the target were deleted again; the source is untouched",
                  len(renamed))
        raise
    log.info("Migrated trader %s: %d key(s) copied and verified (%s); the source is untouched", settings.trader_id,
             len(keys), ", ".join(f"{k} {v}" for k, v in source_report.counts.items() if v))
    return 0


def _verified(client: redis.Redis, settings: LauncherConfig, side: str) -> RecoveryReport:
    report = verify_state(client, settings)
    if report.problems:
        raise VerifyFailed(f"the {side}'s state has problems, nothing migrated: {report.summary()}")
    return report


def _trader_keys(client: redis.Redis, trader_key: str, lease: str) -> set[str]:
    """Every key of `trader_key` (escaped SCAN) but its lease."""
    return set(BulkReader(client).scan(layout.scan_pattern(trader_key))) - {lease}


def _copy(source: redis.Redis, target: redis.Redis, keys: list[str], renamed: list[str],
          replica_acks: tuple[int, int], check_leases: Callable[[], None]) -> None:
    """
    DUMP from `source`, RESTORE under the new names on `target`, in chunks, each after checking both
    leases (a key gone meanwhile: an error). With `replica_acks` (replicas, timeout in milliseconds)
    each chunk ends with WAIT on the same connection, so the copy counts only once the target's
    replicas have it.
    """
    acks, timeout_ms = replica_acks
    for i in range(0, len(keys), CHUNK):
        check_leases()
        chunk = keys[i : i + CHUNK]
        read = source.pipeline(transaction=False)
        for key in chunk:
            read.dump(key)
        payloads = read.execute()
        write = target.pipeline(transaction=False)
        for key, new, payload in zip(chunk, renamed[i : i + CHUNK], payloads, strict=True):
            if payload is None:
                raise VerifyFailed(f"source key {key} disappeared during the copy")
            write.restore(new, 0, payload)
        if acks:
            write.execute_command("WAIT", acks, timeout_ms)
        # Replies, not raised errors: redis-py's error names the command with its arguments, the payload.
        replies = write.execute(raise_on_error=False)
        for new, reply in zip(renamed[i : i + CHUNK], replies, strict=False):
            if isinstance(reply, redis.exceptions.ResponseError):
                raise WritesRefused(f"the target refused RESTORE {new}: {reply}")
        if acks and isinstance(replies[-1], redis.exceptions.ResponseError):
            raise WritesRefused(f"the target refused WAIT after the copy: {replies[-1]}")
        if acks and int(replies[-1]) < acks:
            raise RedisUnavailable(f"WAIT: {int(replies[-1])} of {acks} replica(s) acknowledged the copy")


def _delete(target: redis.Redis, keys: list[str], trader_key: str) -> None:
    try:
        for i in range(0, len(keys), CHUNK):
            target.delete(*keys[i : i + CHUNK])
    except redis.exceptions.RedisError as e:
        log.error("Could not delete the copied keys from the target (%s): delete the keys %s:* there by hand", e,
                  trader_key)
