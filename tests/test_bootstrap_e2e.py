"""
The bootstrap through ``python -m launcher`` as an operator runs it: exit codes of
mode=verify, the single-writer lease between real launcher processes, a clean stop
verified afterwards, and two trader ids sharing one Redis.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from launcher.servers.redis_process import free_port
from launcher.state import layout
from tests.support.launcher_cli import killed_on_exit
from tests.support.launcher_cli import run_launcher
from tests.support.launcher_cli import start_launcher
from tests.test_bootstrap_verify import write_sample_state


pytestmark = pytest.mark.slow


def redis_args(port: int, trader_id: str, *more: str) -> list[str]:
    return [
        "cache=redis_dev", f"cache.redis.port={port}", "cache.redis.embedded=never", f"trader_id={trader_id}", *more,
    ]


def output(result) -> str:
    return result.stdout + result.stderr


def wait_for_line(path: Path, text: str, timeout_s: float, proc=None) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"launcher exited {proc.returncode} before logging {text!r}:\n{content[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout_s}s:\n{(path.read_text() if path.exists() else '')[-3000:]}")


def snapshot(client, trader_key: str) -> dict[bytes, bytes]:
    """Every key of one trader with its serialized value (DUMP), except the lease."""
    lease = layout.full_key(trader_key, layout.LEASE).encode()
    return {k: client.dump(k) for k in client.scan_iter(match=f"{trader_key}:*") if k != lease}


def test_verify_mode_exit_codes(tmp_path, redis_server):
    sample = write_sample_state(redis_server.port, "E2E-001")
    report_path = tmp_path / "report.json"
    args = redis_args(redis_server.port, "E2E-001", "mode=verify", f"bootstrap.report_path={report_path}")

    sound = run_launcher(args, cwd=tmp_path)
    assert sound.returncode == 0, output(sound)[-3000:]
    assert "RESULT: SOUND" in sound.stdout
    report = json.loads(report_path.read_text())
    assert report["status"] == "sound"
    assert report["counts"]["orders_open"] == len(sample.open_orders)
    assert report["counts"]["orders_closed"] == len(sample.closed_orders)
    assert report["counts"]["positions_open"] == len(sample.open_positions)
    assert report["counts"]["positions_closed"] == len(sample.closed_positions)

    redis_server.client().delete(layout.full_key(sample.trader_key, "orders:O-5"))
    damaged = run_launcher(args, cwd=tmp_path)
    assert damaged.returncode == 4, output(damaged)[-3000:]
    assert "order O-5" in damaged.stdout
    assert json.loads(report_path.read_text())["status"] == "problems"

    unreachable = run_launcher(
        redis_args(free_port(), "E2E-001", "mode=verify", "bootstrap.wait_timeout_s=1"), cwd=tmp_path,
    )
    assert unreachable.returncode == 3, output(unreachable)[-3000:]
    assert "not reachable within 1s" in unreachable.stderr


def test_clean_stop_is_verified_and_a_second_trader_leaves_it_untouched(tmp_path, redis_server):
    client = redis_server.client()
    first = run_launcher(redis_args(redis_server.port, "SIDE-A", "run.duration_s=3", "run.post_stop_s=0.2"), cwd=tmp_path)
    assert first.returncode == 0, output(first)[-3000:]
    assert "Node stopped cleanly" in first.stdout

    report_path = tmp_path / "a.json"
    verify_a = run_launcher(
        redis_args(redis_server.port, "SIDE-A", "mode=verify", f"bootstrap.report_path={report_path}"), cwd=tmp_path,
    )
    assert verify_a.returncode == 0, output(verify_a)[-3000:]
    report = json.loads(report_path.read_text())
    # The manifest is what the node held when it stopped; the report is what Redis gave back.
    assert report["manifest"]["present"] and report["manifest"]["final"], report
    assert report["counts"]["orders"] == report["manifest"]["orders"] > 0, report
    assert report["counts"]["positions"] == report["manifest"]["positions"], report
    assert report["counts"]["accounts"] == report["manifest"]["accounts"] == 1, report

    before = snapshot(client, "trader-SIDE-A")
    second = run_launcher(redis_args(redis_server.port, "SIDE-B", "run.duration_s=3", "run.post_stop_s=0.2"), cwd=tmp_path)
    assert second.returncode == 0, output(second)[-3000:]
    assert snapshot(client, "trader-SIDE-A") == before
    assert client.exists("trader-SIDE-B:index:orders")
    verify_b = run_launcher(redis_args(redis_server.port, "SIDE-B", "mode=verify"), cwd=tmp_path)
    assert verify_b.returncode == 0, output(verify_b)[-3000:]
    stray = [k for k in client.scan_iter() if not k.startswith((b"trader-SIDE-A:", b"trader-SIDE-B:"))]
    assert stray == []


def test_one_launcher_per_trader_and_a_successor_after_a_crash(tmp_path, redis_server):
    args = redis_args(redis_server.port, "LEASE-001", "bootstrap.lease_ttl_s=4")
    log_path = tmp_path / "first.log"
    first = start_launcher([*args, "run.duration_s=120"], cwd=tmp_path, log_path=log_path)
    with killed_on_exit(first):
        wait_for_line(log_path, "RUNNING", timeout_s=60, proc=first)

        second = run_launcher([*args, "run.duration_s=1", "run.post_stop_s=0.2"], cwd=tmp_path)
        assert second.returncode == 5, output(second)[-3000:]
        assert f"pid {first.pid}" in second.stderr
        assert "is already running" in second.stderr

        first.send_signal(signal.SIGKILL)  # a crash: the lease is neither released nor renewed any more
        first.wait(timeout=10)
        third = run_launcher([*args, "run.duration_s=1", "run.post_stop_s=0.2"], cwd=tmp_path)
        assert third.returncode == 0, output(third)[-3000:]
        # Either it started while the crashed holder's lease was still running and waited for it to
        # expire (the module tests pin that path down), or its own start-up outlasted the TTL.
        assert "Previous holder never renewed" in third.stdout or "lease trader-LEASE-001:launcher:lease acquired" in third.stdout
        assert "Node stopped cleanly" in third.stdout
