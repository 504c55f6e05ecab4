"""
Preflight check ``acl-rights``: may this Redis user do everything the launcher will do with the
trader's keys?

A user that may read but not write the state keys (or may not run Lua, or WAIT) would otherwise
pass every other check, take the lease and trade while Redis refuses each write. The check asks
Redis itself, without changing anything: inside ``MULTI`` Redis checks a command's ACL rights
(command and keys) when it is queued and answers ``NOPERM`` at once; every probe is queued on one
connection and the transaction is then discarded, so no probe ever executes.

The probes use the real key shapes of the trader (one key per collection the backends write,
with a placeholder id), the commands the writer, its Lua scripts, the lease and retention send,
and ``WAIT`` when ``min_replica_acks`` asks for replicas. ``MULTI`` itself is probed first, alone:
if it is refused nothing else is sent (a probe outside a transaction would execute).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from launcher.state import layout


PROBE_ID = "launcher-rights-probe"
# Any 40-hex SHA: queued EVALSHA is checked for rights, never run (the transaction is discarded).
PROBE_SHA = "0" * 40


@dataclass(frozen=True)
class Refusal:
    """One probe Redis refused: the command, the key (relative to the trader key) and its answer."""

    command: str
    key: str
    reply: str
    # Refused for memory (OOM: used memory above maxmemory under noeviction), not for rights: Redis
    # checks the ACL first, so the user may run it.
    out_of_memory: bool = False

    def __str__(self) -> str:
        return f"{self.command} {self.key}" if self.key else self.command


def _probes(trader_key: str, *, wait: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(collection shown to the user, full command) for every right the launcher needs."""
    def key(collection: str) -> str:
        return f"{trader_key}{layout.DELIMITER}{collection}"

    lists = [f"{c}{layout.DELIMITER}{PROBE_ID}" for c in (layout.ORDERS, layout.POSITIONS, layout.ACCOUNTS,
                                                          layout.SNAPSHOTS_ORDERS, layout.SNAPSHOTS_POSITIONS)]
    strings = [f"{c}{layout.DELIMITER}{PROBE_ID}" for c in (layout.GENERAL, layout.CURRENCIES, layout.INSTRUMENTS,
                                                            layout.SYNTHETICS)]
    strings += [f"{layout.ACTORS}{layout.DELIMITER}{PROBE_ID}:state", f"{layout.STRATEGIES}{layout.DELIMITER}{PROBE_ID}:state",
                layout.HEARTBEAT]
    sets = [*layout.ORDER_SET_INDEXES, *layout.POSITION_SET_INDEXES]
    hashes = [*layout.ORDER_HASH_INDEXES, layout.MANIFEST_ORDERS, layout.MANIFEST_POSITIONS, layout.MANIFEST_ACCOUNTS,
              layout.MANIFEST_META]
    probes: list[tuple[str, tuple[str, ...]]] = []
    for name in lists:
        k = key(name)
        for command in (("RPUSH", k, "x"), ("RPUSHX", k, "x"), ("LRANGE", k, "0", "-1"), ("LLEN", k),
                        ("LINDEX", k, "0"), ("LPOS", k, "x"), ("LSET", k, "0", "x"), ("LREM", k, "0", "x"),
                        ("LTRIM", k, "0", "-1"), ("DEL", k), ("UNLINK", k)):
            probes.append((name, command))
        probes.append((name, ("EVALSHA", PROBE_SHA, "2", k, key(layout.MANIFEST_ORDERS))))
        probes.append((name, ("EVAL", "return 0", "2", k, key(layout.MANIFEST_ORDERS))))
    for name in strings:
        k = key(name)
        probes += [(name, ("SET", k, "x")), (name, ("GET", k)), (name, ("MGET", k)), (name, ("DEL", k))]
    for name in sets:
        k = key(name)
        probes += [(name, ("SADD", k, "x")), (name, ("SREM", k, "x")), (name, ("SMEMBERS", k)), (name, ("DEL", k))]
    for name in hashes:
        k = key(name)
        probes += [(name, ("HSET", k, "f", "1")), (name, ("HDEL", k, "f")), (name, ("HGETALL", k)), (name, ("DEL", k))]
    lease = key(layout.LEASE)
    probes += [(layout.LEASE, ("SET", lease, "x", "NX", "PX", "1000")), (layout.LEASE, ("GET", lease)),
               (layout.LEASE, ("PEXPIRE", lease, "1000")), (layout.LEASE, ("DEL", lease)),
               (layout.LEASE, ("EVALSHA", PROBE_SHA, "1", lease, "x")), (layout.LEASE, ("EVAL", "return 0", "1", lease))]
    probes += [("", ("SCAN", "0", "MATCH", key("*"), "COUNT", "1")), ("", ("TYPE", key(layout.HEARTBEAT))),
               ("", ("SCRIPT", "LOAD", "return 0")), ("", ("PING",))]
    if wait:
        probes.append(("", ("WAIT", "0", "0")))
    return probes


def probe_rights(client: redis.Redis, trader_key: str, *, wait: bool) -> list[Refusal]:
    """
    Every probe Redis refused for the client's user (empty: the user may do all of it).

    Raises ``redis.exceptions.ResponseError`` when ``MULTI`` itself is refused, and lets
    connection errors through (the caller maps them).
    """
    return probe_commands(client, _probes(trader_key, wait=wait))


def probe_commands(client: redis.Redis, probes: list[tuple[str, tuple[str, ...]]]) -> list[Refusal]:
    """
    The `probes` ((key shown to the user, full command)) Redis refused, each queued inside a
    ``MULTI`` that is then discarded. Raises ``redis.exceptions.ResponseError`` when ``MULTI``
    itself is refused.
    """
    # One connection for the whole transaction: a pool could hand each command another one.
    pool = client.connection_pool
    conn = pool.get_connection()
    clean = False
    refusals: list[Refusal] = []
    try:
        conn.send_command("MULTI")
        conn.read_response()  # NOPERM here: nothing else is sent
        conn.send_packed_command(conn.pack_commands([command for _, command in probes] + [("DISCARD",)]))
        for name, command in probes:
            try:
                conn.read_response()
            except redis.exceptions.ResponseError as e:
                refusals.append(Refusal(command[0], name, str(e), isinstance(e, redis.exceptions.OutOfMemoryError)))
        conn.read_response()  # DISCARD
        clean = True
    finally:
        if not clean:
            # Never hand a connection back to the pool in the middle of a transaction.
            conn.disconnect()
        pool.release(conn)
    return refusals


def describe(refusals: list[Refusal]) -> str:
    """
    ``RPUSH, LSET on orders:*, positions:*; HSET on launcher:manifest:orders; WAIT``: the refused
    commands grouped by the keys they were refused on (keys with the same refusals share a group).
    """
    by_key: dict[str, list[str]] = {}
    for refusal in refusals:
        commands = by_key.setdefault(refusal.key.replace(PROBE_ID, "*"), [])
        if refusal.command not in commands:
            commands.append(refusal.command)
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, commands in by_key.items():
        groups.setdefault(tuple(commands), []).append(key)
    parts = []
    for commands, keys in groups.items():
        named = [k for k in keys if k]
        parts.append(", ".join(commands) + (f" on {', '.join(named)}" if named else ""))
    return "; ".join(parts)
