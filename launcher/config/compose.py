"""
Composition of the Hydra config with Hydra's compose API (pure apart from reading the YAML
files and the environment): the CLI runner (launcher/cli.py) composes every command line with
it, once; it also prints redacted configs and serves the tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from hydra import compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from launcher.config.schema import LauncherConfig
from launcher.config.schema import register
from launcher.errors import ConfigError


CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_NAME = "config"

# Words of the keys (and environment variable names) whose values are secrets: Redis passwords and
# the venues' API credentials (BINANCE_API_KEY, OKX_API_PASSPHRASE...).
SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key", "apikey", "passphrase", "private_key")
REDACTED = "***"
# The credentials of a URL (``redis://user:password@host``), in any value: migrate.to, a node list.
_URL_USERINFO = re.compile(r"://([^/@\s]+)@")


def compose_config(
    overrides: list[str] | None = None,
    *,
    with_hydra: bool = False,
    config_name: str = CONFIG_NAME,
) -> DictConfig:
    """
    Compose ``conf/{config_name}.yaml`` with `overrides`; raise ConfigError (one line) on any
    problem. The launcher, the drill and the bench apps share ``conf/`` and this function.
    """
    register()
    for override in overrides or []:
        _refuse_retyped_secret(override)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose(config_name, overrides=list(overrides or []), return_hydra_config=with_hydra)
    except Exception as e:  # noqa: BLE001 (Hydra raises many types; all mean bad input here)
        raise config_error_from(e) from None


def to_object(cfg: DictConfig) -> Any:
    """
    Resolve interpolations (environment variables) and return the typed dataclass object;
    ConfigError for a key the schema does not know or a value its fields refuse.
    """
    try:
        node = cfg.copy()
        if "hydra" in node:
            with _unlocked(node):
                del node["hydra"]
    except Exception as e:  # noqa: BLE001
        raise config_error_from(e) from None
    check_known_keys(node)
    try:
        return OmegaConf.to_object(node)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise config_error_from(e) from None


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """
    ConfigError for the first key of `cfg` its dataclass schema does not declare. Hydra's
    ``+key=value`` and ``++key=value`` add keys even to a struct config, and OmegaConf.to_object
    drops them silently, so a misspelt override would otherwise be ignored.
    """
    schema = OmegaConf.get_type(cfg)
    known = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in cfg:
        if known is not None and key not in known:
            raise ConfigError(f"{prefix}{key}", "unknown key")
        child = cfg._get_node(key)  # noqa: SLF001 (the node itself, without resolving ${oc.env:...})
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():  # noqa: SLF001
            check_known_keys(child, f"{prefix}{key}.")


def to_settings(cfg: DictConfig) -> LauncherConfig:
    """The launcher's typed, validated settings from a composed config (ConfigError if unsound)."""
    from launcher.config.node_config import check_strategy  # noqa: PLC0415 (imports NautilusTrader's configs)

    return check_strategy(to_object(cfg))


class _unlocked:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def __enter__(self) -> None:
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc: object) -> None:
        OmegaConf.set_struct(self.cfg, True)


