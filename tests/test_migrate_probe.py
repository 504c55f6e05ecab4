"""
``mode=migrate`` under hostile conditions, against real redis-server processes: a migration that
outlasts the lease TTL, a target that refuses the copy half way, credentials written into
``migrate.to``.
"""

from __future__ import annotations

import time

import pytest
import redis
from nautilus_trader.core.uuid import UUID4

from launcher.bootstrap import migrate as migrate_module
from launcher.bootstrap.lease import lease_key
from launcher.config.compose import compose_config
from launcher.config.compose import to_settings
from launcher.errors import LeaseLost
from launcher.servers.redis_process import RedisProcess
from launcher.state.loader import store_connection
from launcher.store.connection import connect
from tests.support.launcher_cli import run_launcher


TRADER = "PROBE-001"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A server holding a real trader's state (a short churn run), only read by the tests."""
    tmp = tmp_path_factory.mktemp("migrate-source")
    server = RedisProcess(tmp / "redis").start()
    run = run_launcher(["cache=redis_dev", f"cache.redis.port={server.port}", "cache.redis.embedded=never",
                        f"trader_id={TRADER}", "run.duration_s=2", "run.post_stop_s=0.2", "strategy=churn",
                        "monitoring.enabled=false"], cwd=tmp, LAUNCHER_STATE_DIR=str(tmp / "state"))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    yield server
    server.kill()


@pytest.fixture
def target(tmp_path):
    server = RedisProcess(tmp_path / "target").start()
    yield server
    server.kill()


def _settings(source_port: int, to: str, *overrides: str):
    return to_settings(compose_config(["cache=redis_dev", f"cache.redis.port={source_port}",
                                       "cache.redis.embedded=never", f"trader_id={TRADER}", "mode=migrate",
                                       f"migrate.to={to}", "bootstrap.wait_timeout_s=5", *overrides]))


def _keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match=f"trader-{TRADER}:*", count=1000))


def _run_migrate(settings) -> int:
    client = connect(store_connection(settings))
    try:
        return migrate_module.migrate(client, settings, UUID4().value)
    finally:
        client.close()


# -- the leases ------------------------------------------------------------------------------------


def test_both_leases_stay_held_while_a_migration_outlasts_their_ttl(source, target, monkeypatch):
    settings = _settings(source.port, f"redis://127.0.0.1:{target.port}", "bootstrap.lease_ttl_s=1")
    key = lease_key(settings)
    gaps: list[str] = []
    copy = migrate_module._copy

    def slow_copy(*args, **kwargs):
        # A large state: the copy starts 2.5 TTLs after the leases were taken. Meanwhile a node
        # starting on either side must find its lease held.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            for side, server in (("source", source), ("target", target)):
                if server.client().set(key, "intruder", nx=True, px=60_000):
                    gaps.append(side)
                    server.client().delete(key)
            time.sleep(0.05)
        return copy(*args, **kwargs)

    monkeypatch.setattr(migrate_module, "_copy", slow_copy)
    assert _run_migrate(settings) == 0
    assert not gaps, f"another node could take the lease on the {sorted(set(gaps))} during the migration"
    assert _keys(target.client()) == _keys(source.client())


def test_a_lease_lost_during_the_migration_fails_it_and_removes_the_copy(source, target, monkeypatch):
    settings = _settings(source.port, f"redis://127.0.0.1:{target.port}", "bootstrap.lease_ttl_s=1")
    key = lease_key(settings)
    copy = migrate_module._copy

    def copy_after_takeover(*args, **kwargs):
        # Someone deletes the target's lease and takes it (an operator's DEL, a FLUSHALL, a failover
        # to a replica without it): the migration must not report a copy nobody guarded as done.
        target.client().set(key, "another-node", px=60_000)
        return copy(*args, **kwargs)

    monkeypatch.setattr(migrate_module, "_copy", copy_after_takeover)
    before = _keys(source.client())
    with pytest.raises(LeaseLost, match="lease"):
        _run_migrate(settings)
    assert [k for k in _keys(target.client()) if not k.endswith(b":launcher:lease")] == []
    assert _keys(source.client()) == before


# -- a target that refuses the copy -----------------------------------------------------------------


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _cli(source_port: int, to: str, tmp_path, *overrides: str):
    return run_launcher(["cache=redis_dev", f"cache.redis.port={source_port}", "cache.redis.embedded=never",
                         f"trader_id={TRADER}", "mode=migrate", f"migrate.to={to}", "bootstrap.wait_timeout_s=5",
                         "monitoring.enabled=false", *overrides], cwd=tmp_path)


def test_a_target_that_fills_up_mid_copy_is_exit_8_with_one_line_and_the_copy_removed(source, target, tmp_path):
    # A 4 MB key early in the copy's (sorted) order: the RESTOREs after it meet a full target.
    big = f"trader-{TRADER}:general:ballast"
    source.client().set(big, b"\x00\xff" * 2_000_000)
    try:
        before = _keys(source.client())
        used = int(target.client().info("memory")["used_memory"])
        target.client().config_set("maxmemory", used + 2_000_000)  # noeviction (the default)
        result = _cli(source.port, f"redis://127.0.0.1:{target.port}", tmp_path)
        line = _one_error_line(result)
        assert result.returncode == 8, result.stderr[-3000:]
        assert "maxmemory" in line and "RESTORE" in line and "\ufffd" not in line, line  # no payload bytes
        assert _keys(target.client()) == []
        assert _keys(source.client()) == before
    finally:
        source.client().delete(big)


