"""
The ``cluster`` section of ``python -m launcher.bench``: K ``python -m launcher`` processes at
once, one trader each (the flood strategy, resilient backend, buffered), for ``cluster_seconds``,
first against the bench's single Redis server, then against a Redis Cluster of three primaries
with one replica each (``cache.cluster.min_replica_acks=1``). Reported per store: the summed node
events per second, every node's rate, the orders persisted against those submitted, and on the
cluster how the traders spread over the shards (a trader is one hash slot, so K traders use at
most K shards).

The nodes share the machine with every server: on a machine with fewer cores than K nodes plus
the servers, the numbers measure the machine, not the store (the machine section says how many
cores there were).
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

from launcher.bench import measure as M
from launcher.bench.node import STOP_TIMEOUT_S
from launcher.bench.node import Node
from launcher.bench.node import persisted_orders
from launcher.servers.redis_process import ClusterTopology
from launcher.state import layout
from launcher.store.cluster import slot_of


SINGLE = "single_server"
CLUSTER = "cluster"


def _store_args(server: M.Server | None, cluster: ClusterTopology | None) -> list[str]:
    if cluster is not None:
        return ["cache=redis_cluster", f"cache.cluster.nodes=[{','.join(cluster.seed_addresses)}]",
                "cache.cluster.min_replica_acks=1"]
    return ["cache=redis_dev", "cache.redis.embedded=never", f"cache.redis.host={server.host}",
            f"cache.redis.port={server.port}"]


def _persisted(server: M.Server | None, cluster: ClusterTopology | None, trader_id: str) -> tuple[int, str | None]:
    """(orders persisted for `trader_id`, the primary holding them on a cluster)."""
    if cluster is None:
        return persisted_orders(server, trader_id), None
    key = layout.trader_key(trader_id, hash_tag=True)
    owner = cluster.slot_owner(slot_of(key))
    client = owner.client()
    try:
        return int(client.scard(layout.full_key(key, layout.INDEX_ORDERS))), owner.address
    finally:
        client.close()


def parallel_flood(server: M.Server | None, cluster: ClusterTopology | None, k: int, seconds: float, name,
                   workdir: Path) -> dict[str, Any]:
    """K flood nodes started together on one store; their summed and single rates and what was persisted."""
    nodes: list[tuple[str, Path, Node]] = []
    for i in range(k):
        trader_id = name(f"K{i}")
        run_dir = workdir / trader_id
        run_dir.mkdir(parents=True, exist_ok=True)
        args = [*_store_args(server, cluster), f"trader_id={trader_id}", "monitoring.enabled=false", "strategy=flood",
                "cache.backend=resilient", "cache.durability=buffered", f"run.duration_s={seconds:g}",
                f"strategy.params.result_path={run_dir / 'flood.json'}", f"cache.spill_dir={run_dir / 'spill'}"]
        nodes.append((trader_id, run_dir, Node.spawn(args, run_dir, run_dir / "node.log")))
    runs = []
    for trader_id, run_dir, node in nodes:
        code = node.wait(seconds + STOP_TIMEOUT_S + 120)
        result_path = run_dir / "flood.json"
        if code != 0 or not result_path.exists():
            raise RuntimeError(f"flood node {trader_id} exited {code}:\n{node.tail()}")
        result = json.loads(result_path.read_text())
        persisted, shard = _persisted(server, cluster, trader_id)
        runs.append({"trader_id": trader_id, "events_per_s": result["events_per_s"],
                     "orders_submitted": result["orders_submitted"], "persisted_orders": persisted, "shard": shard})
    shards = collections.Counter(run["shard"] for run in runs if run["shard"])
    return {
        "events_per_s": round(sum(run["events_per_s"] for run in runs), 1),
        "orders_submitted": sum(run["orders_submitted"] for run in runs),
        "persisted_orders": sum(run["persisted_orders"] for run in runs),
        "traders_per_shard": dict(shards),
        "runs": runs,
    }


def cluster_section(server: M.Server, cluster: ClusterTopology, k: int, seconds: float, name,
                    workdir: Path) -> dict[str, Any]:
    """The section: the same K nodes against one server, then against the cluster."""
    t0 = time.monotonic()
    single = parallel_flood(server, None, k, seconds, name, workdir / SINGLE)
    clustered = parallel_flood(None, cluster, k, seconds, name, workdir / CLUSTER)
    return {"k": k, "seconds": seconds, SINGLE: single, CLUSTER: clustered,
            "cluster_to_single": round(clustered["events_per_s"] / single["events_per_s"], 3)
            if single["events_per_s"] else None,
            "wall_s": round(time.monotonic() - t0, 1)}


def render_cluster(r: dict[str, Any]) -> list[str]:
    section = r.get("cluster")
    if not section:
        return []
    lines = ["", f"K launchers at once: {section['k']} flood nodes (resilient, buffered), {section['seconds']:g}s, "
                 "one trader each; summed node events per second",
             f"| {'store':<14} | {'events/s (sum)':>14} | {'persisted/submitted':>19} | per node (events/s) | traders per shard",
             f"|{'-' * 16}|{'-' * 16}|{'-' * 21}|{'-' * 21}|{'-' * 19}"]
    for store in (SINGLE, CLUSTER):
        d = section[store]
        per_node = " ".join(f"{run['events_per_s']:,.0f}" for run in d["runs"])
        spread = ", ".join(f"{shard}: {n}" for shard, n in sorted(d["traders_per_shard"].items())) or "-"
        lines.append(f"| {store:<14} | {d['events_per_s']:>14,.0f} | "
                     f"{d['persisted_orders']:>9,} / {d['orders_submitted']:<7,} | {per_node} | {spread}")
    return lines
