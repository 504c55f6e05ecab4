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
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.common.config import ImportableActorConfig
from nautilus_trader.common.config import LoggingConfig
from nautilus_trader.common.config import resolve_config_path
from nautilus_trader.common.config import resolve_path
from nautilus_trader.live.config import LiveDataEngineConfig
from nautilus_trader.live.config import LiveExecEngineConfig
from nautilus_trader.live.config import LiveRiskEngineConfig
from nautilus_trader.live.config import TradingNodeConfig
from nautilus_trader.trading.config import ImportableStrategyConfig
from omegaconf import OmegaConf

from launcher.config.compose import CONFIG_DIR
from launcher.config.schema import ActorSettings
from launcher.config.schema import CacheSettings
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Mode
from launcher.config.schema import Store
from launcher.config.schema import StrategySettings
from launcher.config.schema import is_identifier
from launcher.config.venues import one_line
from launcher.config.venues import venue_clients
from launcher.errors import ConfigError


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


def strategy_entries(settings: LauncherConfig) -> list[StrategySettings]:
    """
    The node's strategies: `strategy` alone, or each option of `strategies` read from
    ``conf/strategy/NAME.yaml`` with its ``strategy_params.NAME`` on top and, unless the YAML
    gives one, its position (001, 002...) as order_id_tag.
    """
    if not settings.strategies:
        return [settings.strategy]
    twice = sorted({name for name in settings.strategies if settings.strategies.count(name) > 1})
    if twice:
        raise ConfigError("strategies", f"'{twice[0]}' is listed twice (its strategy_params are keyed by option "
                                        "name): copy its YAML under another name for a second instance")
    unknown = set(settings.strategy_params) - set(settings.strategies)
    if unknown:
        raise ConfigError(f"strategy_params.{sorted(unknown)[0]}", "is not an option listed in strategies")
    entries = []
    for position, name in enumerate(settings.strategies, start=1):
        folder = CONFIG_DIR / "strategy"
        path = folder / f"{name}.yaml"
        # A name, not a path: '../venue/sim' would have loaded another group's YAML as a strategy.
        if not path.is_file() or path.parent != folder or name.startswith("."):
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            raise ConfigError("strategies", f"no strategy option '{name}' (available: {', '.join(options)})")
        try:
            merged = OmegaConf.merge(OmegaConf.structured(StrategySettings), OmegaConf.load(path))
            entry = OmegaConf.to_object(merged)
        except Exception as e:  # noqa: BLE001 (the YAML is the user's input)
            raise ConfigError(f"strategies.{name}", one_line(e)) from None
        entry.params = {**entry.params, **settings.strategy_params.get(name, {})}
        entry.order_id_tag = entry.order_id_tag or f"{position:03d}"
        entries.append(entry)
    tags = [entry.order_id_tag for entry in entries]
    if len(set(tags)) != len(tags):
        raise ConfigError("strategies", f"every strategy needs a distinct order_id_tag, got {tags}")
    return entries


def strategy_config(settings: LauncherConfig, strategy: StrategySettings) -> ImportableStrategyConfig:
    config_cls = resolve_config_path(strategy.config_path)
    params = strategy_params(settings, config_cls, strategy.params)
    if strategy.order_id_tag is not None:
        params["order_id_tag"] = strategy.order_id_tag
    return ImportableStrategyConfig(
        strategy_path=strategy.path,
        config_path=strategy.config_path,
        config=params,
    )


def actor_config(settings: LauncherConfig, actor: ActorSettings) -> ImportableActorConfig:
    config_cls = resolve_config_path(actor.config_path)
    return ImportableActorConfig(
        actor_path=actor.path,
        config_path=actor.config_path,
        config=strategy_params(settings, config_cls, actor.params),
    )


