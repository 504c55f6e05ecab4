"""
Coalescing inside one MULTI/EXEC batch (``launcher.cache.write.batch``): assignments to the same set member /
hash field / string keep only the last one, account-event deletes of one account share one
script call. Checked differentially: random sequences of writes sent as one batch to one server
must leave exactly the state that sending every command alone (nothing to coalesce) leaves on
another, for first sends (plain RPUSH) and resends (the guarded scripts) alike.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.write.batch import build
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import DeleteEvent
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import Snapshot
from launcher.servers.redis_process import RedisProcess
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import cache_config
from tests.support.trading_state import make_serializer


SETS, HASHES, STRINGS, LISTS = ("s1", "s2"), ("h1", "h2"), ("k1", "k2"), ("l1", "l2")
MANIFEST = "m"
MEMBERS = ("a", "b", "c")


def _random_ops(rng: random.Random, n: int, flush: bool) -> list[Op]:
    """Mostly well-typed writes; about 1 in 7 assignments hits a key of another type (WRONGTYPE)."""
    def pick(keys: tuple) -> str:
        return rng.choice(SETS + HASHES + STRINGS + LISTS) if rng.random() < 0.15 else rng.choice(keys)

    lengths = {key: 0 for key in LISTS}  # what the writer believes (event count n)
    ids: dict[str, list[str]] = {key: [] for key in LISTS}
    ops: list[Op] = []
    for _ in range(n):
        cmds: list = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.25:
                cmds.append((rng.choice((b"SADD", b"SREM")), pick(SETS), rng.choice(MEMBERS)))
            elif roll < 0.40:
                key, field = pick(HASHES), rng.choice(MEMBERS)
                cmds.append((b"HSET", key, field, str(rng.randint(0, 9))) if rng.random() < 0.6 else (b"HDEL", key, field))
            elif roll < 0.48:
                cmds.append((b"SET", pick(STRINGS), str(rng.randint(0, 9))))
            elif roll < 0.53:
                key = rng.choice(SETS + HASHES + STRINGS + LISTS + (MANIFEST,))
                cmds.append((b"DEL", key))
                if key in lengths:
                    lengths[key], ids[key] = 0, []
            elif roll < 0.56:
                cmds.append((b"HSET", MANIFEST, rng.choice(LISTS), str(rng.randint(0, 9))))
            elif roll < 0.80:
                key = rng.choice(LISTS)
                event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                lengths[key] += 1
                ids[key].append(event_id)
                payload = json.dumps({"type": "AccountState", "event_id": event_id}).encode()
                cmds.append(Append.stored(key, MANIFEST, key, lengths[key], payload, int(rng.random() < 0.7)))
            elif roll < 0.95:
                key = rng.choice(LISTS)
                event_id = rng.choice(ids[key]) if ids[key] and rng.random() < 0.8 else str(uuid.uuid4())
                cmds.append(DeleteEvent.stored(key, MANIFEST, key, event_id, "json"))
            elif roll < 0.98 or not flush:
                cmds.append(Snapshot.stored("snap", str(rng.randint(0, 3)).encode()))
            else:
                cmds.append((b"FLUSHDB",))
                lengths = {key: 0 for key in LISTS}
                ids = {key: [] for key in LISTS}
        ops.append(Op("test", cmds))
    return ops


def _dump(client) -> dict:
    out = {}
    for key in client.keys("*"):
        kind = client.type(key).decode()
        if kind == "string":
            out[key] = client.get(key)
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "hash":
            out[key] = client.hgetall(key)
    return out


def _append(key: str, n: int, create: int = 1) -> tuple:
    return Append.stored(key, MANIFEST, key, n, json.dumps({"event_id": str(uuid.uuid4())}).encode(), create)


# Where a run must end: a command between two assignments that sees the key's type/existence.
HAND_WRITTEN = [
    [Op("t", [(b"SADD", "l1", "a")]), Op("t", [_append("l1", 1)]), Op("t", [(b"SREM", "l1", "a")])],
    [Op("t", [(b"HSET", "l2", "f", "1")]), Op("t", [_append("l2", 1)]), Op("t", [(b"HDEL", "l2", "f")])],
    [Op("t", [(b"SET", "k1", "1"), (b"SADD", "k1", "a"), (b"SET", "k1", "2"), (b"SREM", "k1", "a")])],
    [Op("t", [(b"SADD", "s1", "a"), (b"DEL", "s1"), (b"SADD", "s1", "b"), (b"SREM", "s1", "a")])],
    [Op("t", [(b"HSET", "h1", "a", "1"), (b"FLUSHDB",), (b"HDEL", "h1", "a"), (b"HSET", "h1", "b", "2")])],
    [Op("t", [(b"SADD", "snap", "a")]), Op("t", [Snapshot.stored("snap", b"x")]), Op("t", [(b"SREM", "snap", "a")])],
    # One member spelt as str and as bytes: the last assignment wins whatever the spelling.
    [Op("t", [(b"SREM", "s1", "a"), (b"SADD", b"s1", b"a"), (b"SADD", "s1", "b"), (b"SREM", "s1", b"b")])],
    [Op("t", [(b"HSET", "h1", "a", "1"), (b"HDEL", "h1", b"a"), (b"HSET", b"h1", b"b", "2"), (b"HSET", "h1", "b", "3")])],
]


@pytest.fixture
def two_backends(tmp_path):
    servers = [RedisProcess(tmp_path / name, appendonly=False).start() for name in ("batched", "alone")]
    dbs = [ResilientCacheDatabase(TRADER_ID, UUID4(), make_serializer("json"), cache_config(s.port, "json"),
                                  spill_dir=str(tmp_path / f"spill-{i}")) for i, s in enumerate(servers)]
    try:
        for db in dbs:
            assert db.wait_until_persisted(10)  # the writer thread is idle from here on
        yield servers, dbs
    finally:
        for db in dbs:
            db.close()
        for s in servers:
            s.kill()


@pytest.mark.parametrize("guarded", [False, True], ids=["first-send", "resend"])
def test_one_batch_leaves_what_every_command_alone_leaves(two_backends, guarded):
    (batched, alone), (db_batched, db_alone) = two_backends
    writer_batched, writer_alone = db_batched._writer, db_alone._writer
    coalesced = 0
    cases = [(f"hand-written {k}", ops) for k, ops in enumerate(HAND_WRITTEN)]
    for seed in range(60):
        rng = random.Random(seed)
        cases.append((f"seed {seed}", _random_ops(rng, rng.randint(5, 60), flush=seed % 3 == 0)))
    for name, ops in cases:
        for s in (batched, alone):
            s.client().flushall()
        before = writer_batched.coalesced_commands
        writer_batched._send(ops, guarded)  # one MULTI/EXEC (the writer thread is idle)
        coalesced += writer_batched.coalesced_commands - before
        for op in ops:
            for cmd in op.cmds:
                writer_alone._send([Op("test", [cmd])], guarded)
        assert _dump(batched.client()) == _dump(alone.client()), name
    assert coalesced > 100  # the sequences did exercise coalescing


def test_a_bench_like_batch_sends_one_command_per_index_set(two_backends):
    """add_order + 3 update_order per order: every append, then one manifest HSET and one command per index set."""
    (server, _), (db, _) = two_backends
    from nautilus_trader.model.identifiers import PositionId

    from launcher.bench import measure as M

    objs = M.Objects("BENCH-COALESCE")
    captured: list[Op] = []
    submit, db._submit = db._submit, lambda op: captured.append(op) or 0  # the facade's writes, not sent
    orders = []
    for i in range(50):
        order = objs.limit()
        orders.append(order)
        db.add_order(order, None, None)
        for event in (objs.submitted(order), objs.accepted(order), objs.filled(order, PositionId(f"P-{i}"))):
            order.apply(event)
            db.update_order(order)
    db._submit = submit
    client = server.client()
    client.config_resetstat()
    db._writer._send(captured, False)  # serializes the payloads too
    ncmds = build(list(captured), False).commands
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}
    assert calls["rpush"] + calls["rpushx"] == 200  # every append kept
    assert calls["hset"] == 1  # the manifest: the last count of every order, in one command
    # Per order: 4 appends, 1 manifest HSET, 1 write to each of the 6 order index sets touched
    # (orders, order_ids, inflight, open, closed, emulated); 21 commands without coalescing.
    # Each set's members end with one kind of assignment here (all added or all removed).
    assert sum(len(op.cmds) for op in captured) + 200 == 50 * 21
    assert calls["sadd"] + calls["srem"] == 6
    assert ncmds == 200 + 1 + 6
    key = db.trader_key
    for order in orders:
        coid = order.client_order_id.value
        assert client.llen(f"{key}:orders:{coid}") == 4
        assert client.hget(f"{key}:launcher:manifest:orders", coid) == b"4"
        assert client.sismember(f"{key}:index:orders_closed", coid)
        assert not client.sismember(f"{key}:index:orders_open", coid)
        assert not client.sismember(f"{key}:index:orders_inflight", coid)
