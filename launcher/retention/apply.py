"""
``python -m launcher mode=retention``: apply the retention windows once, directly on Redis,
for a trader whose node is not running. ``retention.dry_run=true`` lists what would go and
changes nothing.

Single writer
    The one-shot takes the trader's single-writer lease for its whole duration (renewed in
    the background), exactly like a node: it fails with exit code 5 while a node (or another
    one-shot) holds it, waits out a crashed holder's lease, and no node can start while it
    deletes. A dry run writes nothing, so it does not take the lease (it says when a node
    holds it: the listing then describes a state that the node is changing).

``retention.enabled`` only switches the running node's periodic retention; the one-shot runs
whenever it is asked for. The windows are the same settings and the same policy
(``launcher/retention/policy.py``) in both.

Order of work (each step leaves a state that verifies)
    1. verify the state first (``bootstrap.verify``: strict refuses on problems, exit 4;
       warn goes on, touching only entities that load);
    2. plan with ``launcher.retention.policy`` against the current time;
    3. delete positions, then orders, then account events, in MULTI/EXEC chunks that also
       update every index (``index:*`` sets and hashes, including ``index:order_position``
       entries whose value is a removed position), the position/order snapshots, and the
       launcher manifest (removed ids leave it; a trimmed account's count is lowered) -
       positions go before orders so that an interruption never leaves a kept position
       whose fills name a deleted order;
    4. verify again: a problem that was not there before is reported (exit 4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime

import redis
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from launcher.cache.write.acked import acked_path
from launcher.cache.write.acked import remove_entities
from launcher.cache.write.spill import resolve_spill_dir
from launcher.config.schema import LauncherConfig
from launcher.errors import LeaseLost
from launcher.errors import RedisUnavailable
from launcher.errors import VerifyFailed
from launcher.retention.policy import AccountTrim
from launcher.retention.policy import RetentionPlan
from launcher.retention.policy import RetentionWindows
from launcher.retention.policy import plan_retention
from launcher.state import layout
from launcher.state.codec import deserialize_checked
from launcher.state.loader import PersistedState
from launcher.state.loader import load_state
from launcher.state.serializer import serializer_for


log = logging.getLogger("launcher.retention")

CHUNK = 200  # entities per MULTI/EXEC: bounded transactions, so Redis never stalls on one


@dataclass
class RetentionResult:
    plan: RetentionPlan
    removed: dict[str, int]
    dry_run: bool
    seconds: float


def run_retention_once(client: redis.Redis, settings: LauncherConfig, *, now_ns: int | None = None) -> int:
    """The one-shot retention pass; returns the exit code (raises LauncherError on failure)."""
    from launcher.bootstrap.lease import Holder  # noqa: PLC0415
    from launcher.bootstrap.lease import acquire_lease  # noqa: PLC0415
    from launcher.bootstrap.lease import lease_key  # noqa: PLC0415
    from launcher.bootstrap.verify import enforce  # noqa: PLC0415
    from launcher.bootstrap.verify import verify_state  # noqa: PLC0415

    dry_run = bool(settings.retention.dry_run)
    windows = RetentionWindows.from_settings(settings.retention)
    lease = None
    if dry_run:
        holder = Holder.parse(client.get(lease_key(settings)))
        if holder is not None:
            log.warning("A node holds the lease (%s): it applies retention itself; this listing may already be stale",
                        holder.describe())
    else:
        from nautilus_trader.core.uuid import UUID4  # noqa: PLC0415

        lease = acquire_lease(client, settings, f"retention-{UUID4().value}")
        lost: list[str] = []
        lease.start_renewing(lost.append)
    try:
        before = verify_state(client, settings)
        if before.problems:
            print(before.render(), flush=True)
        enforce(before, settings.bootstrap.verify)
        result = retention_pass(client, settings, windows, dry_run=dry_run, now_ns=now_ns,
                                check_lease=(lambda: lease.lost_reason) if lease is not None else None)
        print(render_result(result, str(settings.trader_id)), flush=True)
        if dry_run:
            return 0
        after = verify_state(client, settings)
        new = {str(p) for p in after.problems} - {str(p) for p in before.problems}
        if new:
            print(after.render(), flush=True)
            raise VerifyFailed(f"retention left {len(new)} new problem(s) in the state: {sorted(new)[:3]}")
        log.info("Verify after retention: %s", "sound" if not after.problems else f"{len(after.problems)} problem(s), none new")
        return 0
    finally:
        if lease is not None:
            lease.release()


def retention_pass(
    client: redis.Redis,
    settings: LauncherConfig,
    windows: RetentionWindows,
    *,
    dry_run: bool,
    now_ns: int | None = None,
    check_lease: Callable[[], str | None] | None = None,
) -> RetentionResult:
    """Load, plan and (unless `dry_run`) apply; no lease or verify handling (see run_retention_once)."""
    started = time.perf_counter()
    try:
        state = load_state(client, settings)
        now = time.time_ns() if now_ns is None else int(now_ns)
        plan = plan_retention(
            orders=state.orders.values(),
            positions=state.positions.values(),
            accounts=state.accounts.values(),
            now_ns=now,
            windows=windows,
        )
        removed = {"orders": 0, "positions": 0, "account_events": 0}
        if not dry_run and not plan.empty:
            try:
                removed = apply_plan(client, state, plan, serializer_for(settings.cache), check_lease=check_lease)
            finally:
                # Deleted on purpose: this machine's acknowledged-writes record forgets them
                # (else verify would name them as lost); a partial pass forgets a few more.
                remove_entities(acked_path(resolve_spill_dir(settings.cache.spill_dir), state.trader_key),
                                [f"{layout.POSITIONS}:{pid}" for pid in plan.positions]
                                + [f"{layout.ORDERS}:{coid}" for coid in plan.orders])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering during retention: {e}") from None
    return RetentionResult(plan=plan, removed=removed, dry_run=dry_run, seconds=time.perf_counter() - started)


# -- side effects ---------------------------------------------------------------------------------


def apply_plan(
    client: redis.Redis,
    state: PersistedState,
    plan: RetentionPlan,
    serializer: MsgSpecSerializer,
    *,
    check_lease: Callable[[], str | None] | None = None,
) -> dict[str, int]:
    """Delete what `plan` names from Redis with every index and the manifest; returns counts removed."""
    key = state.trader_key

    def k(name: str) -> str:
        return layout.full_key(key, name)

    def guard() -> None:
        reason = check_lease() if check_lease is not None else None
        if reason:
            raise LeaseLost(f"retention stopped part-way: single-writer lease lost ({reason})")

    removed = {"orders": 0, "positions": 0, "account_events": 0}
    gone_positions = set(plan.positions)
    # index:order_position entries that name a removed position (their orders may stay).
    stale_links: dict[str, list[str]] = {}
    for coid, pid in state.order_position.items():
        if pid in gone_positions:
            stale_links.setdefault(pid, []).append(coid)

    for chunk in _chunks(plan.positions):
        guard()
        pipe = client.pipeline(transaction=True)
        for pid in chunk:
            pipe.delete(k(f"{layout.POSITIONS}:{pid}"), k(f"{layout.SNAPSHOTS_POSITIONS}:{pid}"))
            for name in layout.POSITION_SET_INDEXES:
                pipe.srem(k(name), pid)
            if stale_links.get(pid):
                pipe.hdel(k(layout.INDEX_ORDER_POSITION), *stale_links[pid])
            pipe.hdel(k(layout.MANIFEST_POSITIONS), pid)
        pipe.execute()
        removed["positions"] += len(chunk)

    for chunk in _chunks(plan.orders):
        guard()
        pipe = client.pipeline(transaction=True)
        for coid in chunk:
            pipe.delete(k(f"{layout.ORDERS}:{coid}"), k(f"{layout.SNAPSHOTS_ORDERS}:{coid}"))
            for name in layout.ORDER_SET_INDEXES:
                pipe.srem(k(name), coid)
            for name in layout.ORDER_HASH_INDEXES:
                pipe.hdel(k(name), coid)
            pipe.hdel(k(layout.MANIFEST_ORDERS), coid)
        pipe.execute()
        removed["orders"] += len(chunk)

    recorded_accounts = state.manifest.accounts if state.manifest is not None else {}
    for trim in plan.accounts.values():
        guard()
        removed["account_events"] += trim_account(
            client, k(f"{layout.ACCOUNTS}:{trim.account_id}"), k(layout.MANIFEST_ACCOUNTS), trim, serializer,
            update_manifest=trim.account_id in recorded_accounts,
        )
    return removed


def trim_account(
    client: redis.Redis,
    list_key: str,
    manifest_key: str,
    trim: AccountTrim,
    serializer: MsgSpecSerializer,
    *,
    update_manifest: bool,
    attempts: int = 3,
) -> int:
    """
    Remove the planned events from one account list, atomically with its manifest count.
    The list is WATCHed and the events are checked by id before anything is removed, so a
    concurrent change (there should be none: the lease is held) aborts instead of removing
    the wrong events. Returns how many were removed.
    """
    last_index = trim.indexes[-1]
    with client.pipeline(transaction=True) as pipe:
        for _ in range(attempts):
            try:
                pipe.watch(list_key)
                raw = pipe.lrange(list_key, 0, last_index)
                payloads = [raw[i] for i in trim.indexes] if len(raw) > last_index else []
                try:
                    ids = [deserialize_checked(serializer, p).id.value for p in payloads]
                except Exception:  # noqa: BLE001 (CorruptPayload or the serializer's own: damaged since the plan read it)
                    ids = None  # not the events the plan names
                if ids != trim.event_ids:
                    pipe.unwatch()
                    log.error("Account %s changed since it was read: its events were left as they are", trim.account_id)
                    return 0
                length = int(pipe.llen(list_key))
                pipe.multi()
                if trim.is_prefix:
                    pipe.ltrim(list_key, len(trim.indexes), -1)
                else:
                    for payload in payloads:
                        pipe.lrem(list_key, 1, payload)
                if update_manifest:
                    pipe.hset(manifest_key, trim.account_id, length - len(trim.indexes))
                pipe.execute()
                return len(trim.indexes)
            except redis.exceptions.WatchError:
                continue
    log.error("Account %s kept changing: its events were left as they are", trim.account_id)
    return 0


def _chunks(items: list[str], size: int = CHUNK) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# -- output ---------------------------------------------------------------------------------------


def _when(ts_ns: int, now_ns: int) -> str:
    stamp = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
    return f"{stamp} ({(now_ns - ts_ns) / 86_400e9:.2f} days ago)"


def render_result(result: RetentionResult, trader_id: str) -> str:
    """The listing (every id that goes, or went) and a summary line."""
    plan = result.plan
    verb = "would remove" if result.dry_run else "removed"
    lines = [
        f"Retention for trader {trader_id} at {datetime.fromtimestamp(plan.now_ns / 1e9, tz=UTC).isoformat(timespec='seconds')}"
        f" (windows: {plan.windows.describe()}){' - DRY RUN, nothing is changed' if result.dry_run else ''}",
    ]
    for pid in plan.positions:
        lines.append(f"  {verb} position {pid}: closed {_when(plan.position_ts_closed[pid], plan.now_ns)}")
    for coid in plan.orders:
        lines.append(f"  {verb} order {coid}: closed {_when(plan.order_ts_closed[coid], plan.now_ns)}")
    for trim in plan.accounts.values():
        lines.append(
            f"  {verb} {len(trim.indexes)} of {trim.total} events of account {trim.account_id}: "
            f"{_when(trim.ts_events[0], plan.now_ns)} .. {_when(trim.ts_events[-1], plan.now_ns)}; "
            f"newest kept: {_when(trim.newest_ts, plan.now_ns)}",
        )
    if plan.kept_for_position:
        lines.append(f"  kept {len(plan.kept_for_position)} expired closed order(s) whose fills a kept position holds: "
                     f"{', '.join(plan.kept_for_position[:10])}{' ...' if len(plan.kept_for_position) > 10 else ''}")
    if plan.kept_for_linked:
        lines.append(f"  kept {len(plan.kept_for_linked)} expired closed order(s) with an open linked order: "
                     f"{', '.join(plan.kept_for_linked[:10])}{' ...' if len(plan.kept_for_linked) > 10 else ''}")
    counts = plan.counts() if result.dry_run else result.removed
    lines.append(
        f"Retention {'dry run' if result.dry_run else 'done'}: {verb} {counts['orders']} closed order(s), "
        f"{counts['positions']} closed position(s), {counts['account_events']} account event(s) "
        f"in {result.seconds:.3f} s",
    )
    return "\n".join(lines)
