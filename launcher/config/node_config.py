"""
Pure: validated launcher settings -> a complete NautilusTrader ``TradingNodeConfig``.

No connection is made here. Where NautilusTrader's config has no field for a spec
requirement (FR-001 ``timeout``, FR-002 ``persist_orders``...), the mapping is described in
the README's "How the spec is honored" table and carried by the launcher's own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.common.config import LoggingConfig
from nautilus_trader.common.config import resolve_config_path
from nautilus_trader.common.config import resolve_path
from nautilus_trader.live.config import LiveDataEngineConfig
from nautilus_trader.live.config import LiveExecEngineConfig
from nautilus_trader.live.config import LiveRiskEngineConfig
from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.trading.config import ImportableStrategyConfig

from launcher.config.schema import CacheSettings
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.errors import ConfigError
from launcher.venues.sim import SimDataClientConfig


def database_config(cache: CacheSettings, address: tuple[str, int] | None = None) -> DatabaseConfig | None:
    """
    FR-001 as NautilusTrader's ``DatabaseConfig``.

    `address` overrides host/port (the master found through Sentinel for the native
    backend, which cannot follow Sentinel itself). The spec's ``timeout=2.0`` maps to the
    connection and response timeouts, which NautilusTrader takes in whole seconds (rounded
    up); the resilient backend uses ``cache.redis.timeout_s`` exactly.
    """
    if cache.store == Store.memory:
        return None
    redis = cache.redis
    host, port = address if address else (redis.host, redis.port)
    timeout_whole_s = max(1, int(-(-redis.timeout_s // 1)))
    return DatabaseConfig(
        type="redis",
        host=host,
        port=int(port),
        username=redis.username or None,
        password=redis.password or None,
        ssl=bool(redis.ssl),
        connection_timeout=timeout_whole_s,
        response_timeout=timeout_whole_s,
    )


def cache_config(cache: CacheSettings, address: tuple[str, int] | None = None) -> CacheConfig:
    """FR-002 as NautilusTrader's ``CacheConfig`` (buffer_interval_ms 0 means unbuffered)."""
    return CacheConfig(
        database=database_config(cache, address),
        encoding=cache.encoding.value,
        timestamps_as_iso8601=cache.timestamps_as_iso8601,
        buffer_interval_ms=cache.buffer_interval_ms or None,
        bulk_read_batch_size=cache.bulk_read_batch_size,
        persist_account_events=cache.persist_account_events,
        use_trader_prefix=cache.use_trader_prefix,
        use_instance_id=cache.use_instance_id,
        flush_on_start=cache.flush_on_start,
    )


def strategy_config(settings: LauncherConfig) -> ImportableStrategyConfig:
    config_cls = resolve_config_path(settings.strategy.config_path)
    return ImportableStrategyConfig(
        strategy_path=settings.strategy.path,
        config_path=settings.strategy.config_path,
        config=strategy_params(settings, config_cls),
    )


def build_node_config(settings: LauncherConfig, *, redis_address: tuple[str, int] | None = None) -> TradingNodeConfig:
    """
    Return the ``TradingNodeConfig`` for validated `settings`.

    Parameters
    ----------
    redis_address : tuple[str, int], optional
        The Redis master to hand NautilusTrader's own adapter (Sentinel profile with
        ``cache.backend=native``); ignored otherwise.
    """
    venue = settings.venue
    persistent = settings.cache.store != Store.memory
    log_dir = None
    log_file_name = None
    if settings.run.log_file:
        log_path = Path(settings.run.log_file)
        log_dir = str(log_path.parent) if str(log_path.parent) not in ("", ".") else os.getcwd()
        log_file_name = log_path.stem
    return TradingNodeConfig(
        trader_id=settings.trader_id,
        cache=cache_config(settings.cache, redis_address),
        # Loading the execution state from the cache only makes sense when it persisted.
        exec_engine=LiveExecEngineConfig(
            load_cache=persistent,
            reconciliation=True,
            inflight_check_interval_ms=0 if not persistent else 2_000,
        ),
        data_engine=LiveDataEngineConfig(),
        risk_engine=LiveRiskEngineConfig(bypass=False),
        data_clients={
            venue.name: SimDataClientConfig(
                venue=venue.name,
                instruments=list(venue.instruments),
                quote_rate_hz=float(venue.quote_rate_hz),
                trades=bool(venue.trades),
                seed=int(venue.seed),
                initial_price=float(venue.initial_price),
                volatility_bp=float(venue.volatility_bp),
                spread_bp=float(venue.spread_bp),
            ),
        },
        exec_clients={
            venue.name: SandboxExecutionClientConfig(
                venue=venue.name,
                starting_balances=list(venue.starting_balances),
                base_currency=venue.base_currency,
                oms_type=venue.oms_type.value,
                account_type=venue.account_type.value,
            ),
        },
        strategies=[strategy_config(settings)],
        logging=LoggingConfig(
            log_level={"WARN": "WARNING"}.get(settings.run.log_level.value, settings.run.log_level.value),
            log_level_file="DEBUG" if log_file_name else None,
            log_directory=log_dir,
            log_file_name=log_file_name,
            log_colors=False,
        ),
        timeout_disconnection=float(settings.run.timeout_disconnection_s),
        # NautilusTrader waits this long after stopping the strategies for their cancels to settle.
        timeout_post_stop=float(settings.run.post_stop_s),
        load_state=persistent,
        save_state=persistent,
    )


def strategy_params(settings: LauncherConfig, config_cls: type) -> dict:
    """The strategy's params with the venue's first instrument filled in where the config takes one."""
    params = dict(settings.strategy.params)
    fields = getattr(config_cls, "__struct_fields__", ())
    if "instrument_id" in fields and "instrument_id" not in params:
        params["instrument_id"] = f"{settings.venue.instruments[0]}.{settings.venue.name}"
    return params


def check_strategy(settings: LauncherConfig) -> LauncherConfig:
    """
    ConfigError unless the strategy imports and accepts its params (with the venue's first
    instrument filled in): the one check that needs several groups together. Returns `settings`.
    """
    strategy = settings.strategy
    name = strategy.name or strategy.path
    for key, path in (("strategy.path", strategy.path), ("strategy.config_path", strategy.config_path)):
        if ":" not in (path or ""):
            raise ConfigError(key, f"'{path}' must be 'package.module:ClassName'")
    try:
        resolve_path(strategy.path)
    except Exception as e:  # noqa: BLE001 (any import failure is the user's input)
        raise ConfigError("strategy.path", f"cannot import strategy '{strategy.path}': {_one_line(e)}") from None
    try:
        config_cls = resolve_config_path(strategy.config_path)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            "strategy.config_path",
            f"cannot import strategy config '{strategy.config_path}': {_one_line(e)}",
        ) from None
    try:
        config_cls.parse(msgspec.json.encode(strategy_params(settings, config_cls)))
    except Exception as e:  # noqa: BLE001
        raise ConfigError("strategy.params", f"strategy '{name}' rejected its params: {_one_line(e)}") from None
    return settings


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
