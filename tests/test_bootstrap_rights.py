"""
Preflight's ``acl-rights`` check against a real redis-server with ACL users: a user that cannot
write the state keys, run Lua or WAIT is refused before trading (exit 7), naming what is missing,
and the probe itself changes nothing in Redis.
"""

from __future__ import annotations

import pytest
import redis

from launcher.bootstrap.preflight import run_preflight
from launcher.config.connection import connection_settings
from launcher.config.schema import LauncherConfig
from launcher.errors import PreflightFailed
from launcher.store.connection import connect
from tests.support.launcher_cli import run_launcher


TRADER = "ACL-001"
PREFIX = f"trader-{TRADER}"
PASSWORD = "s3cret-acl-pw"


def add_user(server, name: str, *rules: str) -> None:
    server.client().execute_command("ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}", "&*", *rules)


def preflight_as(server, user: str):
    settings = LauncherConfig(trader_id=TRADER)
    settings.cache.redis.host = "127.0.0.1"
    settings.cache.redis.port = server.port
    settings.cache.redis.username = user
    settings.cache.redis.password = PASSWORD
    conn = connection_settings(settings.cache)
    client = connect(conn)
    try:
        return {r.check: r for r in run_preflight(client, settings, conn)}
    finally:
        client.close()


def refused(server, user: str) -> str:
    with pytest.raises(PreflightFailed) as raised:
        preflight_as(server, user)
    assert raised.value.exit_code == 7
    message = str(raised.value)
    assert "\n" not in message
    assert "acl-rights" in message
    return message


def test_full_rights_pass_and_the_probe_changes_nothing(redis_server):
    add_user(redis_server, "full", "~*", "+@all")
    results = preflight_as(redis_server, "full")
    assert results["acl-rights"].status == "PASS"
    admin = redis_server.client()
    assert admin.dbsize() == 0
    assert admin.execute_command("SCRIPT", "EXISTS", "0" * 40) == [0]


def test_rights_scoped_to_the_trader_pass(redis_server):
    # What a careful operator grants: everything but dangerous commands, on this trader's keys only.
    add_user(redis_server, "scoped", f"~{PREFIX}:*", "+@all", "-@dangerous")
    assert preflight_as(redis_server, "scoped")["acl-rights"].status == "PASS"


def test_write_only_to_launcher_keys_is_refused(redis_server):
    add_user(redis_server, "partial", "%R~*", f"%W~{PREFIX}:launcher:*", "+@all", "-@dangerous")
    message = refused(redis_server, "partial")
    assert "RPUSH, RPUSHX" in message and "orders:*" in message and "'partial'" in message
    assert "launcher:manifest" not in message  # writable for this user
    # Lua declares its keys read-write, and Redis wants one pattern granting both: %R~* plus
    # %W~...:launcher:* does not let the lease's renew script run (it would be lost at the first renew).
    assert "EVALSHA, EVAL on launcher:lease" in message
    assert redis_server.client().dbsize() == 0


def test_read_only_user_is_refused(redis_server):
    add_user(redis_server, "reader", "~*", "+@read", "+@connection", "+multi", "+discard", "+scan")
    message = refused(redis_server, "reader")
    assert "RPUSH" in message and "orders:*" in message and "launcher:lease" in message


def test_user_without_lua_is_refused(redis_server):
    add_user(redis_server, "nolua", "~*", "+@all", "-@scripting")
    message = refused(redis_server, "nolua")
    assert "EVALSHA" in message


def test_user_without_multi_is_refused_and_nothing_runs(redis_server):
    add_user(redis_server, "nomulti", "~*", "+@all", "-multi")
    message = refused(redis_server, "nomulti")
    assert "MULTI" in message
    assert redis_server.client().dbsize() == 0


def test_launcher_exits_7_naming_the_rights_and_never_the_password(redis_server, tmp_path):
    add_user(redis_server, "partial", "%R~*", f"%W~{PREFIX}:launcher:*", "+@all", "-@dangerous")
    result = run_launcher(
        [f"trader_id={TRADER}", "cache=redis_dev", "cache.redis.host=127.0.0.1", f"cache.redis.port={redis_server.port}",
         "cache.redis.username=partial", f"cache.redis.password={PASSWORD}", "run.duration_s=5",
         "monitoring.enabled=false"],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 7, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "acl-rights" in error_lines[0] and "RPUSH" in error_lines[0]
    assert redis_server.client().dbsize() == 0  # no lease taken, nothing written


def test_a_full_redis_is_named_as_full_not_as_missing_rights(tmp_path):
    # Over maxmemory under noeviction, every queued write answers OOM: acl-rights read each as a right the
    # user lacks ("may not RPUSH... grant it write"), sending the operator to the ACLs instead of the memory.
    from launcher.servers.redis_process import RedisProcess

    server = RedisProcess(tmp_path / "full", extra=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]).start()
    try:
        admin = server.client()
        add_user(server, "full", "~*", "+@all")
        payload = b"x" * 100_000
        try:
            for i in range(200):
                admin.set(f"filler:{i}", payload)
        except redis.exceptions.OutOfMemoryError:
            pass
        with pytest.raises(PreflightFailed) as raised:
            preflight_as(server, "full")
        message = str(raised.value)
        assert raised.value.exit_code == 7 and "\n" not in message
        assert "out of memory" in message and "maxmemory" in message
        assert "may not" not in message and "grant" not in message, message
    finally:
        server.kill()
