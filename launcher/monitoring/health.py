"""
`RedisProbe`: is the cache store reachable, checked by the launcher itself (both backends).

A daemon thread sends PING every `interval_s` on the launcher's own client (the bootstrap
connection, which follows the Sentinel master) and keeps the answer for ``redis_up``; each
answered PING is a real round trip, observed as ``redis_latency_seconds{operation="ping"}``.
A scrape never waits for Redis: it reads the last answer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis


class RedisProbe:
    def __init__(self, client: redis.Redis, latency: Any = None, interval_s: float = 1.0) -> None:
        self._client = client
        self._latency = latency.labels(operation="ping") if latency is not None else None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.up = False
        self.checked = False
        self._thread = threading.Thread(target=self._loop, name="redis-probe", daemon=True)

    @property
    def client(self) -> redis.Redis:
        """The client probed (its pool tells which cluster shard it follows, if any)."""
        return self._client

    def start(self) -> RedisProbe:
        self.check()
        self._thread.start()
        return self

    def check(self) -> bool:
        t0 = time.perf_counter()
        try:
            ok = bool(self._client.ping())
        except redis.exceptions.RedisError:
            ok = False
        if ok and self._latency is not None:
            self._latency.observe(time.perf_counter() - t0)
        self.up = ok
        self.checked = True
        return ok

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
