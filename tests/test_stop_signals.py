"""
Stop signals through ``python -m launcher`` as an operator sends them: before the node trades
they end the launcher with one line and 128 + the signal number; once it trades the first one
stops it cleanly and a repeated one cannot cut the stop short.
"""

from __future__ import annotations

import json
import signal

import pytest
import redis

from launcher.servers.redis_process import free_port
from launcher.state import layout
from tests.support.launcher_cli import killed_on_exit
from tests.support.launcher_cli import run_launcher
from tests.support.launcher_cli import start_launcher
from tests.test_bootstrap_e2e import output
from tests.test_bootstrap_e2e import redis_args
from tests.test_bootstrap_e2e import wait_for_line


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_repeated_stop_signals_while_stopping_are_ignored_and_the_stop_is_clean(tmp_path, redis_server, sig):
    trader = "SIGNAL-001"
    log_path = tmp_path / "node.log"
    node = start_launcher([*redis_args(redis_server.port, trader), "run.duration_s=120"], cwd=tmp_path, log_path=log_path)
    with killed_on_exit(node):
        wait_for_line(log_path, "RUNNING", timeout_s=60, proc=node)
        node.send_signal(sig)
        # The second signal goes in once the first has been handled: NautilusTrader's own
        # handler has removed SIGTERM handling by then, so this one would end the process.
        wait_for_line(log_path, f"Stopping node: received {sig.name}", timeout_s=10, proc=node)
        node.send_signal(sig)
        node.send_signal(sig)
        code = node.wait(timeout=60)
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert "Node stopped cleanly" in log
    assert f"Received {sig.name} while already stopping" in log
    assert "Traceback" not in log

    client = redis.Redis(port=redis_server.port)
    assert not client.exists(layout.full_key(f"trader-{trader}", layout.LEASE)), "the lease was not released"
    verify = run_launcher(redis_args(redis_server.port, trader, "mode=verify"), cwd=tmp_path)
    assert verify.returncode == 0, output(verify)[-3000:]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_stop_signal_while_waiting_for_redis_ends_with_one_line(tmp_path, sig, code):
    port = free_port()  # nothing listens there
    log_path = tmp_path / "launcher.log"
    proc = start_launcher(
        [*redis_args(port, "SIGNAL-002"), "bootstrap.wait_timeout_s=60"], cwd=tmp_path, log_path=log_path,
    )
    with killed_on_exit(proc):
        wait_for_line(log_path, "not ready (attempt 1", timeout_s=30, proc=proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == code
    log = log_path.read_text()
    assert f"error: stopped by {sig.name} before the node was trading" in log
    assert "Traceback" not in log


def test_under_nohup_sighup_stays_ignored(tmp_path):
    port = free_port()  # nothing listens there: the launcher keeps retrying until stopped
    log_path = tmp_path / "launcher.log"
    proc = start_launcher(
        [*redis_args(port, "SIGNAL-004"), "bootstrap.wait_timeout_s=60"], cwd=tmp_path, log_path=log_path,
        wrapper=("nohup",),
    )
    with killed_on_exit(proc):
        wait_for_line(log_path, "not ready (attempt 1", timeout_s=30, proc=proc)
        proc.send_signal(signal.SIGHUP)
        wait_for_line(log_path, "not ready (attempt 3", timeout_s=30, proc=proc)  # still retrying
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    log = log_path.read_text()
    assert "SIGHUP" not in log
    assert "Traceback" not in log


def test_a_stop_signal_while_waiting_for_a_lease_leaves_the_holders_lease_alone(tmp_path, redis_server):
    trader = "SIGNAL-003"
    client = redis.Redis(port=redis_server.port)
    key = layout.full_key(f"trader-{trader}", layout.LEASE)
    holder = {"instance_id": "crashed", "host": "elsewhere", "pid": 1, "started_at": "2026-01-01T00:00:00Z"}
    client.set(key, json.dumps(holder), px=60_000)  # a crashed holder's lease, not renewed
    log_path = tmp_path / "launcher.log"
    proc = start_launcher(
        [*redis_args(redis_server.port, trader), "bootstrap.lease_wait_s=60"], cwd=tmp_path, log_path=log_path,
    )
    with killed_on_exit(proc):
        wait_for_line(log_path, "waiting up to", timeout_s=60, proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    assert json.loads(client.get(key)) == holder
    assert client.pttl(key) > 0
    assert "Traceback" not in log_path.read_text()

