"""
One restart drill: servers, nodes (one per backend, side by side, same fault at the same
moment), the fault, the restart of what must restart, ``mode=verify``, and the ledger check.

Timeline
    1. Start (or take) the servers.
    2. Start one ``python -m launcher`` node per backend with the churn strategy and a ledger.
    3. Once every node has written ``warmup_events`` ledger events, wait a random moment in
       ``fault_after_s`` (``random.Random(seed)``) and apply the scenario's fault.
    4. Restart what must restart (Redis, the killed master), let the nodes run on for
       ``after_fault_s``, then stop them with SIGTERM (graceful/Redis scenarios) - kill9 has
       already killed them.
    5. ``plant_loss``: damage the state on purpose (tests of the check).
    6. ``python -m launcher mode=verify`` per node: exit code and JSON report.
    7. Load the state (``launcher.state.loader.load_state``: the replay a node does) and
       check every ledger event against it (``launcher.drill.compare``).
    8. ``restart_node``: start the node again, time it to RUNNING, and let it run briefly.
       When the node was killed during a Redis outage or a failover (``outage_kill9``,
       ``kill_node_after_failover``) this restart comes *before* the check (6, 7): the node
       must replay what it retained or spilled, and only then is the state complete.

Promises (a lane fails when its promise is broken; native's findings are shown, not failed)
    graceful                       no loss, either backend
    kill9, durability=sync         no loss (resilient)
    kill9, durability=buffered     lost events only from the last buffer interval (+ slack)
    redis_restart/_outage,
    sentinel_failover, chaos       no loss (resilient)
    cluster_failover/_reshard      no loss (resilient; native cannot talk to a cluster)
    outage_kill9, sentinel_failover
    with kill_node_after_failover  sync: no loss; buffered: only the last buffer interval before the node's kill
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from launcher.config.schema import Backend
from launcher.config.schema import Durability
from launcher.drill.chaos import Sampler
from launcher.drill.chaos import run_chaos
from launcher.drill.chaos import sample_summary
from launcher.drill.compare import Comparison
from launcher.drill.compare import compare
from launcher.drill.compare import plant_loss
from launcher.drill.config import CLUSTER_SCENARIOS
from launcher.drill.config import TOPOLOGY_SCENARIOS
from launcher.drill.config import DrillSettings
from launcher.drill.config import FailoverStep
from launcher.drill.config import Scenario
from launcher.drill.config import Topology
from launcher.drill.ledger import Entry
from launcher.drill.ledger import LedgerWatcher
from launcher.drill.servers import ClusterServers
from launcher.drill.servers import SentinelServers
from launcher.drill.servers import SingleServer
from launcher.drill.servers import state_client
from launcher.errors import LauncherError
from launcher.retry import PollTimeout
from launcher.retry import poll
from launcher.servers.redis_process import free_port


REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_PASSED = 0
EXIT_FAILED = 4  # a promise was broken (loss, verify problems, a node that did not come back)


class DrillError(LauncherError):
    """The drill could not run (a server or node did not start); nothing was checked."""

    exit_code = 3


def say(text: str) -> None:
    print(text, flush=True)


# -- one node per backend ------------------------------------------------------------------------


@dataclass
class Lane:
    """One backend's node in the drill, with its own trader id, ledger and logs."""

    backend: Backend
    durability: Durability
    trader_id: str
    dir: Path
    overrides: list[str]
    proc: subprocess.Popen | None = None
    watcher: LedgerWatcher | None = None
    entries: list[Entry] = field(default_factory=list)
    node_exit: int | None = None
    node_note: str = ""
    stop_sent: bool = False  # SIGTERM already sent (the graceful fault): sent once, like an operator
    planted: list[dict] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)
    comparison: Comparison | None = None
    state_load_s: float | None = None
    recovery: dict[str, Any] = field(default_factory=dict)
    node_log_facts: dict[str, Any] = field(default_factory=dict)
    promise: str = ""
    failures: list[str] = field(default_factory=list)
    metrics_port: int | None = None  # chaos: the node's Prometheus endpoint
    samples: list[dict[str, Any]] = field(default_factory=list)  # chaos: RSS and cache_writes_pending over time

    @property
    def ledger(self) -> Path:
        return self.dir / "ledger.jsonl"

    @property
    def log(self) -> Path:
        return self.dir / "node.log"

    @property
    def name(self) -> str:
        return self.backend.value

    def launcher_args(self, *more: str) -> list[str]:
        return [*self.overrides, *more]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 (handed to the child; closed when we drop it)
    try:
        return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "launcher", *args], cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# -- the drill -----------------------------------------------------------------------------------


