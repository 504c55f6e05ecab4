"""
The configured address answers, but not as the Redis server the profile expects: a Sentinel
given as a Redis port, an HTTP server, a Redis server given as a sentinel. Each ends at once with
one line naming what was found, never a traceback and never after the whole wait timeout.
"""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from launcher.bootstrap.wait import wait_for_redis
from launcher.errors import PreflightFailed
from launcher.errors import RedisUnavailable
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import ConnectionSettings
from tests.support.launcher_cli import run_launcher


@pytest.fixture
def lone_sentinel(tmp_path):
    """A sentinel watching a master that does not exist: it answers PING like any sentinel."""
    sentinel = RedisProcess(tmp_path / "sentinel", sentinel=True,
                            sentinel_lines=["sentinel monitor mymaster 127.0.0.1 1 1"])
    sentinel.start()
    yield sentinel
    sentinel.kill()


@pytest.fixture
def http_port():
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_sentinel_given_as_the_redis_port_is_refused_at_once(lone_sentinel):
    started = time.monotonic()
    with pytest.raises(PreflightFailed) as raised:
        wait_for_redis(ConnectionSettings(host="127.0.0.1", port=lone_sentinel.port, timeout_s=1.0), timeout_s=30)
    assert time.monotonic() - started < 10
    assert raised.value.exit_code == 7
    message = str(raised.value)
    assert "Sentinel" in message and "cache=redis_sentinel" in message and "\n" not in message


def test_an_http_server_is_not_waited_for(http_port):
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as raised:
        wait_for_redis(ConnectionSettings(host="127.0.0.1", port=http_port, timeout_s=1.0), timeout_s=30)
    assert time.monotonic() - started < 10
    assert raised.value.exit_code == 3
    assert "not a Redis server" in str(raised.value)


def test_launcher_on_a_sentinel_port_exits_7_with_one_line(lone_sentinel, tmp_path):
    result = run_launcher(
        ["cache=redis_dev", "cache.redis.host=127.0.0.1", f"cache.redis.port={lone_sentinel.port}",
         "cache.redis.password=pw-never-shown", "bootstrap.wait_timeout_s=30", "run.duration_s=2",
         "monitoring.enabled=false"],
        cwd=tmp_path, timeout_s=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 7, output
    assert "Traceback" not in output and "pw-never-shown" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Sentinel" in errors[0]


def test_a_redis_server_given_as_a_sentinel_is_refused_at_once(redis_server, tmp_path):
    started = time.monotonic()
    result = run_launcher(
        ["cache=redis_sentinel", f"cache.sentinel.nodes=[127.0.0.1:{redis_server.port}]",
         "bootstrap.wait_timeout_s=30", "run.duration_s=2", "monitoring.enabled=false"],
        cwd=tmp_path, timeout_s=60,
    )
    output = result.stdout + result.stderr
    assert time.monotonic() - started < 20, output
    assert result.returncode in (3, 7), output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a Sentinel" in errors[0], output
