"""
Fixtures that start real redis-server processes (masters, replicas, sentinels) on free
loopback ports in temporary directories, and stop them afterwards. Never port 6379.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from launcher.servers import redis_process
from launcher.servers.redis_process import ClusterTopology
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import SentinelTopology
from tests.support import ports
from tests.support.fake_credentials import FAKE


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Environment variables that would leak the developer's own Redis settings into tests.
for _name in ("REDIS_HOST", "REDIS_PORT", "REDIS_USER", "REDIS_PASSWORD", "REDIS_SSL", "REDIS_DB",
              "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_CLUSTER_NODES", "TRADER_ID"):
    os.environ.pop(_name, None)


# Every port the tests' servers take (RedisProcess, the topologies, the tests' own `free_port()`) is
# claimed for the session, so that pytest-xdist workers never share one (tests/support/ports.py).
# Set before any test module imports `free_port` from there.
redis_process.free_port = ports.free_port


def pytest_unconfigure(config):
    ports.release_ports()


@pytest.fixture
def fake_credentials(monkeypatch):
    """Fake values for every credential variable a venue YAML names (tests/support/fake_credentials.py)."""
    for name, value in FAKE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def launcher_state_dir(tmp_path, monkeypatch):
    """The launcher's default state directory (spill files) per test, never the developer's own."""
    path = tmp_path / "launcher-state"
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(path))
    return path


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server with AOF (appendfsync everysec) on a free loopback port."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def redis_server_always(tmp_path):
    """A redis-server with ``appendfsync always``: every acknowledged write survives SIGKILL of the server."""
    server = RedisProcess(tmp_path / "redis", appendfsync="always").start()
    yield server
    server.kill()


@pytest.fixture
def sentinel_topology(tmp_path):
    """One master, one replica, three sentinels (quorum 2), fast failover timings."""
    topology = SentinelTopology(tmp_path / "sentinel", replicas=1).start()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """
    A real Redis Cluster shared by the session (six nodes: three primaries, one replica each,
    ``cluster-node-timeout`` 1 s). Tests that fail over or move slots leave it healthy (every
    slot covered) for the next; each test uses its own trader id.
    """
    cluster = ClusterTopology(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()
