"""
Typed configuration of ``python -m launcher.drill`` (``conf/drill_app.yaml``).

The scenario is a config group, ``conf/drill/{graceful,kill9,redis_restart,redis_outage,
outage_kill9,sentinel_failover,chaos,cluster_failover,cluster_reshard}.yaml``; every key below
can be overridden on the command line as ``drill.<key>=<value>``. Composition mirrors the launcher's own (``launcher/config/compose.py``):
one line and exit code 2 for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from launcher.config.compose import compose_config
from launcher.config.compose import to_object
from launcher.config.schema import Backend
from launcher.config.schema import Durability
from launcher.config.schema import check_numbers
from launcher.errors import ConfigError
from launcher.store.connection import parse_address


CONFIG_NAME = "drill_app"


class Scenario(str, Enum):
    graceful = "graceful"  # SIGTERM the node: a clean stop, then restart it
    kill9 = "kill9"  # SIGKILL the node, then restart it
    redis_restart = "redis_restart"  # SIGTERM Redis (AOF fsynced), start it again; the node keeps running
    redis_outage = "redis_outage"  # SIGKILL Redis, start it again after gap_s; the node keeps running
    sentinel_failover = "sentinel_failover"  # SENTINEL FAILOVER and/or SIGKILL of the master; the node keeps running
    outage_kill9 = "outage_kill9"  # SIGKILL Redis, then SIGKILL the node while Redis is down; both restart
    chaos = "chaos"  # seeded random faults for duration_s; the node keeps running
    cluster_failover = "cluster_failover"  # Redis Cluster: CLUSTER FAILOVER and/or SIGKILL of the trader's primary
    cluster_reshard = "cluster_reshard"  # Redis Cluster: the trader's slot migrated to another primary mid-run


# The scenarios whose servers stay up (a topology changes under the running node) and run `failover_steps`.
TOPOLOGY_SCENARIOS = (Scenario.sentinel_failover, Scenario.cluster_failover, Scenario.cluster_reshard)
CLUSTER_SCENARIOS = (Scenario.cluster_failover, Scenario.cluster_reshard)


class Topology(str, Enum):
    single = "single"  # one Redis server
    sentinel = "sentinel"  # a master, `replicas` replicas and three sentinels


class ChaosFault(str, Enum):
    redis_kill = "redis_kill"  # SIGKILL the (master) server, start it again from its AOF after a short gap
    redis_restart = "redis_restart"  # SIGTERM the (master) server (AOF fsynced), start it again
    client_kill = "client_kill"  # CLIENT KILL TYPE normal: every client connection of the master dropped
    slow = "slow"  # DEBUG SLEEP on the master: it answers nothing for a moment
    maxmemory = "maxmemory"  # CONFIG SET maxmemory just above used_memory (noeviction), then back to 0
    failover = "failover"  # SENTINEL FAILOVER (sentinel topology only)


class FailoverStep(str, Enum):
    command = "command"  # SENTINEL FAILOVER <master>: a coordinated switch
    kill_master = "kill_master"  # SIGKILL the current master; sentinels elect a replica; the old master rejoins
    reshard = "reshard"  # cluster: migrate the trader's slot to another primary (SETSLOT + MIGRATE)


@dataclass
class DrillSettings:
    scenario: Scenario = Scenario.graceful
    backends: list[Backend] = field(default_factory=lambda: [Backend.resilient])
    # Durability of the resilient backend (the native adapter only has its own buffered writes).
    durability: Durability = Durability.buffered
    buffer_interval_ms: int = 100
    seed: int = 1
    actions_per_second: float = 50.0
    warmup_events: int = 20  # ledger events each node must have written before the fault window opens
    fault_after_s: list[float] = field(default_factory=lambda: [1.0, 4.0])  # fault at a random moment in here
    gap_s: float = 3.0  # redis_outage: how long Redis stays down
    failover_steps: list[FailoverStep] = field(default_factory=lambda: [FailoverStep.command, FailoverStep.kill_master])
    after_fault_s: float = 3.0  # how long the node keeps running once the servers are back
    restart_node: bool = False  # start the node again after the check (recovery time to RUNNING)
    restart_run_s: float = 3.0
    plant_loss: int = 0  # delete/trim this many persisted orders before the check (tests the checking)
    loss_window_slack_ms: float = 250.0  # buffered kill9: allowed age of a lost event beyond buffer_interval_ms
    lease_ttl_s: float | None = None  # node's bootstrap.lease_ttl_s; default by scenario
    redis_address: str | None = None  # "host:port" of a running server to use (graceful, kill9 only)
    sentinel_nodes: list[str] = field(default_factory=list)  # running sentinels to use (failover command only)
    master_name: str = "mymaster"
    replicas: int = 1  # replicas of the Sentinel topology the drill starts
    # sentinel_failover: start a killed master again (as a replica). false leaves the degraded topology:
    # the new master has one replica fewer (none with replicas=1).
    restart_old_master: bool = True
    # sentinel_failover: SIGKILL the node(s) after the last step instead of SIGTERM, start them again, check after.
    kill_node_after_failover: bool = False
    # The nodes' cache.sentinel.min_replica_acks; None: `replicas` (what preflight demands).
    min_replica_acks: int | None = None
    kill_node_after_s: float = 2.0  # outage_kill9: how long the node runs on with Redis down before its SIGKILL
    duration_s: float = 60.0  # chaos: how long the faults go on
    fault_every_s: list[float] = field(default_factory=lambda: [3.0, 8.0])  # chaos: pause between faults [min,max]
    chaos_faults: list[ChaosFault] = field(
        default_factory=lambda: [ChaosFault.redis_kill, ChaosFault.redis_restart, ChaosFault.client_kill,
                                 ChaosFault.slow, ChaosFault.maxmemory, ChaosFault.failover],
    )
    topology: Topology = Topology.single  # chaos: single server or Sentinel (sentinel_failover is always sentinel)
    sample_interval_s: float = 1.0  # chaos: node RSS and cache_writes_pending sampled this often
    settle_timeout_s: float = 60.0  # sentinel_failover: wait this long for the topology to be whole between steps
    trader_prefix: str = "DRILL"
    traders: int = 1  # nodes per backend, each its own trader id (on a cluster their slots spread over the shards)
    workdir: str | None = None  # default var/drill/<scenario>-<UTC time>
    report_path: str | None = None  # also write the JSON report here
    node_overrides: list[str] = field(default_factory=list)  # more `python -m launcher` overrides for the nodes
    node_start_timeout_s: float = 90.0
    stop_timeout_s: float = 60.0
    post_stop_s: float = 0.5  # node's run.post_stop_s


@dataclass
class DrillAppConfig:
    drill: DrillSettings = field(default_factory=DrillSettings)


def register() -> None:
    ConfigStore.instance().store(name="drill_schema", node=DrillAppConfig)


def compose_drill_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/{CONFIG_NAME}.yaml`` with `overrides`; ConfigError (one line) on any problem."""
    register()
    return compose_config(overrides, config_name=CONFIG_NAME)