def exec_engine_config(settings: LauncherConfig) -> LiveExecEngineConfig:
    """The execution engine with the reconciliation settings (loading the cache only when it persisted)."""
    persistent = settings.cache.store != Store.memory
    rec = settings.reconciliation
    inflight_ms = rec.inflight_check_interval_ms
    if inflight_ms is None:
        inflight_ms = 2_000 if persistent else 0
    return LiveExecEngineConfig(
        load_cache=persistent,
        reconciliation=rec.enabled,
        reconciliation_lookback_mins=rec.lookback_mins,
        reconciliation_startup_delay_secs=float(rec.startup_delay_s),
        inflight_check_interval_ms=inflight_ms,
        open_check_interval_secs=rec.open_check_interval_s,
        open_check_open_only=rec.open_check_open_only,
        filter_unclaimed_external_orders=rec.filter_unclaimed_external_orders,
        generate_missing_orders=rec.generate_missing_orders,
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
    persistent = settings.cache.store != Store.memory
    log_dir = None
    log_file_name = None
    if settings.run.log_file:
        log_path = Path(settings.run.log_file)
        log_dir = str(log_path.parent) if str(log_path.parent) not in ("", ".") else os.getcwd()
        log_file_name = log_path.stem
    data_clients, exec_clients = venue_clients(settings.venue)
    return TradingNodeConfig(
        trader_id=settings.trader_id,
        cache=cache_config(settings.cache, redis_address),
        exec_engine=exec_engine_config(settings),
        data_engine=LiveDataEngineConfig(),
        risk_engine=LiveRiskEngineConfig(bypass=False),
        data_clients=data_clients,
        exec_clients=exec_clients,
        strategies=[strategy_config(settings, strategy) for strategy in strategy_entries(settings)],
        actors=[actor_config(settings, actor) for actor in settings.actors],
        logging=LoggingConfig(
            log_level={"WARN": "WARNING"}.get(settings.run.log_level.value, settings.run.log_level.value),
            log_level_file="DEBUG" if log_file_name else None,
            log_directory=log_dir,
            log_file_name=log_file_name,
            log_colors=False,
        ),
        timeout_connection=float(settings.run.timeout_connection_s),
        timeout_reconciliation=float(settings.run.timeout_reconciliation_s),
        timeout_disconnection=float(settings.run.timeout_disconnection_s),
        # NautilusTrader waits this long after stopping the strategies for their cancels to settle.
        timeout_post_stop=float(settings.run.post_stop_s),
        load_state=persistent,
        save_state=persistent,
    )


def strategy_params(settings: LauncherConfig, config_cls: type, params: dict) -> dict:
    """`params` with the venue's first instrument filled in where the config takes one."""
    params = dict(params)
    fields = getattr(config_cls, "__struct_fields__", ())
    if "instrument_id" in fields and "instrument_id" not in params:
        params["instrument_id"] = settings.venue.instrument_ids[0]
    return params


def check_strategy(settings: LauncherConfig) -> LauncherConfig:
    """
    ConfigError unless every strategy and actor imports and accepts its params (with the venue's
    first instrument filled in) and, for the modes that build a node, the venue's clients build
    from their YAML and the environment (credentials): the checks that need several groups
    together. Returns `settings`.
    """
    for strategy in strategy_entries(settings):
        name = strategy.name or strategy.path
        key = "strategy" if not settings.strategies else f"strategies.{name}"
        _check_strategy_id(key, strategy)
        _check_importable(settings, key, f"strategy '{name}'", strategy.path, strategy.config_path, strategy.params)
    for index, actor in enumerate(settings.actors):
        _check_importable(settings, f"actors.{index}", f"actor '{actor.path}'", actor.path, actor.config_path,
                          actor.params)
    if settings.mode in (Mode.run, Mode.check):  # verify, inspect and retention build no node
        venue_clients(settings.venue)
    return settings


def _check_strategy_id(key: str, strategy: StrategySettings) -> None:
    """ConfigError for an order_id_tag or strategy_id NautilusTrader would abort the process on."""
    tag = strategy.order_id_tag if strategy.order_id_tag is not None else strategy.params.get("order_id_tag")
    if tag is not None and not is_identifier(tag, tag_only=True):
        raise ConfigError(f"{key}.order_id_tag", f"'{tag}' is not a strategy id tag (e.g. 001; ASCII, no spaces "
                                                 "or ':', not empty, not ending with '-')")
    strategy_id = strategy.params.get("strategy_id")
    if strategy_id is not None and not is_identifier(strategy_id):
        raise ConfigError(f"{key}.params.strategy_id", f"'{strategy_id}' is not in NautilusTrader's NAME-TAG form "
                                                       "(e.g. EMACross-001; ASCII, no spaces or ':')")


def _check_importable(settings: LauncherConfig, key: str, what: str, path: str, config_path: str, params: dict) -> None:
    for part, value in (("path", path), ("config_path", config_path)):
        if ":" not in (value or ""):
            raise ConfigError(f"{key}.{part}", f"'{value}' must be 'package.module:ClassName'")
    try:
        resolve_path(path)
    except Exception as e:  # noqa: BLE001 (any import failure is the user's input)
        raise ConfigError(f"{key}.path", f"cannot import {what.split(' ')[0]} '{path}': {one_line(e)}") from None
    try:
        config_cls = resolve_config_path(config_path)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"{key}.config_path", f"cannot import {what.split(' ')[0]} config '{config_path}': {one_line(e)}",
        ) from None
    try:
        config_cls.parse(msgspec.json.encode(strategy_params(settings, config_cls, params)))
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{key}.params", f"{what} rejected its params: {one_line(e)}") from None
