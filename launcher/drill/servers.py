"""
The Redis servers a drill runs against: ones it starts on free loopback ports (AOF on,
``appendfsync everysec``), or running ones it is given; one server, Sentinel or a Redis
Cluster. Faults are applied here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import redis

from launcher.retry import PollTimeout
from launcher.retry import poll
from launcher.servers.redis_process import LOOPBACK
from launcher.servers.redis_process import ClusterTopology
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import SentinelTopology
from launcher.store.cluster import slot_of
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect
from launcher.store.connection import parse_address


# Servers the drill starts have no password, TLS or other database: the operator's REDIS_* environment
# (meant for their own servers) must not leak into the nodes' settings.
OWN_SERVER_OVERRIDES = ["cache.redis.username=null", "cache.redis.password=null", "cache.redis.ssl=false", "cache.redis.db=0"]
# DEBUG SLEEP (the chaos drill's slow server) is refused unless enabled at start; local connections suffice.
OWN_SERVER_OPTIONS = ["--enable-debug-command", "local"]


@dataclass
class SingleServer:
    """One Redis server: started by the drill (`proc`) or given (`proc` is None)."""

    host: str
    port: int
    proc: RedisProcess | None = None

    @classmethod
    def start(cls, workdir: Path) -> SingleServer:
        proc = RedisProcess(Path(workdir) / "redis", extra=list(OWN_SERVER_OPTIONS)).start()
        return cls(LOOPBACK, proc.port, proc)

    @classmethod
    def given(cls, address: str) -> SingleServer:
        host, port = parse_address(address)
        return cls(host, port)

    def describe(self) -> str:
        owner = "started by the drill, AOF appendfsync everysec" if self.proc else "given"
        return f"redis {self.host}:{self.port} ({owner})"

    def node_overrides(self) -> list[str]:
        base = ["cache=redis_dev", f"cache.redis.host={self.host}", f"cache.redis.port={self.port}", "cache.redis.embedded=never"]
        return base + (OWN_SERVER_OVERRIDES if self.proc is not None else [])

    def master_proc(self) -> RedisProcess:
        if self.proc is None:
            raise RuntimeError("this fault needs a server the drill started")
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()


@dataclass
class SentinelServers:
    """A master with replicas behind three sentinels: started by the drill or given (sentinels only)."""

    master_name: str
    sentinels: list[tuple[str, int]]
    topology: SentinelTopology | None = None
    min_replica_acks: int | None = None  # the nodes' cache.sentinel.min_replica_acks (None: the profile's)

    @classmethod
    def start(cls, workdir: Path, master_name: str, replicas: int, min_replica_acks: int | None = None) -> SentinelServers:
        # Sentinel's own INFO period (10 s), as in production: after SENTINEL FAILOVER the old master
        # stays writable that long, the window the node's lease renewals must get through (docs/drill.md).
        topology = SentinelTopology(Path(workdir) / "sentinel", master_name=master_name, replicas=replicas,
                                    server_extra=list(OWN_SERVER_OPTIONS), info_period_ms=None).start()
        # (Its servers sync a (re)joining replica at once: NO_SYNC_DELAY, so the drill's steps follow each other sooner.)
        return cls(master_name, [parse_address(a) for a in topology.sentinel_addresses], topology,
                   replicas if min_replica_acks is None else min_replica_acks)

    @classmethod
    def given(cls, nodes: list[str], master_name: str, min_replica_acks: int | None = None) -> SentinelServers:
        return cls(master_name, [parse_address(n) for n in nodes], min_replica_acks=min_replica_acks)

    def describe(self) -> str:
        nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        if self.topology is None:
            return f"sentinels {nodes} master '{self.master_name}' (given)"
        return (
            f"sentinels {nodes} master '{self.master_name}' on {self.master_port()} with "
            f"{len(self.topology.replica_procs)} replica(s) (started by the drill, AOF appendfsync everysec)"
        )

    def node_overrides(self) -> list[str]:
        nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        base = ["cache=redis_sentinel", f"cache.sentinel.nodes=[{nodes}]", f"cache.sentinel.master_name={self.master_name}"]
        if self.min_replica_acks is not None:
            base.append(f"cache.sentinel.min_replica_acks={self.min_replica_acks}")
        return base + (OWN_SERVER_OVERRIDES if self.topology is not None else [])

    def _sentinel(self, i: int = 0) -> redis.Redis:
        host, port = self.sentinels[i % len(self.sentinels)]
        return redis.Redis(host=host, port=port, socket_timeout=2.0)

    def master_address(self) -> tuple[str, int]:
        for i in range(len(self.sentinels)):
            try:
                host, port = self._sentinel(i).sentinel_get_master_addr_by_name(self.master_name)
                return (host.decode() if isinstance(host, bytes) else str(host)), int(port)
            except (redis.exceptions.RedisError, TypeError):
                continue
        raise RuntimeError(f"no sentinel answers for master '{self.master_name}'")

    def master_port(self) -> int:
        return self.master_address()[1]

    def failover_command(self, timeout_s: float = 30.0) -> str:
        """SENTINEL FAILOVER; return once a new master took over."""
        old = self.master_address()
        self._sentinel().sentinel_failover(self.master_name)
        new = self._wait_new_master(old, timeout_s)
        return f"SENTINEL FAILOVER: master {old[0]}:{old[1]} -> {new[0]}:{new[1]}"

    def master_proc(self) -> RedisProcess:
        if self.topology is None:
            raise RuntimeError("this fault needs servers the drill started")
        return self.topology.server_on_port(self.master_port())

    def kill_master(self, timeout_s: float = 30.0, restart: bool = True) -> str:
        """SIGKILL the current master, wait for the sentinels' new master, and with `restart` start the
        killed one again (from its AOF; the sentinels turn it into a replica of the new master)."""
        if self.topology is None:
            raise RuntimeError("kill_master needs servers the drill started")
        old = self.master_address()
        proc = self.topology.server_on_port(old[1])
        proc.kill()
        t0 = time.monotonic()
        new = self._wait_new_master(old, timeout_s)
        elected_s = time.monotonic() - t0
        if not restart:
            left = sum(1 for p in self.topology.servers if p.running) - 1
            return (f"SIGKILL master {old[0]}:{old[1]}; sentinels elected {new[0]}:{new[1]} after {elected_s:.1f}s; "
                    f"killed server NOT started again (the new master has {left} replica(s))")
        # Brought back as an operator would: from its own AOF, as a replica of the new master.
        args = list(proc.extra)
        if "--replicaof" in args:
            i = args.index("--replicaof")
            del args[i:i + 3]
        proc.extra = [*args, "--replicaof", new[0], str(new[1])]
        proc.start()
        return (
            f"SIGKILL master {old[0]}:{old[1]}; sentinels elected {new[0]}:{new[1]} after {elected_s:.1f}s; "
            "killed server started again from its AOF as a replica"
        )

    def settle(self, timeout_s: float = 60.0) -> tuple[bool, str]:
        """
        Wait until the topology is whole again: every server the drill started is a replica of
        the current master with its link up and no replication lag (a server the drill killed and
        left down, `restart_old_master=false`, is not waited for; given sentinels: the
        sentinels see at least one replica with its link up). Returns (settled, how).
        """
        t0 = time.monotonic()
        how = "not checked"
        target: dict[int, int] = {}  # master port -> the offset its replicas must reach

        def settled() -> bool:
            nonlocal how
            try:
                ok, how = self._settled(target)
            except (redis.exceptions.RedisError, RuntimeError, KeyError) as e:
                ok, how = False, f"{type(e).__name__}: {e}"
            return ok

        try:
            ok = poll(settled, timeout_s, "the topology settling", interval_s=0.1)
        except PollTimeout:
            ok = False
        return ok, f"{how} after {time.monotonic() - t0:.1f}s"

    def _settled(self, target: dict[int, int]) -> tuple[bool, str]:
        master = self.master_address()
        if self.topology is None:
            replicas = self._sentinel().sentinel_slaves(self.master_name)
            good = [r for r in replicas if r.get("master-link-status") == "ok" and not r.get("is_sdown")]
            return bool(good), f"sentinels see {len(good)} replica(s) of {master[0]}:{master[1]} with link ok"
        info = redis.Redis(host=master[0], port=master[1], socket_timeout=1.0).info("replication")
        if info.get("role") != "master":
            return False, f"{master[0]}:{master[1]} is not (yet) a master"
        offset = int(info.get("master_repl_offset", 0))
        others = [p for p in self.topology.servers if p.port != master[1] and p.running]
        for proc in others:
            r = proc.client(socket_timeout=1.0).info("replication")
            if r.get("role") != "slave" or int(r.get("master_port", 0)) != master[1] or r.get("master_link_status") != "up":
                return False, f"{proc.address} is not yet a replica of {master[0]}:{master[1]} with its link up"
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]
        # Caught up with what the master held when the topology first looked whole: its own offset
        # keeps moving while the nodes write (and sentinels publish), and replicas acknowledge only
        # every second, so offsets read together are rarely equal.
        offset = target.setdefault(master[1], offset)
        if len(online) < len(others) or any(int(v.get("offset", -1)) < offset for v in online):
            return False, f"{len(online)}/{len(others)} replica(s) online and caught up"
        return True, f"{len(others)} replica(s) of {master[0]}:{master[1]} online and caught up"

    def _wait_new_master(self, old: tuple[str, int], timeout_s: float) -> tuple[str, int]:
        def new_master() -> tuple[str, int] | None:
            address = self.master_address()
            if address[1] != old[1]:
                role = redis.Redis(host=address[0], port=address[1], socket_timeout=1.0).info("replication")["role"]
                if role == "master":
                    return address
            return None

        return poll(new_master, timeout_s, f"a new master for '{self.master_name}'", interval_s=0.05,
                    ignore=(redis.exceptions.RedisError, RuntimeError))

    def _wait_replica(self, proc: RedisProcess, master: tuple[str, int], timeout_s: float) -> bool:
        def replica_of_master() -> bool:
            info = proc.client(socket_timeout=1.0).info("replication")
            return (info.get("role") == "slave" and int(info.get("master_port", 0)) == master[1]
                    and info.get("master_link_status") == "up")

        try:
            return poll(replica_of_master, timeout_s, f"{proc.address} replicating {master[0]}:{master[1]}",
                        interval_s=0.05, ignore=(redis.exceptions.RedisError,))
        except PollTimeout:
            return False

    def stop(self) -> None:
        if self.topology is not None:
            self.topology.stop()


@dataclass
class ClusterServers:
    """
    A Redis Cluster the drill starts (three primaries, one replica each). Its faults act on the
    shard of one trader: `follow` names the trader key whose slot they target.
    """

    topology: ClusterTopology
    slot: int | None = None

    @classmethod
    def start(cls, workdir: Path) -> ClusterServers:
        return cls(ClusterTopology(Path(workdir) / "cluster").start())

    def follow(self, trader_key: str) -> None:
        self.slot = slot_of(trader_key)

    def describe(self) -> str:
        t = self.topology
        return (f"redis cluster {','.join(t.seed_addresses)} ({t.primaries} primaries, {t.replicas_per_primary} "
                "replica each; started by the drill, AOF appendfsync everysec)")

    def node_overrides(self) -> list[str]:
        nodes = ",".join(self.topology.seed_addresses)
        return ["cache=redis_cluster", f"cache.cluster.nodes=[{nodes}]", "cache.cluster.min_replica_acks=1",
                *OWN_SERVER_OVERRIDES]

    def _owner(self) -> RedisProcess:
        if self.slot is None:
            raise RuntimeError("the cluster drill's servers follow no trader slot yet")
        return self.topology.slot_owner(self.slot)

    def failover_command(self, timeout_s: float = 30.0) -> str:
        """CLUSTER FAILOVER on a replica of the trader's primary; return once it took over."""
        old = self._owner()
        replica = self.topology.replicas_of(old)[0]
        self.topology.manual_failover(replica, timeout_s)
        return f"CLUSTER FAILOVER (slot {self.slot}): primary {old.address} -> {replica.address}"

    def kill_master(self, timeout_s: float = 30.0, *, restart: bool = True) -> str:
        """
        SIGKILL the trader's primary, wait for its replica's election, start the killed node again
        (a replica now). `restart` must be true: the cluster drills refuse restart_old_master=false.
        """
        if not restart:
            raise ValueError("the cluster drills always start a killed primary again")
        old = self._owner()
        old.kill()
        t0 = time.monotonic()
        new = self.topology.wait_owner_change(self.slot, old, timeout_s)
        elected_s = time.monotonic() - t0
        old.start()
        return (f"SIGKILL primary {old.address} (slot {self.slot}); the cluster elected {new.address} after "
                f"{elected_s:.1f}s; killed node started again from its AOF as a replica")

    def reshard(self, timeout_s: float = 30.0) -> str:
        """Migrate the trader's slot to another primary (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE)."""
        old = self._owner()
        target = next(n for n in self.topology.nodes if n is not old and n.running
                      and n.client(socket_timeout=1.0).info("replication").get("role") == "master")
        moved = self.topology.migrate_slot(self.slot, target, timeout_s=timeout_s)
        return f"slot {self.slot} migrated {old.address} -> {target.address} ({moved} keys)"

    def settle(self, timeout_s: float = 60.0) -> tuple[bool, str]:
        """Wait until every node sees cluster_state ok and every primary its replicas online. Returns (settled, how)."""
        t0 = time.monotonic()
        try:
            self.topology.wait_healthy(timeout_s)
        except PollTimeout:
            return False, f"cluster not healthy after {time.monotonic() - t0:.1f}s"
        return True, f"cluster ok, every primary's replica online after {time.monotonic() - t0:.1f}s"

    def stop(self) -> None:
        self.topology.stop()


def state_client(settings) -> redis.Redis:
    """A client for the current master as the launcher would connect (Sentinel-aware)."""
    from launcher.state.loader import store_connection  # noqa: PLC0415

    conn: ConnectionSettings = store_connection(settings)
    return connect(conn, max_connections=4)