def to_drill_settings(cfg: DictConfig):
    app: DrillAppConfig = to_object(cfg)
    return validate_drill(app.drill)


def validate_drill(d: DrillSettings) -> DrillSettings:
    """Semantic checks beyond the schema; ConfigError naming the key."""
    check_numbers(d, "drill.")
    if not d.backends:
        raise ConfigError("drill.backends", "needs at least one of resilient, native")
    if len(set(d.backends)) != len(d.backends):
        raise ConfigError("drill.backends", "lists a backend twice")
    if len(d.fault_after_s) != 2 or not 0 <= d.fault_after_s[0] <= d.fault_after_s[1]:
        raise ConfigError("drill.fault_after_s", f"must be [min, max] seconds with 0 <= min <= max, was {d.fault_after_s}")
    for key in ("gap_s", "after_fault_s", "restart_run_s", "loss_window_slack_ms", "post_stop_s"):
        if getattr(d, key) < 0:
            raise ConfigError(f"drill.{key}", "must be >= 0")
    for key in ("actions_per_second", "node_start_timeout_s", "stop_timeout_s", "settle_timeout_s", "duration_s",
                "sample_interval_s"):
        if getattr(d, key) <= 0:
            raise ConfigError(f"drill.{key}", "must be positive")
    if d.buffer_interval_ms < 0:
        raise ConfigError("drill.buffer_interval_ms", "must be >= 0")
    if d.plant_loss < 0 or d.warmup_events < 0:
        raise ConfigError("drill.plant_loss" if d.plant_loss < 0 else "drill.warmup_events", "must be >= 0")
    if d.lease_ttl_s is not None and d.lease_ttl_s <= 0:
        raise ConfigError("drill.lease_ttl_s", "must be positive seconds")
    if d.replicas < 1:
        raise ConfigError("drill.replicas", "the Sentinel drill needs at least one replica")
    if not 1 <= d.traders <= 8:
        raise ConfigError("drill.traders", "must be 1 to 8 nodes per backend")
    if "-" in d.trader_prefix or ":" in d.trader_prefix or not d.trader_prefix.isascii() or not d.trader_prefix:
        raise ConfigError("drill.trader_prefix", "must be a non-empty ASCII name without '-' or ':'")
    if d.min_replica_acks is not None and d.min_replica_acks < 0:
        raise ConfigError("drill.min_replica_acks", "must be >= 0")
    if len(d.fault_every_s) != 2 or not 0 <= d.fault_every_s[0] <= d.fault_every_s[1]:
        raise ConfigError("drill.fault_every_s", f"must be [min, max] seconds with 0 <= min <= max, was {d.fault_every_s}")
    if d.scenario == Scenario.outage_kill9 and not 0 < d.kill_node_after_s <= d.gap_s:
        raise ConfigError("drill.kill_node_after_s", f"outage_kill9 kills the node while Redis is down: 0 < it <= gap_s ({d.gap_s:g})")
    if d.scenario == Scenario.chaos:
        _validate_chaos(d)
    if d.scenario in CLUSTER_SCENARIOS:
        _validate_cluster(d)
    elif d.scenario == Scenario.sentinel_failover:
        if FailoverStep.reshard in d.failover_steps:
            raise ConfigError("drill.failover_steps", "reshard is a Redis Cluster step (drill=cluster_reshard)")
        if not d.failover_steps:
            raise ConfigError("drill.failover_steps", "needs at least one of command, kill_master")
        _validate_failover_steps(d)
        if d.redis_address:
            raise ConfigError("drill.redis_address", "sentinel_failover needs sentinels (drill.sentinel_nodes), not one server")
        if d.sentinel_nodes and FailoverStep.kill_master in d.failover_steps:
            raise ConfigError(
                "drill.failover_steps",
                "kill_master needs servers the drill started itself; with drill.sentinel_nodes use [command]",
            )
        for node in d.sentinel_nodes:
            try:
                parse_address(node)
            except ValueError as e:
                raise ConfigError("drill.sentinel_nodes", str(e)) from None
    else:
        if d.sentinel_nodes:
            raise ConfigError("drill.sentinel_nodes", f"only drill=sentinel_failover uses sentinels (scenario {d.scenario.value})")
        if d.redis_address:
            if d.scenario not in (Scenario.graceful, Scenario.kill9):
                raise ConfigError(
                    "drill.redis_address",
                    f"{d.scenario.value} stops and starts Redis, so it needs a server the drill starts itself",
                )
            try:
                parse_address(d.redis_address)
            except ValueError as e:
                raise ConfigError("drill.redis_address", str(e)) from None
    if d.scenario in (Scenario.redis_outage, Scenario.outage_kill9) and d.gap_s <= 0:
        raise ConfigError("drill.gap_s", f"{d.scenario.value} needs a gap > 0 seconds")
    return d


