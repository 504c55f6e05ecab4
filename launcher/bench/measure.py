"""
The measurements of ``python -m launcher.bench``, each run for NautilusTrader's native adapter
(``nautilus_trader.cache.database.CacheDatabaseAdapter``) and the resilient backend
(``launcher.cache.resilient.ResilientCacheDatabase``) against the same Redis server, with the
launcher's defaults (msgpack, ISO 8601 timestamps, buffer interval 100 ms).

hot path      ``time.perf_counter_ns()`` around each facade call on the caller's thread (what
              the strategy/engine thread spends): add_order, update_order, update_position,
              update_account; buffered mode.
end to end    from the facade call until a second connection sees the write in Redis (polling
              ``LLEN`` of the order's list): buffered (both), sync (resilient) and immediate
              (native with buffer_interval_ms=0, its closest mode: not acknowledged).
read          ``load_order`` / ``load_position`` of single entities by id.
throughput    N facade writes (add_order + 3 update_order per order) as fast as the caller can,
              until Redis acknowledged every one (resilient: ``wait_until_persisted``; native:
              polled until every list holds all its events); sync mode: one write at a time.
write costs   one resilient write's CPU per stage on one idle thread (facade call, serialization
              and NautilusTrader's ``to_dict`` share of it, batch packing, send + reply parsing):
              their sum needs the interpreter's GIL, so 1e6 / sum bounds one process's throughput.
recovery      state of N orders (``events_per_order`` events each), N x positions_ratio positions
              and an account with one event per position, loaded the way the execution engine
              does at start (``cache_currencies``, ``cache_instruments``, ``cache_accounts``,
              ``cache_orders``, ``cache_positions``; then ``build_index`` + ``check_integrity``,
              which do not touch the database and are reported apart).
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import redis
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import AccountType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.identifiers import VenueOrderId
from nautilus_trader.model.objects import AccountBalance
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.objects import Money
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.serialization.serializer import MsgSpecSerializer
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from launcher.config.schema import CacheSettings
from launcher.retry import poll
from launcher.state import layout
from launcher.state.serializer import serializer_for
from launcher.store.connection import ConnectionSettings


NATIVE = "native"
RESILIENT = "resilient"
BACKENDS = (NATIVE, RESILIENT)
ACCOUNT_ID = AccountId("SIM-001")


def serializer() -> MsgSpecSerializer:
    """As the kernel builds it for the launcher's defaults (msgpack, ISO 8601 timestamps)."""
    return serializer_for(CacheSettings())


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[k]

    return {
        "n": len(ordered), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


@dataclass
class Server:
    host: str
    port: int

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=30)


class Databases:
    """Builds each backend's database facade on `server` for a trader id (and closes them)."""

    def __init__(self, server: Server, buffer_interval_ms: int) -> None:
        self.server = server
        self.buffer_interval_ms = buffer_interval_ms
        self.spill_dir = tempfile.mkdtemp(prefix="bench-spill-")
        self.open: list[Any] = []

    def config(self, interval_ms: int | None) -> CacheConfig:
        return CacheConfig(
            database=DatabaseConfig(host=self.server.host, port=self.server.port, connection_timeout=2, response_timeout=2),
            encoding="msgpack",
            timestamps_as_iso8601=True,
            buffer_interval_ms=interval_ms or None,
        )

    def make(self, backend: str, trader_id: str, *, durability: str = "buffered", interval_ms: int | None = -1,
             listener: Any = None) -> Any:
        interval = self.buffer_interval_ms if interval_ms == -1 else interval_ms
        config = self.config(interval)
        if backend == NATIVE:
            from nautilus_trader.cache.database import CacheDatabaseAdapter  # noqa: PLC0415

            db = CacheDatabaseAdapter(trader_id=TraderId(trader_id), instance_id=UUID4(), serializer=serializer(),
                                      config=config)
        else:
            from launcher.cache.resilient import ResilientCacheDatabase  # noqa: PLC0415

            db = ResilientCacheDatabase(
                TraderId(trader_id), UUID4(), serializer(), config,
                connection=ConnectionSettings(host=self.server.host, port=self.server.port, timeout_s=2.0),
                durability=durability, spill_dir=self.spill_dir, listener=listener,
            )
        self.open.append(db)
        return db

    def close(self, db: Any) -> None:
        try:
            db.close()
        finally:
            if db in self.open:
                self.open.remove(db)

    def close_all(self) -> None:
        for db in list(self.open):
            self.close(db)


