"""The single-writer lease against a real redis-server, with real holder processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from launcher.bootstrap.lease import acquire_lease
from launcher.bootstrap.lease import lease_key
from launcher.config.schema import LauncherConfig
from launcher.errors import LeaseHeld
from launcher.errors import LeaseLost
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect


REPO_ROOT = Path(__file__).resolve().parents[1]
TTL_S = 2.0


def lease_settings(trader_id: str = "TESTER-001", ttl_s: float = TTL_S, wait_s: float | None = None) -> LauncherConfig:
    settings = LauncherConfig(trader_id=trader_id)
    settings.bootstrap.lease_ttl_s = ttl_s
    settings.bootstrap.lease_wait_s = wait_s
    return settings


HOLDER = textwrap.dedent(
    """
    import sys, time, redis
    from launcher.bootstrap.lease import acquire_lease
    from launcher.config.schema import LauncherConfig
    port, trader_id, ttl_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    settings = LauncherConfig(trader_id=trader_id)
    settings.bootstrap.lease_ttl_s = ttl_s
    lease = acquire_lease(redis.Redis(host="127.0.0.1", port=port), settings, "holder-instance")
    lease.start_renewing(lambda reason: print("LOST", reason, flush=True))
    print("ACQUIRED", flush=True)
    while True:
        time.sleep(3600)
    """,
)


def start_holder(port: int, trader_id: str = "TESTER-001", ttl_s: float = TTL_S) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port), trader_id, str(ttl_s)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()  # blocks until the holder reports (or exits)
    assert line.strip() == "ACQUIRED", f"holder did not acquire: {line!r}"
    return proc


def client_for(server, timeout_s: float = 2.0):
    """A client built the way the launcher builds its own (bounded pool, no client-side retries)."""
    return connect(ConnectionSettings(host="127.0.0.1", port=server.port, timeout_s=timeout_s))


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_lease_value_and_key(redis_server):
    client = client_for(redis_server)
    lease = acquire_lease(client, lease_settings(), "inst-1")
    try:
        assert lease.key == "trader-TESTER-001:launcher:lease"
        value = json.loads(client.get(lease.key))
        assert value["instance_id"] == "inst-1" and value["pid"] > 0 and value["host"] and value["started_at"]
        assert lease.holder["instance_id"] == "inst-1"
        assert 0 < client.pttl(lease.key) <= TTL_S * 1000
    finally:
        assert lease.release()
    assert not client.exists(lease.key)


def test_lease_key_ignores_instance_id():
    settings = lease_settings()
    settings.cache.use_instance_id = True
    assert lease_key(settings) == "trader-TESTER-001:launcher:lease"


def test_second_acquirer_gets_lease_held_naming_the_live_holder(redis_server):
    holder = start_holder(redis_server.port)
    try:
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as raised:
            acquire_lease(client_for(redis_server), lease_settings(wait_s=30), "second")
        elapsed = time.monotonic() - started
        # A live holder is recognised by its renewal: within about one renewal interval (ttl/3).
        assert elapsed < TTL_S / 3 + 0.7, elapsed
        message = str(raised.value)
        assert "holder-instance" in message and f"pid {holder.pid}" in message and "since" in message
        assert "\n" not in message
        assert raised.value.exit_code == 5
        assert raised.value.holder["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_crashed_holder_lease_is_taken_after_it_expires(redis_server):
    holder = start_holder(redis_server.port)
    holder.send_signal(signal.SIGKILL)  # a crash: no release, no more renewals
    holder.wait()
    client = client_for(redis_server)
    key = lease_key(lease_settings())
    left_s = client.pttl(key) / 1000
    assert left_s > 0
    started = time.monotonic()
    lease = acquire_lease(client, lease_settings(), "successor")
    elapsed = time.monotonic() - started
    try:
        assert elapsed >= left_s - 0.2  # it waited for the expiry rather than stealing the lease
        assert elapsed < TTL_S + 1.0
        assert json.loads(client.get(key))["instance_id"] == "successor"
    finally:
        lease.release()


def test_lease_not_expiring_within_the_wait_bound_is_held(redis_server):
    client = client_for(redis_server)
    key = lease_key(lease_settings())
    client.set(key, json.dumps({"instance_id": "slow", "host": "h", "pid": 1, "started_at": "t"}), px=60_000)
    started = time.monotonic()
    with pytest.raises(LeaseHeld, match="did not expire within"):
        acquire_lease(client, lease_settings(wait_s=0.5), "impatient")
    assert time.monotonic() - started < 1.5


def test_lost_callback_fires_once_when_the_key_is_taken_by_someone_else(redis_server):
    client = client_for(redis_server)
    lease = acquire_lease(client, lease_settings(), "victim")
    reasons: list[str] = []
    fired = threading.Event()

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        fired.set()

    lease.start_renewing(on_lost)
    client.set(lease.key, json.dumps({"instance_id": "usurper", "host": "elsewhere", "pid": 7, "started_at": "now"}))
    assert fired.wait(timeout=TTL_S), "on_lost was not called"
    assert "usurper" in reasons[0]
    wait_until(lambda: not any(t.is_alive() for t in lease._threads), 5, "renewal threads to stop")
    assert len(reasons) == 1
    assert not lease.release()  # not ours any more: left alone
    assert json.loads(client.get(lease.key))["instance_id"] == "usurper"


def test_lost_callback_fires_when_the_key_disappears(redis_server):
    client = client_for(redis_server)
    lease = acquire_lease(client, lease_settings(), "victim")
    fired = threading.Event()
    reasons: list[str] = []
    lease.start_renewing(lambda reason: (reasons.append(reason), fired.set()))
    client.delete(lease.key)
    assert fired.wait(timeout=TTL_S)
    assert "gone" in reasons[0]
    lease.release()


def test_lost_callback_fires_when_redis_is_unreachable_past_the_ttl(redis_server):
    client = client_for(redis_server, timeout_s=0.5)
    lease = acquire_lease(client, lease_settings(), "victim")
    fired = threading.Event()
    reasons: list[str] = []
    lease.start_renewing(lambda reason: (reasons.append(reason), fired.set()))
    lease.renew()
    renewed_at = time.monotonic()
    redis_server.kill()
    assert fired.wait(timeout=TTL_S + 1.0)
    # Declared before the TTL could run out on the server, never after.
    assert time.monotonic() - renewed_at <= TTL_S + 0.1
    assert "could not renew" in reasons[0]
    lease.release()  # Redis is gone: logs, does not raise


def test_release_is_compare_and_delete(redis_server):
    client = client_for(redis_server)
    first = acquire_lease(client, lease_settings(), "first")
    assert first.release()
    second = acquire_lease(client, lease_settings(), "second")
    assert not first.release()  # already released: does not touch the new holder's key
    assert json.loads(client.get(second.key))["instance_id"] == "second"
    second.release()


def test_leases_of_different_traders_are_independent(redis_server):
    client = client_for(redis_server)
    a = acquire_lease(client, lease_settings("ALPHA-001"), "a")
    b = acquire_lease(client, lease_settings("BETA-001"), "b")
    assert a.key != b.key
    a.release()
    b.release()


def test_flush_database_keeps_the_lease(redis_server):
    client = client_for(redis_server)
    lease = acquire_lease(client, lease_settings(), "flusher")
    client.set("trader-TESTER-001:orders:O-1", b"x")
    client.set("trader-TESTER-001:index:orders", b"y")
    lost = threading.Event()
    lease.start_renewing(lambda reason: lost.set())
    assert lease.flush_database() == 2
    assert client.dbsize() == 1 and json.loads(client.get(lease.key))["instance_id"] == "flusher"
    renewals = lease.renewals
    wait_until(lambda: lease.renewals > renewals, TTL_S, "a renewal after the flush")
    assert not lost.is_set()
    lease.release()
    client.set(lease.key, b"someone else")
    with pytest.raises(LeaseLost, match="no longer ours"):
        lease.flush_database()
    assert client.get(lease.key) == b"someone else"


def test_a_lease_on_a_demoted_server_says_what_redis_answered_and_does_not_flood_the_log(redis_server, tmp_path, caplog):
    """
    The server turns into a replica while the lease is held (a Sentinel naming the wrong node):
    Redis answers every renewal with READONLY. The loss names that answer, not "unreachable",
    and the retries every 0.25 s log one line, not one each.
    """
    caplog.set_level("INFO", logger="launcher.bootstrap")
    other = RedisProcess(tmp_path / "other").start()
    try:
        client = client_for(redis_server, timeout_s=0.5)
        lease = acquire_lease(client, lease_settings(ttl_s=3.0), "demoted")
        fired = threading.Event()
        reasons: list[str] = []
        lease.start_renewing(lambda reason: (reasons.append(reason), fired.set()))
        redis_server.client().replicaof("127.0.0.1", other.port)
        assert fired.wait(timeout=6.0)
        assert "READONLY" in reasons[0] and "unreachable" not in reasons[0]
        failures = [r.getMessage() for r in caplog.records if "Lease renewal" in r.getMessage()]
        assert 1 <= len(failures) <= 2, failures  # the first failure, at most one summary within the TTL
        lease.release()
    finally:
        other.kill()
