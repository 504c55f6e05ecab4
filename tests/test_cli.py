"""
The command line as a user meets it (``python -m launcher``, ``launcher.drill``, ``launcher.bench``):
one line and a documented exit code for every bad input, and no secret on any path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.launcher_cli import run_launcher


SECRET = "hunter2-on-the-command-line"
MODULES = ["launcher", "launcher.drill", "launcher.bench"]
BROKEN = [
    "cache=memory", "strategy=custom", "run.duration_s=5",
    "strategy.path=tests.support.custom_strategy:BrokenStrategy",
    "strategy.config_path=tests.support.custom_strategy:MyConfig",
]


def one_line(result) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unexpected_failure_in_the_job_is_exit_1_one_line_without_the_password(tmp_path: Path):
    result = run_launcher([*BROKEN, f"cache.redis.password={SECRET}"], cwd=tmp_path, timeout_s=90)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert SECRET not in output
    assert "Traceback" not in output
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines[-1].startswith("error: "), error_lines
    assert "broken on purpose" in error_lines[-1]


@pytest.mark.parametrize("args", [
    ["cache.redis.port=abc"],
    ["mode=bogus"],
    ["-m", "mode=bogus"],
    ["--cfg", "hydra"],
    ["--cfg", "all", "--resolve"],
    ["--cfg", "job", "-p", "cache.redis"],
    ["--help"],
    ["--hydra-help"],
    ["--info"],
    ["-m", "trader_id=A-1,B-1"],
])
def test_no_path_prints_a_password_given_on_the_command_line(tmp_path: Path, args):
    result = run_launcher([*args, f"cache.redis.password={SECRET}"], cwd=tmp_path, timeout_s=60)
    output = result.stdout + result.stderr
    assert SECRET not in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_multirun_is_refused_with_exit_2_and_one_line(tmp_path: Path, module, flag):
    key = {"launcher": "trader_id=A-1,B-1", "launcher.drill": "drill=graceful,kill9",
           "launcher.bench": "bench.quick=true,false"}[module]
    result = run_launcher([flag, key], cwd=tmp_path, timeout_s=60, module=module)
    assert result.returncode == 2, result.stderr + result.stdout
    assert "multirun" in one_line(result)
    assert not (tmp_path / "var").exists()


def test_multirun_with_a_bad_value_is_exit_2_and_one_line(tmp_path: Path):
    result = run_launcher(["-m", "mode=bogus"], cwd=tmp_path, timeout_s=60)
    assert result.returncode == 2, result.stderr + result.stdout
    one_line(result)


@pytest.mark.parametrize(("module", "key"), [
    ("launcher", "cache.unknown=1"),
    ("launcher", "+cache.unknown=1"),
    ("launcher", "++cache.unknown=1"),
    ("launcher.drill", "+drill.unknown=1"),
    ("launcher.bench", "+bench.unknown=1"),
])
def test_a_key_the_schema_does_not_know_is_exit_2(tmp_path: Path, module, key):
    result = run_launcher([key, "cache=memory", "run.duration_s=1"] if module == "launcher" else [key],
                          cwd=tmp_path, timeout_s=60, module=module)
    assert result.returncode == 2, result.stderr + result.stdout
    assert "unknown" in one_line(result)
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("module", MODULES)
def test_shell_completion_without_a_subcommand_is_hydras_message_and_exit_2(tmp_path: Path, module):
    result = run_launcher(["--shell-completion"], cwd=tmp_path, timeout_s=60, module=module)
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Expecting one subcommand from ['install', 'uninstall', 'query'] to be set" in one_line(result)


@pytest.mark.parametrize("module", MODULES)
def test_help_exits_0_for_every_entry_point(tmp_path: Path, module):
    result = run_launcher(["--help"], cwd=tmp_path, timeout_s=60, module=module)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Powered by Hydra" in result.stdout