class ServerCost:
    """Redis' own CPU time and per-command time over a phase (INFO cpu / commandstats deltas)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before: tuple[dict, dict] | None = None
        self.result: dict[str, Any] = {}

    def _snapshot(self) -> tuple[dict, dict]:
        client = self.server.client()
        try:
            return client.info("cpu"), client.info("commandstats")
        finally:
            client.close()

    def __enter__(self) -> ServerCost:
        self.before = self._snapshot()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        (cpu0, cmd0), (cpu1, cmd1) = self.before, self._snapshot()
        cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
        commands = []
        for name, stats in cmd1.items():
            prev = cmd0.get(name, {"calls": 0, "usec": 0})
            calls, usec = stats["calls"] - prev["calls"], stats["usec"] - prev["usec"]
            if calls:
                commands.append({"command": name.removeprefix("cmdstat_"), "calls": calls, "usec": usec,
                                 "usec_per_call": round(usec / calls, 2)})
        commands.sort(key=lambda c: -c["usec"])
        self.result = {"wall_s": round(wall, 3), "redis_cpu_s": round(cpu, 3),
                       "redis_cpu_share": round(cpu / wall, 3) if wall else None, "commands": commands[:8]}


def trader_key(trader_id: str) -> str:
    return layout.trader_key(trader_id)


class Objects:
    """Orders, events, positions and account states as a node produces them."""

    def __init__(self, trader_id: str, seed: int = 1) -> None:
        self.instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD")
        self.clock = TestClock()
        self.clock.set_time(1_700_000_000_000_000_000)
        self.factory = OrderFactory(trader_id=TraderId(trader_id), strategy_id=StrategyId("S-001"), clock=self.clock)
        self.rng = random.Random(seed)
        self.n = 0
        self.usd = Currency.from_str("USD")

    def ts(self) -> int:
        self.clock.advance_time(self.clock.timestamp_ns() + 1_000)
        return self.clock.timestamp_ns()

    def limit(self, side: OrderSide = OrderSide.BUY):
        return self.factory.limit(self.instrument.id, side, Quantity.from_int(100_000), Price.from_str("0.70000"))

    def submitted(self, order):
        return TestEventStubs.order_submitted(order, account_id=ACCOUNT_ID, ts_event=self.ts())

    def venue_order_id(self, order) -> VenueOrderId:
        return VenueOrderId("V-" + order.client_order_id.value)

    def accepted(self, order):
        return TestEventStubs.order_accepted(order, account_id=ACCOUNT_ID, venue_order_id=self.venue_order_id(order),
                                             ts_event=self.ts())

    def filled(self, order, position_id: PositionId, qty: int | None = None):
        self.n += 1
        return TestEventStubs.order_filled(
            order, self.instrument, trade_id=TradeId(f"T-{self.n}"), position_id=position_id,
            venue_order_id=self.venue_order_id(order),
            last_qty=Quantity.from_int(qty) if qty else None, commission=Money(2, self.usd), account_id=ACCOUNT_ID,
            ts_event=self.ts(),
        )

    def account(self):
        return TestExecStubs.cash_account(ACCOUNT_ID)

    def account_state(self, total: int) -> AccountState:
        ts = self.ts()
        return AccountState(
            account_id=ACCOUNT_ID, account_type=AccountType.CASH, base_currency=self.usd, reported=True,
            balances=[AccountBalance(Money(total, self.usd), Money(0, self.usd), Money(total, self.usd))],
            margins=[], info={}, event_id=UUID4(), ts_event=ts, ts_init=ts,
        )


def _timed_ns(fn, *args) -> int:
    t0 = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - t0


# -- hot path -------------------------------------------------------------------------------------


def hot_path(dbs: Databases, backend: str, samples: int, trader_id: str) -> dict[str, dict[str, float]]:
    """Caller-thread cost of each facade write, microseconds (buffered mode)."""
    db = dbs.make(backend, trader_id)
    objs = Objects(trader_id)
    db.add_instrument(objs.instrument)
    out: dict[str, list[float]] = {"add_order": [], "update_order": [], "update_position": [], "update_account": []}
    try:
        warm = [objs.limit() for _ in range(200)]
        for order in warm:
            db.add_order(order, None, None)
            order.apply(objs.submitted(order))
            db.update_order(order)
        orders = [objs.limit() for _ in range(samples)]
        gc.collect()
        add = out["add_order"]
        for order in orders:
            add.append(_timed_ns(db.add_order, order, None, None) / 1000)
        update = out["update_order"]
        for make in (objs.submitted, objs.accepted):
            for order in orders:
                order.apply(make(order))
                update.append(_timed_ns(db.update_order, order) / 1000)
        # One position that every sample's fill adds to (NETTING-style growth, no flip).
        opening = objs.limit()
        position = Position(objs.instrument, objs.filled(opening, PositionId("P-BENCH"), 1000))
        db.add_position(position)
        fills = []
        for _ in range(samples):
            order = objs.limit()
            fills.append(objs.filled(order, PositionId("P-BENCH"), 1000))
        gc.collect()
        pos = out["update_position"]
        for fill in fills:
            position.apply(fill)
            pos.append(_timed_ns(db.update_position, position) / 1000)
        account = objs.account()
        db.add_account(account)
        states = [objs.account_state(1_000_000 - i) for i in range(samples)]
        acc = out["update_account"]
        for state in states:
            account.apply(state)
            acc.append(_timed_ns(db.update_account, account) / 1000)
    finally:
        dbs.close(db)
    return {op: percentiles(values) for op, values in out.items()}


# -- end to end -----------------------------------------------------------------------------------


def end_to_end(dbs: Databases, backend: str, mode: str, samples: int, trader_id: str) -> dict[str, Any]:
    """
    Milliseconds from ``update_order`` being called until a second connection sees the event.

    `mode`: "buffered" (buffer interval), "sync" (resilient: returns once acknowledged) or
    "immediate" (native with buffer_interval_ms=0).
    """
    if mode == "sync":
        db = dbs.make(backend, trader_id, durability="sync")
    elif mode == "immediate":
        db = dbs.make(backend, trader_id, interval_ms=0)
    else:
        db = dbs.make(backend, trader_id)
    objs = Objects(trader_id)
    reader = dbs.server.client()
    prefix = f"{trader_key(trader_id)}:{layout.ORDERS}:"
    latencies: list[float] = []
    calls: list[float] = []
    try:
        for i in range(samples + 5):
            order = objs.limit()
            key = prefix + order.client_order_id.value
            db.add_order(order, None, None)  # buffered: goes out in the same batch as the update
            order.apply(objs.submitted(order))
            t0 = time.perf_counter()
            db.update_order(order)
            t_call = time.perf_counter()
            _poll_llen(reader, key, 2)
            t1 = time.perf_counter()
            if i >= 5:  # the first few warm connections and caches up
                latencies.append((t1 - t0) * 1000)
                calls.append((t_call - t0) * 1000)
    finally:
        reader.close()
        dbs.close(db)
    return {"visible_ms": percentiles(latencies), "call_ms": percentiles(calls)}


def _poll_llen(client: redis.Redis, key: str, n: int, timeout_s: float = 30.0) -> None:
    """Until `key` holds `n` events; no pause between reads, as this times end-to-end durability."""
    poll(lambda: client.llen(key) >= n, timeout_s, f"{key} reaching {n} events", interval_s=0)


# -- throughput -----------------------------------------------------------------------------------


def throughput(dbs: Databases, backend: str, ops: int, trader_id: str, *, durability: str = "buffered",
               sampler: Any = None) -> dict[str, Any]:
    """Facade writes per second until Redis acknowledged every one (4 writes per order)."""
    db = dbs.make(backend, trader_id, durability=durability)
    objs = Objects(trader_id)
    n_orders = max(1, ops // 4)
    orders = [objs.limit() for _ in range(n_orders)]
    events = [(objs.submitted(o), objs.accepted(o), objs.filled(o, PositionId(f"P-{i}"))) for i, o in enumerate(orders)]
    reader = dbs.server.client()
    gc.collect()
    cost = ServerCost(dbs.server)
    try:
        with sampler if sampler is not None else _Null(), cost:
            t0 = time.perf_counter()
            add, update = db.add_order, db.update_order
            for order, (submitted, accepted, filled) in zip(orders, events):
                add(order, None, None)
                order.apply(submitted)
                update(order)
                order.apply(accepted)
                update(order)
                order.apply(filled)
                update(order)
            t_submitted = time.perf_counter()
            if backend == RESILIENT:
                if not db.wait_until_persisted(600):
                    raise TimeoutError("resilient backend did not drain within 600s")
            else:
                _wait_all_persisted(reader, trader_key(trader_id), orders, 4)
            t_acked = time.perf_counter()
        persisted = _count_events(reader, trader_key(trader_id), orders)
        stats = db.stats().__dict__ if backend == RESILIENT else {}
    finally:
        reader.close()
        dbs.close(db)
    writes = n_orders * 4
    if persisted != writes:
        raise RuntimeError(f"{backend}: {persisted} of {writes} events persisted after the throughput run")
    return {
        "writes": writes,
        "durability": durability,
        "submit_s": round(t_submitted - t0, 4),
        "acknowledged_s": round(t_acked - t0, 4),
        "submit_ops_per_s": round(writes / (t_submitted - t0)),
        "durable_ops_per_s": round(writes / (t_acked - t0)),
        "spilled_writes": stats.get("spilled_total"),
        "batches": stats.get("batches"),
        "redis_server": cost.result,
    }


def write_costs(dbs: Databases, orders: int, trader_id: str) -> dict[str, Any]:
    """
    CPU cost of one resilient write, stage by stage, on one thread with nothing else running
    (us per facade write; 4 writes per order as in `throughput`). Every stage but the server's
    own work needs this interpreter's GIL, so their sum bounds the durable throughput of one
    process whatever the threading: ``1e6 / sum`` ops/s.
    """
    from launcher.state.codec import EventEncoder  # noqa: PLC0415
    from launcher.store.resp import exchange  # noqa: PLC0415

    objs = Objects(trader_id)
    n_orders = max(1, min(orders, 240))  # stays below one batch: the writer sends nothing meanwhile
    orders_ = [objs.limit() for _ in range(n_orders)]
    events = [(objs.submitted(o), objs.accepted(o), objs.filled(o, PositionId(f"P-{i}"))) for i, o in enumerate(orders_)]
    flat = [e for o, evs in zip(orders_, events) for e in (o.init_event, *evs)]
    writes = len(flat)
    ser = serializer()
    encoder = EventEncoder(ser)

    def per_write(fn) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best / writes * 1e6

    to_dict_us = per_write(lambda: [type(e).to_dict(e) for e in flat])
    serialize_us = per_write(lambda: [encoder.serialize(e) for e in flat])
    db = dbs.make(RESILIENT, trader_id, interval_ms=60_000)
    client = dbs.server.client()
    try:
        gc.collect()
        clock = time.perf_counter
        spent = 0.0  # facade calls only: NautilusTrader's order.apply between them is not the backend's
        add, update = db.add_order, db.update_order
        for order, (submitted, accepted, filled) in zip(orders_, events):
            t0 = clock()
            add(order, None, None)
            spent += clock() - t0
            for event in (submitted, accepted, filled):
                order.apply(event)
                t0 = clock()
                update(order)
                spent += clock() - t0
        facade_us = spent / writes * 1e6
        writer = db.writer
        ops = writer.retained_ops()
        if len(ops) < writes:
            raise RuntimeError(f"the writer sent during the cost breakdown ({len(ops)} of {writes} retained)")
        writer.encode_batch(ops)  # serializes the payloads (measured above)
        pack_us = per_write(lambda: writer.encode_batch(ops))
        data, replies = writer.encode_batch(ops)
        conn = client.connection_pool.get_connection()
        try:
            t0, c0 = time.perf_counter(), time.thread_time()
            exchange(conn, data, replies)
            round_trip_us = (time.perf_counter() - t0) / writes * 1e6
            reply_cpu_us = (time.thread_time() - c0) / writes * 1e6
        finally:
            client.connection_pool.release(conn)
        delete_trader(dbs.server, trader_id)  # so the writer's own first send at close finds empty lists
    finally:
        dbs.close(db)
        client.close()
    gil_us = facade_us + serialize_us + pack_us + reply_cpu_us
    return {
        "writes": writes,
        "facade_us": round(facade_us, 2),
        "serialize_us": round(serialize_us, 2),
        "nautilus_to_dict_us": round(to_dict_us, 2),
        "pack_us": round(pack_us, 2),
        "round_trip_us": round(round_trip_us, 2),
        "send_and_parse_cpu_us": round(reply_cpu_us, 2),
        "gil_us_per_write": round(gil_us, 2),
        "one_interpreter_ceiling_ops_per_s": round(1e6 / gil_us),
    }


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _count_events(client: redis.Redis, key_prefix: str, orders: list) -> int:
    total = 0
    for start in range(0, len(orders), 5000):
        pipe = client.pipeline(transaction=False)
        for order in orders[start:start + 5000]:
            pipe.llen(f"{key_prefix}:{layout.ORDERS}:{order.client_order_id.value}")
        total += sum(pipe.execute())
    return total


def _wait_all_persisted(client: redis.Redis, key_prefix: str, orders: list, events: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    _poll_llen(client, f"{key_prefix}:{layout.ORDERS}:{orders[-1].client_order_id.value}", events, timeout_s)
    poll(lambda: _count_events(client, key_prefix, orders) >= len(orders) * events,
         max(0.0, deadline - time.monotonic()), "the native adapter persisting every event", interval_s=0.001)


# -- recovery -------------------------------------------------------------------------------------


def write_state(dbs: Databases, trader_id: str, n_orders: int, events_per_order: int, positions_ratio: float) -> dict:
    """Persist a node's state (through the resilient facade: the layout is NautilusTrader's)."""
    db = dbs.make(RESILIENT, trader_id, interval_ms=0)
    objs = Objects(trader_id)
    t0 = time.perf_counter()
    try:
        db.add_currency(objs.usd)
        db.add_currency(Currency.from_str("AUD"))
        db.add_instrument(objs.instrument)
        account = objs.account()
        db.add_account(account)
        every = round(1 / positions_ratio) if positions_ratio else 0
        positions = 0
        for i in range(n_orders):
            order = objs.limit()
            position_id = PositionId(f"P-{i}")
            db.add_order(order, None, None)
            order.apply(objs.submitted(order))
            db.update_order(order)
            order.apply(objs.accepted(order))
            db.update_order(order)
            if events_per_order >= 4:
                fill = objs.filled(order, position_id)
                order.apply(fill)
                db.update_order(order)
                if every and i % every == 0:
                    db.add_position(Position(objs.instrument, fill))
                    db.index_order_position(order.client_order_id, position_id)
                    positions += 1
                    account.apply(objs.account_state(1_000_000 - positions))
                    db.update_account(account)
        if not db.wait_until_persisted(1200):
            raise TimeoutError("state was not persisted in time")
    finally:
        dbs.close(db)
    return {"orders": n_orders, "positions": positions, "account_events": positions + 1,
            "write_s": round(time.perf_counter() - t0, 3)}


def recover(dbs: Databases, backend: str, trader_id: str, sampler: Any = None) -> dict[str, Any]:
    """Load the state as the execution engine does at start; seconds per phase and what loaded."""
    db = dbs.make(backend, trader_id)
    cache = Cache(database=db, config=CacheConfig())
    gc.collect()
    cost = ServerCost(dbs.server)
    try:
        with sampler if sampler is not None else _Null(), cost:
            t0 = time.perf_counter()
            cache.cache_currencies()
            cache.cache_instruments()
            cache.cache_accounts()
            t_accounts = time.perf_counter()
            cache.cache_orders()
            t_orders = time.perf_counter()
            cache.cache_positions()
            t_load = time.perf_counter()
        cache.build_index()
        ok = cache.check_integrity()
        t_index = time.perf_counter()
        loaded = {
            "orders": len(cache.orders()),
            "positions": len(cache.positions()),
            "accounts": len(cache.accounts()),
            "account_events": sum(a.event_count for a in cache.accounts()),
            "order_events": sum(o.event_count for o in cache.orders()),
        }
    finally:
        dbs.close(db)
    return {
        "load_s": t_load - t0,
        "accounts_s": t_accounts - t0,
        "orders_s": t_orders - t_accounts,
        "positions_s": t_load - t_orders,
        "index_and_integrity_s": t_index - t_load,
        "total_s": t_index - t0,
        "integrity": bool(ok),
        "loaded": loaded,
        "redis_server": cost.result,
    }


def reads(dbs: Databases, backend: str, trader_id: str, order_ids: list[str], position_ids: list[str],
          samples: int) -> dict[str, Any]:
    """Milliseconds per single-entity load from Redis."""
    db = dbs.make(backend, trader_id)
    rng = random.Random(7)
    out: dict[str, list[float]] = {"load_order": [], "load_position": []}
    try:
        for _ in range(20):
            db.load_order(ClientOrderId(order_ids[0]))
        for _ in range(samples):
            coid = ClientOrderId(rng.choice(order_ids))
            t0 = time.perf_counter()
            order = db.load_order(coid)
            out["load_order"].append((time.perf_counter() - t0) * 1000)
            if order is None:
                raise RuntimeError(f"{backend}: load_order({coid}) returned None")
        if position_ids:
            for _ in range(samples):
                pid = PositionId(rng.choice(position_ids))
                t0 = time.perf_counter()
                position = db.load_position(pid)
                out["load_position"].append((time.perf_counter() - t0) * 1000)
                if position is None:
                    raise RuntimeError(f"{backend}: load_position({pid}) returned None")
    finally:
        dbs.close(db)
    return {op: percentiles(values) for op, values in out.items() if values}


def state_ids(server: Server, trader_id: str) -> tuple[list[str], list[str]]:
    client = server.client()
    try:
        key = trader_key(trader_id)
        orders = [m.decode() for m in client.smembers(f"{key}:{layout.INDEX_ORDERS}")]
        positions = [m.decode() for m in client.smembers(f"{key}:{layout.INDEX_POSITIONS}")]
    finally:
        client.close()
    return sorted(orders), sorted(positions)


def delete_trader(server: Server, trader_id: str) -> None:
    client = server.client()
    try:
        keys = list(client.scan_iter(match=layout.scan_pattern(trader_key(trader_id)), count=5000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start:start + 5000])
    finally:
        client.close()
