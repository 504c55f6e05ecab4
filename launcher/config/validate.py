"""
Pure semantic checks of the composed settings, beyond what the typed schema catches.

Each problem raises ConfigError naming the key, so the user sees one line and exit code 2
before anything connects or writes.
"""

from __future__ import annotations

import os

import msgspec
from nautilus_trader.common.config import resolve_config_path
from nautilus_trader.common.config import resolve_path
from nautilus_trader.model.enums import account_type_from_str
from nautilus_trader.model.enums import oms_type_from_str
from nautilus_trader.model.objects import Money

from launcher.config.schema import Backend
from launcher.config.schema import Durability
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.errors import ConfigError
from launcher.store.connection import parse_address


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "OFF")


def validate(settings: LauncherConfig) -> LauncherConfig:
    """Raise ConfigError for the first problem found; return `settings` unchanged when sound."""
    _check_trader_id(settings.trader_id)
    _check_cache(settings)
    _check_venue(settings)
    _check_strategy(settings)
    _check_runtime(settings)
    return settings


def _check_trader_id(trader_id: str) -> None:
    # Checked here rather than by constructing a TraderId: NautilusTrader aborts the whole
    # process (a Rust panic) on an invalid one. ':' is Redis's key delimiter, so it is refused too.
    name, sep, tag = str(trader_id).rpartition("-")
    printable = all("!" <= c <= "~" and c != ":" for c in str(trader_id))
    if not (sep and name and tag and printable):
        raise ConfigError(
            "trader_id",
            f"'{trader_id}' is not in NautilusTrader's NAME-TAG form (e.g. TRADER-001; ASCII, no spaces or ':')",
        )


def _check_port(key: str, port: int) -> None:
    if not 1 <= int(port) <= 65535:
        raise ConfigError(key, f"port {port} is out of range 1..65535")


def _check_cache(settings: LauncherConfig) -> None:
    cache = settings.cache
    if cache.encoding not in ("msgpack", "json"):
        raise ConfigError("cache.encoding", f"'{cache.encoding}' is not one of msgpack, json")
    if cache.buffer_interval_ms < 0:
        raise ConfigError("cache.buffer_interval_ms", f"must be >= 0 milliseconds, was {cache.buffer_interval_ms}")
    if cache.bulk_read_batch_size is not None and cache.bulk_read_batch_size <= 0:
        raise ConfigError("cache.bulk_read_batch_size", "must be positive")
    if cache.max_pending_writes <= 0:
        raise ConfigError("cache.max_pending_writes", "must be positive")
    for key in ("persist_orders", "persist_positions"):
        if not getattr(cache, key):
            raise ConfigError(
                f"cache.{key}",
                "false is not supported: NautilusTrader always persists orders and positions to its cache "
                "database, and recovery needs them (use cache=memory to persist nothing)",
            )
    if cache.store == Store.memory:
        return
    redis = cache.redis
    if cache.store == Store.redis:
        if not redis.host:
            raise ConfigError("cache.redis.host", "must not be empty")
        _check_port("cache.redis.port", redis.port)
    if redis.username and not redis.password:
        raise ConfigError(
            "cache.redis.username",
            f"username '{redis.username}' given without cache.redis.password (REDIS_PASSWORD)",
        )
    if redis.db < 0:
        raise ConfigError("cache.redis.db", f"must be >= 0, was {redis.db}")
    if redis.timeout_s <= 0:
        raise ConfigError("cache.redis.timeout_s", f"must be positive seconds, was {redis.timeout_s}")
    if redis.max_connections < 1:
        raise ConfigError("cache.redis.max_connections", "must be at least 1")
    if redis.ssl_ca_file and not os.path.isfile(redis.ssl_ca_file):
        raise ConfigError("cache.redis.ssl_ca_file", f"no such file: {redis.ssl_ca_file}")
    if cache.store == Store.sentinel:
        if not cache.sentinel.nodes:
            raise ConfigError(
                "cache.sentinel.nodes",
                "the sentinel profile needs at least one sentinel "
                "(cache.sentinel.nodes=[host:port,...] or REDIS_SENTINELS=host:port,...)",
            )
        for node in cache.sentinel.nodes:
            try:
                parse_address(node)
            except ValueError as e:
                raise ConfigError("cache.sentinel.nodes", str(e)) from None
        if not cache.sentinel.master_name:
            raise ConfigError("cache.sentinel.master_name", "must not be empty")
        if cache.sentinel.min_replica_acks < 0:
            raise ConfigError("cache.sentinel.min_replica_acks", "must be >= 0")
    if cache.backend == Backend.native:
        if cache.durability == Durability.sync:
            raise ConfigError(
                "cache.durability",
                "sync needs cache.backend=resilient (NautilusTrader's adapter only writes asynchronously)",
            )
        if redis.db != 0:
            raise ConfigError("cache.redis.db", "NautilusTrader's native adapter only uses database 0")


