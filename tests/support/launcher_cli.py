"""Run ``python -m launcher`` as a user would: a child process in a scratch directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[2]


def launcher_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_") and k != "TRADER_ID"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_launcher(args: list[str], cwd: Path, timeout_s: float = 120, module: str = "launcher", **env: str):
    """Run to completion; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=launcher_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def start_launcher(args: list[str], cwd: Path, log_path: Path, module: str = "launcher",
                   wrapper: tuple[str, ...] = (), **env: str) -> subprocess.Popen:
    """Start in the background with stdout+stderr to `log_path` (under `wrapper`, e.g. ``("nohup",)``)."""
    out = open(log_path, "w")  # noqa: SIM115 (closed with the process by the caller)
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", module, *args],
        cwd=cwd,
        env=launcher_env(**env),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


@contextmanager
def killed_on_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`proc` for the block; SIGKILLed and reaped if it still runs when the block ends (e.g. a failed assertion)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
