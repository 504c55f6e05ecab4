"""
Closed orders join the node's cache after it started trading.

On a restart with ``cache.closed_orders=deferred``, verify checks plainly closed orders from
their events without building them (``launcher.state.loader.DeferClosed``) and the node's first
load leaves them out (``ResilientCacheDatabase.closed_history``): building NautilusTrader orders
is most of what a large state adds to a start, and a closed order takes no part in trading.
`ClosedHistory` builds them once the node is RUNNING, a chunk per turn of the node's event loop
(so market data and order events are never held up for long), and hands each to the node's
cache the way NautilusTrader adds an order (``Cache.add_order`` with its position and client
links, then ``Cache.update_order`` for the closed indexes), with the database quiet: Redis
already holds every byte of them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.identifiers import PositionId

from launcher.state.codec import EventDecoder
from launcher.state.entities import build_order
from launcher.state.entities import decode_order
from launcher.state.entities import describe
from launcher.state.gc_pause import gc_paused


log = logging.getLogger("launcher")

# Orders added per turn of the event loop: ~5 ms of it at the ~90 us an order the bench measured
# (decode, build, and NautilusTrader's Cache.add_order/update_order), so the loop is never held long.
CHUNK = 50
# How often the loader looks whether the node is RUNNING yet (seconds).
POLL_S = 0.05
# Orders named one by one when they fail to build; the rest are counted.
NAMED_FAILURES = 5


class ClosedHistory:
    """
    Adds the closed orders a resilient cache database left out of the node's first load to the
    node's cache, after the node reached RUNNING. `start` schedules it on the node's event loop
    (before or while the loop runs); `done`, `loaded` and `failed` say how far it got (the
    monitoring's ``launcher_closed_orders_*`` gauges read them).
    """

    def __init__(self, node: Any, database: Any) -> None:
        self._node = node
        self._database = database
        self._pending: list[tuple[str, list[bytes]]] = database.closed_history
        database.closed_history = []
        self._links: dict[str, tuple[str | None, str | None]] = database.closed_history_links
        self._prefix_len = len(database.order_prefix)
        self._decoder = EventDecoder(database.serializer)
        self._next = 0
        self._started_at: float | None = None
        self.loaded = 0
        self.failed: list[tuple[str, str]] = []
        self.stopped_early = False
        self.done = not self._pending

    @property
    def total(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self.done:
            return
        self._node.get_event_loop().call_soon(self._wait_running)

    def _wait_running(self) -> None:
        node = self._node
        if node.trader.is_running:
            self._started_at = time.perf_counter()
            log.info("Closed orders: building %d after the node started trading", len(self._pending))
            self._step()
        else:  # a node that never starts trading stops its loop, and this with it
            node.get_event_loop().call_later(POLL_S, self._wait_running)

    def _step(self) -> None:
        """Build and add one chunk, then yield the loop to everything else before the next."""
        node = self._node
        if not node.trader.is_running:
            self.stopped_early = True
            log.warning("Closed orders: the node stopped with %d of %d not yet added to its cache (Redis holds them)",
                        len(self._pending) - self._next, len(self._pending))
            self._finish()
            return
        chunk = self._pending[self._next : self._next + CHUNK]
        self._next += len(chunk)
        cache = node.cache
        added: dict[str, Any] = {}
        with gc_paused(), self._database.quiet():
            for key, raw in chunk:
                order_id = key[self._prefix_len:]
                try:
                    order = build_order(key, decode_order(key, raw, self._decoder))
                    position_id, client_id = self._links.get(order_id, (None, None))
                    cache.add_order(order, PositionId(position_id) if position_id else None,
                                    ClientId(client_id) if client_id else None)
                    cache.update_order(order)  # the closed and venue-order-id indexes, as on its last event
                except Exception as e:  # noqa: BLE001 (a closed order that does not build must not stop trading)
                    self._fail(order_id, describe(e))
                    continue
                added[key] = order
        self._database.history_loaded(added)
        self.loaded += len(added)
        if self._next < len(self._pending):
            node.get_event_loop().call_soon(self._step)
        else:
            self._finish()

    def _fail(self, order_id: str, why: str) -> None:
        self.failed.append((order_id, why))
        if len(self.failed) <= NAMED_FAILURES:
            log.error("Closed order %s could not be added to the node's cache: %s (Redis keeps it unchanged)",
                      order_id, why)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        seconds = time.perf_counter() - self._started_at if self._started_at is not None else 0.0
        if self.stopped_early:
            pass  # said above
        elif self.failed:
            log.error("Closed orders: %d added to the node's cache in %.2f s; %d could not be (first: %s)",
                      self.loaded, seconds, len(self.failed), self.failed[0][0])
        else:
            log.info("Closed orders: all %d added to the node's cache in %.2f s after it started trading",
                     self.loaded, seconds)
        self._pending = []
