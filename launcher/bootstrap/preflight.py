"""
Preflight: is the Redis that will hold trading state safe to trade on?

Each check logs one line ``PASS|WARN|FAIL <check>: <reason>``; :func:`run_preflight`
raises :class:`PreflightFailed` (one line naming the failed checks) if any failed.

=================  ==========================================================================
check              FAIL when / WARN when
=================  ==========================================================================
server-version     FAIL below Redis 6.2
role               FAIL when the server is a replica (writes would be refused)
eviction           FAIL with maxmemory set and a maxmemory-policy other than noeviction
                   (eviction silently deletes trading state); WARN when a noeviction server is
                   over 90 % full (writes will start failing)
persistence        no AOF and no RDB save points: WARN (store=redis), FAIL (store=sentinel or
                   cluster, unless bootstrap.allow_no_persistence); WARN for RDB-only or
                   appendfsync no (on a cluster: the trader's shard's primary)
msgbus-db          FAIL when the message bus uses the same database and flush_on_start is on
flush-on-start     WARN (loudly) when on: the node deletes the persisted state at start; FAIL
                   when the database also holds keys that are not this trader's (NautilusTrader
                   flushes the whole database, not just its own keys)
instance-id        WARN with use_instance_id: each run writes under a new key prefix, so a
                   restarted node recovers nothing
encoding           FAIL when this trader's persisted payloads are in the other format than
                   cache.encoding (json vs msgpack): nothing would load (NautilusTrader fails
                   in the node build), and new writes would mix formats
sentinel-master    (sentinel) FAIL when no sentinel knows the master name; WARN on disagreement
sentinel-quorum    (sentinel) FAIL when fewer sentinels answer than the master's quorum; WARN
                   when fewer than a majority answer (a failover cannot be authorized)
sentinel-replicas  (sentinel) WARN when no replica is connected
replica-acks       (sentinel) FAIL when cache.sentinel.min_replica_acks is below the number of
                   replicas Sentinel can promote (a lagging one may be promoted and acknowledged
                   writes lost; WARN with the native backend, which never waits); WARN above it
cluster-state      (cluster) FAIL unless the shard's primary reports cluster_state:ok with all
                   16384 slots covered; PASS names the shard (primary, slot) holding the trader
cluster-replicas   (cluster) WARN when the trader's shard has no replica online
replica-acks       (cluster) as for Sentinel, with cache.cluster.min_replica_acks and the
                   replicas of the trader's shard (any of them may be promoted)
acl-rights         FAIL when the Redis user may not run a command the launcher needs on the
                   trader's keys (write, delete, Lua, SCAN, WAIT with min_replica_acks), naming
                   each refused command and key; probed inside a discarded MULTI, so nothing runs
memory             FAIL when those probes are refused for memory (OOM: over maxmemory under
                   noeviction), which says nothing of the user's rights
=================  ==========================================================================

CONFIG GET is used where allowed; when it is disabled or renamed (managed Redis) the
checks fall back to INFO, and WARN that they could not check what INFO does not say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from launcher.bootstrap import rights
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.errors import PreflightFailed
from launcher.errors import RedisUnavailable
from launcher.state import layout
from launcher.state.loader import state_trader_key
from launcher.store.connection import ConnectionSettings


log = logging.getLogger("launcher.bootstrap")

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"

MIN_VERSION = (6, 2)
CLUSTER_SLOTS = 16384  # every Redis Cluster has this many hash slots
FULL_RATIO = 0.9


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # PASS | WARN | FAIL
    reason: str

    @property
    def line(self) -> str:
        return f"{self.status} {self.check}: {self.reason}"

    def __str__(self) -> str:
        return self.line


class _ConfigUnavailable(Exception):
    """CONFIG GET is disabled, renamed or not permitted."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config_get(client: redis.Redis, name: str) -> str:
    try:
        reply = client.config_get(name)
    except redis.exceptions.ResponseError as e:  # unknown command (renamed/disabled), NOPERM
        raise _ConfigUnavailable(str(e)) from None
    values = {_text(k): _text(v) for k, v in reply.items()}
    if name not in values:
        raise _ConfigUnavailable(f"CONFIG GET {name} returned nothing")
    return values[name]


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    return client.info(section)