def _validate_cluster(d: DrillSettings) -> None:
    if Backend.native in d.backends:
        raise ConfigError(
            "drill.backends",
            "native is impossible on a Redis Cluster (NautilusTrader's adapter has no cluster client): use [resilient]",
        )
    if d.redis_address or d.sentinel_nodes:
        key = "drill.redis_address" if d.redis_address else "drill.sentinel_nodes"
        raise ConfigError(key, f"{d.scenario.value} starts its own Redis Cluster")
    if not d.failover_steps:
        raise ConfigError("drill.failover_steps", "needs at least one of command, kill_master, reshard")
    if not d.restart_old_master:
        raise ConfigError("drill.restart_old_master", "the cluster drills always start a killed primary again")


def _validate_failover_steps(d: DrillSettings) -> None:
    """Every step needs a replica to promote; a killed master that is not started again leaves one fewer."""
    left = d.replicas
    for i, step in enumerate(d.failover_steps):
        if left < 1:
            raise ConfigError("drill.failover_steps",
                              f"step {i + 1} ({step.value}) has no replica left to promote (drill.restart_old_master=false)")
        if step == FailoverStep.kill_master and not d.restart_old_master:
            left -= 1


def _validate_chaos(d: DrillSettings) -> None:
    if not d.chaos_faults:
        raise ConfigError("drill.chaos_faults", "needs at least one fault")
    if ChaosFault.failover in d.chaos_faults and d.topology != Topology.sentinel and len(d.chaos_faults) == 1:
        raise ConfigError("drill.chaos_faults", "failover needs drill.topology=sentinel")
    if d.fault_every_s[1] <= 0:
        raise ConfigError("drill.fault_every_s", "chaos needs a pause > 0 between faults")