def test_a_target_user_without_restore_is_refused_before_anything_is_written(source, target, tmp_path):
    # The credentials are the source's (cache.redis.*): the same user may do everything there.
    source.client().acl_setuser("norestore", enabled=True, passwords=["+probe-pw-1"], keys=["*"], commands=["+@all"])
    target.client().acl_setuser("norestore", enabled=True, passwords=["+probe-pw-1"], keys=["*"],
                                commands=["+@all", "-restore"])
    try:
        result = _cli(source.port, f"redis://127.0.0.1:{target.port}", tmp_path, "cache.redis.username=norestore",
                      "cache.redis.password=probe-pw-1")
        line = _one_error_line(result)
        assert result.returncode == 7, result.stderr[-3000:]
        assert "RESTORE" in line and "target" in line and "probe-pw-1" not in result.stderr + result.stdout, line
        assert _keys(target.client()) == []
        assert source.client().get(f"trader-{TRADER}:launcher:lease") is None
    finally:
        source.client().acl_deluser("norestore")


# -- credentials written into migrate.to ------------------------------------------------------------


@pytest.mark.parametrize("to", [
    "redis://:probe-secret-9@127.0.0.1:{port}",
    "redis://admin:probe-secret-9@127.0.0.1:{port}/0",
    "'cluster://admin:probe-secret-9@127.0.0.1:{port},127.0.0.1:1'",
    "redis://:probe-secret-9@127.0.0.1",
    "'redis://u:probe-secret-9@a:1,b:2'",
    "redis://u:probe-secret-9@127.0.0.1:{port}/²",  # a Hydra lexer error that echoes the override
])
def test_a_password_in_migrate_to_is_exit_2_and_never_printed(to, target, tmp_path):
    result = _cli(target.port, to.format(port=target.port), tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "probe-secret-9" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "migrate.to" in _one_error_line(result)


def test_a_password_in_migrate_to_is_redacted_from_the_printed_config(tmp_path):
    result = run_launcher(["--cfg", "job", "mode=migrate", "migrate.to=redis://u:probe-secret-9@127.0.0.1:7000"],
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probe-secret-9" not in result.stdout + result.stderr and "127.0.0.1:7000" in result.stdout


# -- a target that is the source itself -------------------------------------------------------------


def test_a_target_that_is_the_source_spelt_differently_is_exit_2_naming_it(source, tmp_path):
    before = _keys(source.client())
    result = _cli(source.port, f"redis://localhost:{source.port}", tmp_path)
    line = _one_error_line(result)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "migrate.to" in line and "source itself" in line, line
    assert _keys(source.client()) == before
    assert source.client().get(f"trader-{TRADER}:launcher:lease") is None


# -- a Redis Cluster node given as a single server --------------------------------------------------


def test_a_cluster_node_given_as_a_single_server_is_named_not_blamed_on_acl_rights(redis_cluster, tmp_path):
    node = redis_cluster.nodes[0]
    result = run_launcher(["cache=redis_dev", f"cache.redis.port={node.port}", "cache.redis.embedded=never",
                           f"trader_id={TRADER}", "mode=verify", "bootstrap.wait_timeout_s=5",
                           "monitoring.enabled=false"], cwd=tmp_path)
    line = _one_error_line(result)
    assert result.returncode == 7, result.stderr[-3000:]
    assert "Redis Cluster node" in line and "cache=redis_cluster" in line and "acl" not in line.lower(), line


def test_a_migration_killed_part_way_leaves_a_target_that_fails_verify_and_is_not_migrated_over(source, target,
                                                                                               tmp_path):
    # Keys are copied in sorted order (accounts, currencies, general, index, instruments, the manifest, orders...):
    # killed after the first chunks, the target held a few keys and no manifest, and verified sound (exit 0) - a
    # node started there would have traded with an empty history.
    args = ["cache=redis_dev", f"cache.redis.port={source.port}", "cache.redis.embedded=never", f"trader_id={TRADER}",
            "mode=migrate", f"migrate.to=redis://127.0.0.1:{target.port}", "bootstrap.wait_timeout_s=5"]
    killed = run_launcher(args, cwd=tmp_path, module="tests.support.dying_migrate", DIE_AT_CHUNK="3", CHUNK_KEYS="2")
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-2000:]
    copied = _keys(target.client())
    assert 0 < len(copied) < len(_keys(source.client())), copied
    verify = run_launcher(["cache=redis_dev", f"cache.redis.port={target.port}", "cache.redis.embedded=never",
                           f"trader_id={TRADER}", "mode=verify"], cwd=tmp_path)
    out = verify.stdout + verify.stderr
    assert verify.returncode == 4, out[-3000:]
    assert "a mode=migrate copying here did not finish" in out and "Traceback" not in out
    again = run_launcher(args, cwd=tmp_path)
    assert again.returncode == 2 and "already holds" in again.stdout + again.stderr
