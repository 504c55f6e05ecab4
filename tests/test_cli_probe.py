"""
Hostile command lines (tests/test_cli.py's promises, attacked): secrets in unusual override forms
and addresses, values that no range check expected, and options that reach NautilusTrader's
identifiers. Each ends with one line and the README's exit code, never a traceback or a secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
