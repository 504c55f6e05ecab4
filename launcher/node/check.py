"""
``mode=check``: build the node offline and describe it on one screen, so a config can be tested
in CI. Every client is constructed by its factory; nothing connects, and the cache has no
database (no Redis is read or written, not even the lease).
"""

from __future__ import annotations

import asyncio

import msgspec
from nautilus_trader.common.config import LoggingConfig
from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.live.node import TradingNode

from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.config.schema import VenueKind
from launcher.config.venues import one_line
from launcher.errors import ConfigError
from launcher.node.runner import add_client_factories


def check_node(settings: LauncherConfig, config: TradingNodeConfig) -> str:
    """Build (and dispose) a TradingNode from `config` without a cache database; the summary text."""
    offline = msgspec.structs.replace(
        config,
        cache=msgspec.structs.replace(config.cache, database=None, flush_on_start=False),
        exec_engine=msgspec.structs.replace(config.exec_engine, load_cache=False),
        load_state=False,
        save_state=False,
        # The summary is the output: NautilusTrader's own log only for errors.
        logging=LoggingConfig(log_level="ERROR", log_colors=False),
    )
    # A loop of its own: disposing the node closes it, and a later node must not inherit a closed one.
    node = TradingNode(config=offline, loop=asyncio.new_event_loop())
    try:
        add_client_factories(node, offline)
        try:
            node.build()
        except Exception as e:  # noqa: BLE001 (a factory refusing the venue's config is the config's fault)
            raise ConfigError("venue", f"venue {settings.venue.name}'s clients did not build: {one_line(e)}") from None
        data = [f"{type(c).__name__} {c.id}" for c in node.kernel.data_engine._clients.values()]  # noqa: SLF001
        execution = [f"{type(c).__name__} {c.id}" for c in node.kernel.exec_engine._clients.values()]  # noqa: SLF001
        strategies = [f"{s.id} ({type(s).__name__})" for s in node.trader.strategies()]
        actors = [f"{a.id} ({type(a).__name__})" for a in node.trader.actors()]
    finally:
        node.dispose()
    return summary(settings, data, execution, strategies, actors)


def summary(
    settings: LauncherConfig, data: list[str], execution: list[str], strategies: list[str], actors: list[str],
) -> str:
    venue, cache = settings.venue, settings.cache
    if venue.kind == VenueKind.sim:
        where = "offline simulation"
    else:
        where = f"environment {venue.environment or 'default'}, execution {venue.execution.value}"
    store = "memory (nothing persisted)" if cache.store == Store.memory else (
        f"{cache.store.value} (backend {cache.backend.value}, durability {cache.durability.value})")
    rec = settings.reconciliation
    lines = [
        f"check: trader {settings.trader_id} builds (nothing connected, nothing written)",
        f"  venue           {venue.name} ({venue.kind.value}; {where})",
        f"  instruments     {', '.join(venue.instrument_ids)}",
        f"  data clients    {', '.join(data) or '-'}",
        f"  exec clients    {', '.join(execution) or '- (data only)'}",
        f"  strategies      {', '.join(strategies) or '-'}",
        f"  actors          {', '.join(actors) or '-'}",
        f"  cache           {store}",
        f"  reconciliation  {'on' if rec.enabled else 'OFF'}"
        + (f" (lookback {rec.lookback_mins} min)" if rec.enabled and rec.lookback_mins is not None else ""),
        f"  retention       {'on' if settings.retention.enabled and cache.store != Store.memory else 'off'}",
    ]
    return "\n".join(lines)
