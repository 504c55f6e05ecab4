"""
Pure apart from reading the environment: the venue's settings -> the ``ImportableConfig`` of its
data and execution clients for ``TradingNodeConfig.data_clients`` / ``exec_clients``.

Every client is named by import path (config class and factory), so NautilusTrader's node builder
imports and registers the factories itself and a new venue is a YAML file under ``conf/venue/``.
Credentials come only from the environment variables the venue's YAML names for the selected
environment (the names NautilusTrader's adapters read); a missing one is a ConfigError naming it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any

from nautilus_trader.common.config import ImportableConfig
from nautilus_trader.common.config import ImportableFactoryConfig
from nautilus_trader.common.config import resolve_path

from launcher.config.compose import redact_text
from launcher.config.schema import ClientSettings
from launcher.config.schema import Execution
from launcher.config.schema import VenueKind
from launcher.config.schema import VenueSettings
from launcher.errors import ConfigError


ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
SIM_DATA = ("launcher.venues.sim:SimDataClientConfig", "launcher.venues.sim:SimDataClientFactory")
SANDBOX_CONFIG = "nautilus_trader.adapters.sandbox.config:SandboxExecutionClientConfig"
# NautilusTrader's sandbox execution client, subclassed to cancel the orders recovered from the
# cache, which its empty matching engine cannot work (launcher/venues/sim.py): for the sim and for
# every venue.execution=sandbox.
SANDBOX_FACTORY = "launcher.venues.sim:SandboxLiveExecClientFactory"


def venue_clients(
    venue: VenueSettings,
    environ: Mapping[str, str] = os.environ,
) -> tuple[dict[str, ImportableConfig], dict[str, ImportableConfig]]:
    """The node's ``data_clients`` and ``exec_clients`` for `venue` (ConfigError if unsound)."""
    if venue.kind == VenueKind.sim:
        data = _importable(*SIM_DATA, _sim_data_params(venue))
        return {venue.name: data}, {venue.name: _sandbox(venue)}
    check_installed(venue)
    secrets = credentials(venue, environ)
    data = _adapter_client("venue.data_client", venue.data_client, venue, secrets)
    exec_clients = {}
    if venue.execution == Execution.venue:
        exec_clients[venue.name] = _adapter_client("venue.exec_client", venue.exec_client, venue, secrets)
    elif venue.execution == Execution.sandbox:
        exec_clients[venue.name] = _sandbox(venue)
    return {venue.name: data}, exec_clients


def check_installed(venue: VenueSettings) -> None:
    """ConfigError naming the extra to install when the adapter's dependency is missing."""
    if venue.requires and importlib.util.find_spec(venue.requires) is None:
        extra = f": pip install 'nautilus-redis-launcher[{venue.extra}]'" if venue.extra else ""
        raise ConfigError("venue", f"venue {venue.name} needs the Python package '{venue.requires}', "
                                   f"which is not installed{extra}")


def credentials(venue: VenueSettings, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The selected environment's credentials, by config field, read from the environment variables."""
    found = {}
    for field_name, variable in venue.credentials.get(venue.environment or "", {}).items():
        if not ENV_NAME.fullmatch(variable or ""):
            # Not echoed: a value here that is no variable name may be the secret itself.
            raise ConfigError(f"venue.credentials.{venue.environment}.{field_name}",
                              "must name an environment variable (A-Z, 0-9, _), never hold the credential itself")
        value = environ.get(variable)
        if not value:
            raise ConfigError("venue.credentials", f"environment variable {variable} is not set (venue {venue.name}, "
                                                   f"environment {venue.environment}, its {field_name})")
        found[field_name] = value
    return found


def sandbox_venue(venue: VenueSettings) -> str:
    """The venue the sandbox trades on: that of the first instrument (Databento's ids name the exchange)."""
    return venue.instrument_ids[0].rsplit(".", 1)[1]


def _sim_data_params(venue: VenueSettings) -> dict[str, Any]:
    return {
        "venue": venue.name,
        "instruments": list(venue.instruments),
        "quote_rate_hz": float(venue.quote_rate_hz),
        "trades": bool(venue.trades),
        "seed": int(venue.seed),
        "initial_price": float(venue.initial_price),
        "volatility_bp": float(venue.volatility_bp),
        "spread_bp": float(venue.spread_bp),
    }


def _sandbox(venue: VenueSettings) -> ImportableConfig:
    params = {
        "venue": venue.name if venue.kind == VenueKind.sim else sandbox_venue(venue),
        "starting_balances": list(venue.starting_balances),
        "base_currency": venue.base_currency,
        "oms_type": venue.oms_type.value,
        "account_type": venue.account_type.value,
    }
    return _importable(SANDBOX_CONFIG, SANDBOX_FACTORY, params)


def _adapter_client(key: str, client: ClientSettings, venue: VenueSettings, secrets: dict[str, str]) -> ImportableConfig:
    for part, path in (("config_path", client.config_path), ("factory_path", client.factory_path)):
        if ":" not in (path or ""):
            raise ConfigError(f"{key}.{part}", f"'{path}' must be 'package.module:ClassName'")
    try:
        config_cls = resolve_path(client.config_path)
        resolve_path(client.factory_path)
    except Exception as e:  # noqa: BLE001 (any import failure is the YAML's)
        raise ConfigError(key, f"cannot import venue {venue.name}'s client: {one_line(e)}") from None
    fields = set(getattr(config_cls, "__struct_fields__", ()))
    params = {**venue.environments.get(venue.environment or "", {}), **client.params}
    params.update({k: v for k, v in secrets.items() if k in fields})
    if "instrument_provider" in fields and "instrument_provider" not in params:
        params["instrument_provider"] = {"load_ids": venue.instrument_ids}
    params = {k: v for k, v in params.items() if k in fields or k in client.params}
    importable = _importable(client.config_path, client.factory_path, params)
    try:
        importable.create()
    except Exception as e:  # noqa: BLE001 (the config class rejects the YAML's params)
        problem = redact_text(one_line(e), set(secrets.values()))
        raise ConfigError(f"{key}.params", f"venue {venue.name}: {problem}") from None
    return importable


def _importable(config_path: str, factory_path: str, params: dict[str, Any]) -> ImportableConfig:
    return ImportableConfig(path=config_path, config=params, factory=ImportableFactoryConfig(path=factory_path))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