# -- checks ---------------------------------------------------------------------------------------


def check_version(client: redis.Redis) -> CheckResult:
    info = _info(client, "server")
    version = str(info.get("redis_version", "0"))
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    name = f"Valkey {info['valkey_version']} (Redis {version} compatible)" if "valkey_version" in info else f"Redis {version}"
    if parts >= MIN_VERSION:
        return CheckResult("server-version", PASS, f"{name} (>= {MIN_VERSION[0]}.{MIN_VERSION[1]})")
    return CheckResult("server-version", FAIL, f"{name} is older than the {MIN_VERSION[0]}.{MIN_VERSION[1]} this launcher needs")


def check_role(client: redis.Redis, sentinel: bool = False) -> CheckResult:
    info = _info(client, "replication")
    role = str(info.get("role", "?"))
    if role == "master":
        return CheckResult("role", PASS, f"master ({info.get('connected_slaves', 0)} replica(s) connected)")
    if role == "slave":
        master = f"{info.get('master_host')}:{info.get('master_port')}"
        advice = ("the sentinels name a replica as master: a failover is in progress or the sentinels are out of date; "
                  "start again once Sentinel settles" if sentinel
                  else "point cache.redis at the master, or use cache=redis_sentinel")
        return CheckResult("role", FAIL, f"server is a replica of {master}: it refuses writes ({advice})")
    return CheckResult("role", WARN, f"unexpected replication role {role!r}")


def check_eviction(client: redis.Redis) -> CheckResult:
    memory = _info(client, "memory")
    source = "CONFIG"
    try:
        maxmemory = int(_config_get(client, "maxmemory"))
        policy = _config_get(client, "maxmemory-policy")
    except _ConfigUnavailable:
        source = "INFO"
        if "maxmemory" not in memory or "maxmemory_policy" not in memory:
            return CheckResult(
                "eviction", WARN,
                "could not check: CONFIG GET is unavailable and INFO has no maxmemory fields; "
                "make sure maxmemory-policy is noeviction",
            )
        maxmemory = int(memory["maxmemory"])
        policy = str(memory["maxmemory_policy"])
    if maxmemory == 0:
        return CheckResult("eviction", PASS, f"no maxmemory limit ({source}; policy {policy} never applies)")
    if policy != "noeviction":
        return CheckResult(
            "eviction", FAIL,
            f"maxmemory {maxmemory} bytes with maxmemory-policy {policy}: when full Redis silently deletes keys, "
            "i.e. trading state; set maxmemory-policy noeviction",
        )
    used = int(memory.get("used_memory", 0))
    if used > FULL_RATIO * maxmemory:
        return CheckResult(
            "eviction", WARN,
            f"noeviction, but {used} of {maxmemory} bytes used ({100 * used / maxmemory:.0f}%): writes will fail with OOM soon",
        )
    return CheckResult("eviction", PASS, f"maxmemory {maxmemory} bytes with noeviction: a full Redis refuses writes, deletes nothing")