@dataclass
class DrillReport:
    settings: DrillSettings
    workdir: Path
    servers: str = ""
    fault: list[dict[str, Any]] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(not lane.failures for lane in self.lanes)

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.passed else EXIT_FAILED


def kills_node(d: DrillSettings) -> bool:
    """Whether the drill SIGKILLs the node(s) (no shutdown: the buffered loss window applies)."""
    return d.scenario in (Scenario.kill9, Scenario.outage_kill9) or (
        d.scenario == Scenario.sentinel_failover and d.kill_node_after_failover)


def recovers_before_check(d: DrillSettings) -> bool:
    """Whether the killed node must run again before the check: it held writes Redis had not acknowledged."""
    return d.scenario == Scenario.outage_kill9 or (d.scenario == Scenario.sentinel_failover and d.kill_node_after_failover)


def uses_sentinel(d: DrillSettings) -> bool:
    return d.scenario == Scenario.sentinel_failover or (d.scenario == Scenario.chaos and d.topology == Topology.sentinel)


def _promise(d: DrillSettings, lane: Lane) -> str:
    if d.scenario == Scenario.graceful:
        return "none lost"
    if lane.backend == Backend.native:
        return "none (NautilusTrader's adapter promises nothing here; losses are shown)"
    if kills_node(d) and lane.durability == Durability.buffered:
        return f"only events of the last buffer interval ({d.buffer_interval_ms} ms + {d.loss_window_slack_ms:.0f} ms slack)"
    return "none lost"


def _lease_ttl(d: DrillSettings) -> float:
    if d.lease_ttl_s is not None:
        return d.lease_ttl_s
    if d.scenario == Scenario.kill9:
        return 3.0
    if d.scenario in (Scenario.redis_outage, Scenario.outage_kill9):
        return max(10.0, d.gap_s + 6.0)
    if d.scenario == Scenario.chaos:
        return 15.0  # outlives a 3 s Redis gap and a 3 s maxmemory hold (renewals refused) with room to spare
    return 10.0


