"""wait_for_redis against real redis-server processes: transient waits, fatal errors at once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

import pytest

from launcher.bootstrap.wait import wait_for_redis
from launcher.errors import RedisUnavailable
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import free_port
from launcher.store.connection import ConnectionSettings


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def bootstrap_log():
    handler = _Lines()
    logger = logging.getLogger("launcher.bootstrap")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def conn_to(port: int, **kwargs) -> ConnectionSettings:
    kwargs.setdefault("timeout_s", 1.0)
    return ConnectionSettings(host="127.0.0.1", port=port, **kwargs)


def test_redis_appearing_later_is_waited_for(tmp_path, bootstrap_log):
    server = RedisProcess(tmp_path / "late", port=free_port())
    starter = threading.Timer(2.0, server.start)  # the scenario: Redis comes up 2 s after the launcher
    started = time.monotonic()
    starter.start()
    try:
        client = wait_for_redis(conn_to(server.port), timeout_s=15)
        elapsed = time.monotonic() - started
        assert client.ping()
        assert elapsed >= 1.5
        retries = [line for line in bootstrap_log if "not ready" in line]
        assert retries and all("Connection refused" in line or "connecting" in line for line in retries)
        assert any("attempt 1" in line for line in retries)
        client.close()
    finally:
        starter.join()
        server.kill()


def test_redis_never_appearing_fails_within_timeout(bootstrap_log):
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as raised:
        wait_for_redis(conn_to(free_port()), timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.0
    assert "not reachable within 2s" in str(raised.value)
    assert raised.value.exit_code == 3
    assert len([line for line in bootstrap_log if "not ready" in line]) >= 2


def test_wrong_password_fails_at_once_without_leaking_it(tmp_path):
    server = RedisProcess(tmp_path / "auth", password="right-secret-1").start()
    try:
        for password in ("wrong-secret-2", None):
            started = time.monotonic()
            with pytest.raises(RedisUnavailable) as raised:
                wait_for_redis(conn_to(server.port, password=password), timeout_s=20)
            assert time.monotonic() - started < 1.5
            message = str(raised.value)
            assert "authentication failed" in message
            assert "wrong-secret-2" not in message and "right-secret-1" not in message
            assert "\n" not in message
        client = wait_for_redis(conn_to(server.port, password="right-secret-1"), timeout_s=5)
        assert client.ping()
        client.close()
    finally:
        server.kill()


def test_unresolvable_host_fails_at_once():
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as raised:
        wait_for_redis(ConnectionSettings(host="no-such-host.invalid", port=free_port(), timeout_s=1.0), timeout_s=20)
    assert time.monotonic() - started < 5
    assert "does not resolve" in str(raised.value)


def test_missing_database_index_fails_at_once(redis_server):
    with pytest.raises(RedisUnavailable) as raised:
        wait_for_redis(conn_to(redis_server.port, db=99), timeout_s=20)
    assert "database 99 does not exist" in str(raised.value)


def test_tls_client_against_plain_server_fails_at_once(redis_server):
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as raised:
        wait_for_redis(conn_to(redis_server.port, ssl=True), timeout_s=20)
    assert time.monotonic() - started < 1.0 + 2.0  # one handshake timeout, no retries
    assert "does not speak TLS" in str(raised.value) or "plain Redis, not TLS" in str(raised.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_plain_client_against_tls_server_fails_at_once(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )
    tls_port = free_port()
    server = RedisProcess(
        tmp_path / "tls",
        extra=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
               "--tls-auth-clients", "no"],
    ).start()
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as raised:
            wait_for_redis(conn_to(tls_port), timeout_s=20)
        assert time.monotonic() - started < 3
        assert "expects TLS" in str(raised.value)
        # ssl=true without the CA: certificate verification fails, at once.
        with pytest.raises(RedisUnavailable) as raised:
            wait_for_redis(conn_to(tls_port, ssl=True), timeout_s=20)
        assert "certificate verification failed" in str(raised.value)
    finally:
        server.kill()


def test_replica_without_master_is_retried_until_the_link_is_up(tmp_path, bootstrap_log):
    master = RedisProcess(tmp_path / "master", extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisProcess(
        tmp_path / "replica",
        extra=["--replicaof", "127.0.0.1", str(master.port), "--replica-serve-stale-data", "no"],
    )
    try:
        master.kill()
        replica.proc = subprocess.Popen(  # start() insists on PING, which answers MASTERDOWN here
            replica._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        restarter = threading.Timer(1.5, master.start)  # the master comes back
        restarter.start()
        client = wait_for_redis(conn_to(replica.port), timeout_s=20)
        restarter.join()
        assert client.ping()
        assert any("MASTERDOWN" in line for line in bootstrap_log)
        client.close()
    finally:
        replica.kill()
        master.kill()
