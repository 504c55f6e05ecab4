"""
Retention while the node runs: an Actor whose timer applies ``launcher.retention.policy``
every ``retention.interval_s`` to the node's own Cache.

Why an actor rather than only ``ExecEngineConfig.purge_*``: NautilusTrader's purge timers
take whole minutes and remove every expired closed order, including the opening order of
a position that is still open (verify then finds a fill whose order is gone, and a strict
start refuses). So the actor decides with the shared policy and then removes through
NautilusTrader's own ``Cache.purge_position`` / ``purge_order`` / ``purge_account_events``
with ``purge_from_database=True``: memory and Redis go together, through the cache backend's
``delete_*`` (so the resilient backend's manifest and write ordering stay intact).

What the backends do not do, ``RedisFollowUp`` does on its own thread (never blocking the
event loop on Redis):

* ``index:order_position`` entries naming a purged position (both backends leave them;
  NautilusTrader drops them from memory in ``purge_position``): compare-and-delete, so a
  NETTING position id reused for a new position keeps its new orders' entries;
* account events with ``cache.backend=native``: NautilusTrader 1.231's adapter makes
  ``delete_account_event`` a no-op (with a WARNING per event), so the memory purge runs
  without it and the Redis list is trimmed here, oldest first, after checking by event id
  that the prefix being removed is exactly what was purged from memory;
* the launcher manifest with ``cache.backend=native``: it is written from memory only at a
  clean stop, so purged ids (and trimmed account events) are taken out of it now - otherwise
  a crash before the next clean stop would make verify report the purged items as LOST.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import Any

import redis
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId

from launcher.retention.policy import RetentionWindows
from launcher.retention.policy import plan_retention
from launcher.state import layout
from launcher.state.codec import deserialize_checked


log = logging.getLogger("launcher.retention")

TIMER = "launcher-retention"

UNLINK_SCRIPT = """
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""

# Trim the first ARGV[1] events only if the last of them is still the expected payload
# (appends go to the tail, so a concurrent RPUSH cannot shift the prefix); lower the
# manifest's count of the account (KEYS[2], field ARGV[3]) by as many, when it has one.
TRIM_PREFIX_SCRIPT = """
local k = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], k - 1) == ARGV[2] then
  redis.call('LTRIM', KEYS[1], k, -1)
  local recorded = tonumber(redis.call('HGET', KEYS[2], ARGV[3]))
  if recorded then
    redis.call('HSET', KEYS[2], ARGV[3], math.max(0, recorded - k))
  end
  return k
end
return 0
"""


@dataclass
class PassResult:
    """One retention pass of the running node."""

    removed: dict[str, int]
    seconds: float
    kept_for_position: int = 0
    kept_for_linked: int = 0


