"""
Typed schema of the launcher's Hydra configuration.

Each dataclass backs one YAML group under ``conf/``; Hydra validates every YAML file and
command-line override against it, so a misspelt key or a wrong type fails at composition.
Units are in the field names (``_s``, ``_ms``, ``_hz``, ``_days``, ``_hours``).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


class Mode(str, Enum):
    run = "run"  # bootstrap, then run the node
    verify = "verify"  # bootstrap checks and recovery report only
    inspect = "inspect"  # print the persisted state in a logical view
    retention = "retention"  # one-shot retention pass


class Store(str, Enum):
    memory = "memory"
    redis = "redis"
    sentinel = "sentinel"


class Backend(str, Enum):
    resilient = "resilient"  # this project's CacheDatabaseFacade
    native = "native"  # NautilusTrader's own CacheDatabaseAdapter


class Durability(str, Enum):
    buffered = "buffered"  # hot path enqueues; batches every buffer_interval_ms
    sync = "sync"  # a cache write returns once Redis acknowledged it


class Embedded(str, Enum):
    auto = "auto"  # start a local server only if nothing answers on a loopback address
    never = "never"


class VerifyMode(str, Enum):
    strict = "strict"
    warn = "warn"
    off = "off"


@dataclass
class RedisSettings:
    """Connection to one Redis server (FR-001)."""

    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_ca_file: str | None = None
    db: int = 0
    timeout_s: float = 2.0  # socket connect and response timeout
    max_connections: int = 20
    embedded: Embedded = Embedded.never
    embedded_dir: str = "var/redis"


@dataclass
class SentinelSettings:
    nodes: list[str] = field(default_factory=list)  # "host:port" of each sentinel
    master_name: str = "mymaster"
    username: str | None = None  # for the sentinels themselves, when they require auth
    password: str | None = None
    min_replica_acks: int = 0  # WAIT for this many replicas before a batch counts as acknowledged
    replica_ack_timeout_ms: int = 1000


@dataclass
class CacheSettings:
    """The cache profile (FR-002): where state lives and how it is written."""

    store: Store = Store.redis
    backend: Backend = Backend.resilient
    durability: Durability = Durability.buffered
    encoding: str = "msgpack"
    timestamps_as_iso8601: bool = True
    buffer_interval_ms: int = 100
    bulk_read_batch_size: int | None = None
    use_trader_prefix: bool = True
    use_instance_id: bool = False
    flush_on_start: bool = False
    persist_account_events: bool = True
    persist_orders: bool = True
    persist_positions: bool = True
    persist_quotes: bool = False
    persist_trades: bool = False
    max_pending_writes: int = 100_000  # retained (unacknowledged) writes kept in memory before spilling
    # None: <state dir>/spill; a relative path is under the state dir ($LAUNCHER_STATE_DIR, else
    # $XDG_STATE_HOME/nautilus-launcher, else ~/.local/state/nautilus-launcher), never the cwd.
    spill_dir: str | None = None
    redis: RedisSettings = field(default_factory=RedisSettings)
    sentinel: SentinelSettings = field(default_factory=SentinelSettings)


@dataclass
class VenueSettings:
    """An offline simulated venue: synthetic quotes plus NautilusTrader's sandbox matching engine."""

    name: str = "SIM"
    kind: str = "sim"
    oms_type: str = "NETTING"
    account_type: str = "MARGIN"
    base_currency: str | None = None
    starting_balances: list[str] = field(default_factory=lambda: ["1000000 USD"])
    instruments: list[str] = field(default_factory=lambda: ["EUR/USD"])  # FX pairs, quoted on this venue
    quote_rate_hz: float = 20.0  # quotes per second per instrument
    trades: bool = False  # also publish synthetic trade ticks
    seed: int = 42
    initial_price: float = 1.10
    volatility_bp: float = 0.5  # standard deviation of one step of the mid random walk, basis points
    spread_bp: float = 0.5
    restored_orders: str = "cancel"  # what the venue does with open orders found in the cache at start


@dataclass
class StrategySettings:
    name: str = "ema_cross"
    path: str = ""  # "module:Class" of the Strategy
    config_path: str = ""  # "module:ConfigClass" of its StrategyConfig
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSettings:
    duration_s: float | None = None  # stop after this many seconds; None runs until SIGINT/SIGTERM/SIGHUP
    log_level: str = "INFO"
    log_file: str | None = None
    timeout_disconnection_s: float = 10.0
    post_stop_s: float = 2.0  # wait after stopping strategies for their cancels to settle


@dataclass
class MonitoringSettings:
    enabled: bool | None = None  # None: on with the Redis profiles, off with cache=memory
    host: str = "127.0.0.1"  # metrics reveal trading activity: loopback unless said otherwise
    port: int = 9108


@dataclass
class BootstrapSettings:
    wait_timeout_s: float = 30.0
    verify: VerifyMode = VerifyMode.strict
    report_path: str | None = None
    lease_ttl_s: float = 10.0
    lease_wait_s: float | None = None  # how long to wait for a crashed holder's lease; default: lease_ttl_s + 2
    allow_no_persistence: bool = False


@dataclass
class RetentionSettings:
    enabled: bool = True
    orders_days: float = 7.0  # closed orders
    positions_closed_hours: float = 24.0  # counted from the close
    account_events_days: float = 30.0
    interval_s: float = 300.0  # how often a running node applies retention
    dry_run: bool = False
    stream_max_len: int = 100_000  # capped streams for quotes/trades when persisted
    stream_max_age_s: float = 3600.0


@dataclass
class LauncherConfig:
    trader_id: str = "TRADER-001"
    mode: Mode = Mode.run
    cache: CacheSettings = field(default_factory=CacheSettings)
    venue: VenueSettings = field(default_factory=VenueSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    run: RunSettings = field(default_factory=RunSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)


def _split_csv(value: Any) -> list[str]:
    """``"h1:p1,h2:p2"`` -> ``["h1:p1", "h2:p2"]`` (for REDIS_SENTINELS)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def register() -> None:
    """Register the schema with Hydra's ConfigStore and the resolvers the YAML uses (idempotent)."""
    if not OmegaConf.has_resolver("csv"):
        OmegaConf.register_new_resolver("csv", _split_csv)
    cs = ConfigStore.instance()
    cs.store(name="launcher_schema", node=LauncherConfig)