def config_error_from(exc: BaseException) -> ConfigError:
    """Turn a Hydra/OmegaConf exception chain into one line naming the key and the problem."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for err in reversed(chain):
        if isinstance(err, OmegaConfBaseException) and getattr(err, "full_key", None):
            msg = (getattr(err, "msg", None) or str(err)).strip().splitlines()[0]
            msg = _simplify(msg)
            return ConfigError(str(err.full_key), msg)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = str(exc)
    if "Available options" in text:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if "Available options" in line) + 1
        options = []
        for line in lines[start:]:
            if not line[:1].isspace():  # the indented option list ends (next: "Config search path")
                break
            options.append(line.strip())
        first = f"{first.rstrip('.')} (available: {', '.join(options)})"
    return ConfigError("", _simplify(first))


def _simplify(msg: str) -> str:
    if msg.startswith("Key '") and " not in '" in msg:
        return "unknown key " + msg.split("'")[1]
    if msg.startswith("Key '") and "is not in struct" in msg:
        return "unknown key " + msg.split("'")[1]
    return msg


def redact(container: Any) -> Any:
    """A copy of a plain container with every secret value replaced (keys and override strings)."""
    if isinstance(container, dict):
        return {k: (REDACTED if _is_secret(k) and v not in (None, "") else redact(v)) for k, v in container.items()}
    if isinstance(container, list):
        return [redact(v) for v in container]
    if isinstance(container, str) and "=" in container:
        key, _, value = container.partition("=")
        if _is_secret(key.rsplit(".", 1)[-1]) and value not in ("", "null"):
            return f"{key}={REDACTED}"
    if isinstance(container, str):
        return _URL_USERINFO.sub(f"://{REDACTED}@", container)
    return container


def secret_values(argv: list[str]) -> set[str]:
    """
    The secret values a process may hold in plain text: ``key=value`` arguments whose key
    names a secret, and environment variables whose name does (REDIS_PASSWORD).
    """
    values = {v for k, v in os.environ.items() if _is_secret(k)}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and _is_secret(key.rsplit(".", 1)[-1]):
            values.add(value)
        for userinfo in _URL_USERINFO.findall(arg):  # refused as input, but echoed by a parse error
            values.update({userinfo, userinfo.partition(":")[2]})
        # As Hydra parses it: an error names the items of ``password=[s,x]`` or ``redis={password:s}``,
        # never the argument's text.
        values.update(_parsed_secrets(arg))
    return {v for v in values if v not in ("", "null")}


def _refuse_retyped_secret(override: str) -> None:
    """
    ConfigError when Hydra reads a secret given on the command line as something else than text
    (``password=1e5`` is the float 100000.0, ``1_000`` the int 1000, ``true`` a bool): the node
    would authenticate with another password than the one typed. The value is never echoed.
    """
    parsed = _parsed(override)
    if parsed is None or not _is_secret(parsed[0].rsplit(".", 1)[-1]):
        return
    key, value = parsed
    if value is not None and not isinstance(value, (str, dict, list)) and str(value) != override.partition("=")[2].strip():
        raise ConfigError(key, f"Hydra reads the value given as a {type(value).__name__}, not as text, "
                               f"and would change it: quote it ({key}=\'...\')")


def _parsed(override: str) -> tuple[str, Any] | None:
    """(key, value) of `override` as Hydra parses it; None for a flag or what Hydra refuses itself (redacted)."""
    if "=" not in override or override.startswith("-"):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
        return str(parsed.key_or_group), parsed.value()
    except Exception:  # noqa: BLE001 (an override Hydra cannot parse is refused with its text redacted)
        return None


def _parsed_secrets(override: str) -> set[str]:
    parsed = _parsed(override)
    return set() if parsed is None else _leaves(parsed[1], _is_secret(parsed[0].rsplit(".", 1)[-1]))


def _leaves(value: Any, secret: bool) -> set[str]:
    """The strings of `value` that are secrets: all of it under a secret key, else those under secret dict keys."""
    if isinstance(value, dict):
        return {s for k, v in value.items() for s in _leaves(v, secret or _is_secret(str(k)))}
    if isinstance(value, (list, tuple)):
        return {s for v in value for s in _leaves(v, secret)}
    return {str(value)} if secret and value is not None else set()


def redact_text(text: str, secrets: set[str]) -> str:
    """`text` with every one of `secrets` replaced, longest first (one may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _is_secret(key: Any) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in SECRET_KEYS)


def redacted_yaml(cfg: DictConfig, *, resolve: bool = False, package: str | None = None) -> str:
    """YAML of `cfg` (optionally one package of it) with secrets redacted."""
    try:
        container = OmegaConf.to_container(cfg, resolve=False)
        if resolve:
            # Hydra's own section only resolves inside a running job; resolve the rest.
            job = {k: v for k, v in cfg.items() if k != "hydra"}
            container.update(OmegaConf.to_container(OmegaConf.create(job), resolve=True))
    except Exception as e:  # noqa: BLE001
        raise config_error_from(e) from None
    if package:
        for part in package.split("."):
            container = container[part]
    return OmegaConf.to_yaml(OmegaConf.create(redact(container)))
