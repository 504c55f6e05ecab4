"""What the benchmark ran on: CPU, cores, memory, Redis, Python and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def python_speed_ms() -> float:
    """
    Milliseconds for a fixed pure-Python loop (best of 3; lower is faster). Shared VMs change
    speed from hour to hour: this, taken at the start and the end of a run, says how fast this
    machine was when the other numbers were measured, so runs on different days can be compared.
    """
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def describe_machine(redis_info: dict[str, Any] | None = None) -> dict[str, Any]:
    load = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    info = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "nautilus_trader": _version("nautilus_trader"),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "msgspec": _version("msgspec"),
        "load_average_at_start": load,
        "python_speed_ms_at_start": python_speed_ms(),
    }
    if redis_info:
        info["redis_version"] = redis_info.get("redis_version")
        info["redis_mode"] = redis_info.get("redis_mode")
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info