def check_persistence(client: redis.Redis, settings: LauncherConfig) -> CheckResult:
    sentinel = settings.cache.store in (Store.sentinel, Store.cluster)  # HA profiles: a missing AOF FAILs
    allow = settings.bootstrap.allow_no_persistence
    missing = WARN if (not sentinel or allow) else FAIL
    try:
        aof = _config_get(client, "appendonly") == "yes"
        save = _config_get(client, "save").strip()
        fsync = _config_get(client, "appendfsync")
        known = True
    except _ConfigUnavailable:
        info = _info(client, "persistence")
        aof = int(info.get("aof_enabled", 0)) == 1
        save, fsync, known = "", "?", False
    if aof:
        if fsync == "no":
            return CheckResult(
                "persistence", WARN,
                "AOF on with appendfsync no: the OS decides when writes reach disk (up to ~30 s lost on power failure)",
            )
        detail = f"appendfsync {fsync}" if known else "appendfsync not visible (CONFIG unavailable)"
        return CheckResult("persistence", PASS, f"AOF on ({detail})" + (f", RDB save {save!r}" if save else ""))
    if not known:
        return CheckResult(
            "persistence", WARN,
            "AOF is off and RDB save points could not be checked (CONFIG unavailable): make sure the server persists",
        )
    if save:
        return CheckResult(
            "persistence", WARN,
            f"RDB snapshots only (save {save!r}), no AOF: writes since the last snapshot are lost if Redis stops abruptly",
        )
    suffix = " (allowed by bootstrap.allow_no_persistence)" if sentinel and allow else ""
    if sentinel and not allow:
        suffix = "; set bootstrap.allow_no_persistence=true to accept that"
    return CheckResult(
        "persistence", missing,
        "no persistence (AOF off, no RDB save points): a Redis restart loses all trading state" + suffix,
    )


def check_msgbus_db(settings: LauncherConfig, msgbus_same_db: bool) -> CheckResult:
    flush = settings.cache.flush_on_start
    if not msgbus_same_db:
        return CheckResult("msgbus-db", PASS, "the message bus has no database in the cache's Redis database")
    if flush:
        return CheckResult(
            "msgbus-db", FAIL,
            "the message bus uses the cache's Redis database and cache.flush_on_start=true would flush its streams too",
        )
    return CheckResult("msgbus-db", PASS, "the message bus shares the cache's database (flush_on_start off)")


def check_flush_on_start(client: redis.Redis, settings: LauncherConfig) -> CheckResult:
    if not settings.cache.flush_on_start:
        return CheckResult("flush-on-start", PASS, "off: persisted state is kept and recovered")
    prefix = state_trader_key(settings) + ":"
    total = int(client.dbsize())
    foreign_example = None
    for key in client.scan_iter(match="*", count=1000):
        key = _text(key)
        if not key.startswith(prefix):
            foreign_example = key
            break
    if foreign_example is not None:
        foreign = total - sum(1 for _ in client.scan_iter(match=layout.scan_pattern(state_trader_key(settings)), count=1000))
        return CheckResult(
            "flush-on-start", FAIL,
            f"cache.flush_on_start=true flushes the WHOLE database, which holds {foreign} key(s) that are not this "
            f"trader's (e.g. {foreign_example!r}): refusing to delete them",
        )
    return CheckResult(
        "flush-on-start", WARN,
        f"!!! cache.flush_on_start=true: the node will DELETE all {total} persisted key(s) of trader "
        f"{settings.trader_id} (orders, positions, accounts) when it starts; nothing will be recovered",
    )


def check_instance_id(settings: LauncherConfig) -> CheckResult:
    if settings.cache.use_instance_id:
        return CheckResult(
            "instance-id", WARN,
            "cache.use_instance_id=true: each run writes under a new instance-id prefix, so a restarted node "
            "recovers none of the previous run's state",
        )
    return CheckResult("instance-id", PASS, f"state lives under {state_trader_key(settings)}:* across restarts")


# Collections whose values are the serializer's payloads: lists of events, and single objects.
_EVENT_LISTS = (layout.ORDERS, layout.POSITIONS, layout.ACCOUNTS)
_OBJECTS = (layout.CURRENCIES, layout.INSTRUMENTS, layout.SYNTHETICS)
_SAMPLE_KEYS = 10_000  # keys looked at for a payload before giving up (SCAN order)


def _payload_format(payload: bytes) -> str | None:
    """"json" or "msgpack" for the serializer's payloads (a map either way); None if neither."""
    if not payload:
        return None
    first = payload[0]
    if first == 0x7B:  # "{"
        return "json"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):  # fixmap, map16, map32
        return "msgpack"
    return None


