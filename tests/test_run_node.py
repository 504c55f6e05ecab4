"""Short real runs of ``python -m launcher`` as a user would start it."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.servers.redis_process import free_port
from tests.support.launcher_cli import run_launcher


pytestmark = pytest.mark.slow

# The sim venue has nothing to cancel: no need for the default 2 s settling wait at every stop.
QUICK_STOP = "run.post_stop_s=0.2"


def test_memory_profile_trades_and_exits_0(tmp_path: Path):
    result = run_launcher(["cache=memory", "run.duration_s=4", QUICK_STOP], cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "OrderFilled" in log
    assert "Node stopped cleanly" in log
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("backend", ["resilient", "native"])
def test_redis_dev_run_persists_orders_under_the_trader_keys(tmp_path: Path, redis_server, backend):
    result = run_launcher(
        [
            "cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            f"cache.backend={backend}", "trader_id=DRILL-001", "run.duration_s=3", QUICK_STOP,
            "strategy=churn", "strategy.params.actions_per_second=20",
        ],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    client = redis_server.client()
    order_keys = client.keys("trader-DRILL-001:orders:*")
    assert order_keys, log[-3000:]
    assert client.type(order_keys[0]) == b"list"
    assert client.scard("trader-DRILL-001:index:orders") == len(order_keys)
    assert client.keys("trader-DRILL-001:accounts:*")


def test_embedded_server_starts_when_nothing_answers_on_loopback(tmp_path: Path):
    port = free_port()
    result = run_launcher(
        ["cache=redis_dev", f"cache.redis.port={port}", "trader_id=EMBED-001", "run.duration_s=1", QUICK_STOP],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "EMBEDDED REDIS" in log
    aof_dir = tmp_path / "var" / "redis" / str(port)
    assert any(aof_dir.rglob("*.aof*")), list(aof_dir.rglob("*"))


def test_native_backend_writes_a_final_manifest_of_what_it_held(tmp_path: Path, redis_server):
    args = ["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            "cache.backend=native", "trader_id=NATIVE-001", "strategy=churn", "run.duration_s=3", QUICK_STOP]
    result = run_launcher(args, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    client = redis_server.client()
    orders = client.hgetall("trader-NATIVE-001:launcher:manifest:orders")
    assert orders, "the native run recorded no orders in its manifest"
    assert len(orders) == client.scard("trader-NATIVE-001:index:orders")
    for order_id, count in orders.items():
        assert client.llen(b"trader-NATIVE-001:orders:" + order_id) == int(count)
    assert client.hget("trader-NATIVE-001:launcher:manifest:meta", "final") == b"1"


def test_flush_on_start_flushes_before_loading_and_keeps_the_lease(tmp_path: Path, redis_server):
    client = redis_server.client()
    client.set("trader-FLUSH-001:general:marker", b"old state")
    result = run_launcher(
        ["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
         "trader_id=FLUSH-001", "cache.flush_on_start=true", "run.duration_s=1", QUICK_STOP],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "FLUSHED" in log
    assert client.get("trader-FLUSH-001:general:marker") is None
    assert client.get("trader-FLUSH-001:launcher:lease") is None  # released at the clean stop


@pytest.mark.parametrize("backend", ["resilient", "native"])
def test_a_venue_account_that_contradicts_the_recovered_one_is_a_config_error(tmp_path: Path, redis_server, backend):
    """NautilusTrader would fail deep in the node build with a traceback; the launcher names the key."""
    from tests.test_bootstrap_e2e import snapshot

    args = ["cache=redis_dev", f"cache.redis.port={redis_server.port}", "cache.redis.embedded=never",
            f"cache.backend={backend}", "trader_id=ACCOUNT-001", "run.duration_s=1", QUICK_STOP]
    first = run_launcher([*args, "venue.account_type=CASH"], cwd=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    client = redis_server.client()
    before = snapshot(client, "trader-ACCOUNT-001")
    assert any(b":accounts:SIM-001" in key for key in before)

    margin = run_launcher(args, cwd=tmp_path)  # the venue's default: MARGIN
    assert margin.returncode == 2, (margin.stdout + margin.stderr)[-3000:]
    assert margin.stderr.strip().splitlines()[-1] == (
        "error: venue.account_type: is MARGIN, but account SIM-001 recovered from Redis is CASH (an account cannot "
        "change type): set venue.account_type=CASH, or use another trader_id"
    )
    based = run_launcher([*args, "venue.account_type=CASH", "venue.base_currency=USD"], cwd=tmp_path)
    assert based.returncode == 2
    assert based.stderr.strip().splitlines()[-1].startswith("error: venue.base_currency: is USD, but account SIM-001")
    for result in (margin, based):
        assert "Traceback" not in result.stdout + result.stderr
    after = snapshot(client, "trader-ACCOUNT-001")
    meta = [key for key in after if b":launcher:manifest:meta" in key]  # who started last, and when
    assert {k: v for k, v in after.items() if k not in meta} == {k: v for k, v in before.items() if k not in meta}
