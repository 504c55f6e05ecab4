"""
``python -m launcher.drill``: every scenario, fast, against real servers the drill starts, as
an operator runs it; the check must also catch a loss planted on purpose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.config.compose import CONFIG_DIR
from launcher.drill.compare import compare
from launcher.drill.config import compose_drill_config
from launcher.drill.config import to_drill_settings
from launcher.drill.ledger import Entry
from launcher.errors import ConfigError
from launcher.state.loader import PersistedState
from tests.support.launcher_cli import killed_on_exit
from tests.support.launcher_cli import run_launcher


SCENARIOS = sorted(p.stem for p in (CONFIG_DIR / "drill").glob("*.yaml"))
CLUSTER_SCENARIOS = ["cluster_failover", "cluster_reshard"]  # resilient only: native cannot talk to a cluster

# Short timings: a few seconds of trading around the fault.
FAST = [
    "drill.warmup_events=10",
    "drill.fault_after_s=[0.3,1.0]",
    "drill.after_fault_s=1",
    "drill.restart_run_s=0.5",
    "drill.post_stop_s=0.2",
    "drill.actions_per_second=50",
]


def run_drill(tmp_path: Path, *args: str, timeout_s: float = 240):
    result = run_launcher([*FAST, f"drill.workdir={tmp_path / 'drill'}", *args], cwd=tmp_path,
                          timeout_s=timeout_s, module="launcher.drill")
    out = result.stdout + result.stderr
    report_path = tmp_path / "drill" / "drill-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return result, out, report


def lane(report: dict, backend: str) -> dict:
    return next(item for item in report["lanes"] if item["backend"] == backend)


# -- configuration ---------------------------------------------------------------------------------


def test_scenario_group_is_complete():
    assert SCENARIOS == ["chaos", "cluster_failover", "cluster_reshard", "graceful", "kill9", "outage_kill9",
                         "redis_outage", "redis_restart", "sentinel_failover"]


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s not in CLUSTER_SCENARIOS])
def test_every_scenario_composes_and_validates(scenario):
    settings = to_drill_settings(compose_drill_config([f"drill={scenario}", "drill.backends=[resilient,native]"]))
    assert settings.scenario.value == scenario
    assert [b.value for b in settings.backends] == ["resilient", "native"]


@pytest.mark.parametrize("scenario", CLUSTER_SCENARIOS)
def test_cluster_scenarios_compose_and_refuse_the_native_backend(scenario):
    settings = to_drill_settings(compose_drill_config([f"drill={scenario}"]))
    assert settings.scenario.value == scenario and [b.value for b in settings.backends] == ["resilient"]
    with pytest.raises(ConfigError, match="native is impossible on a Redis Cluster") as info:
        to_drill_settings(compose_drill_config([f"drill={scenario}", "drill.backends=[resilient,native]"]))
    assert info.value.key == "drill.backends"


def test_scenario_defaults_state_the_promises():
    kill9 = to_drill_settings(compose_drill_config(["drill=kill9"]))
    assert kill9.durability.value == "sync" and kill9.restart_node
    failover = to_drill_settings(compose_drill_config(["drill=sentinel_failover"]))
    assert [s.value for s in failover.failover_steps] == ["command", "kill_master"]
    assert failover.replicas == 1
    assert failover.restart_old_master and not failover.kill_node_after_failover
    outage_kill9 = to_drill_settings(compose_drill_config(["drill=outage_kill9"]))
    assert outage_kill9.durability.value == "sync" and 0 < outage_kill9.kill_node_after_s <= outage_kill9.gap_s
    chaos = to_drill_settings(compose_drill_config(["drill=chaos"]))
    assert chaos.topology.value == "single" and len(chaos.chaos_faults) == 6


@pytest.mark.parametrize(("overrides", "key"), [
    (["drill=nope"], ""),
    (["drill.bogus=1"], "drill.bogus"),
    (["drill.backends=[]"], "drill.backends"),
    (["drill.fault_after_s=[3,1]"], "drill.fault_after_s"),
    (["drill=redis_outage", "drill.redis_address=127.0.0.1:7000"], "drill.redis_address"),
    (["drill=sentinel_failover", "drill.sentinel_nodes=[127.0.0.1:26379]"], "drill.failover_steps"),
    (["drill=kill9", "drill.sentinel_nodes=[127.0.0.1:26379]"], "drill.sentinel_nodes"),
    (["drill=cluster_reshard", "drill.redis_address=127.0.0.1:7000"], "drill.redis_address"),
    (["drill=sentinel_failover", "drill.failover_steps=[reshard]"], "drill.failover_steps"),
    (["drill.durability=eventually"], "drill.durability"),
    (["drill=outage_kill9", "drill.gap_s=2", "drill.kill_node_after_s=3"], "drill.kill_node_after_s"),
    (["drill=outage_kill9", "drill.redis_address=127.0.0.1:7000"], "drill.redis_address"),
    (["drill=sentinel_failover", "drill.restart_old_master=false", "drill.failover_steps=[kill_master,command]"],
     "drill.failover_steps"),
    (["drill=sentinel_failover", "drill.min_replica_acks=-1"], "drill.min_replica_acks"),
    (["drill=chaos", "drill.chaos_faults=[failover]"], "drill.chaos_faults"),
    (["drill=chaos", "drill.fault_every_s=[0,0]"], "drill.fault_every_s"),
    (["drill=chaos", "drill.duration_s=0"], "drill.duration_s"),
])
def test_bad_drill_config_is_one_config_error(overrides, key):
    with pytest.raises(ConfigError) as info:
        to_drill_settings(compose_drill_config(overrides))
    assert info.value.key == key


def test_bad_drill_config_exits_2_with_one_line(tmp_path):
    result = run_launcher(["drill=redis_outage", "drill.gap_s=0"], cwd=tmp_path, module="launcher.drill")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == ["error: drill.gap_s: redis_outage needs a gap > 0 seconds"]


# -- the check itself, on hand-made state ----------------------------------------------------------------


def _event(id_: str):
    return SimpleNamespace(id=SimpleNamespace(value=id_))


def _order(*event_ids: str):
    return SimpleNamespace(events=[_event(e) for e in event_ids], event_count=len(event_ids))


def _position(*fill_ids: str):
    return SimpleNamespace(events=[_event(f) for f in fill_ids])


def _entries(*rows) -> list[Entry]:
    return [Entry(line=i + 1, kind=k, id=id_, event=ev, event_id=eid, n=n) for i, (k, id_, ev, eid, n) in enumerate(rows)]


def test_compare_checks_orders_by_event_id_and_positions_by_their_fill():
    entries = _entries(
        ("order", "O-1", "OrderInitialized", "i1", None),
        ("order", "O-1", "OrderFilled", "f1", 2),
        ("position", "P-1", "PositionOpened", None, 1),
        ("order", "O-2", "OrderInitialized", "i2", None),
        ("order", "O-2", "OrderFilled", "f2", 2),
        ("position", "P-1", "PositionClosed", None, 2),
        ("order", "O-3", "OrderInitialized", "i3", None),
        ("order", "O-3", "OrderFilled", "f3", 2),
        ("position", "P-1", "PositionOpened", None, 1),  # NETTING reopen: the list starts over
        ("order", "O-4", "OrderInitialized", "i4", None),  # last line: in flight when killed
    )
    state = PersistedState(trader_key="t")
    state.orders = {"O-1": _order("i1", "f1"), "O-2": _order("i2", "f2"), "O-3": _order("i3", "f3")}
    state.order_keys = set(state.orders)
    state.positions = {"P-1": _position("f3")}
    state.position_keys = {"P-1"}

    ok = compare(list(entries), state, killed=True)
    assert (ok.written, ok.superseded, ok.in_flight, ok.lost) == (10, 2, 1, [])
    assert ok.recovered == ok.checked == 7

    # Not killed: the order the ledger named must exist.
    assert compare(list(entries), state, killed=False).lost_ids == ["O-4"]

    # A lost event (the fill of O-2 missing) and a lost reopen (Redis still holds the closed generation).
    state.orders["O-2"] = _order("i2")
    state.positions = {"P-1": _position("f1", "f2")}
    lost = compare(list(entries), state, killed=True)
    assert lost.lost_ids == ["O-2", "P-1"]
    assert "event missing" in lost.lost[0].reason


# -- the drills ------------------------------------------------------------------------------------



@pytest.mark.slow
def test_graceful_drill_loses_nothing_and_the_node_comes_back(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=graceful")
    assert result.returncode == 0, out[-4000:]
    resilient = lane(report, "resilient")
    assert resilient["passed"] and resilient["check"]["events_lost"] == 0, resilient
    assert resilient["check"]["events_written"] > 10
    assert resilient["check"]["events_recovered"] == resilient["check"]["events_checked"] > 0
    assert resilient["verify"]["exit"] == 0 and resilient["verify"]["status"] == "sound"
    assert resilient["recovery"]["restart_exit"] == 0
    assert resilient["recovery"]["restart_to_running_s"] > 0
    assert resilient["recovery"]["counts_match_verify"] is True
    assert "Drill graceful: PASSED" in out


@pytest.mark.slow
def test_kill9_sync_loses_nothing_and_native_is_shown_beside_it(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=kill9", "drill.backends=[resilient,native]")
    assert result.returncode == 0, out[-4000:]
    resilient, native = lane(report, "resilient"), lane(report, "native")
    assert resilient["durability"] == "sync" and native["durability"] == "buffered"
    assert resilient["node_exit"] == -9 and native["node_exit"] == -9
    assert resilient["passed"] and resilient["check"]["events_lost"] == 0, resilient["check"]
    assert resilient["recovery"]["restart_exit"] == 0, resilient["recovery"]
    assert native["promise"].startswith("none")
    assert native["check"]["events_written"] > 10
    assert "native" in out and "resilient" in out


@pytest.mark.slow
def test_planted_loss_is_detected_and_named_even_where_buffered_kill9_may_lose_the_last_interval(tmp_path):
    result, out, report = run_drill(
        tmp_path, "drill=kill9", "drill.durability=buffered", "drill.restart_node=false", "drill.plant_loss=3",
    )
    assert result.returncode == 4, out[-4000:]
    resilient = lane(report, "resilient")
    planted = {p["id"] for p in resilient["planted_loss"]}
    assert len(planted) == 3
    assert planted <= set(resilient["check"]["lost_ids"])
    assert any(f.startswith("planted loss detected") for f in resilient["failures"])
    # Anything lost beyond the planted orders is only from the last buffer interval before the kill.
    window = [x for x in resilient["check"]["lost"] if x["id"] not in planted]
    assert all(x["ms_before_fault"] <= 100 + 250 for x in window), window
    late = [f for f in resilient["failures"] if "older than the buffer window" in f]
    assert late and all(any(p in f for p in planted) for f in late)
    for order_id in planted:
        assert order_id in out
    # mode=verify sees the damage too (the manifest records more than Redis holds).
    assert resilient["verify"]["exit"] == 4


@pytest.mark.slow
def test_redis_restart_drill_loses_nothing(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=redis_restart")
    assert result.returncode == 0, out[-4000:]
    resilient = lane(report, "resilient")
    assert resilient["node_exit"] == 0 and resilient["check"]["events_lost"] == 0, resilient
    assert resilient["node_log"]["outages_logged"] >= 1 and resilient["node_log"]["resumed"], resilient["node_log"]


@pytest.mark.slow
def test_redis_outage_drill_loses_nothing_and_shows_what_native_loses(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=redis_outage", "drill.gap_s=1.5", "drill.backends=[resilient,native]")
    assert result.returncode == 0, out[-4000:]
    resilient, native = lane(report, "resilient"), lane(report, "native")
    assert resilient["node_exit"] == 0 and resilient["check"]["events_lost"] == 0, resilient["check"]
    resumed = resilient["node_log"]["resumed"]
    assert resumed and resumed[-1]["resent_writes"] > 0 and resumed[-1]["outage_s"] >= 1.0
    assert native["passed"]  # no promise: its losses are reported, not failed
    assert native["check"]["events_lost"] == len(native["check"]["lost"])
    assert f"LOST {native['check']['events_lost']} event" in out or native["check"]["events_lost"] == 0


@pytest.mark.slow
def test_sentinel_failover_drill_forced_and_killed_master_loses_nothing(tmp_path):
    # The default lease TTL (10 s) on purpose: SENTINEL FAILOVER leaves the old master writable for
    # seconds, and the lease must be renewed on the new master meanwhile or the node stops (exit 6).
    result, out, report = run_drill(tmp_path, "drill=sentinel_failover", timeout_s=300)
    assert result.returncode == 0, out[-4000:]
    resilient = lane(report, "resilient")
    assert resilient["node_exit"] == 0 and resilient["check"]["events_lost"] == 0, resilient["check"]
    steps = [f["step"] for f in report["fault"] if "step" in f]
    assert steps == ["command", "kill_master"]
    settles = [f["what"] for f in report["fault"] if f["what"].startswith("topology ")]
    assert len(settles) == 2 and all(w.startswith("topology settled:") for w in settles), settles
    assert len(resilient["node_log"]["failovers_followed"]) >= 1


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "steps"), [("cluster_failover", ["command", "kill_master"]),
                                                 ("cluster_reshard", ["reshard"])])
def test_cluster_drills_lose_nothing(tmp_path, scenario, steps):
    result, out, report = run_drill(tmp_path, f"drill={scenario}", timeout_s=300)
    assert result.returncode == 0, out[-4000:]
    resilient = lane(report, "resilient")
    assert resilient["node_exit"] == 0 and resilient["check"]["events_lost"] == 0, resilient["check"]
    assert [f["step"] for f in report["fault"] if "step" in f] == steps
    settles = [f["what"] for f in report["fault"] if f["what"].startswith("topology ")]
    assert settles and all(w.startswith("topology settled:") for w in settles), settles
    assert len(resilient["node_log"]["failovers_followed"]) >= 1


@pytest.mark.slow
def test_several_traders_on_one_cluster_spread_over_the_shards_lose_nothing(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=cluster_failover", "drill.traders=3", timeout_s=300)
    assert result.returncode == 0, out[-4000:]
    lanes = {item["backend"]: item for item in report["lanes"]}
    assert sorted(lanes) == ["resilient-1", "resilient-2", "resilient-3"]
    assert all(item["check"]["events_lost"] == 0 for item in lanes.values()), [i["check"] for i in lanes.values()]
    primaries = set()
    for name in lanes:
        log = (tmp_path / "drill" / name / "node.log").read_text()
        primaries.add(re.search(r"PASS cluster-state: .* on primary (\S+)", log).group(1))
    assert len(primaries) == 3, primaries  # one trader per shard: the failover hits one, the others go on


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "scenario"), [
    ("SIGINT", 130, ["drill=graceful", "drill.fault_after_s=[60,60]"]),
    ("SIGTERM", 143, ["drill=graceful", "drill.fault_after_s=[60,60]"]),
    ("SIGHUP", 129, ["drill=graceful", "drill.fault_after_s=[60,60]"]),
    # Mid-soak: faults every 0.5 s (a Redis gap or a maxmemory limit may be in progress).
    ("SIGTERM", 143, ["drill=chaos", "drill.duration_s=600", "drill.fault_every_s=[0.5,0.5]"]),
])
def test_a_stop_signal_ends_the_drill_with_one_line_and_leaves_no_server_behind(tmp_path, sig, code, scenario):
    import re
    import signal

    import redis

    from tests.support.launcher_cli import start_launcher
    from tests.test_bootstrap_e2e import wait_for_line

    log_path = tmp_path / "drill.log"
    drill = start_launcher([*FAST, *scenario, f"drill.workdir={tmp_path / 'drill'}"],
                           cwd=tmp_path, log_path=log_path, module="launcher.drill")
    with killed_on_exit(drill):
        text = wait_for_line(log_path, "nodes trading", timeout_s=120, proc=drill)
        if "drill=chaos" in scenario:
            wait_for_line(log_path, "chaos for 600s", timeout_s=30, proc=drill)
        port = int(re.search(r"servers: redis 127\.0\.0\.1:(\d+)", text).group(1))
        drill.send_signal(getattr(signal, sig))  # the drill only, as if its node had already gone
        assert drill.wait(timeout=60) == code
    out = log_path.read_text()
    assert f"error: stopped by {sig} the drill; the servers and nodes it started were stopped" in out
    assert "Traceback" not in out
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1).ping()


# -- drills that attack the promises: an outage or a failover with no replica left, then SIGKILL of the node --

# The scenario's lease TTL (10 s) made the restart wait ~5 s for the killed node's lease. 6 s still
# outlives the node's 1.5 s into the 2.5 s outage (renewals every 2 s: the lease runs out >= 4 s into
# it, so the node is SIGKILLed holding it), and the restart still waits the rest out (~1 s).
OUTAGE_KILL9_LEASE = "drill.lease_ttl_s=6"


@pytest.mark.slow
def test_outage_kill9_sync_loses_nothing_and_the_node_comes_back(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=outage_kill9", "drill.gap_s=2.5", "drill.kill_node_after_s=1.5",
                                    "drill.restart_run_s=1", OUTAGE_KILL9_LEASE)
    assert result.returncode == 0, out[-4000:]
    resilient = lane(report, "resilient")
    assert resilient["node_exit"] == -9 and resilient["check"]["events_lost"] == 0, resilient["check"]
    kills = [f["what"] for f in report["fault"]]
    assert kills[0] == "SIGKILL to Redis" and kills[1].startswith("SIGKILL to the node(s), 1.5s into the outage")
    # The restart comes before the check (the node must hand over what it held), and it came back.
    assert resilient["recovery"]["restart_exit"] == 0 and resilient["recovery"]["restart_to_running_s"] > 0
    assert "nodes restarted before the check" in out


@pytest.mark.slow
def test_outage_kill9_buffered_loses_at_most_the_last_buffer_interval(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=outage_kill9", "drill.durability=buffered", "drill.gap_s=2.5",
                                    "drill.kill_node_after_s=1.5", "drill.restart_run_s=1", OUTAGE_KILL9_LEASE)
    resilient = lane(report, "resilient")
    # Whatever is lost is named, with its age relative to the node's kill.
    assert all(x["id"] in out for x in resilient["check"]["lost"][:12])
    assert all(x["ms_before_fault"] <= 100 + 250 for x in resilient["check"]["lost"]), resilient["failures"]
    assert result.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_sentinel_failover_to_a_master_without_replica_then_node_kill9_loses_nothing(tmp_path):
    # The degraded topology: the master is SIGKILLed and stays down, the new master has no replica
    # (min_replica_acks=1 cannot be met); then the node is SIGKILLed there, restarted, and checked.
    result, out, report = run_drill(
        tmp_path, "drill=sentinel_failover", "drill.restart_old_master=false", "drill.failover_steps=[kill_master]",
        "drill.kill_node_after_failover=true", "drill.durability=buffered", "drill.restart_run_s=1",
        "drill.node_start_timeout_s=20", "drill.lease_ttl_s=5", "drill.stop_timeout_s=20", timeout_s=300,
    )
    resilient = lane(report, "resilient")
    steps = [f["what"] for f in report["fault"] if f.get("step") == "kill_master"]
    assert len(steps) == 1 and "NOT started again (the new master has 0 replica(s))" in steps[0]
    assert any(f["what"].startswith("SIGKILL to the node(s)") for f in report["fault"])
    assert resilient["node_exit"] == -9
    # buffered: only the last buffer interval before the node's kill may be lost; the node must come back.
    assert all(x["ms_before_fault"] <= 100 + 250 for x in resilient["check"]["lost"]), resilient["failures"]
    assert resilient["recovery"]["restart_to_running_s"] is not None, resilient["recovery"]
    assert result.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_two_replicas_with_fewer_replica_acks_refuse_to_start(tmp_path):
    # Preflight demands min_replica_acks >= the promotable replicas: the node exits 7 and the drill cannot run.
    result, out, _ = run_drill(tmp_path, "drill=sentinel_failover", "drill.replicas=2", "drill.min_replica_acks=1",
                               "drill.node_start_timeout_s=60", timeout_s=200)
    assert result.returncode == 3, out[-4000:]
    assert "node exited (7) before trading" in out
    assert "replica-acks" in out and "cache.sentinel.min_replica_acks=2" in out


@pytest.mark.slow
def test_two_replicas_repeated_sentinel_failover_loses_nothing(tmp_path):
    result, out, report = run_drill(tmp_path, "drill=sentinel_failover", "drill.replicas=2",
                                    "drill.failover_steps=[command,command]", timeout_s=300)
    assert result.returncode == 0, out[-4000:]
    assert "with 2 replica(s)" in report["servers"]
    resilient = lane(report, "resilient")
    assert resilient["node_exit"] == 0 and resilient["check"]["events_lost"] == 0, resilient["check"]
    assert [f["step"] for f in report["fault"] if "step" in f] == ["command", "command"]


@pytest.mark.slow
def test_chaos_soak_short_loses_nothing_and_samples_the_node(tmp_path):
    result, out, report = run_drill(
        tmp_path, "drill=chaos", "drill.duration_s=12", "drill.fault_every_s=[2,2.5]", "drill.sample_interval_s=0.5",
        "drill.seed=5", timeout_s=200,
    )
    faults = [f for f in report["fault"] if "fault" in f]
    assert 3 <= len(faults) <= 6, report["fault"]
    assert all(isinstance(f["at_s"], float) and not f["what"].split(": ", 1)[1].startswith("could not apply")
               for f in faults), faults
    resilient = lane(report, "resilient")
    samples = resilient["samples"]
    assert len(samples) >= 15 and all(s["rss_mb"] > 0 for s in samples)
    assert any(s["pending"] is not None for s in samples), samples[:5]
    assert "cache_writes_pending max" in out
    assert resilient["check"]["events_lost"] == 0, resilient["failures"]
    assert result.returncode == 0, out[-4000:]