class RetentionActor(Actor):
    """
    Applies retention to the running node's Cache every `interval_s` seconds.

    Parameters
    ----------
    windows : RetentionWindows
    interval_s : float
    follow_up : RedisFollowUp, optional
        Redis-side work the backend does not do (None: memory only, e.g. cache=memory).
    delete_account_events : bool
        Pass ``purge_from_database`` for account events (True with the resilient backend,
        whose ``delete_account_event`` works; False with the native one, see module doc).
    on_pass : callable, optional
        Receives each PassResult (metrics).
    """

    def __init__(
        self,
        windows: RetentionWindows,
        interval_s: float,
        follow_up: RedisFollowUp | None = None,
        *,
        delete_account_events: bool = True,
        on_pass: Callable[[PassResult], None] | None = None,
    ) -> None:
        super().__init__(ActorConfig(component_id="LauncherRetention", log_events=False, log_commands=False))
        self._windows = windows
        self._interval_s = float(interval_s)
        self._follow_up = follow_up
        self._delete_account_events = delete_account_events
        self._on_pass = on_pass
        self.passes = 0

    def on_start(self) -> None:
        self.clock.set_timer(TIMER, timedelta(seconds=self._interval_s), callback=self._on_timer)
        log.info("Retention every %gs while the node runs (%s)", self._interval_s, self._windows.describe())

    def on_stop(self) -> None:
        if TIMER in self.clock.timer_names:
            self.clock.cancel_timer(TIMER)

    def _on_timer(self, _event: Any) -> None:
        try:
            self.run_pass(self.clock.timestamp_ns())
        except Exception:  # a retention failure must never stop trading; it is logged and retried next time
            log.exception("Retention pass failed")

    def run_pass(self, now_ns: int) -> PassResult:
        """One pass at `now_ns` (UNIX ns): plan, purge memory + database, queue the Redis follow-ups."""
        started = time.perf_counter()
        cache = self.cache
        plan = plan_retention(
            orders=cache.orders_closed(),
            positions=cache.positions(),
            accounts=cache.accounts(),
            now_ns=now_ns,
            windows=self._windows,
            order_lookup=lambda coid: cache.order(ClientOrderId(coid)),
        )
        removed = {"orders": 0, "positions": 0, "account_events": 0}
        unlinks: dict[str, list[str]] = {}
        for pid in plan.positions:
            position_id = PositionId(pid)
            position = cache.position(position_id)
            if position is None or not position.is_closed:
                continue
            orders = {c.value for c in position.client_order_ids}
            orders.update(o.client_order_id.value for o in cache.orders_for_position(position_id))
            cache.purge_position(position_id, purge_from_database=True)
            if cache.position(position_id) is None:
                removed["positions"] += 1
                unlinks[pid] = sorted(orders)
        purged_orders: list[str] = []
        for coid in plan.orders:
            client_order_id = ClientOrderId(coid)
            order = cache.order(client_order_id)
            if order is None or not order.is_closed:
                continue
            cache.purge_order(client_order_id, purge_from_database=True)
            if cache.order(client_order_id) is None:
                removed["orders"] += 1
                purged_orders.append(coid)
        trims: list[tuple[str, list[str]]] = []
        if plan.accounts:
            # Every account, not only the planned ones: NautilusTrader's purge applies its own
            # rule to all of them (it differs from the policy only for out-of-order timestamps).
            before = {a.id.value: [e.id.value for e in a.events] for a in cache.accounts()}
            cache.purge_account_events(
                now_ns, self._windows.account_events_s, purge_from_database=self._delete_account_events,
            )
            for account in cache.accounts():
                ids = before.get(account.id.value)
                if ids is None:
                    continue
                kept = {e.id.value for e in account.events}
                gone = [i for i in ids if i not in kept]
                removed["account_events"] += len(gone)
                if gone and not self._delete_account_events:
                    trims.append((account.id.value, gone))
        if self._follow_up is not None:
            work = _Work(unlinks=unlinks, trims=trims)
            if self._follow_up.native:
                work.forget_orders = purged_orders
                work.forget_positions = list(unlinks)
            self._follow_up.submit(work)
        result = PassResult(
            removed=removed,
            seconds=time.perf_counter() - started,
            kept_for_position=len(plan.kept_for_position),
            kept_for_linked=len(plan.kept_for_linked),
        )
        self.passes += 1
        if any(removed.values()):
            log.info(
                "Retention: removed %d closed order(s), %d closed position(s), %d account event(s) in %.3f s",
                removed["orders"], removed["positions"], removed["account_events"], result.seconds,
            )
        if self._on_pass is not None:
            self._on_pass(result)
        return result


@dataclass
class _Work:
    unlinks: dict[str, list[str]] = field(default_factory=dict)  # position id -> client order ids
    trims: list[tuple[str, list[str]]] = field(default_factory=list)  # (account id, event ids purged)
    forget_orders: list[str] = field(default_factory=list)  # manifest entries to drop (native backend)
    forget_positions: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.unlinks or self.trims or self.forget_orders or self.forget_positions)

    def merge(self, other: _Work) -> None:
        for pid, orders in other.unlinks.items():
            self.unlinks.setdefault(pid, []).extend(orders)
        self.trims.extend(other.trims)
        self.forget_orders.extend(other.forget_orders)
        self.forget_positions.extend(other.forget_positions)