def _check_venue(settings: LauncherConfig) -> None:
    venue = settings.venue
    if venue.kind != "sim":
        raise ConfigError("venue.kind", f"'{venue.kind}' is not a known venue kind (sim)")
    if not venue.name or not venue.name.isalnum():
        raise ConfigError("venue.name", f"'{venue.name}' must be a non-empty alphanumeric venue name")
    try:
        oms_type_from_str(venue.oms_type)
    except (ValueError, KeyError):
        raise ConfigError("venue.oms_type", f"'{venue.oms_type}' is not NETTING or HEDGING") from None
    try:
        account_type_from_str(venue.account_type)
    except (ValueError, KeyError):
        raise ConfigError("venue.account_type", f"'{venue.account_type}' is not CASH or MARGIN") from None
    if not venue.starting_balances:
        raise ConfigError("venue.starting_balances", "needs at least one balance such as '1000000 USD'")
    for balance in venue.starting_balances:
        try:
            Money.from_str(balance)
        except (ValueError, TypeError):
            raise ConfigError("venue.starting_balances", f"'{balance}' is not an amount with a currency") from None
    if not venue.instruments:
        raise ConfigError("venue.instruments", "needs at least one FX pair such as EUR/USD")
    for symbol in venue.instruments:
        base, _, quote = symbol.partition("/")
        if len(base) != 3 or len(quote) != 3:
            raise ConfigError("venue.instruments", f"'{symbol}' is not an FX pair like EUR/USD")
    if venue.quote_rate_hz <= 0:
        raise ConfigError("venue.quote_rate_hz", f"must be positive, was {venue.quote_rate_hz}")
    if venue.initial_price <= 0:
        raise ConfigError("venue.initial_price", "must be positive")
    if venue.restored_orders != "cancel":
        raise ConfigError("venue.restored_orders", "only 'cancel' is supported by the sim venue")


def strategy_params(settings: LauncherConfig, config_cls: type) -> dict:
    """The strategy's params with the venue's first instrument filled in where the config takes one."""
    params = dict(settings.strategy.params)
    fields = getattr(config_cls, "__struct_fields__", ())
    if "instrument_id" in fields and "instrument_id" not in params:
        params["instrument_id"] = f"{settings.venue.instruments[0]}.{settings.venue.name}"
    return params


def _check_strategy(settings: LauncherConfig) -> None:
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


def _check_runtime(settings: LauncherConfig) -> None:
    if settings.run.duration_s is not None and settings.run.duration_s <= 0:
        raise ConfigError("run.duration_s", f"must be positive seconds, was {settings.run.duration_s}")
    if settings.run.log_level.upper() not in LOG_LEVELS:
        raise ConfigError("run.log_level", f"'{settings.run.log_level}' is not one of {', '.join(LOG_LEVELS)}")
    _check_port("monitoring.port", settings.monitoring.port)
    boot = settings.bootstrap
    if boot.wait_timeout_s <= 0:
        raise ConfigError("bootstrap.wait_timeout_s", "must be positive seconds")
    if boot.lease_ttl_s <= 0:
        raise ConfigError("bootstrap.lease_ttl_s", "must be positive seconds")
    if boot.lease_wait_s is not None and boot.lease_wait_s < 0:
        raise ConfigError("bootstrap.lease_wait_s", "must be >= 0 seconds")
    ret = settings.retention
    for key in ("orders_days", "positions_closed_hours", "account_events_days", "interval_s"):
        if getattr(ret, key) < 0:
            raise ConfigError(f"retention.{key}", "must be >= 0")
    if ret.enabled and ret.interval_s <= 0:
        raise ConfigError("retention.interval_s", "must be positive seconds while retention.enabled=true")
    if ret.stream_max_len <= 0:
        raise ConfigError("retention.stream_max_len", "must be positive")
    if ret.stream_max_age_s <= 0:
        raise ConfigError("retention.stream_max_age_s", "must be positive seconds")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
