"""
Connections and lifecycle: ACL user/password (never logged), TLS, the bounded pool and health
check, close() while Redis is down (spill + one ERROR), exit without close(), and listeners that
misbehave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from nautilus_trader.core.uuid import UUID4

import launcher.cache.resilient as resilient_module
from launcher import retry
from launcher.cache.listener import CacheListener
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.commands import Stage
from launcher.servers.redis_process import LOOPBACK
from launcher.servers.redis_process import NO_SYNC_DELAY
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import free_port
from launcher.state import layout as L
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


@pytest.fixture
def recorded_logs(monkeypatch):
    """Every line the backend logs, from its constructor on."""
    recorder = LogRecorder()
    monkeypatch.setattr(resilient_module, "Logger", lambda name: recorder)
    return recorder


def test_acl_user_password_is_used_and_never_logged(tmp_path, recorded_logs):
    server = RedisProcess(tmp_path / "redis", password="admin-secret-1", appendfsync="always").start()
    try:
        make_user = lambda: server.client().execute_command(  # noqa: E731 (ACL users live in memory only)
            "ACL", "SETUSER", "trader", "on", ">trader-secret-2", "~*", "&*", "+@all")
        make_user()
        settings = ConnectionSettings(host="127.0.0.1", port=server.port, username="trader", password="trader-secret-2",
                                      timeout_s=1.0)
        db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port), connection=settings,
                                    spill_dir=str(tmp_path / "spill"), max_backoff_s=0.1)
        assert db.client.connection_pool.max_connections == 20
        assert db.health_check()
        cache = new_cache(db)
        orders = write_orders(cache, 3)
        assert db.wait_until_persisted(10)
        server.kill()
        assert not db.health_check()
        orders += write_orders(cache, 3, prefix="x", start_ns=1_750_000_000_000_000_000)
        poll(lambda: db.stats().outage_active, 10, "the outage")
        server.start()
        make_user()
        poll(lambda: not db.stats().outage_active, 20, "writes to resume")
        db.close()
        assert_exactly_once(server.client(), db.trader_key, orders)
    finally:
        server.kill()
    text = "\n".join(message for _, message in recorded_logs.lines)
    assert "trader-secret-2" not in text and "admin-secret-1" not in text
    assert recorded_logs.count("WARN", "unreachable") == 1 and recorded_logs.count("INFO", "writes resumed") == 1
    assert "redis://trader:***@" in text  # where it connects, password redacted


def test_wrong_password_retains_writes_and_says_why_without_the_password(tmp_path, recorded_logs):
    server = RedisProcess(tmp_path / "redis", password="right-password").start()
    try:
        settings = ConnectionSettings(host="127.0.0.1", port=server.port, password="wrong-password", timeout_s=1.0)
        db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(server.port), connection=settings,
                                    spill_dir=str(tmp_path / "spill"), max_backoff_s=0.1, close_timeout_s=1.0)
        write_orders(new_cache(db), 2)
        poll(lambda: db.stats().outage_active, 10, "the failure to be reported")
        assert db.pending_writes() == 9  # meta + 2 x 4: retained, not dropped
        db.close()
        assert db.stats().spilled_writes == 9
    finally:
        server.kill()
    text = "\n".join(message for _, message in recorded_logs.lines)
    assert "wrong-password" not in text and "right-password" not in text
    assert recorded_logs.count("WARN", "unreachable") == 1
    assert recorded_logs.count("ERROR", "9 write(s) spilled to") == 1


def _tls_files(directory) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    run = lambda *args: subprocess.run(args, cwd=directory, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=launcher-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    return {name: str(directory / f"{name}") for name in ("ca.crt", "server.crt", "server.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make test certificates")
def test_tls_connection(tmp_path):
    files = _tls_files(tmp_path / "tls")
    tls_port = free_port()
    server = RedisProcess(tmp_path / "redis", extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", files["server.crt"], "--tls-key-file", files["server.key"],
        "--tls-ca-cert-file", files["ca.crt"], "--tls-auth-clients", "no",
    ])
    try:
        server.start()
    except RuntimeError as e:  # a server built without TLS
        pytest.skip(f"redis-server without TLS support: {e}")
    try:
        settings = ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_file=files["ca.crt"], timeout_s=2.0)
        db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(tls_port), connection=settings,
                                    spill_dir=str(tmp_path / "spill"))
        orders = write_orders(new_cache(db), 3)
        db.close()
        assert_exactly_once(server.client(), db.trader_key, orders)
        assert set(db.load_orders()) == {o.client_order_id for o in orders}
        assert db.stats().server_address == ("127.0.0.1", tls_port)
    finally:
        server.kill()


def test_close_while_redis_is_down_spills_everything_and_the_next_start_replays_it(redis_server_always, tmp_path, recorded_logs):
    spill_dir = tmp_path / "spill"

    def open_db() -> ResilientCacheDatabase:
        return ResilientCacheDatabase(
            TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server_always.port, buffer_interval_ms=10),
            connection=ConnectionSettings(host="127.0.0.1", port=redis_server_always.port, timeout_s=0.5),
            spill_dir=str(spill_dir), max_backoff_s=0.1, close_timeout_s=1.0,
        )

    db = open_db()
    cache = new_cache(db)
    orders = write_orders(cache, 3)
    assert db.wait_until_persisted(10)
    redis_server_always.kill()
    orders += write_orders(cache, 4, prefix="d", start_ns=1_750_000_000_000_000_000)
    db.close()  # bounded: ~1 s of retries, then everything goes to disk
    assert recorded_logs.count("ERROR", "16 write(s) spilled to") == 1
    assert (spill_dir / "trader-TESTER-000.spill").exists()
    redis_server_always.start()
    meta = redis_server_always.client().hgetall(f"trader-TESTER-000:{L.MANIFEST_META}")
    assert meta[b"final"] == b"0"  # the unclean stop is not recorded as clean
    second = open_db()  # replays the file before anything else
    assert not (spill_dir / "trader-TESTER-000.spill").exists()
    assert set(second.load_orders()) == {o.client_order_id for o in orders}
    second.close()
    assert_exactly_once(redis_server_always.client(), second.trader_key, orders)


EXIT_CHILD = textwrap.dedent(
    """
    import sys
    from nautilus_trader.core.uuid import UUID4
    from launcher.cache.resilient import ResilientCacheDatabase
    from tests.support.trading_state import TRADER_ID, cache_config, make_serializer, new_cache, write_orders
    port, spill_dir = int(sys.argv[1]), sys.argv[2]
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(port, buffer_interval_ms=2000),
                                spill_dir=spill_dir)
    orders = write_orders(new_cache(db), 20)
    print(" ".join(o.client_order_id.value for o in orders), flush=True)
    # no close(): the interpreter just exits, with a 2 s buffer still holding the writes
    """,
)


def test_interpreter_exit_without_close_still_flushes(redis_server_always, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(EXIT_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    done = subprocess.run([sys.executable, str(script), str(redis_server_always.port), str(tmp_path / "spill")],
                          capture_output=True, text=True, env=env, cwd=os.getcwd(), timeout=60)
    assert done.returncode == 0, done.stderr
    client = redis_server_always.client()
    for coid in done.stdout.split():
        assert client.llen(f"trader-TESTER-000:orders:{coid}") == 4
    assert client.hget(f"trader-TESTER-000:{L.MANIFEST_META}", "final") == b"1"


class ExplodingListener(CacheListener):
    def __getattribute__(self, name):
        if name.startswith("on_"):
            def explode(*args):
                raise RuntimeError("observer bug")
            return explode
        return super().__getattribute__(name)


def test_a_failing_listener_never_breaks_persisting(redis_server_always, tmp_path):
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server_always.port),
                                spill_dir=str(tmp_path / "spill"), listener=ExplodingListener())
    orders = write_orders(new_cache(db), 5)
    assert len(db.load_orders()) == 5
    db.close()
    assert_exactly_once(redis_server_always.client(), db.trader_key, orders)
    assert db.stats().listener_errors > 0


class RecordingListener(CacheListener):
    def __init__(self) -> None:
        self.calls: dict[str, list] = {}

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *args: calls.setdefault(name, []).append(args)
        return object.__getattribute__(self, name)


def test_listener_sees_batches_latency_round_trips_and_loads(redis_server_always, tmp_path):
    listener = RecordingListener()
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server_always.port),
                                spill_dir=str(tmp_path / "spill"), listener=listener)
    write_orders(new_cache(db), 5)
    db.load_orders()
    db.close()
    calls = listener.calls
    assert sum(writes for writes, _, _ in calls["on_batch_acknowledged"]) == 5 * 4 + 2  # + meta start/final
    kinds = {kind for kind, _, _ in calls["on_write_latency"]}
    assert {"add_order", "update_order"} <= kinds
    assert {op for op, _ in calls["on_round_trip"]} >= {"write_batch", "load_scan", "load_read"}
    assert ("orders", 5) in [(what, count) for what, count, _ in calls["on_load"]]
    assert calls["on_reconnect"][0][0] == ("127.0.0.1", redis_server_always.port)
    stats = db.stats()
    assert stats.writes_acknowledged == 22 and stats.pending_writes == 0 and stats.batches >= 1


def test_an_acl_user_without_info_still_loads_everything(redis_server, tmp_path):
    """Loads reuse a SCAN only when INFO can say nothing changed; without INFO every load scans."""
    redis_server.client().execute_command("ACL", "SETUSER", "noinfo", "on", ">noinfo-secret-3", "~*", "&*", "+@all", "-info")
    settings = ConnectionSettings(host="127.0.0.1", port=redis_server.port, username="noinfo", password="noinfo-secret-3",
                                  timeout_s=1.0)
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port), connection=settings,
                                spill_dir=str(tmp_path / "spill"))
    try:
        orders = write_orders(new_cache(db), 3)
        assert db.wait_until_persisted(10)
        assert set(db.load_orders()) == {o.client_order_id for o in orders}
        redis_server.client().delete(f"{db.trader_key}:orders:{orders[0].client_order_id.value}")
        assert set(db.load_orders()) == {o.client_order_id for o in orders[1:]}
    finally:
        db.close()


def test_a_batch_that_waits_for_replicas_reports_the_wait_replicas_round_trip(tmp_path):
    """``redis_latency_seconds{operation="wait_replicas"}``: emitted for every batch that ran WAIT, and only then."""
    master = RedisProcess(tmp_path / "master", appendonly=False, extra=list(NO_SYNC_DELAY)).start()
    replica = RedisProcess(tmp_path / "replica", appendonly=False, extra=["--replicaof", LOOPBACK, str(master.port)]).start()
    try:
        retry.poll(lambda: master.client().info("replication").get("slave0", {}).get("state") == "online", 15,
                   "the replica online")
        operations = {}
        for acks in (1, 0):
            listener = RecordingListener()
            db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(master.port),
                                        spill_dir=str(tmp_path / f"spill-{acks}"), listener=listener, min_replica_acks=acks)
            write_orders(new_cache(db), 3)
            assert db.wait_until_persisted(10)
            db.close()
            operations[acks] = [op for op, _ in listener.calls["on_round_trip"]]
            batches = len(listener.calls["on_batch_acknowledged"])
            assert operations[acks].count("write_batch") >= batches
            if acks:
                assert operations[acks].count("wait_replicas") == operations[acks].count("write_batch")
                assert db.stats().round_trip_s["wait_replicas"] > 0
        assert "wait_replicas" not in operations[0]
    finally:
        replica.kill()
        master.kill()


def test_a_write_is_applied_before_it_is_acknowledged_and_released_only_then(redis_server, tmp_path):
    """The `Stage` of a write: SUBMITTED, APPLIED by the master, ACKNOWLEDGED once WAIT has enough replicas."""
    db = ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer(), cache_config(redis_server.port, buffer_interval_ms=60_000),
                                spill_dir=str(tmp_path / "spill"), min_replica_acks=1, replica_ack_timeout_ms=50,
                                max_backoff_s=0.05, close_timeout_s=1.0)
    try:
        write_orders(new_cache(db), 2)
        ops = [op for op in db.writer.retained_ops() if op.kind in ("add_order", "update_order")]
        assert len(ops) == 8 and {op.stage for op in ops} == {Stage.SUBMITTED}
        db.writer.request_flush()
        # No replica: every batch is applied on the master, never acknowledged, so still retained.
        retry.poll(lambda: {op.stage for op in ops} == {Stage.APPLIED}, 10, "the writes applied")
        assert redis_server.client().hlen(f"{db.trader_key}:{L.MANIFEST_ORDERS}") == 2
        assert db.pending_writes() >= 8 and not db.wait_until_persisted(0.2)
    finally:
        db.close()
    assert {op.stage for op in ops} == {Stage.APPLIED}
    assert db.stats().spilled_total >= 8  # retained until acknowledged: at close, into the spill file
