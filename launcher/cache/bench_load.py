"""
Ad-hoc timing of state recovery and of the write hot path: NautilusTrader's native Redis
adapter vs `ResilientCacheDatabase`, on a throwaway redis-server (loopback, temp dir).

    .venv/bin/python -m launcher.cache.bench_load [--orders 10000] [--positions 1000]
        [--encoding msgpack|json] [--iso] [--rounds 3]

Writes N orders of 4 events (initialized, submitted, accepted, filled) and P positions (two
fills each) through a ``Cache``, then times ``load_orders() + load_positions()`` for both
backends (best of `rounds`, wall and process CPU time), and the median/p99 latency of
``update_order`` calls. A measurement tool, not a test: numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nautilus_trader.cache.cache import Cache
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.objects import Money
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.cache.testing import TRADER_ID
from launcher.cache.testing import cache_config
from launcher.cache.testing import make_serializer
from launcher.cache.testing import native_adapter
from launcher.cache.testing import new_cache
from launcher.cache.testing import write_orders
from launcher.servers.redis_process import RedisProcess


def _populate(cache: Cache, orders: int, positions: int) -> None:
    audusd = TestInstrumentProvider.default_fx_ccy("AUD/USD")
    cache.add_instrument(audusd)
    written = write_orders(cache, orders, instrument=audusd)
    usd = Currency.from_str("USD")
    for i, order in enumerate(written[:positions]):
        position = Position(audusd, order.events[-1])
        cache.add_position(position, OmsType.HEDGING)
        second = TestEventStubs.order_filled(order, audusd, position_id=position.id, trade_id=TradeId(f"T2-{i}"),
                                             last_qty=Quantity.from_int(50_000), commission=Money(1, usd))
        position.apply(second)
        cache.update_position(position)


def _time_loads(database, rounds: int, orders: int, positions: int) -> tuple[float, float]:
    best_wall = best_cpu = float("inf")
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        loaded_orders = database.load_orders()
        loaded_positions = database.load_positions()
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
        assert len(loaded_orders) == orders and len(loaded_positions) == positions, (len(loaded_orders), len(loaded_positions))
        del loaded_orders, loaded_positions
    return best_wall, best_cpu


def _hot_path(make_db, orders: int = 3000) -> tuple[float, float]:
    source = write_orders(Cache(), orders, start_ns=1_650_000_000_000_000_000, prefix="hot")
    database = make_db()
    cache = new_cache(database)
    for order in source:
        cache.add_order(order)  # so updates append to existing lists
    latencies = []
    for order in source:
        t = time.perf_counter()
        database.update_order(order)
        latencies.append(time.perf_counter() - t)
    database.close()
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e6, latencies[int(len(latencies) * 0.99)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=1_000)
    parser.add_argument("--encoding", choices=("msgpack", "json"), default="msgpack")
    parser.add_argument("--iso", action="store_true", help="timestamps as ISO 8601 (the launcher's default)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp) / "redis", appendonly=False).start()
        try:
            config = cache_config(server.port, args.encoding, args.iso, buffer_interval_ms=50)
            serializer = make_serializer(args.encoding, args.iso)
            writer = ResilientCacheDatabase(TRADER_ID, UUID4(), serializer, config, spill_dir=f"{tmp}/spill-w")
            t = time.perf_counter()
            _populate(new_cache(writer), args.orders, args.positions)
            writer.close()
            print(f"wrote {args.orders} orders x 4 events + {args.positions} positions in {time.perf_counter() - t:.2f}s "
                  f"({args.encoding}, timestamps {'ISO 8601' if args.iso else 'integer text'})")

            native = native_adapter(config)
            ours = ResilientCacheDatabase(TRADER_ID, UUID4(), serializer, config, spill_dir=f"{tmp}/spill-r")
            native_wall, native_cpu = _time_loads(native, args.rounds, args.orders, args.positions)
            ours_wall, ours_cpu = _time_loads(ours, args.rounds, args.orders, args.positions)
            native.close()
            ours.close()
            print(f"load_orders + load_positions (best of {args.rounds}):")
            print(f"  native     {native_wall:7.3f}s wall  {native_cpu:7.3f}s cpu")
            print(f"  resilient  {ours_wall:7.3f}s wall  {ours_cpu:7.3f}s cpu   speedup {native_wall / ours_wall:4.1f}x wall, "
                  f"{native_cpu / ours_cpu:4.1f}x cpu")

            server.client().flushdb()
            native_p50, native_p99 = _hot_path(lambda: native_adapter(config))
            server.client().flushdb()
            ours_p50, ours_p99 = _hot_path(lambda: ResilientCacheDatabase(TRADER_ID, UUID4(), serializer, config,
                                                                          spill_dir=f"{tmp}/spill-h"))
            print("update_order call latency (buffered):")
            print(f"  native     p50 {native_p50:6.1f}us  p99 {native_p99:6.1f}us")
            print(f"  resilient  p50 {ours_p50:6.1f}us  p99 {ours_p99:6.1f}us")
        finally:
            server.kill()


if __name__ == "__main__":
    main()
