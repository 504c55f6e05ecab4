"""
The single-writer lease: at most one running node per trader id and Redis database.

The lease is one key, ``{trader_key}:launcher:lease`` (``launcher/state/layout.py``; the
trader key never includes the instance id, since the lease guards the trader, not a run),
set with ``SET key value NX PX ttl``. Its value is JSON naming the holder::

    {"instance_id": ..., "host": ..., "pid": ..., "started_at": ..., "ttl_ms": ..., "trader_id": ...}

The holder renews it every ttl/3 with a compare-and-set (a Lua script that PEXPIREs only
while the value is still its own) and deletes it on release the same way.

A launcher that finds the lease taken watches it for a while instead of failing at once:
a live holder renews it (its PTTL goes up) or hands it on (the value changes), which
gives ``LeaseHeld`` within about one renewal interval; a crashed holder does neither, so
the lease runs out within its TTL and is taken then (bounded by ``bootstrap.lease_wait_s``,
default ttl + 2 s).

A running node whose renewal finds the key gone or someone else's value, or that cannot
renew before its TTL runs out (Redis unreachable), has lost the lease: ``on_lost(reason)``
is called once, and the node must stop trading.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

import redis

from launcher.config.schema import LauncherConfig
from launcher.errors import ConfigError
from launcher.errors import LeaseHeld
from launcher.errors import LeaseLost
from launcher.errors import RedisUnavailable
from launcher.state import layout
from launcher.state.loader import state_trader_key


log = logging.getLogger("launcher.bootstrap")

RENEW_SUMMARY_S = 5.0  # while renewals keep failing with the same error, one line this often

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

POLL_S = 0.1  # how often a waiting launcher looks at the lease
PTTL_SLACK_MS = 20  # PTTL only ever falls unless renewed; more than this rise is a renewal


def lease_key(settings: LauncherConfig) -> str:
    """``{trader_key}:launcher:lease`` for ``settings.trader_id`` (never per instance)."""
    return layout.full_key(state_trader_key(settings), layout.LEASE)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as written in its value."""

    instance_id: str
    host: str
    pid: int
    started_at: str
    ttl_ms: int
    trader_id: str = ""

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Holder | None:
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        try:
            data = json.loads(text)
            return cls(
                instance_id=str(data.get("instance_id", "?")),
                host=str(data.get("host", "?")),
                pid=int(data.get("pid", -1)),
                started_at=str(data.get("started_at", "?")),
                ttl_ms=int(data.get("ttl_ms", 0)),
                trader_id=str(data.get("trader_id", "")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls(instance_id=f"<unreadable value {text[:60]!r}>", host="?", pid=-1, started_at="?", ttl_ms=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "ttl_ms": self.ttl_ms,
            "trader_id": self.trader_id,
        }

    def describe(self) -> str:
        return f"instance {self.instance_id} on host {self.host} (pid {self.pid}) since {self.started_at}"


class Lease:
    """A held lease. Renew it in the background with :meth:`start_renewing`; :meth:`release` at the end."""

    def __init__(self, client: redis.Redis, key: str, value: str, holder: Holder, ttl_ms: int) -> None:
        self._client = client
        self.key = key
        self.value = value
        self._holder = holder
        self.ttl_ms = ttl_ms
        self.interval_s = ttl_ms / 3000.0
        self.guard_s = min(1.0, ttl_ms / 10000.0)  # declare loss this long before the TTL could run out
        self._renew = client.register_script(RENEW_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._on_lost: Callable[[str], None] | None = None
        self._threads: list[threading.Thread] = []
        self._last_ok = time.monotonic()  # when the last successful renewal (or the SET) was sent
        self._failure: str | None = None  # the last renewal error of the current failing streak
        self._failures = 0  # failed renewals in the current streak
        self._failing_since = 0.0
        self._last_said = 0.0  # when the streak was last logged
        self.renewals = 0
        self.lost_reason: str | None = None
        self.released = False

    @property
    def holder(self) -> dict[str, Any]:
        """This lease's holder: instance_id, host, pid, started_at, ttl_ms, trader_id."""
        return self._holder.to_dict()

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    # -- renewal ----------------------------------------------------------------------------------

    def start_renewing(self, on_lost: Callable[[str], None]) -> None:
        """Renew every ttl/3 in a background thread; call ``on_lost(reason)`` once if the lease is lost."""
        if self._threads:
            raise RuntimeError("lease renewal already started")
        self._on_lost = on_lost
        self._threads = [
            threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True),
            threading.Thread(target=self._watchdog_loop, name="lease-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def renew(self) -> bool:
        """One compare-and-set renewal; False (and the loss reported) if the lease is no longer ours."""
        sent = time.monotonic()
        self._follow_master()
        if self._renew(keys=[self.key], args=[self.value, self.ttl_ms]) == 1:
            with self._lock:
                self._last_ok = max(self._last_ok, sent)
            self.renewals += 1
            return True
        try:
            current = self._client.get(self.key)
        except redis.exceptions.RedisError:
            current = None
        if current is None:
            self._lose("the lease key is gone (expired, deleted, flushed or lost in a failover)")
        else:
            other = Holder.parse(current)
            self._lose(f"the lease was taken over by {other.describe() if other else current!r}")
        return False

    def _follow_master(self) -> None:
        """
        With Sentinel, renew on the master the sentinels name *now*. After a failover the old
        master stays writable until the sentinels demote it (seconds later); renewals sent there
        would let the new master's copy of the lease run out.
        """
        pool = self._client.connection_pool
        if getattr(pool, "is_master", False) and hasattr(pool, "get_master_address"):
            try:
                pool.get_master_address()  # drops idle connections to a master that is no longer named
            except redis.exceptions.RedisError:
                pass  # no sentinel answered: renew where we are; the watchdog bounds the risk

    def _renew_loop(self) -> None:
        wait_s = self.interval_s
        while not self._stop.wait(wait_s):
            if self.lost:
                return
            try:
                if not self.renew():
                    return
                self._recovered()
                wait_s = self.interval_s
            except redis.exceptions.RedisError as e:
                self._failed(_renewal_error(e))
                wait_s = min(self.interval_s, 0.25)

    def _failed(self, error: str) -> None:
        """
        One WARN when renewals start failing or the error changes, then one summary every
        RENEW_SUMMARY_S while they keep failing (retries run every 0.25 s).
        """
        now = time.monotonic()
        left = self._last_ok + self.ttl_ms / 1000.0 - now
        if self._failures == 0:
            self._failing_since = now
        self._failures += 1
        if error != self._failure:
            log.warning("Lease renewal failed (%s); the lease runs out in %.1fs unless renewed", error, left)
            self._last_said = now
        elif now - self._last_said >= RENEW_SUMMARY_S:
            log.warning("Lease renewal still failing: %d attempts in %.1fs, last %s; the lease runs out in %.1fs",
                        self._failures, now - self._failing_since, error, left)
            self._last_said = now
        self._failure = error

    def _recovered(self) -> None:
        if self._failures:
            log.info("Lease renewed again after %d failed attempt(s) in %.1fs", self._failures,
                     time.monotonic() - self._failing_since)
        self._failure, self._failures = None, 0

    def _watchdog_loop(self) -> None:
        """Declares the loss when no renewal got through in time (the renewer may be stuck in a socket call)."""
        ttl_s = self.ttl_ms / 1000.0
        while not self._stop.is_set() and not self.lost:
            with self._lock:
                deadline = self._last_ok + ttl_s - self.guard_s
            left = deadline - time.monotonic()
            if left <= 0:
                self._lose(f"could not renew the lease for {ttl_s - self.guard_s:.1f}s ({self._why_not_renewed()}); its TTL runs out")
                return
            self._stop.wait(min(left, self.interval_s))

    def _why_not_renewed(self) -> str:
        """What the renewals ran into: Redis's own answer says more than a guess (a replica, NOPERM, no route)."""
        if self._failure is None:
            return "no renewal completed: the renewal call did not return"
        return f"last error {self._failure}"

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self.lost_reason is not None or self._stop.is_set():
                return
            self.lost_reason = reason
        log.error("Single-writer lease %s LOST: %s", self.key, reason)
        callback = self._on_lost
        if callback is not None:
            try:
                callback(reason)
            except Exception:
                log.exception("lease on_lost callback failed")

    # -- flush ------------------------------------------------------------------------------------

    def flush_database(self) -> int:
        """
        ``cache.flush_on_start`` without losing the lease: FLUSHDB and re-SET the lease in one
        MULTI/EXEC, only while the lease is still ours (WATCH). Returns how many keys were
        deleted. NautilusTrader's own flush (kernel, flush_on_start) deletes the lease key
        with everything else, which the renewal then (rightly) reports as a lost lease.
        Raises LeaseLost if the lease is no longer ours.
        """
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    current = pipe.get(self.key)
                    if current is None or current.decode(errors="replace") != self.value:
                        raise LeaseLost(f"lease {self.key} is no longer ours: refusing to flush the database")
                    deleted = int(pipe.dbsize()) - 1
                    pipe.multi()
                    pipe.flushdb()
                    pipe.set(self.key, self.value, px=self.ttl_ms)
                    sent = time.monotonic()
                    pipe.execute()
                except redis.exceptions.WatchError:
                    continue
                with self._lock:
                    self._last_ok = max(self._last_ok, sent)
                log.warning("Flushed the Redis database (%d keys deleted), keeping the single-writer lease", deleted)
                return deleted

    # -- release ----------------------------------------------------------------------------------

    def stop_renewing(self) -> None:
        self._stop.set()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout=5)

    def release(self) -> bool:
        """Stop renewing and delete the key if it is still ours (CAS). Safe to call twice."""
        self.stop_renewing()
        if self.released:
            return False
        self.released = True
        try:
            deleted = self._release(keys=[self.key], args=[self.value]) == 1
        except redis.exceptions.RedisError as e:
            log.warning("Could not release lease %s (%s); it expires within %.1fs", self.key, e, self.ttl_ms / 1000)
            return False
        if deleted:
            log.info("Released single-writer lease %s", self.key)
        else:
            log.warning("Lease %s was no longer ours at release; left as it is", self.key)
        return deleted


def _renewal_error(error: redis.exceptions.RedisError) -> str:
    """What a failed renewal means, in words an operator acts on."""
    if isinstance(error, redis.exceptions.ReadOnlyError):
        return f"Redis answered READONLY: the server is a replica now (demoted by a failover, or a replica named as master): {error}"
    if isinstance(error, redis.exceptions.NoPermissionError):
        return f"Redis refused the renewal (NOPERM): the user may no longer run it: {error}"
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"Redis unreachable: {type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")


def acquire_lease(
    client: redis.Redis,
    settings: LauncherConfig,
    instance_id: str,
    *,
    wait_s: float | None = None,
) -> Lease:
    """
    Take the trader's single-writer lease, waiting for a crashed holder's lease to expire.

    Raises LeaseHeld naming the holder when a live launcher holds it (seen renewing it),
    or when it has not expired within ``bootstrap.lease_wait_s`` (default ttl + 2 s).
    """
    ttl_s = float(settings.bootstrap.lease_ttl_s)
    if ttl_s <= 0:
        raise ConfigError("bootstrap.lease_ttl_s", f"must be > 0, was {ttl_s}")
    ttl_ms = max(1, int(round(ttl_s * 1000)))
    if wait_s is None:
        configured = settings.bootstrap.lease_wait_s
        wait_s = float(configured) if configured is not None else ttl_s + 2.0
    key = lease_key(settings)
    trader_id = str(settings.trader_id)
    holder = Holder(
        instance_id=str(instance_id),
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=_now_iso(),
        ttl_ms=ttl_ms,
        trader_id=trader_id,
    )
    value = json.dumps(holder.to_dict(), sort_keys=True)
    started = time.monotonic()
    deadline = started + max(0.0, wait_s)
    last_raw: bytes | None = None
    last_pttl: int | None = None
    announced = False
    try:
        while True:
            sent = time.monotonic()
            if client.set(key, value, nx=True, px=ttl_ms):
                lease = Lease(client, key, value, holder, ttl_ms)
                lease._last_ok = sent  # noqa: SLF001
                if announced:
                    log.info(
                        "Previous holder never renewed: its lease expired after %.1fs; lease %s acquired (ttl %.1fs)",
                        time.monotonic() - started, key, ttl_s,
                    )
                else:
                    log.info("Single-writer lease %s acquired (ttl %.1fs, %s)", key, ttl_s, holder.describe())
                return lease
            pipe = client.pipeline(transaction=True)
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = pipe.execute()
            if raw is None:
                continue  # expired or released between SET and GET: try again at once
            other = Holder.parse(raw)
            who = other.describe() if other else "an unknown holder"
            if pttl == -1:
                raise _held(trader_id, key, other, f"held by {who}, with no expiry (set by hand?); "
                            "delete the key if no launcher is running")
            if last_raw is not None and raw != last_raw:
                raise _held(trader_id, key, other, f"taken by {who} while this launcher waited")
            if last_pttl is not None and pttl > last_pttl + PTTL_SLACK_MS:
                raise _held(trader_id, key, other, f"held by {who}, which is alive (it renewed the lease)")
            last_raw, last_pttl = raw, pttl
            now = time.monotonic()
            if now >= deadline:
                raise _held(
                    trader_id, key, other,
                    f"held by {who}; it did not expire within bootstrap.lease_wait_s={wait_s:g}s "
                    f"({pttl} ms left)",
                )
            if not announced:
                announced = True
                log.warning(
                    "Lease %s is held by %s (%.1fs left): waiting up to %.1fs to see whether it is renewed "
                    "(a live node) or expires (a crashed one)",
                    key, who, pttl / 1000, deadline - now,
                )
            time.sleep(max(0.0, min(POLL_S, deadline - now, pttl / 1000)))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering while taking the lease {key}: {e}") from None


def _held(trader_id: str, key: str, other: Holder | None, detail: str) -> LeaseHeld:
    error = LeaseHeld(f"trader {trader_id} is already running: lease {key} {detail}")
    error.holder = other.to_dict() if other else None
    log.error("%s", error)
    return error