class RedisFollowUp:
    """
    Redis-side retention work on a background thread, retried every second until Redis answers.

    Parameters
    ----------
    client : redis.Redis
        A client that follows the master (plain or Sentinel-managed).
    trader_key : str
        Where the node's state lives (``trader-{id}``...).
    serializer
        The node's serializer (reads account event ids for the native trim).
    native : bool
        ``cache.backend=native``: also trim account events and keep the manifest in step.
    barrier : callable, optional
        ``barrier(timeout_s) -> bool``: True once the cache backend persisted everything it was
        handed so far (the resilient backend's ``wait_until_persisted``). The follow-up edits
        keys the backend also writes, so it must not overtake writes still queued there.
    """

    RETRY_S = 1.0

    def __init__(
        self,
        client: redis.Redis,
        trader_key: str,
        serializer: Any,
        *,
        native: bool,
        barrier: Callable[[float], bool] | None = None,
    ) -> None:
        self._client = client
        self._barrier = barrier
        self._serializer = serializer
        self.native = native
        self._order_position = layout.full_key(trader_key, layout.INDEX_ORDER_POSITION)
        self._accounts = layout.full_key(trader_key, layout.ACCOUNTS)
        self._mf_orders = layout.full_key(trader_key, layout.MANIFEST_ORDERS)
        self._mf_positions = layout.full_key(trader_key, layout.MANIFEST_POSITIONS)
        self._mf_accounts = layout.full_key(trader_key, layout.MANIFEST_ACCOUNTS)
        self._unlink = client.register_script(UNLINK_SCRIPT)
        self._trim = client.register_script(TRIM_PREFIX_SCRIPT)
        self._pending = _Work()
        self._busy = False
        self._cond = threading.Condition()
        self._closed = False
        self.unlinked = 0
        self.trimmed = 0
        self._thread = threading.Thread(target=self._loop, name="retention-redis", daemon=True)
        self._thread.start()

    def submit(self, work: _Work) -> None:
        if not work:
            return
        with self._cond:
            self._pending.merge(work)
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once everything submitted is done (False on timeout: e.g. Redis unreachable)."""
        # Condition.wait_for keeps the deadline; the worker notifies when it finishes a batch,
        # so this wakes on progress rather than polling.
        with self._cond:
            return self._cond.wait_for(lambda: not (self._pending or self._busy), timeout_s)

    def close(self, timeout_s: float = 3.0) -> None:
        """Finish what is queued (bounded wait), then stop; what could not be done is logged."""
        self.wait_idle(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = self._pending
        self._thread.join(timeout=timeout_s)
        if left.unlinks or left.forget_orders or left.forget_positions:
            log.error(
                "Retention could not finish its Redis follow-up (Redis unreachable): index:order_position entries "
                "naming purged positions %s and %d manifest entries remain; verify reports them until "
                "`python -m launcher mode=retention` runs",
                sorted(left.unlinks)[:10], len(left.forget_orders) + len(left.forget_positions),
            )
        if left.trims:
            log.warning("Retention could not trim the Redis events of account(s) %s; the next pass after a restart "
                        "or mode=retention does", sorted({a for a, _ in left.trims}))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                work, self._pending = self._pending, _Work()
                self._busy = True
            left = self._do(work)
            with self._cond:
                self._busy = False
                if left:
                    left.merge(self._pending)
                    self._pending = left
                self._cond.notify_all()
                if left and not self._closed:
                    self._cond.wait(self.RETRY_S)

    def _do(self, work: _Work) -> _Work:
        """Do `work`; return what is left to retry (Redis errors only)."""
        if self._barrier is not None and not self._barrier(self.RETRY_S * 5):
            return work  # the backend has not caught up (Redis away?): retry later, in order
        left = _Work()
        for pid, orders in work.unlinks.items():
            try:
                self.unlinked += int(self._unlink(keys=[self._order_position], args=[pid, *orders]))
            except redis.exceptions.RedisError as e:
                log.debug("index:order_position cleanup for %s deferred: %s", pid, e)
                left.unlinks[pid] = orders
        for manifest_key, ids, into in (
            (self._mf_orders, work.forget_orders, left.forget_orders),
            (self._mf_positions, work.forget_positions, left.forget_positions),
        ):
            if not ids:
                continue
            try:
                self._client.hdel(manifest_key, *ids)
            except redis.exceptions.RedisError:
                into.extend(ids)
        for account_id, event_ids in work.trims:
            try:
                self.trimmed += self._trim_account(account_id, event_ids)
            except redis.exceptions.RedisError as e:
                log.debug("account %s trim deferred: %s", account_id, e)
                left.trims.append((account_id, event_ids))
        return left

    def _trim_account(self, account_id: str, event_ids: list[str]) -> int:
        key = f"{self._accounts}:{account_id}"
        k = len(event_ids)
        head = self._client.lrange(key, 0, k - 1)
        ids = []
        for raw in head:
            try:
                ids.append(deserialize_checked(self._serializer, raw).id.value)
            except Exception:  # noqa: BLE001 (an undecodable entry is simply not ours to remove)
                ids.append(None)
        if ids != event_ids:
            log.warning(
                "Account %s: the oldest %d event(s) in Redis are not the ones purged from memory; Redis keeps them "
                "(mode=retention removes them)", account_id, k,
            )
            return 0
        return int(self._trim(keys=[key, self._mf_accounts], args=[k, head[-1], account_id]))
