"""
Quotes and trades in Redis, only when ``cache.persist_quotes`` / ``cache.persist_trades``
is on (off by default), and never in an unbounded structure: one capped Redis stream per
instrument and kind::

    {trader_key}:launcher:streams:quotes:{instrument_id}   XADD bid ask bid_size ask_size ts_event ts_init
    {trader_key}:launcher:streams:trades:{instrument_id}   XADD price size aggressor_side trade_id ts_event ts_init

Bounds
    count: each XADD carries ``MAXLEN ~ retention.stream_max_len`` (Redis trims whole nodes,
    cheap) and every flush ends with an exact ``XTRIM MAXLEN`` so a stream never holds more
    than ``stream_max_len`` entries after a flush;
    age: entry ids are the tick's ``ts_init`` in milliseconds (``<ms>-*``), and every flush
    runs ``XTRIM MINID`` at now - ``retention.stream_max_age_s``.
    Memory: ticks wait for the next flush (every ``FLUSH_S``) in a deque bounded to
    ``stream_max_len`` per stream; when Redis is away the oldest are dropped (counted in
    ``dropped``) - they would be trimmed away anyway. Market data is not trading state: the
    lossless machinery of the cache backend is not spent on it.

Writes happen on their own thread, so the event loop never waits for Redis.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import redis
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.model.identifiers import InstrumentId

from launcher.state import layout


log = logging.getLogger("launcher.retention")

STREAMS = "launcher:streams"
FLUSH_S = 0.1


def stream_key(trader_key: str, kind: str, instrument_id: str) -> str:
    """The stream of `kind` ("quotes" or "trades") for one instrument."""
    return layout.full_key(trader_key, f"{STREAMS}:{kind}:{instrument_id}")


class StreamWriter:
    """Batches ticks into capped streams from a background thread."""

    def __init__(self, client: redis.Redis, max_len: int, max_age_s: float) -> None:
        self._client = client
        self.max_len = int(max_len)
        self.max_age_ms = int(max_age_s * 1000)
        self._queues: dict[str, collections.deque] = {}
        self._last_ms: dict[str, int] = {}
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.written = collections.Counter()  # kind -> entries acknowledged by Redis
        self.dropped = 0
        self._was_failing = False
        self._thread = threading.Thread(target=self._loop, name="market-data-streams", daemon=True)

    def start(self) -> StreamWriter:
        self._thread.start()
        return self

    def put(self, kind: str, key: str, ts_ms: int, fields: dict[str, Any]) -> None:
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque(maxlen=self.max_len)
                self._kinds[key] = kind
            if len(queue) == queue.maxlen:
                self.dropped += 1
            queue.append((ts_ms, fields))

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> bool:
        """Send what is queued; False when Redis did not take it (kept for the next flush, bounded)."""
        with self._lock:
            batch = {key: list(q) for key, q in self._queues.items() if q}
            for key in batch:
                self._queues[key].clear()
        if not batch:
            return True
        pipe = self._client.pipeline(transaction=False)
        cutoff = int(time.time() * 1000) - self.max_age_ms
        owners: list[str] = []
        for key, items in batch.items():
            owners += [key] * (len(items) + 2)
            last = self._last_ms.get(key, 0)
            for ts_ms, fields in items:
                # Stream ids must grow; the sequence part (*) tells apart ticks of one millisecond.
                last = max(last, ts_ms)
                pipe.xadd(key, fields, id=f"{last}-*", maxlen=self.max_len, approximate=True)
            self._last_ms[key] = last
            pipe.xtrim(key, maxlen=self.max_len, approximate=False)
            pipe.xtrim(key, minid=cutoff, approximate=False)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as e:
            self._requeue(batch)
            if not self._was_failing:
                log.warning("Market data streams: Redis unavailable (%s); keeping the newest ticks in memory", e)
                self._was_failing = True
            return False
        failed = {key for key, reply in zip(owners, replies) if isinstance(reply, Exception)}
        if failed:
            first = next(r for r in replies if isinstance(r, Exception))
            log.error("Market data streams: Redis refused writes to %d stream(s): %s", len(failed), first)
            for key in failed:
                self._resync(key)
        for key, items in batch.items():
            if key not in failed:
                self.written[self._kinds[key]] += len(items)
        if self._was_failing:
            log.info("Market data streams: writing again")
            self._was_failing = False
        return True

    def _resync(self, key: str) -> None:
        """After a refused XADD (e.g. the stream already has newer ids): continue after its last id."""
        try:
            top = self._client.xrevrange(key, count=1)
        except redis.exceptions.RedisError:
            return
        if top:
            last_id = top[0][0].decode() if isinstance(top[0][0], bytes) else str(top[0][0])
            self._last_ms[key] = max(self._last_ms.get(key, 0), int(last_id.split("-")[0]))

    def _requeue(self, batch: dict[str, list]) -> None:
        with self._lock:
            for key, items in batch.items():
                queue = self._queues[key]
                newer = list(queue)
                queue.clear()
                for item in items + newer:
                    if len(queue) == queue.maxlen:
                        self.dropped += 1
                    queue.append(item)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception:
            log.exception("Market data streams: final flush failed")


class MarketDataRecorder(Actor):
    """Subscribes to the venue's quotes (and/or trades) and hands them to a StreamWriter."""

    def __init__(self, writer: StreamWriter, trader_key: str, instruments: list[str], *, quotes: bool, trades: bool) -> None:
        super().__init__(ActorConfig(component_id="LauncherMarketDataRecorder", log_events=False, log_commands=False))
        self._writer = writer
        self._trader_key = trader_key
        self._instruments = [InstrumentId.from_str(i) for i in instruments]
        self._quotes = quotes
        self._trades = trades

    def on_start(self) -> None:
        for instrument_id in self._instruments:
            if self._quotes:
                self.subscribe_quote_ticks(instrument_id)
            if self._trades:
                self.subscribe_trade_ticks(instrument_id)
        log.info(
            "Recording %s to capped Redis streams (at most %d entries, %.0f s each)",
            " and ".join(k for k, on in (("quotes", self._quotes), ("trades", self._trades)) if on),
            self._writer.max_len, self._writer.max_age_ms / 1000,
        )

    def on_stop(self) -> None:
        for instrument_id in self._instruments:
            if self._quotes:
                self.unsubscribe_quote_ticks(instrument_id)
            if self._trades:
                self.unsubscribe_trade_ticks(instrument_id)

    def on_quote_tick(self, tick: Any) -> None:
        self._writer.put(
            "quotes", stream_key(self._trader_key, "quotes", tick.instrument_id.value),
            tick.ts_init // 1_000_000,
            {
                "bid": str(tick.bid_price), "ask": str(tick.ask_price),
                "bid_size": str(tick.bid_size), "ask_size": str(tick.ask_size),
                "ts_event": tick.ts_event, "ts_init": tick.ts_init,
            },
        )

    def on_trade_tick(self, tick: Any) -> None:
        self._writer.put(
            "trades", stream_key(self._trader_key, "trades", tick.instrument_id.value),
            tick.ts_init // 1_000_000,
            {
                "price": str(tick.price), "size": str(tick.size), "aggressor_side": int(tick.aggressor_side),
                "trade_id": tick.trade_id.value, "ts_event": tick.ts_event, "ts_init": tick.ts_init,
            },
        )
