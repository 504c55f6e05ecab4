"""
Make the node the launcher builds use `ResilientCacheDatabase`.

NautilusTrader's kernel (``nautilus_trader/system/kernel.py``) constructs its cache database
as ``CacheDatabaseAdapter(trader_id=..., instance_id=..., serializer=..., config=...)``,
looking the name up in its own module. `use_cache_database(factory)` swaps that module-level
name for `factory` while the node is being built and restores it afterwards::

    with use_cache_database(resilient_factory(durability="sync", spill_dir="var/spill")):
        node = TradingNode(config=config)

The swap is process-global for the duration of the ``with`` block, so it holds a lock: two
threads building nodes at once take turns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nautilus_trader.system.kernel as _kernel


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


def resilient_factory(**kwargs: Any) -> CacheDatabaseFactory:
    """
    A factory with the kernel's call signature that builds a `ResilientCacheDatabase` with
    the given keyword options (``connection``, ``durability``, ``min_replica_acks``, ...).
    The instances it built are listed in ``factory.instances``.
    """
    from launcher.cache.resilient import ResilientCacheDatabase  # noqa: PLC0415 (import cost only when used)

    instances: list[ResilientCacheDatabase] = []
    next_only: dict[str, Any] = {}

    def factory(trader_id: Any, instance_id: Any, serializer: Any, config: Any = None) -> ResilientCacheDatabase:
        database = ResilientCacheDatabase(trader_id, instance_id, serializer, config, **kwargs, **next_only)
        next_only.clear()
        instances.append(database)
        return database

    def for_next_instance(**options: Any) -> None:
        """Further keyword options for the next instance only (e.g. ``rebuilt_orders``)."""
        next_only.update(options)

    factory.instances = instances  # type: ignore[attr-defined]
    factory.options = dict(kwargs)  # type: ignore[attr-defined]
    factory.for_next_instance = for_next_instance  # type: ignore[attr-defined]
    return factory
