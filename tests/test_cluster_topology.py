"""The test cluster itself: six real nodes, every slot covered, failover and slot migration work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from redis.crc import key_slot


pytestmark = pytest.mark.slow


def test_cluster_covers_every_slot_with_a_replica_per_primary(redis_cluster):
    info = redis_cluster.nodes[0].client().cluster("info")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == 16384
    assert int(info["cluster_known_nodes"]) == 6
    owner = redis_cluster.slot_owner(key_slot(b"probe"))
    assert len(redis_cluster.replicas_of(owner)) == 1
    for node in redis_cluster.nodes:
        assert node.workdir.joinpath("nodes.conf").is_file()
        assert node.client().config_get("appendonly")["appendonly"] == "yes"


def test_migrate_slot_moves_the_keys_and_every_node_agrees(redis_cluster):
    slot = key_slot(b"topology-migrate")
    source = redis_cluster.slot_owner(slot)
    source.client().set("{topology-migrate}:a", b"1")
    target = next(n for n in redis_cluster.nodes
                  if n is not source and n.client().info("replication")["role"] == "master")
    assert redis_cluster.migrate_slot(slot, target) == 1
    assert redis_cluster.slot_owner(slot) is target
    assert target.client().get("{topology-migrate}:a") == b"1"
    redis_cluster.wait_healthy()


def test_compose_cluster_profile_is_six_loopback_nodes_and_a_create_step():
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
    services = {name: s for name, s in compose["services"].items() if "cluster" in s.get("profiles", [])}
    nodes = {name: s for name, s in services.items() if name.startswith("redis-cluster-")}
    assert len(nodes) == 6 and "cluster-create" in services
    assert sorted(s["environment"]["PORT"] for s in nodes.values()) == [str(7000 + i) for i in range(6)]
    for service in nodes.values():
        assert "--bind 127.0.0.1" in service["command"] and "--cluster-enabled yes" in service["command"]
        assert "--appendonly yes" in service["command"]
    assert "--cluster-replicas 1" in services["cluster-create"]["command"]
