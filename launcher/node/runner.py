"""
The running node: build a ``TradingNode`` from its config (with the chosen cache backend),
run it until SIGINT/SIGTERM/SIGHUP, ``run.duration_s`` or a stop request from another thread, and
dispose it so buffered cache writes are flushed before the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.live.node import TradingNode

from launcher.stop_signals import StopSignals
from launcher.venues.sim import SimDataClientFactory
from launcher.venues.sim import SimExecClientFactory


log = logging.getLogger("launcher.node")


@dataclass(frozen=True)
class CacheCounts:
    """What a node's cache holds: compared with the recovery report after loading."""

    orders_open: int
    orders_closed: int
    positions_open: int
    positions_closed: int
    accounts: int

    @classmethod
    def of(cls, cache) -> CacheCounts:
        return cls(
            orders_open=cache.orders_open_count(),
            orders_closed=cache.orders_closed_count(),
            positions_open=cache.positions_open_count(),
            positions_closed=cache.positions_closed_count(),
            accounts=len(cache.accounts()),
        )


class NodeRun:
    """
    One trading node's life: build, run, stop, dispose.

    Parameters
    ----------
    config : TradingNodeConfig
        The complete node config (launcher.config.node_config.build_node_config).
    venue : str
        The sim venue's name, for its client factories.
    cache_database_factory : Callable, optional
        A factory with ``CacheDatabaseAdapter``'s signature that the kernel uses instead
        of NautilusTrader's adapter (the resilient backend); None keeps NautilusTrader's.
    signals : StopSignals, optional
        The launcher's stop-signal policy: attached to the node's loop once it is built
        (replacing NautilusTrader's handlers) and moved to its stopping phase before dispose.
        None leaves NautilusTrader's handlers in place.
    """

    def __init__(
        self,
        config: TradingNodeConfig,
        venue: str,
        cache_database_factory: Callable | None = None,
        signals: StopSignals | None = None,
    ) -> None:
        self.config = config
        self.venue = venue
        self._factory = cache_database_factory
        self._signals = signals
        self.node: TradingNode | None = None
        self.stop_reason: str | None = None
        self.loaded_counts: CacheCounts | None = None
        # Called with the node after it stopped and before it is disposed (its cache still full).
        self.on_stopped: Callable[[TradingNode], None] | None = None
        self._stop_lock = threading.Lock()

    @property
    def cache_database_factory(self) -> Callable | None:
        """The factory the kernel builds its cache database with (None: NautilusTrader's adapter)."""
        return self._factory

    def build(self) -> TradingNode:
        hook = contextlib.nullcontext()
        if self._factory is not None:
            from launcher.cache.kernel_hook import use_cache_database  # noqa: PLC0415

            hook = use_cache_database(self._factory)
        with hook:
            node = TradingNode(config=self.config)
        # The kernel loads the execution state from the cache database in its constructor.
        self.loaded_counts = CacheCounts.of(node.cache)
        node.add_data_client_factory(self.venue, SimDataClientFactory)
        node.add_exec_client_factory(self.venue, SimExecClientFactory)
        node.build()
        self.node = node
        if self._signals is not None:
            self._signals.attach(node.get_event_loop(), self.request_stop)
        return node

    def request_stop(self, reason: str) -> None:
        """Ask the node to stop; safe from any thread, effective once."""
        with self._stop_lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
        node = self.node
        if node is None:
            return
        log.warning("Stopping node: %s", reason)
        loop = node.get_event_loop()
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(node.stop)

    def run(self, duration_s: float | None = None) -> None:
        """Run until SIGINT/SIGTERM/SIGHUP, `duration_s` or request_stop(), then dispose (flushes the cache)."""
        node = self.node or self.build()
        try:
            if self.stop_reason is not None:  # asked to stop before it ever ran
                return
            if duration_s:
                node.get_event_loop().call_later(duration_s, self.request_stop, f"run.duration_s={duration_s:g} reached")
            node.run()
            if self.on_stopped is not None:
                self.on_stopped(node)
        finally:
            if self._signals is not None:  # before dispose: a repeated signal must not cut the flush short
                self._signals.stopping(node.get_event_loop())
            node.dispose()
