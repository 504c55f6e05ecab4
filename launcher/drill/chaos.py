"""
The chaos soak (``drill=chaos``): seeded random faults against the drill's servers for
``duration_s`` while the nodes keep trading, and a sampler that records each node's RSS and
``cache_writes_pending`` (its Prometheus endpoint) every ``sample_interval_s``.

Faults (``drill.chaos_faults``), one at a time, ``fault_every_s`` apart:

    redis_kill      SIGKILL the master; started again from its AOF after 0.5-3 s
                    (Sentinel: the sentinels elect a replica, the killed server rejoins as one)
    redis_restart   SIGTERM the master (AOF fsynced) and start it again (Sentinel: as redis_kill,
                    a restarted master would come back as a second master)
    client_kill     CLIENT KILL TYPE normal SKIPME yes on the master: every client connection dropped
    slow            DEBUG SLEEP 0.3-1.5 s on the master: it answers nothing meanwhile
    maxmemory       CONFIG SET maxmemory just above used_memory (noeviction) for 1-3 s, then 0
    failover        SENTINEL FAILOVER (Sentinel topology only)

With Sentinel every fault is followed by a wait until the topology is whole again.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from launcher.drill.config import ChaosFault
from launcher.drill.config import DrillSettings
from launcher.drill.config import Topology


_PENDING = re.compile(r"^cache_writes_pending(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M)


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def writes_pending(port: int) -> float | None:
    """``cache_writes_pending`` from the node's metrics endpoint on 127.0.0.1:`port` (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    match = _PENDING.search(text)
    return float(match.group(1)) if match else None


class Sampler:
    """Every `interval_s`, append ``{t_s, rss_mb, pending}`` to each lane's ``samples`` (t_s from `t0`)."""

    def __init__(self, lanes: list, interval_s: float, t0: float) -> None:
        self.lanes = lanes
        self.interval_s = interval_s
        self.t0 = t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for lane in self.lanes:
                if lane.proc is None or lane.proc.poll() is not None:
                    continue
                rss = rss_mb(lane.proc.pid)
                pending = writes_pending(lane.metrics_port) if lane.metrics_port else None
                lane.samples.append({"t_s": round(time.monotonic() - self.t0, 2),
                                     "rss_mb": None if rss is None else round(rss, 1), "pending": pending})
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def sample_summary(samples: list[dict[str, Any]]) -> str:
    """RSS first/max/last (MiB) and the peak of cache_writes_pending, for the drill's table."""
    rss = [s["rss_mb"] for s in samples if s.get("rss_mb") is not None]
    pending = [(s["pending"], s["t_s"]) for s in samples if s.get("pending") is not None]
    parts = [f"{len(samples)} samples"]
    if rss:
        parts.append(f"RSS {rss[0]:.0f}->{max(rss):.0f} max->{rss[-1]:.0f} MiB")
    if pending:
        peak, at = max(pending)
        parts.append(f"cache_writes_pending max {peak:.0f} at t+{at:.0f}s, last {pending[-1][0]:.0f}")
    return ", ".join(parts)


def faults_for(d: DrillSettings) -> list[ChaosFault]:
    """The faults that apply to the topology: failover only behind Sentinel."""
    return [f for f in d.chaos_faults if f != ChaosFault.failover or d.topology == Topology.sentinel]


def run_chaos(d: DrillSettings, servers, rng, record: Callable[..., None], events: Callable[[], dict]) -> None:
    """Apply seeded random faults until `duration_s` has passed; `record` logs each with its time."""
    faults = faults_for(d)
    sentinel = d.topology == Topology.sentinel
    end = time.monotonic() + d.duration_s
    while True:
        pause = rng.uniform(*d.fault_every_s)
        if time.monotonic() + pause >= end:
            break
        time.sleep(pause)
        fault = rng.choice(faults)
        at = time.monotonic()
        before = events()
        try:
            what = _apply(fault, servers, rng, sentinel)
        except (redis.exceptions.RedisError, RuntimeError, OSError) as e:
            what = f"could not apply: {type(e).__name__}: {e}"
        record(f"{fault.value}: {what}", at, fault=fault.value, ledger_events=before,
               took_s=round(time.monotonic() - at, 3))
        if sentinel:
            ok, how = servers.settle(d.settle_timeout_s)
            record(("topology settled: " if ok else "topology NOT settled: ") + how, time.monotonic())
    left = end - time.monotonic()
    if left > 0:
        time.sleep(left)


def _apply(fault: ChaosFault, servers, rng, sentinel: bool) -> str:
    if fault in (ChaosFault.redis_kill, ChaosFault.redis_restart) and sentinel:
        return servers.kill_master()
    if fault == ChaosFault.failover:
        return servers.failover_command()
    proc = servers.master_proc()
    if fault == ChaosFault.redis_kill:
        gap = rng.uniform(0.5, 3.0)
        proc.kill()
        time.sleep(gap)
        proc.start()
        return f"SIGKILL {proc.address}, started again from its AOF after {gap:.1f}s"
    if fault == ChaosFault.redis_restart:
        proc.stop()
        proc.start()
        return f"SIGTERM {proc.address} (AOF fsynced), started again"
    client = proc.client(socket_timeout=10.0)
    try:
        if fault == ChaosFault.client_kill:
            killed = client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            return f"CLIENT KILL TYPE normal on {proc.address}: {killed} connection(s) dropped"
        if fault == ChaosFault.slow:
            sleep_s = rng.uniform(0.3, 1.5)
            client.execute_command("DEBUG", "SLEEP", f"{sleep_s:.2f}")
            return f"DEBUG SLEEP {sleep_s:.2f}s on {proc.address}"
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
        used = int(client.info("memory")["used_memory"])
        limit = used + 64 * 1024
        hold = rng.uniform(1.0, 3.0)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", limit)
        try:
            time.sleep(hold)
        finally:
            client.config_set("maxmemory", 0)
            client.config_set("maxmemory-policy", policy)
        return f"maxmemory {limit} bytes (used {used}, noeviction) on {proc.address} for {hold:.1f}s, then unlimited"
    finally:
        client.close()
