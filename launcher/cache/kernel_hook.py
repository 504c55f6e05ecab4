"""
Make the node the launcher builds use `ResilientCacheDatabase`.

NautilusTrader's kernel (``nautilus_trader/system/kernel.py``) constructs its cache database
as ``CacheDatabaseAdapter(trader_id=..., instance_id=..., serializer=..., config=...)``,
looking the name up in its own module. `use_cache_database(factory)` swaps that module-level
name for `factory` while the node is being built and restores it afterwards::

    with use_cache_database(ResilientFactory(durability="sync", spill_dir="var/spill")):
        node = TradingNode(config=config)

The swap is process-global for the duration of the ``with`` block, so it holds a lock: two
threads building nodes at once take turns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from typing import Any

import nautilus_trader.system.kernel as _kernel


if TYPE_CHECKING:
    from launcher.state.loader import Rebuilt


CacheDatabaseFactory = Callable[..., Any]
_SWAP_LOCK = threading.RLock()


@contextmanager
def use_cache_database(factory: CacheDatabaseFactory) -> Iterator[CacheDatabaseFactory]:
    """Within the block, the kernel builds its cache database with `factory`."""
    with _SWAP_LOCK:
        original = _kernel.CacheDatabaseAdapter
        _kernel.CacheDatabaseAdapter = factory
        try:
            yield factory
        finally:
            _kernel.CacheDatabaseAdapter = original


class RebuiltState:
    """
    The orders, positions and accounts verify rebuilt (``launcher.state.loader.Rebuilt``),
    handed to the node's cache database so that its first loads take them (wherever Redis
    still holds the very bytes they were rebuilt from) instead of decoding them again. Taken
    once: a later database of the same factory decodes for itself.
    """

    def __init__(self) -> None:
        self._rebuilt: Rebuilt | None = None
        self._lock = threading.Lock()

    def give(self, rebuilt: Rebuilt) -> None:
        with self._lock:
            self._rebuilt = rebuilt

    def take(self) -> Rebuilt | None:
        with self._lock:
            rebuilt, self._rebuilt = self._rebuilt, None
            return rebuilt


class ResilientFactory:
    """
    A factory with the kernel's call signature that builds a `ResilientCacheDatabase` with
    fixed keyword `options` (``connection``, ``durability``, ``min_replica_acks``, ...), handing
    it what `rebuilt` holds (if anything). The instances it built are listed in `instances`.
    """

    def __init__(self, rebuilt: RebuiltState | None = None, **options: Any) -> None:
        self.options = dict(options)
        self.rebuilt = rebuilt
        self.instances: list[Any] = []

    def __call__(self, trader_id: Any, instance_id: Any, serializer: Any, config: Any = None) -> Any:
        from launcher.cache.resilient import ResilientCacheDatabase  # noqa: PLC0415 (import cost only when used)

        rebuilt = self.rebuilt.take() if self.rebuilt is not None else None
        handed = {} if rebuilt is None else {"rebuilt_orders": rebuilt.orders, "rebuilt_positions": rebuilt.positions,
                                             "rebuilt_accounts": rebuilt.accounts,
                                             "deferred_orders": rebuilt.deferred_orders}
        database = ResilientCacheDatabase(trader_id, instance_id, serializer, config, **handed, **self.options)
        self.instances.append(database)
        return database