def run_drill(d: DrillSettings) -> DrillReport:
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workdir = Path(d.workdir or Path("var") / "drill" / f"{d.scenario.value}-{stamp}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(d.seed)
    report = DrillReport(settings=d, workdir=workdir, started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    tag = f"{random.Random(f'{d.seed}-{time.time_ns()}').getrandbits(24):06X}"

    say(f"Drill {d.scenario.value}: seed {d.seed}, backends {', '.join(b.value for b in d.backends)}, "
        f"durability {d.durability.value}; working directory {workdir}")
    servers = _start_servers(d, workdir)
    report.servers = servers.describe()
    say(f"  servers: {report.servers}")
    try:
        for backend in d.backends:
            durability = d.durability if backend == Backend.resilient else Durability.buffered
            trader_id = f"{d.trader_prefix}_{backend.value.upper()}-{tag}"
            lane_dir = workdir / backend.value
            lane_dir.mkdir(parents=True, exist_ok=True)
            overrides = [
                *servers.node_overrides(),
                f"trader_id={trader_id}",
                f"cache.backend={backend.value}",
                f"cache.durability={durability.value}",
                f"cache.buffer_interval_ms={d.buffer_interval_ms}",
                f"cache.spill_dir={lane_dir / 'spill'}",
                "strategy=churn",
                f"strategy.params.actions_per_second={d.actions_per_second:g}",
                f"bootstrap.lease_ttl_s={_lease_ttl(d):g}",
                f"run.post_stop_s={d.post_stop_s:g}",
                *_monitoring_overrides(d),
                *d.node_overrides,
            ]
            lane = Lane(backend, durability, trader_id, lane_dir, overrides)
            lane.metrics_port = _metrics_port(overrides)
            lane.promise = _promise(d, lane)
            report.lanes.append(lane)
        try:
            _run(d, report, servers, rng)
        except LauncherError:
            raise
        except Exception as e:
            raise DrillError(f"drill aborted: {type(e).__name__}: {e} (logs under {workdir})") from e
    finally:
        for lane in report.lanes:
            if lane.watcher is not None:
                lane.watcher.stop()
            if lane.proc is not None and lane.proc.poll() is None:
                lane.proc.kill()
                lane.proc.wait(timeout=10)
        servers.stop()
    report.duration_s = time.monotonic() - started
    return report


def _monitoring_overrides(d: DrillSettings) -> list[str]:
    # Only the chaos soak samples the nodes' metrics; elsewhere an endpoint would just be one more port to clash.
    if d.scenario != Scenario.chaos:
        return ["monitoring.enabled=false"]
    return ["monitoring.enabled=true", "monitoring.host=127.0.0.1", f"monitoring.port={free_port()}"]


def _metrics_port(overrides: list[str]) -> int | None:
    if "monitoring.enabled=true" not in overrides:
        return None
    return int(next(o for o in reversed(overrides) if o.startswith("monitoring.port=")).split("=", 1)[1])


def _start_servers(d: DrillSettings, workdir: Path):
    try:
        if d.scenario in CLUSTER_SCENARIOS:
            return ClusterServers.start(workdir)
        if uses_sentinel(d):
            if d.sentinel_nodes:
                return SentinelServers.given(d.sentinel_nodes, d.master_name, d.min_replica_acks)
            return SentinelServers.start(workdir, d.master_name, d.replicas, d.min_replica_acks)
        if d.redis_address:
            return SingleServer.given(d.redis_address)
        return SingleServer.start(workdir)
    except Exception as e:  # noqa: BLE001 (missing binary, port race, ...)
        raise DrillError(f"could not start the drill's Redis servers: {e}") from None


def _run(d: DrillSettings, report: DrillReport, servers, rng: random.Random) -> None:
    lanes = report.lanes
    if isinstance(servers, ClusterServers):
        from launcher.config.compose import compose_config  # noqa: PLC0415
        from launcher.config.compose import to_settings  # noqa: PLC0415
        from launcher.state.loader import state_trader_key  # noqa: PLC0415

        # The cluster's faults hit the shard of the (one, resilient) lane's trader.
        servers.follow(state_trader_key(to_settings(compose_config(lanes[0].launcher_args()))))
    # 1. nodes
    for lane in lanes:
        lane.proc = _spawn(lane.launcher_args(f"strategy.params.ledger_path={lane.ledger}"), lane.dir, lane.log)
        lane.watcher = LedgerWatcher(lane.ledger).start()
    deadline = time.monotonic() + d.node_start_timeout_s
    for lane in lanes:
        try:
            poll(partial(_warmed_up, lane, max(1, d.warmup_events)), max(0.0, deadline - time.monotonic()),
                 f"{lane.name} node trading")
        except PollTimeout:
            raise DrillError(f"the {lane.name} node wrote no {d.warmup_events} ledger events within "
                             f"{d.node_start_timeout_s:.0f}s:\n{_tail(lane.log)}") from None
    say(f"  nodes trading: {', '.join(f'{lane.name} ({lane.trader_id}, {lane.watcher.count()} events)' for lane in lanes)}")

    # 2. fault
    fault_at = _apply_fault(d, report, servers, lanes, rng)

    # 3. stop what still runs
    killed = kills_node(d)
    for lane in lanes:
        if lane.proc.poll() is not None and not killed:
            lane.node_note = f"exited by itself ({lane.proc.returncode}) before the drill stopped it"
        elif lane.proc.poll() is None and not lane.stop_sent:
            lane.proc.send_signal(signal.SIGTERM)
    for lane in lanes:
        try:
            lane.node_exit = lane.proc.wait(timeout=d.stop_timeout_s)
        except subprocess.TimeoutExpired:
            lane.proc.kill()
            lane.node_exit = lane.proc.wait(timeout=10)
            lane.node_note = f"did not stop within {d.stop_timeout_s:.0f}s of SIGTERM; killed"
        lane.entries = lane.watcher.stop()
        lane.node_log_facts = node_log_facts(lane.log)
    say(f"  nodes stopped: {', '.join(f'{lane.name} exit {lane.node_exit}' for lane in lanes)}")
    if recovers_before_check(d):
        _parallel([lambda lane=lane: _restart(d, lane) for lane in lanes])
        say("  nodes restarted before the check: " + ", ".join(
            f"{lane.name} exit {lane.recovery.get('restart_exit')}"
            + (", spill replayed" if lane.recovery.get("spill_replayed") else "") for lane in lanes))

    # 4. planted loss, 5. verify, 6. compare
    from launcher.config.compose import compose_config  # noqa: PLC0415
    from launcher.config.compose import to_settings  # noqa: PLC0415
    from launcher.state.loader import load_state  # noqa: PLC0415
    from launcher.state.loader import state_trader_key  # noqa: PLC0415

    for lane in lanes:
        settings = to_settings(compose_config(lane.launcher_args()))
        if d.plant_loss:
            client = state_client(settings)
            try:
                lane.planted = plant_loss(client, state_trader_key(settings), lane.entries, d.plant_loss, d.seed)
            finally:
                client.close()
            for p in lane.planted:
                say(f"  planted loss ({lane.name}): order {p['id']}: {p['action']}")
    _parallel([lambda lane=lane: _verify(lane) for lane in lanes])
    for lane in lanes:
        settings = to_settings(compose_config(lane.launcher_args()))
        client = state_client(settings)
        try:
            t0 = time.perf_counter()
            state = load_state(client, settings)
            lane.state_load_s = time.perf_counter() - t0
        finally:
            client.close()
        lane.comparison = compare(lane.entries, state, killed=killed, fault_at=fault_at)

    # 7. restart
    if d.restart_node and not recovers_before_check(d):
        _parallel([lambda lane=lane: _restart(d, lane) for lane in lanes])
    for lane in lanes:
        lane.failures = _judge(d, lane, killed)


def _parallel(jobs: list) -> None:
    errors: list[BaseException] = []

    def wrap(job):
        try:
            job()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _warmed_up(lane: Lane, events: int) -> bool:
    """Whether `lane`'s node wrote `events` ledger events (DrillError if it exited before)."""
    if lane.proc.poll() is not None:
        raise DrillError(f"the {lane.name} node exited ({lane.proc.returncode}) before trading:\n{_tail(lane.log)}")
    return lane.watcher.count() >= events


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _apply_fault(d: DrillSettings, report: DrillReport, servers, lanes: list[Lane], rng: random.Random) -> float:
    def record(what: str, at: float, **extra: Any) -> None:
        entry = {"at_s": round(at - t_start, 3), "what": what, **extra}
        report.fault.append(entry)
        say(f"  t+{entry['at_s']:.2f}s {what}")

    t_start = time.monotonic()
    if d.scenario in TOPOLOGY_SCENARIOS:
        first_fault = None
        for i, step in enumerate(d.failover_steps):
            if i:
                # The next fault only once the topology is whole again (the demoted or killed master
                # back as an up-to-date replica), as an operator would wait before the next incident.
                ok, how = servers.settle(d.settle_timeout_s)
                record(("topology settled: " if ok else "topology NOT settled: ") + how, time.monotonic())
            _sleep_until(time.monotonic() + rng.uniform(*d.fault_after_s))
            at = time.monotonic()
            first_fault = first_fault or at
            events = {lane.name: lane.watcher.count() for lane in lanes}
            if step == FailoverStep.command:
                what = servers.failover_command()
            elif step == FailoverStep.kill_master:
                what = servers.kill_master(restart=d.restart_old_master)
            else:
                what = servers.reshard()
            record(what, at, step=step.value, ledger_events=events, took_s=round(time.monotonic() - at, 3))
        ok, how = servers.settle(d.settle_timeout_s)
        record(("topology settled: " if ok else "topology NOT settled: ") + how, time.monotonic())
        _sleep_until(time.monotonic() + d.after_fault_s)
        events = {lane.name: lane.watcher.count() for lane in lanes}
        if d.kill_node_after_failover:
            at = time.monotonic()
            for lane in lanes:
                lane.proc.send_signal(signal.SIGKILL)
            record(f"SIGKILL to the node(s) {d.after_fault_s:g}s after the topology settled", at, ledger_events=events)
            return at  # the buffered loss window is counted back from the node's kill
        record(f"stopping the node(s) with SIGTERM ({d.after_fault_s:g}s after the topology settled)", time.monotonic(),
               ledger_events=events)
        return first_fault

    if d.scenario == Scenario.chaos:
        return _chaos(d, servers, lanes, rng, record)

    _sleep_until(time.monotonic() + rng.uniform(*d.fault_after_s))
    at = time.monotonic()
    events = {lane.name: lane.watcher.count() for lane in lanes}
    if d.scenario == Scenario.graceful:
        for lane in lanes:
            lane.proc.send_signal(signal.SIGTERM)
            lane.stop_sent = True
        record("SIGTERM to the node(s): clean stop", at, ledger_events=events)
    elif d.scenario == Scenario.kill9:
        for lane in lanes:
            lane.proc.send_signal(signal.SIGKILL)
        record("SIGKILL to the node(s)", at, ledger_events=events)
    elif d.scenario == Scenario.redis_restart:
        servers.proc.stop()
        record("SIGTERM to Redis (clean shutdown, AOF fsynced)", at, ledger_events=events)
        servers.proc.start()
        record("Redis started again from its AOF (same port and directory)", time.monotonic(), wall=time.time())
        _run_on(d, lanes, record)
    elif d.scenario == Scenario.redis_outage:
        servers.proc.kill()
        record("SIGKILL to Redis", at, ledger_events=events)
        _sleep_until(at + d.gap_s)
        servers.proc.start()
        record(f"Redis started again from its AOF after a {d.gap_s:g}s gap", time.monotonic(), wall=time.time())
        _run_on(d, lanes, record)
    elif d.scenario == Scenario.outage_kill9:
        servers.proc.kill()
        record("SIGKILL to Redis", at, ledger_events=events)
        _sleep_until(at + d.kill_node_after_s)
        node_kill = time.monotonic()
        events = {lane.name: lane.watcher.count() for lane in lanes}
        for lane in lanes:
            lane.proc.send_signal(signal.SIGKILL)
        record(f"SIGKILL to the node(s), {d.kill_node_after_s:g}s into the outage", node_kill, ledger_events=events)
        _sleep_until(at + d.gap_s)
        servers.proc.start()
        record(f"Redis started again from its AOF after a {d.gap_s:g}s gap; the node(s) restart next",
               time.monotonic(), wall=time.time())
        return node_kill  # the buffered loss window is counted back from the node's kill
    return at


def _chaos(d: DrillSettings, servers, lanes: list[Lane], rng: random.Random, record) -> float:
    at = time.monotonic()
    record(f"chaos for {d.duration_s:g}s: faults {', '.join(f.value for f in d.chaos_faults)}, "
           f"every {d.fault_every_s[0]:g}-{d.fault_every_s[1]:g}s", at)
    sampler = Sampler(lanes, d.sample_interval_s, at).start()
    try:
        run_chaos(d, servers, rng, record, lambda: {lane.name: lane.watcher.count() for lane in lanes})
        _run_on(d, lanes, record)
    finally:
        sampler.stop()
    return at


def _run_on(d: DrillSettings, lanes: list[Lane], record) -> None:
    """The servers are back: let the nodes run on, then stop them (SIGTERM by the caller)."""
    _sleep_until(time.monotonic() + d.after_fault_s)
    events = {lane.name: lane.watcher.count() for lane in lanes}
    record(f"stopping the node(s) with SIGTERM after {d.after_fault_s:g}s more", time.monotonic(), ledger_events=events)


def _verify(lane: Lane) -> None:
    report_path = lane.dir / "verify.json"
    log = lane.dir / "verify.log"
    proc = _spawn(lane.launcher_args("mode=verify", f"bootstrap.report_path={report_path}"), lane.dir, log)
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        code = None
    lane.verify = {"exit": code, "log": str(log)}
    if report_path.exists():
        data = json.loads(report_path.read_text())
        lane.verify.update(
            status=data.get("status"),
            problems=len(data.get("problems", [])),
            first_problems=[f"{p['entity']} {p['id']}: {p['problem']}" for p in data.get("problems", [])[:10]],
            load_time_s=data.get("load_time_s"),
            counts=data.get("counts"),
        )
    else:
        lane.verify.update(status="no report", problems=None, error=_tail(log, 500))


_RUNNING = "TradingNode: RUNNING"
# The backend's own replay at start, or the session's replay before verify (spill_restart branch).
_SPILL_REPLAYED = re.compile(r"Replayed (?:the spilled writes of an earlier run|\d+ spilled write)")


def _restart(d: DrillSettings, lane: Lane) -> None:
    log = lane.dir / "restart.log"
    ledger = lane.dir / "ledger-restart.jsonl"
    t0 = time.monotonic()
    proc = _spawn(lane.launcher_args(f"strategy.params.ledger_path={ledger}", f"run.duration_s={d.restart_run_s:g}"),
                  lane.dir, log)
    running_s = None

    def running_or_exited() -> bool:
        nonlocal running_s
        if _RUNNING in _tail(log, 10**9):
            running_s = time.monotonic() - t0
            return True
        return proc.poll() is not None

    note = ""
    try:
        with contextlib.suppress(PollTimeout):  # a node that never got there is reported by its exit code below
            poll(running_or_exited, d.node_start_timeout_s + _lease_ttl(d) + 5, f"{lane.name} node restarting")
        if running_s is None and proc.poll() is None:
            # Stuck before RUNNING (e.g. sync writes Redis never acknowledges): stopped as an operator would.
            note = f"not RUNNING within {d.node_start_timeout_s + _lease_ttl(d) + 5:.0f}s; stopped with SIGTERM"
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=d.stop_timeout_s)
        else:
            code = proc.wait(timeout=d.restart_run_s + d.stop_timeout_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(timeout=10)
        note = (note + "; " if note else "") + "did not stop in time; killed"
    text = _tail(log, 10**9)
    lease_wait = re.search(r"lease expired after ([0-9.]+)s", text)
    loaded = re.search(r"Node loaded exactly what the recovery report counted: (.*)", text)
    differ = re.search(r"Node loaded counts differ from the recovery report.*", text)
    lane.recovery = {
        "restart_exit": code,
        "restart_to_running_s": None if running_s is None else round(running_s, 3),
        "lease_wait_s": float(lease_wait.group(1)) if lease_wait else 0.0,
        "node_loaded": loaded.group(1) if loaded else (differ.group(0) if differ else None),
        "counts_match_verify": bool(loaded) if (loaded or differ) else None,
        "spill_replayed": bool(_SPILL_REPLAYED.search(text)),
        "note": note,
        "log": str(log),
    }


_RESUMED = re.compile(r"^(\S+Z) .*Redis writes resumed .* after a ([0-9.]+)s outage: (\d+) retained write", re.M)
_FOLLOWED = re.compile(r"^(\S+Z) .*Cache writes now go to (\S+) \(was (\S+)\)", re.M)
_SPILLED_AT_CLOSE = re.compile(r"unreachable at close .*?: (\d+) write\(s\) spilled to")
_OUTAGE = re.compile(r"^(\S+Z) .*Redis (?:unreachable|not acknowledging) ", re.M)


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso[:26].replace("Z", "") + "+00:00").timestamp()
    except ValueError:
        return None


def node_log_facts(log: Path) -> dict[str, Any]:
    """What the resilient backend logged about outages, resends and failovers."""
    text = _tail(log, 10**9)
    return {
        "outages_logged": len(_OUTAGE.findall(text)),
        "resumed": [
            {"at": _epoch(ts), "outage_s": float(s), "resent_writes": int(n)} for ts, s, n in _RESUMED.findall(text)
        ],
        "failovers_followed": [{"at": _epoch(ts), "to": to, "from": frm} for ts, to, frm in _FOLLOWED.findall(text)],
        "errors": len(re.findall(r"\[ERROR\]", text)),
        "lease_lost": "LOST:" in text and "Single-writer lease" in text,
        # Writes the node could not get into Redis before it exited: only on local disk until the next start.
        "spilled_at_close": sum(int(n) for n in _SPILLED_AT_CLOSE.findall(text)),
    }


def _judge(d: DrillSettings, lane: Lane, killed: bool) -> list[str]:
    """The broken promises of one lane (empty: passed)."""
    failures: list[str] = []
    cmp = lane.comparison
    promising = not lane.promise.startswith("none (")
    planted_ids = {p["id"] for p in lane.planted}
    if planted_ids:
        missed = sorted(planted_ids - set(cmp.lost_ids))
        if missed:
            failures.append(f"the check MISSED planted loss(es) {', '.join(missed)}: the drill's checking is broken")
        else:
            failures.append(f"planted loss detected: {', '.join(sorted(planted_ids))}")
    if not promising:
        return failures
    if lane.promise.startswith("only events of the last buffer interval"):
        bound = d.buffer_interval_ms + d.loss_window_slack_ms
        late = [x for x in cmp.lost if x.age_ms is None or x.age_ms > bound]
        if late:
            failures.append(f"{len(late)} lost event(s) older than the buffer window ({bound:.0f} ms): "
                            + ", ".join(sorted({x.entry.id for x in late})[:10]))
    elif cmp.lost:
        failures.append(f"{len(cmp.lost)} event(s) LOST: " + ", ".join(cmp.lost_ids[:10])
                        + (" ..." if len(cmp.lost_ids) > 10 else ""))
    if not killed and lane.node_exit != 0:
        failures.append(f"the node exited {lane.node_exit} ({lane.node_note or 'not a clean stop'})")
    if lane.verify.get("exit") != 0 and not planted_ids:
        failures.append(f"mode=verify exited {lane.verify.get('exit')} ({lane.verify.get('problems')} problem(s))")
    if (d.restart_node or recovers_before_check(d)) and not planted_ids:
        rec = lane.recovery
        if rec.get("restart_exit") != 0 or rec.get("restart_to_running_s") is None:
            why = f"exit {rec.get('restart_exit')}" + (f", {rec['note']}" if rec.get("note") else "")
            failures.append(f"the restarted node did not come back ({why}, see {rec.get('log')})")
    return failures


# -- output --------------------------------------------------------------------------------------


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _recovery_text(d: DrillSettings, lane: Lane, report: DrillReport) -> str:
    parts = []
    if lane.recovery.get("restart_to_running_s") is not None:
        wait = lane.recovery.get("lease_wait_s") or 0.0
        parts.append(f"restart->RUNNING {lane.recovery['restart_to_running_s']:.2f}s"
                     + (f" (lease wait {wait:.1f}s)" if wait else ""))
    resumed = lane.node_log_facts.get("resumed") or []
    if resumed:
        backs = [f.get("wall") for f in report.fault if f.get("wall")]
        last = resumed[-1]
        after_back = ""
        if backs and last["at"]:
            after_back = f", {max(0.0, last['at'] - backs[-1]):.2f}s after Redis was back"
        parts.append(f"writes resumed x{len(resumed)} (last outage {last['outage_s']:.2f}s, "
                     f"{sum(r['resent_writes'] for r in resumed)} resent{after_back})")
    followed = lane.node_log_facts.get("failovers_followed") or []
    if followed:
        parts.append(f"followed {len(followed)} failover(s)")
    parts.append(f"state load {_fmt_s(lane.state_load_s)}")
    return "; ".join(parts)


def render(report: DrillReport) -> str:
    d = report.settings
    lines = [
        "",
        f"Drill {d.scenario.value} (seed {d.seed}) - {report.servers}",
        "  fault timeline: " + " | ".join(f"t+{f['at_s']:.2f}s {f['what']}" for f in report.fault),
        "",
        f"  {'backend':<10} {'durability':<10} {'written':>7} {'checked':>7} {'recovered':>9} {'lost':>5}  "
        f"{'verify':<16} {'result':<6} recovery",
    ]
    for lane in report.lanes:
        c = lane.comparison
        verify = f"{lane.verify.get('status')} (exit {lane.verify.get('exit')})"
        result = "PASS" if not lane.failures else "FAIL"
        lines.append(
            f"  {lane.name:<10} {lane.durability.value:<10} {c.written:>7} {c.checked:>7} {c.recovered:>9} "
            f"{len(c.lost):>5}  {verify:<16} {result:<6} {_recovery_text(d, lane, report)}",
        )
    for lane in report.lanes:
        c = lane.comparison
        lines.append("")
        lines.append(f"  [{lane.name}] trader {lane.trader_id}: promise: {lane.promise}")
        spilled = lane.node_log_facts.get("spilled_at_close")
        if spilled:
            lines.append(f"    the node exited with {spilled} write(s) only in its spill file (not in Redis; replayed by its next start)")
        lines.append(f"    node exit {lane.node_exit}{' - ' + lane.node_note if lane.node_note else ''}; "
                     f"{c.orders} orders and {c.positions} position(s) in the ledger; "
                     f"{c.superseded} superseded position event(s) (NETTING reopen), {c.in_flight} in flight at the kill")
        if c.lost:
            ages = [x.age_ms for x in c.lost if x.age_ms is not None]
            window = ""
            if ages:
                window = f"; ledger lines seen from {-max(ages):+.0f} ms to {-min(ages):+.0f} ms relative to the fault"
            lines.append(f"    LOST {len(c.lost)} event(s) of {len(c.lost_ids)} entit(ies){window}:")
            lines += [f"      - {x}" for x in c.lost[:12]]
            if len(c.lost) > 12:
                lines.append(f"      ... and {len(c.lost) - 12} more (JSON report)")
        for problem in (lane.verify.get("first_problems") or [])[:5]:
            lines.append(f"    verify: {problem}")
        if lane.samples:
            lines.append(f"    sampled every {d.sample_interval_s:g}s: {sample_summary(lane.samples)}")
        for failure in lane.failures:
            lines.append(f"    FAIL: {failure}")
    lines.append("")
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(f"Drill {d.scenario.value}: {verdict} in {report.duration_s:.1f}s (exit {report.exit_code}); "
                 f"report {report.workdir / 'drill-report.json'}")
    return "\n".join(lines)


def to_dict(report: DrillReport) -> dict[str, Any]:
    from dataclasses import asdict  # noqa: PLC0415

    d = report.settings
    settings = json.loads(json.dumps(asdict(d), default=lambda v: getattr(v, "value", str(v))))
    return {
        "scenario": d.scenario.value,
        "seed": d.seed,
        "passed": report.passed,
        "exit_code": report.exit_code,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "servers": report.servers,
        "settings": settings,
        "fault": report.fault,
        "lanes": [
            {
                "backend": lane.name,
                "durability": lane.durability.value,
                "trader_id": lane.trader_id,
                "promise": lane.promise,
                "passed": not lane.failures,
                "failures": lane.failures,
                "node_exit": lane.node_exit,
                "node_note": lane.node_note,
                "planted_loss": lane.planted,
                "check": lane.comparison.to_dict() if lane.comparison else None,
                "verify": lane.verify,
                "state_load_s": None if lane.state_load_s is None else round(lane.state_load_s, 4),
                "recovery": lane.recovery,
                "node_log": lane.node_log_facts,
                "workdir": str(lane.dir),
                "samples": lane.samples,
            }
            for lane in report.lanes
        ],
    }


def write_report(report: DrillReport) -> Path:
    data = json.dumps(to_dict(report), indent=2) + "\n"
    path = report.workdir / "drill-report.json"
    path.write_text(data)
    if report.settings.report_path:
        extra = Path(report.settings.report_path)
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(data)
    return path
