"""
Hostile command lines (tests/test_cli.py's promises, attacked): secrets in unusual override forms
and addresses, values that no range check expected, and options that reach NautilusTrader's
identifiers. Each ends with one line and the README's exit code, never a traceback or a secret.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.support.launcher_cli import run_launcher


SECRET = "hunter2-probe-secret"


def error_line(result) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), output
    return lines[-1]


@pytest.mark.parametrize("override", [
    f"cache.redis.password=[{SECRET},x]",
    f"cache.redis={{password:[{SECRET},1]}}",
    f"cache.sentinel.password={{a:{SECRET}}}",
])
def test_a_password_given_as_a_list_or_dict_is_refused_without_echoing_it(tmp_path: Path, override: str):
    result = run_launcher([override, "mode=check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "password" in error_line(result)


@pytest.mark.parametrize(("args", "env"), [
    (["mode=migrate", f"migrate.to='redis://:{SECRET}@127.0.0.1:7001'"], {}),
    (["mode=migrate", f"migrate.to='redis://trader:{SECRET}@127.0.0.1:7001/0'"], {}),
    (["mode=migrate", f"migrate.to='rediss://:{SECRET}@127.0.0.1:7001'"], {}),
    (["mode=migrate", f"migrate.to='cluster://127.0.0.1:7001,:{SECRET}@127.0.0.1:7002'"], {}),
    (["cache=redis_sentinel", "mode=check"], {"REDIS_SENTINELS": f"redis://:{SECRET}@127.0.0.1:26379"}),
    (["cache=redis_cluster", "mode=check"], {"REDIS_CLUSTER_NODES": f"127.0.0.1:7000,:{SECRET}@127.0.0.1:7001"}),
    (["mode=check"], {"REDIS_HOST": f"default:{SECRET}@127.0.0.1"}),
])
def test_credentials_inside_an_address_are_refused_without_echoing_them(tmp_path: Path, args: list[str], env: dict):
    # Nothing answers on these ports: a refusal at composition never gets as far as connecting.
    result = run_launcher(args, cwd=tmp_path, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    assert "credentials" in line or "***@" in line, line  # a wrong scheme is named, the credentials masked


@pytest.mark.parametrize("overrides", [
    ["strategy.order_id_tag=''"],
    ["strategy.order_id_tag='-'"],
    ["strategy.order_id_tag='x-'"],
    ["strategy.order_id_tag='\u00e9t\u00e9'"],
    ["strategy.order_id_tag='a:b'"],
    ["+strategy.params.order_id_tag=''"],
    ["strategies=[ema_cross,churn]", "+strategy_params.churn.strategy_id='Churn-'"],
    ["+strategy.params.strategy_id='EMACross-'"],
])
def test_an_order_id_tag_nautilus_trader_cannot_take_is_exit_2_not_a_rust_abort(tmp_path: Path, overrides):
    # NautilusTrader panics (SIGABRT, a Rust backtrace) on a StrategyId with an empty or non-ASCII tag.
    result = run_launcher([*overrides, "mode=check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    assert "order_id_tag" in line or "strategy_id" in line, line
    assert "panicked" not in result.stderr


@pytest.mark.parametrize(("override", "key"), [
    ("cache.redis.timeout_s=nan", "cache.redis.timeout_s"),
    ("cache.redis.timeout_s=inf", "cache.redis.timeout_s"),
    ("cache.redis.timeout_s=1e12", "cache.redis.timeout_s"),
    ("bootstrap.wait_timeout_s=nan", "bootstrap.wait_timeout_s"),
    ("bootstrap.lease_ttl_s=1e15", "bootstrap.lease_ttl_s"),
    ("retention.orders_days=1e308", "retention.orders_days"),
    ("reconciliation.lookback_mins=1e300", "reconciliation.lookback_mins"),
    ("cache.buffer_interval_ms=1e300", "cache.buffer_interval_ms"),
    ("venue.spread_bp=nan", "venue.spread_bp"),
    ("venue.initial_price=inf", "venue.initial_price"),
])
def test_a_number_no_range_check_expected_is_exit_2_naming_the_key(tmp_path: Path, override: str, key: str):
    # NaN passed every range check (each comparison is false); inf and huge durations overflowed
    # Python's waits and NautilusTrader's nanoseconds later, with exit 1 or a thread's traceback.
    result = run_launcher([override, "mode=check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_line(result).startswith(f"error: {key}: "), result.stderr


@pytest.mark.parametrize("override", [
    "hydra/job_logging=default",
    "hydra.job_logging.handlers.console.class=nowhere.Handler",
])
def test_a_job_logging_override_logging_cannot_take_is_exit_2(tmp_path: Path, override: str):
    result = run_launcher([f"cache.redis.password={SECRET}", override, "mode=check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_line(result).startswith("error: hydra.job_logging: "), result.stderr


def test_an_embedded_dir_under_a_file_is_exit_2_naming_the_key(tmp_path: Path):
    from tests.support.ports import free_port

    (tmp_path / "a-file").write_text("not a directory")
    result = run_launcher(["mode=verify", "cache.redis.embedded=auto", f"cache.redis.embedded_dir={tmp_path}/a-file",
                           "bootstrap.wait_timeout_s=2"], cwd=tmp_path, REDIS_PORT=str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_line(result).startswith("error: cache.redis.embedded_dir: "), result.stderr


@pytest.mark.parametrize(("module", "override", "key"), [
    ("launcher.drill", "drill.duration_s=nan", "drill.duration_s"),
    ("launcher.drill", "drill.fault_after_s=[nan,4.0]", "drill.fault_after_s"),
    ("launcher.drill", "drill.gap_s=inf", "drill.gap_s"),
])
def test_the_drill_refuses_a_number_that_is_not_finite(tmp_path: Path, module: str, override: str, key: str):
    # drill.duration_s=nan ran a whole drill and reported PASSED.
    result = run_launcher([override], cwd=tmp_path, module=module, timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_line(result).startswith(f"error: {key}: "), result.stderr


def test_a_trader_id_too_long_for_a_spill_file_name_is_exit_2(tmp_path, redis_server):
    # 300 characters overflowed the spill file's name: mode=verify ended with exit 1 ("File name too long").
    r = run_launcher(["trader_id=" + "T" * 300 + "-001", "mode=verify", "cache.redis.embedded=never",
                      f"cache.redis.port={redis_server.port}"], cwd=tmp_path)
    assert r.returncode == 2 and error_line(r).startswith("error: trader_id: 304 characters; at most 64"), r.stderr[-2000:]
    ok = run_launcher(["trader_id=" + "%" * 60 + "-001", "mode=verify", "cache.redis.embedded=never",
                       f"cache.redis.port={redis_server.port}", f"cache.spill_dir={tmp_path / 'spill'}"], cwd=tmp_path)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-2000:]  # 64 characters, each '%' three in a file name


def _catches_sigint(pid: int) -> bool | None:
    """Whether process `pid` has a handler for SIGINT (its SigCgt mask in /proc); None once it is gone."""
    import signal

    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return None
    return bool(int(caught.split()[1], 16) >> (signal.SIGINT - 1) & 1)


@pytest.mark.parametrize("module", ["launcher", "launcher.drill", "launcher.bench"])
def test_ctrl_c_while_the_entry_point_imports_ends_quietly(module, tmp_path):
    # A SIGINT in the first half second (Hydra and NautilusTrader importing) printed a KeyboardInterrupt
    # traceback from inside an import. The imports run with SIGINT at its default action: seen in /proc
    # (Python's handler installed, then taken away while importing), and the signal sent right then.
    import signal
    import subprocess
    import sys

    from tests.support.launcher_cli import launcher_env

    def attempt() -> tuple[bool, subprocess.Popen, str, str]:
        proc = subprocess.Popen([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=launcher_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen_python_handler = importing = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not importing:
            caught = _catches_sigint(proc.pid)
            if caught is None or proc.poll() is not None:
                break
            seen_python_handler |= caught
            importing = seen_python_handler and not caught
        if importing:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in out + err, err[-2000:]
        # Not the moment the interpreter exits (handlers restored then too): killed before --help printed anything.
        return importing and out == "", proc, out, err

    # A loaded machine may keep this poller off the CPU for the whole window: up to three tries.
    for _ in range(3):
        hit, proc, out, err = attempt()
        if hit:
            break
    assert hit, "SIGINT was never left to its default action while the entry point imported"
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err[-2000:])


def test_a_lease_ttl_below_a_second_is_exit_2(tmp_path):
    # bootstrap.lease_ttl_s=1e-6 was taken: the node started trading, then lost its lease (exit 6).
    for ttl in ("1e-6", "0.5", "0"):
        r = run_launcher(["cache=memory", "mode=check", f"bootstrap.lease_ttl_s={ttl}"], cwd=tmp_path)
        assert r.returncode == 2 and error_line(r).startswith("error: bootstrap.lease_ttl_s: must be at least 1 second"), \
            r.stderr[-1500:]


def test_a_recovery_report_that_cannot_be_written_is_exit_2_under_mode_verify(tmp_path, redis_server):
    # A directory at bootstrap.report_path was only an ERROR line: mode=verify exited 0 without the report it
    # was asked for, and left '<dir>.tmp' beside it.
    (tmp_path / "report").mkdir()
    r = run_launcher(["mode=verify", "cache.redis.embedded=never", f"cache.redis.port={redis_server.port}",
                      f"bootstrap.report_path={tmp_path / 'report'}", f"cache.spill_dir={tmp_path / 'spill'}"],
                     cwd=tmp_path)
    assert r.returncode == 2 and error_line(r).startswith("error: bootstrap.report_path: cannot write the recovery report"), \
        r.stderr[-1500:]
    assert not (tmp_path / "report.tmp").exists() and (tmp_path / "report").is_dir()


def test_a_secret_reaching_a_log_line_is_redacted_there_too(tmp_path, redis_server):
    # Only the final error line was redacted against the secrets a process holds; a log line carrying one
    # (here an environment secret that happens to be the Redis port, which the bootstrap logs) printed it.
    secret = str(redis_server.port)
    r = run_launcher(["mode=verify", "cache.redis.embedded=never", f"cache.redis.port={secret}",
                      f"cache.spill_dir={tmp_path / 'spill'}"], cwd=tmp_path, LAUNCHER_PROBE_TOKEN=secret)
    logged = [line for line in (r.stdout + r.stderr).splitlines() if "[INFO]" in line or "[WARNING]" in line]
    assert r.returncode == 0, r.stderr[-1500:]
    assert any("Waiting up to" in line and ":***/0" in line for line in logged), logged[:5]
    assert not [line for line in logged if secret in line]


def test_a_server_the_launcher_starts_keeps_its_password_off_the_command_line(tmp_path):
    # The embedded server (and every test or drill server) got --requirepass on its command line, which
    # any local user reads in ps / /proc/<pid>/cmdline while it runs.
    import os
    import stat

    from launcher.servers.redis_process import RedisProcess

    password = 'p w"\\x41é$-secret'
    server = RedisProcess(tmp_path / "auth", password=password).start()
    try:
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline and b"requirepass" not in cmdline
        assert server.client().ping()  # the client authenticates with the very password
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password=password + "x").ping()
        assert stat.S_IMODE(os.stat(tmp_path / "auth" / "auth.conf").st_mode) == 0o600
    finally:
        server.kill()


def test_a_strategies_entry_is_an_option_name_never_a_path(tmp_path):
    # strategies=[../venue/sim] read conf/venue/sim.yaml as a strategy, and [../../etc/passwd] listed no options.
    for name in ("../venue/sim", "../../etc/passwd", "./churn"):
        r = run_launcher(["cache=memory", "mode=check", f"strategies=[{name}]"], cwd=tmp_path)
        line = error_line(r)
        assert r.returncode == 2 and line.startswith(f"error: strategies: no strategy option '{name}' (available: "), line
        assert "churn" in line and "ema_cross" in line


def test_negative_sim_venue_numbers_are_exit_2(tmp_path):
    # venue.volatility_bp=-5 and a starting balance of -5 USD were taken.
    for arg, key in (("venue.volatility_bp=-5", "venue.volatility_bp"), ("venue.spread_bp=-1", "venue.spread_bp"),
                     ("venue.starting_balances=['-5 USD']", "venue.starting_balances")):
        r = run_launcher(["cache=memory", "mode=check", arg], cwd=tmp_path)
        assert r.returncode == 2 and error_line(r).startswith(f"error: {key}: "), error_line(r)


def test_a_password_hydra_would_read_as_a_number_or_bool_is_exit_2_unechoed(tmp_path):
    # cache.redis.password=1e5 became '100000.0' (1_000 '1000', true 'True'): the node authenticated with
    # another password than the one typed, and Redis said only "wrong password".
    for value in ("1e5", "1_000", "true"):
        r = run_launcher(["cache=memory", "mode=check", f"cache.redis.password={value}"], cwd=tmp_path)
        line = error_line(r)
        assert r.returncode == 2 and line.startswith("error: cache.redis.password: Hydra reads the value"), line
        assert value not in line
    quoted = run_launcher(["cache=memory", "mode=check", "cache.redis.password='1e5'"], cwd=tmp_path)
    assert quoted.returncode == 0, quoted.stderr[-1500:]


def test_a_password_protected_sentinel_topology_keeps_its_password_in_owner_only_files(tmp_path):
    # The sentinels' auth-pass lives in sentinel.conf, which Sentinel rewrites with its own file mode: every
    # process's directory is its owner's only, and no server or sentinel carries the password on its command
    # line. The sentinels still reach the master with it (a password with a space broke sentinel.conf).
    import os
    import stat

    from launcher.servers.redis_process import SentinelTopology

    password = "sentinel pw-é"
    topology = SentinelTopology(tmp_path / "sentinel", password=password).start()
    try:
        assert topology.current_master_port() == topology.master.port
        # Only a sentinel that authenticates reads the master's INFO, where it learns of the replica.
        master = topology.sentinel_procs[0].client().sentinel_master(topology.master_name)
        assert master["num-slaves"] == 1 and "s_down" not in master["flags"], master
        for proc in [*topology.servers, *topology.sentinel_procs]:
            assert password.encode() not in Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes()
        for proc in [*topology.servers, *topology.sentinel_procs]:
            assert stat.S_IMODE(os.stat(proc.workdir).st_mode) == 0o700, proc.workdir
    finally:
        topology.stop()