def check_encoding(client: redis.Redis, settings: LauncherConfig) -> CheckResult:
    configured = str(settings.cache.encoding)
    prefix = state_trader_key(settings) + ":"
    for n, key in enumerate(client.scan_iter(match=layout.scan_pattern(state_trader_key(settings)), count=1000)):
        if n >= _SAMPLE_KEYS:
            break
        key = _text(key)
        collection = key[len(prefix):].partition(":")[0]
        if collection in _EVENT_LISTS:
            payload = client.lindex(key, 0)
        elif collection in _OBJECTS:
            payload = client.get(key)
        else:
            continue
        found = _payload_format(payload) if isinstance(payload, bytes) else None
        if found is None:
            continue
        if found != configured:
            return CheckResult(
                "encoding", FAIL,
                f"cache.encoding={configured}, but trader {settings.trader_id}'s state in Redis is "
                f"{found} (e.g. {key}): nothing of it would load; set cache.encoding={found}",
            )
        return CheckResult("encoding", PASS, f"persisted payloads are {found}, as configured")
    return CheckResult("encoding", PASS, f"{configured}: no persisted payload to compare with")


def _sentinel_clients(conn: ConnectionSettings) -> list[redis.Redis]:
    """
    One client per configured sentinel, with the same credentials and timeouts as
    ``launcher.store.connection.sentinel_client`` but no client-side retries: a dead
    sentinel must cost one connect attempt here, not seconds of backoff.
    """
    return [
        redis.Redis(
            host=host,
            port=port,
            username=conn.sentinel_username if conn.sentinel_password else None,
            password=conn.sentinel_password,
            socket_timeout=conn.timeout_s,
            socket_connect_timeout=conn.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        for host, port in conn.sentinels
    ]


def check_sentinels(client: redis.Redis, conn: ConnectionSettings, min_replica_acks: int = 0,
                    backend: str = "resilient") -> list[CheckResult]:
    name = conn.master_name
    sentinels = _sentinel_clients(conn)
    answers: dict[str, dict] = {}
    replicas: list[dict] | None = None
    unknown: list[str] = []
    unreachable: list[str] = []
    for (host, port), sentinel in zip(conn.sentinels, sentinels, strict=True):
        address = f"{host}:{port}"
        try:
            answers[address] = sentinel.sentinel_master(name)
            if replicas is None:
                replicas = sentinel.sentinel_slaves(name)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            unreachable.append(f"{address} ({type(e).__name__})")
        except redis.exceptions.ResponseError:
            unknown.append(address)
        finally:
            sentinel.close()
    n = len(conn.sentinels)
    results: list[CheckResult] = []
    if not answers:
        results.append(CheckResult(
            "sentinel-master", FAIL,
            f"no sentinel knows master {name!r} (unknown at: {', '.join(unknown) or '-'}; "
            f"unreachable: {', '.join(unreachable) or '-'})",
        ))
        results.append(CheckResult("sentinel-quorum", FAIL, f"0 of {n} sentinels answer for {name!r}"))
        results.append(_check_replicas(client))
        return results
    addresses = {f"{m.get('ip')}:{m.get('port')}" for m in answers.values()}
    if len(addresses) > 1:
        results.append(CheckResult(
            "sentinel-master", WARN,
            f"sentinels disagree on master {name!r}: {', '.join(sorted(addresses))} (failover in progress?)",
        ))
    else:
        results.append(CheckResult(
            "sentinel-master", PASS, f"master {name!r} at {addresses.pop()} known to {len(answers)} of {n} sentinels",
        ))
    quorum = max(int(m.get("quorum", 0)) for m in answers.values())
    majority = n // 2 + 1
    answering = len(answers)
    missing = ", ".join(unreachable + [f"{a} (does not know {name!r})" for a in unknown])
    if answering < quorum:
        results.append(CheckResult(
            "sentinel-quorum", FAIL,
            f"only {answering} of {n} sentinels answer, quorum is {quorum}: a failed master would never be "
            f"detected as down (missing: {missing})",
        ))
    elif answering < majority:
        results.append(CheckResult(
            "sentinel-quorum", WARN,
            f"{answering} of {n} sentinels answer (quorum {quorum}) but a failover needs a majority ({majority}) "
            f"to be authorized (missing: {missing})",
        ))
    else:
        detail = f"; missing: {missing}" if missing else ""
        results.append(CheckResult("sentinel-quorum", PASS, f"{answering} of {n} sentinels answer (quorum {quorum}){detail}"))
    results.append(_check_replicas(client))
    results.append(_check_replica_acks(replicas or [], min_replica_acks, backend))
    return results


def _shard_replicas(client: redis.Redis) -> list[dict]:
    """The replicas online at the primary `client` is connected to (INFO replication)."""
    info = _info(client, "replication")
    return [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]


def check_cluster(client: redis.Redis, conn: ConnectionSettings, min_replica_acks: int = 0) -> list[CheckResult]:
    """The trader's shard: cluster health as its primary sees it, its replicas, and WAIT's coverage of them."""
    info = client.cluster("info")
    state = str(info.get("cluster_state"))
    assigned = int(info.get("cluster_slots_assigned", 0))
    ok_slots = int(info.get("cluster_slots_ok", 0))
    pool = client.connection_pool
    slot = pool.locator.slot
    owner = pool.locator.last_owner
    shard = f"slot {slot} of '{conn.slot_key}' on primary {owner[0]}:{owner[1]}" if owner else f"slot {slot}"
    results: list[CheckResult] = []
    if state != "ok" or assigned < CLUSTER_SLOTS or ok_slots < CLUSTER_SLOTS:
        results.append(CheckResult(
            "cluster-state", FAIL,
            f"cluster_state {state}, {assigned} of {CLUSTER_SLOTS} slots assigned, {ok_slots} ok: the cluster refuses "
            f"or may refuse writes ({shard})",
        ))
    else:
        results.append(CheckResult("cluster-state", PASS, f"cluster ok, every slot covered; the trader is in {shard}"))
    replicas = _shard_replicas(client)
    if replicas:
        listed = ", ".join(f"{r.get('ip')}:{r.get('port')}" for r in replicas)
        results.append(CheckResult("cluster-replicas", PASS, f"{len(replicas)} replica(s) of the shard online: {listed}"))
    else:
        results.append(CheckResult(
            "cluster-replicas", WARN,
            "no replica of the trader's shard is online: losing its primary loses the trader's state",
        ))
    results.append(_check_replica_acks(replicas, min_replica_acks, "resilient", key="cache.cluster.min_replica_acks",
                                       promoter="the cluster"))
    return results


def _promotable(replica: dict) -> bool:
    """Whether Sentinel may promote this replica: reachable and not excluded by replica-priority 0."""
    if replica.get("is_sdown") or replica.get("is_odown") or replica.get("is_disconnected"):
        return False
    return int(replica.get("slave-priority", replica.get("replica-priority", 100)) or 0) != 0


def _check_replica_acks(replicas: list[dict], min_replica_acks: int, backend: str,
                        key: str = "cache.sentinel.min_replica_acks", promoter: str = "Sentinel") -> CheckResult:
    """
    Sentinel may promote any reachable replica, also one that has not acknowledged the newest
    writes; only when every promotable replica must acknowledge a batch does an acknowledged
    write survive every failover.
    """
    promotable = [f"{r.get('ip')}:{r.get('port')}" for r in replicas if _promotable(r)]
    n = len(promotable)
    if min_replica_acks < n:
        status = WARN if backend != "resilient" else FAIL
        return CheckResult(
            "replica-acks", status,
            f"{key}={min_replica_acks} but {promoter} can promote {n} replica(s) "
            f"({', '.join(promotable)}): a failover to one that had not acknowledged loses acknowledged writes; "
            f"set {key}={n} (or replica-priority 0 on the replicas that must never be promoted)",
        )
    if min_replica_acks > n:
        return CheckResult(
            "replica-acks", WARN,
            f"{key}={min_replica_acks} but only {n} promotable replica(s) are up: writes "
            "are applied but not acknowledged (retained, then spilled) until enough replicas are connected",
        )
    return CheckResult("replica-acks", PASS, f"every promotable replica ({n}) must acknowledge a batch")


def _check_replicas(client: redis.Redis) -> CheckResult:
    info = _info(client, "replication")
    online = [
        f"{v.get('ip')}:{v.get('port')}"
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    ]
    if not online:
        return CheckResult(
            "sentinel-replicas", WARN,
            "no replica connected to the master: a failover has nothing to promote and losing the master loses the state",
        )
    return CheckResult("sentinel-replicas", PASS, f"{len(online)} replica(s) online: {', '.join(online)}")


def check_acl_rights(client: redis.Redis, settings: LauncherConfig, conn: ConnectionSettings) -> list[CheckResult]:
    user = settings.cache.redis.username or "default"
    wait = settings.cache.replica_acks()[0] > 0
    try:
        refused = rights.probe_rights(client, state_trader_key(settings), wait=wait)
    except redis.exceptions.ResponseError as e:
        return [CheckResult("acl-rights", FAIL, f"Redis user {user!r} may not use MULTI ({e}): the launcher writes in transactions")]
    full = [r for r in refused if r.out_of_memory]
    refused = [r for r in refused if not r.out_of_memory]
    results = [CheckResult(
        "acl-rights", FAIL,
        f"Redis user {user!r} may not: {rights.describe(refused)} (grant it write, delete, Lua and SCAN on "
        f"{state_trader_key(settings)}:*)",
    ) if refused else CheckResult("acl-rights", PASS, f"Redis user {user!r} may write, delete, run Lua and SCAN on the trader's keys")]
    if full:
        results.append(CheckResult(
            "memory", FAIL,
            f"Redis is out of memory: it refuses writes ({full[0].command}: {full[0].reply}); free memory or raise "
            "maxmemory: the node could not persist a single event",
        ))
    return results


# -- runner ---------------------------------------------------------------------------------------


def _guard(check: str, run: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    try:
        result = run()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering during preflight check {check}: {e}") from None
    except redis.exceptions.RedisError as e:
        result = CheckResult(check, WARN, f"could not check: {type(e).__name__}: {e}")
    return result if isinstance(result, list) else [result]


def run_preflight(
    client: redis.Redis,
    settings: LauncherConfig,
    conn: ConnectionSettings,
    *,
    msgbus_same_db: bool = False,
) -> list[CheckResult]:
    """
    Run every check, log one line each, and return the results; raise PreflightFailed
    naming the failed checks if any FAILed.

    ``msgbus_same_db``: whether NautilusTrader's message bus is configured with a Redis
    database that is the cache's (the launcher configures none today, hence False).
    """
    results: list[CheckResult] = []
    results += _guard("acl-rights", lambda: check_acl_rights(client, settings, conn))
    results += _guard("server-version", lambda: check_version(client))
    results += _guard("role", lambda: check_role(client, conn.is_sentinel or conn.is_cluster))
    results += _guard("eviction", lambda: check_eviction(client))
    results += _guard("persistence", lambda: check_persistence(client, settings))
    results += _guard("msgbus-db", lambda: check_msgbus_db(settings, msgbus_same_db))
    results += _guard("flush-on-start", lambda: check_flush_on_start(client, settings))
    results += _guard("instance-id", lambda: check_instance_id(settings))
    if not settings.cache.flush_on_start:  # else nothing persisted is read
        results += _guard("encoding", lambda: check_encoding(client, settings))
    if conn.is_sentinel:
        results += _guard("sentinel", lambda: check_sentinels(
            client, conn, settings.cache.sentinel.min_replica_acks, settings.cache.backend.value,
        ))
    if conn.is_cluster:
        results += _guard("cluster", lambda: check_cluster(client, conn, settings.cache.cluster.min_replica_acks))
    for result in results:
        level = {PASS: logging.INFO, WARN: logging.WARNING, FAIL: logging.ERROR}[result.status]
        log.log(level, "%s", result.line)
    failed = [r for r in results if r.status == FAIL]
    if failed:
        raise PreflightFailed(
            f"preflight failed ({len(failed)} of {len(results)} checks): "
            + "; ".join(f"{r.check}: {r.reason}" for r in failed),
        )
    return results
