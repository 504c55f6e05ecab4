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

from nautilus_trader.common.config import ImportableConfig
from nautilus_trader.common.config import resolve_path
from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.live.node import TradingNode

from launcher.errors import VenueUnreachable
from launcher.stop_signals import StopSignals


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


def add_client_factories(node: TradingNode, config: TradingNodeConfig) -> None:
    """
    Register the factory classes the clients' ImportableConfigs name (launcher.config.venues).
    NautilusTrader's builder would register instances of them, and it hands the portfolio only
    to a factory whose class (``__name__``) is SandboxLiveExecClientFactory, which an instance lacks.
    """
    for clients, add in ((config.data_clients, node.add_data_client_factory),
                         (config.exec_clients, node.add_exec_client_factory)):
        for name, client in clients.items():
            if isinstance(client, ImportableConfig) and client.factory is not None:
                add(name, resolve_path(client.factory.path))


class NodeRun:
    """
    One trading node's life: build, run, stop, dispose.

    Parameters
    ----------
    config : TradingNodeConfig
        The complete node config (launcher.config.node_config.build_node_config).
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
        cache_database_factory: Callable | None = None,
        signals: StopSignals | None = None,
    ) -> None:
        self.config = config
        self._factory = cache_database_factory
        self._signals = signals
        self.node: TradingNode | None = None
        self.stop_reason: str | None = None
        self.loaded_counts: CacheCounts | None = None
        self.unreachable: str | None = None  # why the node never started trading (exit 9)
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
        add_client_factories(node, self.config)
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
        """
        Run until SIGINT/SIGTERM/SIGHUP, `duration_s` or request_stop(), then dispose (flushes the
        cache). VenueUnreachable when a client had not connected within the node's
        timeout_connection (seconds), or the node had not started trading within the kernel's
        reconciliation and portfolio timeouts after that: it is stopped then instead of idling.
        """
        node = self.node or self.build()
        try:
            if self.stop_reason is not None:  # asked to stop before it ever ran
                return
            loop = node.get_event_loop()
            if duration_s:
                loop.call_later(duration_s, self.request_stop, f"run.duration_s={duration_s:g} reached")
            # NautilusTrader's kernel gives up waiting for its clients after timeout_connection
            # and then idles with the trader never started; checked just after that moment.
            loop.call_later(float(self.config.timeout_connection) + 0.5, self._check_connected)
            node.run()
            if self.on_stopped is not None:
                self.on_stopped(node)
        finally:
            if self._signals is not None:  # before dispose: a repeated signal must not cut the flush short
                self._signals.stopping(node.get_event_loop())
            node.dispose()
        if self.unreachable:
            raise VenueUnreachable(f"venue unreachable: {self.unreachable}")

    def _check_connected(self) -> None:
        """Just after the kernel's connect timeout: every client connected, else stop (exit 9)."""
        node = self.node
        if node is None or node.trader.is_running or self.stop_reason is not None:
            return
        kernel = node.kernel
        clients = [*kernel.data_engine._clients.values(), *kernel.exec_engine._clients.values()]  # noqa: SLF001
        missing = sorted({f"{type(c).__name__} {c.id}" for c in clients if not c.is_connected})
        if missing:
            self._stop_unstarted(f"{', '.join(missing)} did not connect within run.timeout_connection_s="
                                 f"{self.config.timeout_connection:g} (no network, a wrong endpoint, or the venue is down)")
            return
        # Connected and reconciling: the kernel gives up after its reconciliation and portfolio
        # timeouts (seconds) the same way, idling with the trader never started.
        wait_s = float(self.config.timeout_reconciliation) + float(self.config.timeout_portfolio) + 0.5
        node.get_event_loop().call_later(wait_s, self._check_started)

    def _check_started(self) -> None:
        node = self.node
        if node is None or node.trader.is_running or self.stop_reason is not None:
            return
        self._stop_unstarted(f"the venue's clients connected but the node did not start within "
                             f"run.timeout_reconciliation_s={self.config.timeout_reconciliation:g} "
                             "(reconciliation or the portfolio's initialisation did not finish; see the log)")

    def _stop_unstarted(self, why: str) -> None:
        self.unreachable = why
        # Nothing ran, so nothing is saved: the kernel would otherwise write the never-started
        # strategies' and actors' state over what the last real run persisted (no public setter).
        self.node.kernel._save_state = False  # noqa: SLF001
        self.request_stop(f"venue unreachable: {why}")
