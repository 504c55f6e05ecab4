"""
Writes Redis refuses: retained, never dropped, never reported acknowledged.

A refusal retrying cannot fix (NOPERM after an ACL change, WRONGTYPE on a key the launcher
owns) stops the writer: everything unacknowledged goes to the spill file, the listener is told
(the launcher stops the node and exits 8), and the close line counts what was and was not
acknowledged. A refusal that ends by itself (OOM under ``noeviction``) is retried until it ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nautilus_trader.core.uuid import UUID4

from launcher.cache.listener import CacheListener
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.spill import SpillFile
from launcher.monitoring.health import RedisProbe
from launcher.monitoring.metrics import LauncherMetrics
from launcher.state import layout as L
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import LogRecorder
from tests.support.trading_state import OrderStream
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer
from tests.support.trading_state import new_cache
from tests.support.trading_state import poll
from tests.support.trading_state import write_orders


class RefusalProbe(CacheListener):
    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []

    def on_refused(self, reason: str, message: str) -> None:
        self.refusals.append((reason, message))


def _open(server, tmp_path, username: str | None = None, password: str | None = None, **kwargs) -> ResilientCacheDatabase:
    db = ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), cache_config(server.port, buffer_interval_ms=5),
        connection=ConnectionSettings(host="127.0.0.1", port=server.port, timeout_s=1.0, username=username,
                                      password=password),
        spill_dir=str(tmp_path / "spill"), max_backoff_s=0.1, close_timeout_s=2.0, **kwargs,
    )
    db._log = LogRecorder()
    return db


def _spilled(db: ResilientCacheDatabase) -> int:
    spill = SpillFile(db.spill_path)
    try:
        return spill.open()
    finally:
        spill.close()


def _sample(metrics: LauncherMetrics, name: str, **labels: str) -> float | None:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest.mark.parametrize("how", ["noperm", "wrongtype"])
def test_a_refusal_mid_run_retains_spills_and_a_restart_replays_everything(redis_server_always, tmp_path, how):
    server = redis_server_always
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "trader", "on", ">trader-secret-8", "~*", "&*", "+@all")
    probe = RefusalProbe()
    db = _open(server, tmp_path, "trader", "trader-secret-8", listener=probe)
    log = db._log
    with OrderStream(new_cache(db)) as stream:
        poll(lambda: db.stats().writes_acknowledged > 200, 20, "writes before the refusal")
        if how == "noperm":
            admin.execute_command("ACL", "SETUSER", "trader", "-@write")  # the ACL changes while trading
        else:
            index = f"{db.trader_key}:{L.INDEX_ORDERS}"
            admin.delete(index)
            admin.set(index, "not a set")  # a key the launcher owns, of another type
        poll(lambda: probe.refusals, 10, "the refusal to be reported")
        poll(lambda: db.stats().writes_enqueued > len(stream.orders) and len(stream.orders) > 0, 10, "writes after it")
    assert stream.error is None, stream.error
    reason, message = probe.refusals[0]
    assert len(probe.refusals) == 1 and reason == how
    assert how.upper() in message and db.trader_key in message  # names the refusal and the key
    stats = db.stats()
    assert stats.refused == how and stats.write_errors[how] >= 1
    acknowledged = stats.writes_acknowledged
    db.close()
    assert log.count("ERROR", how.upper()) == 1  # one line at the refusal
    assert not any("Dropped" in m or "every write acknowledged" in m for _, m in log.lines)
    left = _spilled(db)
    assert left > 0
    assert log.count("ERROR", f"{acknowledged} write(s) acknowledged by Redis, {left} not (spilled to ") == 1

    if how == "noperm":
        admin.execute_command("ACL", "SETUSER", "trader", "+@all")
    else:
        admin.delete(f"{db.trader_key}:{L.INDEX_ORDERS}")  # (what it held before the sabotage is gone with it)
    second = _open(server, tmp_path, "trader", "trader-secret-8")
    assert not (tmp_path / "spill" / "trader-TESTER-000.spill").exists()  # replayed before anything else
    assert second.wait_until_persisted(10)
    second.close()
    assert second._log.count("INFO", "every write acknowledged") == 1
    if how == "noperm":
        assert_exactly_once(admin, db.trader_key, stream.orders)
    else:
        for order in stream.orders:  # every event of every order, once
            assert admin.llen(f"{db.trader_key}:orders:{order.client_order_id.value}") == order.event_count
        assert admin.sismember(f"{db.trader_key}:{L.INDEX_ORDERS}", stream.orders[-1].client_order_id.value)


def test_a_payload_that_cannot_be_serialized_stops_the_writer_instead_of_a_success_line(redis_server, tmp_path):
    from types import SimpleNamespace

    probe = RefusalProbe()
    db = _open(redis_server, tmp_path, listener=probe)
    cache = new_cache(db)
    write_orders(cache, 5)
    db.add_instrument(SimpleNamespace(id=SimpleNamespace(value="BAD.SIM")))  # not serializable
    poll(lambda: probe.refusals, 10, "the failure to be reported")
    assert probe.refusals[0][0] == "unserializable"
    db.close()
    assert not any("every write acknowledged" in m for _, m in db._log.lines)
    assert db._log.count("ERROR", "1 could not be serialized") == 1


def test_oom_retains_writes_says_so_and_writes_them_once_when_memory_is_raised(redis_server_always, tmp_path):
    server = redis_server_always
    admin = server.client()
    db = _open(server, tmp_path)
    metrics = LauncherMetrics("resilient", trader_id="T-OOM")
    probe = RedisProbe(server.client())
    metrics.snapshot.probe, metrics.snapshot.database = probe, lambda: db
    cache = new_cache(db)
    orders = write_orders(cache, 20)
    assert db.wait_until_persisted(10)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(used - 1024))  # over the limit: every write is refused with OOM
    orders += write_orders(cache, 50, prefix="oom", start_ns=1_750_000_000_000_000_000)
    poll(lambda: db.stats().write_errors.get("oom", 0) > 0, 10, "the OOM to be counted")
    assert db.stats().refusing == "oom" and db.pending_writes() > 0
    assert probe.check()  # PING still answers...
    assert _sample(metrics, "redis_up") == 0  # ...but nothing is accepted
    assert _sample(metrics, "cache_write_errors_total", reason="oom") > 0
    assert _sample(metrics, "cache_write_errors_total", reason="noperm") == 0
    assert db._log.count("ERROR", "OOM") == 1  # one line per state change, not per attempt
    admin.config_set("maxmemory", "0")
    assert db.wait_until_persisted(10)
    assert db.stats().refusing == ""
    assert _sample(metrics, "redis_up") == 1
    db.close()
    assert db._log.count("INFO", "every write acknowledged") == 1
    assert_exactly_once(admin, db.trader_key, orders)


@pytest.mark.slow
def test_the_launcher_stops_trading_and_exits_8_when_its_rights_are_revoked(redis_server_always, tmp_path):
    import re

    from tests.support.launcher_cli import killed_on_exit
    from tests.support.launcher_cli import run_launcher
    from tests.support.launcher_cli import start_launcher
    from tests.test_bootstrap_e2e import redis_args
    from tests.test_bootstrap_e2e import wait_for_line

    server = redis_server_always
    admin = server.client()
    password = "trader-secret-8e2e"
    admin.execute_command("ACL", "SETUSER", "trader", "on", f">{password}", "~*", "&*", "+@all")
    args = redis_args(server.port, "REFUSE-001", "cache.redis.username=trader", f"cache.redis.password={password}",
                      "strategy=churn", "strategy.params.actions_per_second=50", "monitoring.enabled=false")
    log_path = tmp_path / "node.log"
    node = start_launcher([*args, "run.duration_s=120"], cwd=tmp_path, log_path=log_path)
    with killed_on_exit(node):
        wait_for_line(log_path, "RUNNING", timeout_s=60, proc=node)
        poll(lambda: len(admin.keys("trader-REFUSE-001:orders:*")) >= 5, 30, "orders in Redis")
        admin.execute_command("ACL", "SETUSER", "trader", "-@write")
        code = node.wait(timeout=60)
    log = log_path.read_text()
    assert code == 8, log[-3000:]
    assert "Traceback" not in log and password not in log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NOPERM" in errors[0], errors
    spill = re.search(r"spilled to (\S+\.spill)", errors[0]).group(1)
    probe = SpillFile(spill)
    assert probe.open() > 0  # the unacknowledged writes are on disk
    probe.close()
    assert "every write acknowledged" not in log

    admin.execute_command("ACL", "SETUSER", "trader", "+@all")
    # It replays the spill file before it trades: a second of trading is enough.
    again = run_launcher([*args, "run.duration_s=1", "run.post_stop_s=0.2", "bootstrap.verify=warn"], cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert not Path(spill).exists()  # replayed
    # Every order the first node traded (its own log of commands and events) is in Redis.
    traded = set(re.findall(r"client_order_id=(O-[\w-]+)", log))
    stored = {k.decode().rsplit(":", 1)[1] for k in admin.keys("trader-REFUSE-001:orders:*")}
    assert traded and traded <= stored, sorted(traded - stored)[:5]
    verify = run_launcher([*args, "mode=verify"], cwd=tmp_path)
    assert verify.returncode == 0, (verify.stdout + verify.stderr)[-3000:]
