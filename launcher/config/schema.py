"""
Typed schema of the launcher's Hydra configuration.

Each dataclass backs one YAML group under ``conf/``; Hydra validates every YAML file and
command-line override against it, so a misspelt key, a wrong type or a value outside a closed
set (an Enum) fails at composition. Range checks sit next to the fields, in each dataclass's
``__post_init__``, which OmegaConf.to_object runs: they raise ConfigError(key, problem).
Units are in the field names (``_s``, ``_ms``, ``_hz``, ``_days``, ``_hours``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from dataclasses import is_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from nautilus_trader.model.objects import Money
from omegaconf import OmegaConf

from launcher.errors import ConfigError
from launcher.store.connection import parse_address


# The closed sets are StrEnums: a member compares equal to its value and str() of it is the
# value, as NautilusTrader's configs and the Redis layout expect.
class Mode(StrEnum):
    run = "run"  # bootstrap, then run the node
    verify = "verify"  # bootstrap checks and recovery report only
    inspect = "inspect"  # print the persisted state in a logical view
    retention = "retention"  # one-shot retention pass
    migrate = "migrate"  # copy the trader's state to the store `migrate.to` names
    check = "check"  # compose, validate and build the node offline; print a summary (no Redis, no venue)


class Store(StrEnum):
    memory = "memory"
    redis = "redis"
    sentinel = "sentinel"
    cluster = "cluster"


class Backend(StrEnum):
    resilient = "resilient"  # this project's CacheDatabaseFacade
    native = "native"  # NautilusTrader's own CacheDatabaseAdapter


class Durability(StrEnum):
    buffered = "buffered"  # hot path enqueues; batches every buffer_interval_ms
    sync = "sync"  # a cache write returns once Redis acknowledged it


class Embedded(StrEnum):
    auto = "auto"  # start a local server only if nothing answers on a loopback address
    never = "never"


class VerifyMode(StrEnum):
    strict = "strict"
    warn = "warn"
    off = "off"


class Encoding(StrEnum):
    msgpack = "msgpack"
    json = "json"


class LogLevel(StrEnum):
    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    WARN = "WARN"
    ERROR = "ERROR"
    OFF = "OFF"


class VenueKind(StrEnum):
    sim = "sim"  # launcher/venues/sim.py: synthetic quotes, sandbox execution, fully offline
    adapter = "adapter"  # a NautilusTrader adapter named by import paths in the venue's YAML


class Execution(StrEnum):
    venue = "venue"  # the venue's own execution client: real orders (in venue.environment)
    sandbox = "sandbox"  # paper trading: NautilusTrader's sandbox fills against the venue's data
    none = "none"  # data only: no execution client (strategies cannot trade)


class ClosedOrders(StrEnum):
    deferred = "deferred"  # plainly closed orders are built after the node reached RUNNING (see docs/design.md)
    eager = "eager"  # every order is built before trading, as NautilusTrader's own adapter does


class OmsType(StrEnum):
    NETTING = "NETTING"
    HEDGING = "HEDGING"


class AccountType(StrEnum):
    CASH = "CASH"
    MARGIN = "MARGIN"


def _positive(key: str, value: float | None, unit: str = "") -> None:
    if value is not None and value <= 0:
        raise ConfigError(key, f"must be positive{unit}, was {value}")


def _not_negative(key: str, value: float | None, unit: str = "") -> None:
    if value is not None and value < 0:
        raise ConfigError(key, f"must be >= 0{unit}, was {value}")


def _check_port(key: str, port: int) -> None:
    if not 1 <= int(port) <= 65535:
        raise ConfigError(key, f"port {port} is out of range 1..65535")


def _check_addresses(key: str, nodes: list[str]) -> None:
    for node in nodes:
        try:
            parse_address(node)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None


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

    def __post_init__(self) -> None:
        _check_port("cache.redis.port", self.port)
        _not_negative("cache.redis.db", self.db)
        _positive("cache.redis.timeout_s", self.timeout_s, " seconds")
        if self.max_connections < 1:
            raise ConfigError("cache.redis.max_connections", "must be at least 1")


@dataclass
class SentinelSettings:
    nodes: list[str] = field(default_factory=list)  # "host:port" of each sentinel
    master_name: str = "mymaster"
    username: str | None = None  # for the sentinels themselves, when they require auth
    password: str | None = None
    min_replica_acks: int = 0  # WAIT for this many replicas before a batch counts as acknowledged
    replica_ack_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        _check_addresses("cache.sentinel.nodes", self.nodes)
        if not self.master_name:
            raise ConfigError("cache.sentinel.master_name", "must not be empty")
        _not_negative("cache.sentinel.min_replica_acks", self.min_replica_acks)


@dataclass
class ClusterSettings:
    """Redis Cluster: seed nodes; the trader's keys live in one hash slot, on its shard's primary."""

    nodes: list[str] = field(default_factory=list)  # "host:port" of any cluster nodes (seeds)
    min_replica_acks: int = 0  # WAIT on the shard's primary for this many replicas per batch
    replica_ack_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        _check_addresses("cache.cluster.nodes", self.nodes)
        _not_negative("cache.cluster.min_replica_acks", self.min_replica_acks)
        _positive("cache.cluster.replica_ack_timeout_ms", self.replica_ack_timeout_ms, " milliseconds")


@dataclass
class CacheSettings:
    """The cache profile (FR-002): where state lives and how it is written."""

    store: Store = Store.redis
    backend: Backend = Backend.resilient
    durability: Durability = Durability.buffered
    encoding: Encoding = Encoding.msgpack
    timestamps_as_iso8601: bool = True
    buffer_interval_ms: int = 100
    bulk_read_batch_size: int | None = None
    # When closed orders join the node's cache on a restart (resilient backend with verify on).
    closed_orders: ClosedOrders = ClosedOrders.deferred
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
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    def replica_acks(self) -> tuple[int, int]:
        """(replicas a batch waits for, WAIT timeout in milliseconds) of the HA profile in use; 0 otherwise."""
        if self.store == Store.sentinel:
            return self.sentinel.min_replica_acks, self.sentinel.replica_ack_timeout_ms
        if self.store == Store.cluster:
            return self.cluster.min_replica_acks, self.cluster.replica_ack_timeout_ms
        return 0, self.sentinel.replica_ack_timeout_ms

    def __post_init__(self) -> None:
        _not_negative("cache.buffer_interval_ms", self.buffer_interval_ms, " milliseconds")
        _positive("cache.bulk_read_batch_size", self.bulk_read_batch_size)
        _positive("cache.max_pending_writes", self.max_pending_writes)
        for key in ("persist_orders", "persist_positions"):
            if not getattr(self, key):
                raise ConfigError(
                    f"cache.{key}",
                    "false is not supported: NautilusTrader always persists orders and positions to its cache "
                    "database, and recovery needs them (use cache=memory to persist nothing)",
                )
        if self.store != Store.memory:
            self._check_connection()

    def _check_connection(self) -> None:
        """The Redis profiles' connection settings (cache=memory ignores them)."""
        redis = self.redis
        if self.store == Store.redis and not redis.host:
            raise ConfigError("cache.redis.host", "must not be empty")
        if "@" in redis.host:
            # Not echoed: what precedes '@' may be a password (a URL given as REDIS_HOST).
            raise ConfigError("cache.redis.host", "holds credentials (user:password@): give a host name, and the "
                                                  "credentials as cache.redis.username/password (REDIS_USER/REDIS_PASSWORD)")
        if redis.username and not redis.password:
            raise ConfigError(
                "cache.redis.username",
                f"username '{redis.username}' given without cache.redis.password (REDIS_PASSWORD)",
            )
        if redis.ssl_ca_file and not os.path.isfile(redis.ssl_ca_file):
            raise ConfigError("cache.redis.ssl_ca_file", f"no such file: {redis.ssl_ca_file}")
        if self.store == Store.sentinel and not self.sentinel.nodes:
            raise ConfigError(
                "cache.sentinel.nodes",
                "the sentinel profile needs at least one sentinel "
                "(cache.sentinel.nodes=[host:port,...] or REDIS_SENTINELS=host:port,...)",
            )
        if self.store == Store.cluster:
            self._check_cluster()
        if self.backend == Backend.native:
            if self.durability == Durability.sync:
                raise ConfigError(
                    "cache.durability",
                    "sync needs cache.backend=resilient (NautilusTrader's adapter only writes asynchronously)",
                )
            if redis.db != 0:
                raise ConfigError("cache.redis.db", "NautilusTrader's native adapter only uses database 0")


    def _check_cluster(self) -> None:
        if not self.cluster.nodes:
            raise ConfigError(
                "cache.cluster.nodes",
                "the cluster profile needs at least one cluster node "
                "(cache.cluster.nodes=[host:port,...] or REDIS_CLUSTER_NODES=host:port,...)",
            )
        if self.backend == Backend.native:
            raise ConfigError(
                "cache.backend",
                "native cannot be used with cache=redis_cluster: NautilusTrader's adapter cannot talk to a Redis "
                "Cluster (use cache.backend=resilient)",
            )
        if self.redis.db != 0:
            raise ConfigError("cache.redis.db", "a Redis Cluster has only database 0")


@dataclass
class ClientSettings:
    """One NautilusTrader client of a venue, named by import path (so a new venue is YAML only)."""

    config_path: str = ""  # "module:ConfigClass", e.g. nautilus_trader.adapters.binance.config:BinanceDataClientConfig
    factory_path: str = ""  # "module:FactoryClass", the LiveDataClientFactory / LiveExecClientFactory
    params: dict[str, Any] = field(default_factory=dict)  # the config's fields


@dataclass
class VenueSettings:
    """
    The venue: the offline ``sim`` (kind sim) or a NautilusTrader adapter (kind adapter) whose
    clients the YAML names by import path. The sim's market fields (quote_rate_hz...) apply to
    the sim only; oms_type, account_type, base_currency and starting_balances also configure
    the sandbox execution client of ``execution=sandbox``.
    """

    name: str = "SIM"
    kind: VenueKind = VenueKind.sim
    # Adapters: the selected environment, one of the keys of `environments`. The YAML files of
    # venues that trade real money default to a test environment: live must be chosen explicitly.
    environment: str | None = None
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> params for both clients
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)  # environment -> {config field: ENV_VAR}
    execution: Execution = Execution.venue
    data_client: ClientSettings | None = None
    exec_client: ClientSettings | None = None
    requires: str | None = None  # a module the adapter needs that is not installed by default
    extra: str | None = None  # the optional extra of this package that installs it
    oms_type: OmsType = OmsType.NETTING
    account_type: AccountType = AccountType.MARGIN
    base_currency: str | None = None
    starting_balances: list[str] = field(default_factory=lambda: ["1000000 USD"])
    # sim: FX pairs quoted on this venue. Adapters: symbols (listed as SYMBOL.{name}) or full
    # instrument ids (SYMBOL.VENUE) that the instrument provider loads; the first is the strategies'.
    instruments: list[str] = field(default_factory=lambda: ["EUR/USD"])
    quote_rate_hz: float = 20.0  # quotes per second per instrument
    trades: bool = False  # also publish synthetic trade ticks
    seed: int = 42
    initial_price: float = 1.10
    volatility_bp: float = 0.5  # standard deviation of one step of the mid random walk, basis points
    spread_bp: float = 0.5

    def __post_init__(self) -> None:
        if not self.name or not self.name.isalnum():
            raise ConfigError("venue.name", f"'{self.name}' must be a non-empty alphanumeric venue name")
        if not self.starting_balances:
            raise ConfigError("venue.starting_balances", "needs at least one balance such as '1000000 USD'")
        for balance in self.starting_balances:
            try:
                amount = Money.from_str(balance)
            except (ValueError, TypeError):
                raise ConfigError("venue.starting_balances", f"'{balance}' is not an amount with a currency") from None
            if amount.as_double() < 0:
                raise ConfigError("venue.starting_balances", f"'{balance}' is negative: an account starts with what it holds")
        if not self.instruments:
            raise ConfigError("venue.instruments", "needs at least one instrument (sim: an FX pair such as EUR/USD)")
        if self.kind == VenueKind.sim:
            self._check_sim()
        else:
            self._check_adapter()

    @property
    def instrument_ids(self) -> list[str]:
        """The instruments as NautilusTrader instrument ids (``SYMBOL.VENUE``)."""
        return [s if "." in s else f"{s}.{self.name}" for s in self.instruments]

    def _check_sim(self) -> None:
        for symbol in self.instruments:
            base, _, quote = symbol.partition("/")
            if len(base) != 3 or len(quote) != 3:
                raise ConfigError("venue.instruments", f"'{symbol}' is not an FX pair like EUR/USD")
        _positive("venue.quote_rate_hz", self.quote_rate_hz)
        _positive("venue.initial_price", self.initial_price)
        _not_negative("venue.volatility_bp", self.volatility_bp, " basis points")
        _not_negative("venue.spread_bp", self.spread_bp, " basis points")

    def _check_adapter(self) -> None:
        if self.data_client is None:
            raise ConfigError("venue.data_client", f"venue {self.name} (kind adapter) names no data client")
        if self.execution == Execution.venue and self.exec_client is None:
            raise ConfigError("venue.execution", f"venue {self.name} has no execution client of its own: "
                                                 "use venue.execution=sandbox (paper trading) or none")
        if self.environments and self.environment not in self.environments:
            raise ConfigError("venue.environment", f"'{self.environment}' is not one of venue {self.name}'s "
                                                   f"environments: {', '.join(self.environments)}")
        for env in self.credentials:
            if env not in self.environments:
                raise ConfigError(f"venue.credentials.{env}", "names no environment of venue.environments")


@dataclass
class StrategySettings:
    name: str = "ema_cross"
    path: str = ""  # "module:Class" of the Strategy
    config_path: str = ""  # "module:ConfigClass" of its StrategyConfig
    params: dict[str, Any] = field(default_factory=dict)
    # The strategy's id tag (StrategyId CLASS-TAG; also in its client order ids): distinct per node.
    # None: NautilusTrader's default for a single strategy, the position (001, 002...) in `strategies`.
    order_id_tag: str | None = None


@dataclass
class ActorSettings:
    """An actor added to the node beside the strategies (and the launcher's retention actor)."""

    path: str = ""  # "module:Class" of the Actor
    config_path: str = ""  # "module:ConfigClass" of its ActorConfig
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconciliationSettings:
    """NautilusTrader's execution-engine reconciliation (LiveExecEngineConfig), on by default."""

    enabled: bool = True  # reconcile the cached orders/positions with the venue's reports at start
    lookback_mins: int | None = None  # how far back to ask the venue for reports; None: the venue's maximum
    startup_delay_s: float = 10.0  # wait after connecting before reconciling
    # None: 2000 with a Redis profile, 0 (off) with cache=memory
    inflight_check_interval_ms: int | None = None
    open_check_interval_s: float | None = None  # periodic check of open orders against the venue; None: off
    open_check_open_only: bool = True
    filter_unclaimed_external_orders: bool = False  # drop venue orders no strategy of this node placed
    generate_missing_orders: bool = True  # generate orders to align positions the venue reports

    def __post_init__(self) -> None:
        _not_negative("reconciliation.lookback_mins", self.lookback_mins)
        _positive("reconciliation.startup_delay_s", self.startup_delay_s, " seconds")
        _not_negative("reconciliation.inflight_check_interval_ms", self.inflight_check_interval_ms)
        _positive("reconciliation.open_check_interval_s", self.open_check_interval_s, " seconds")


@dataclass
class RunSettings:
    duration_s: float | None = None  # stop after this many seconds; None runs until SIGINT/SIGTERM/SIGHUP
    log_level: LogLevel = LogLevel.INFO
    log_file: str | None = None
    timeout_connection_s: float = 30.0  # venue clients must connect within this, else exit 9
    timeout_reconciliation_s: float = 30.0
    timeout_disconnection_s: float = 10.0
    post_stop_s: float = 2.0  # wait after stopping strategies for their cancels to settle

    def __post_init__(self) -> None:
        _positive("run.duration_s", self.duration_s, " seconds")
        _positive("run.timeout_connection_s", self.timeout_connection_s, " seconds")
        _positive("run.timeout_reconciliation_s", self.timeout_reconciliation_s, " seconds")


@dataclass
class MonitoringSettings:
    enabled: bool | None = None  # None: on with the Redis profiles, off with cache=memory
    host: str = "127.0.0.1"  # metrics reveal trading activity: loopback unless said otherwise
    port: int = 9108

    def __post_init__(self) -> None:
        _check_port("monitoring.port", self.port)


MIN_LEASE_TTL_S = 1.0


@dataclass
class BootstrapSettings:
    wait_timeout_s: float = 30.0
    verify: VerifyMode = VerifyMode.strict
    report_path: str | None = None
    lease_ttl_s: float = 10.0
    lease_wait_s: float | None = None  # how long to wait for a crashed holder's lease; default: lease_ttl_s + 2
    allow_no_persistence: bool = False

    def __post_init__(self) -> None:
        _positive("bootstrap.wait_timeout_s", self.wait_timeout_s, " seconds")
        if self.lease_ttl_s < MIN_LEASE_TTL_S:
            # Renewed every third of it by a thread that a busy interpreter (a GC pause, a large load) can
            # hold up for tens of milliseconds: below a second the node lost its lease while trading (exit 6).
            raise ConfigError("bootstrap.lease_ttl_s", f"must be at least {MIN_LEASE_TTL_S:g} second, was {self.lease_ttl_s}")
        _not_negative("bootstrap.lease_wait_s", self.lease_wait_s, " seconds")


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

    def __post_init__(self) -> None:
        for key in ("orders_days", "positions_closed_hours", "account_events_days", "interval_s"):
            _not_negative(f"retention.{key}", getattr(self, key))
        if self.enabled and self.interval_s <= 0:
            raise ConfigError("retention.interval_s", "must be positive seconds while retention.enabled=true")
        _positive("retention.stream_max_len", self.stream_max_len)
        _positive("retention.stream_max_age_s", self.stream_max_age_s, " seconds")


MIGRATE_TARGET_FORMS = "redis://host:port[/db], sentinel://host:port,...[/master_name] or cluster://host:port,..."


def parse_migrate_target(text: str) -> tuple[Store, list[tuple[str, int]], str | None]:
    """
    ``migrate.to`` -> (store, addresses, extra): extra is the database number (redis) or the
    master name (sentinel). Raises ValueError with the reason.
    """
    if "@" in str(text):
        # Not echoed: the part before '@' is a password, and this line is printed.
        raise ValueError("credentials do not belong in migrate.to (it is logged): the target is reached with "
                         "cache.redis.username/password")
    scheme, sep, rest = str(text).partition("://")
    stores = {"redis": Store.redis, "sentinel": Store.sentinel, "cluster": Store.cluster}
    if not sep or scheme not in stores or not rest:
        raise ValueError(f"'{text}' is not one of {MIGRATE_TARGET_FORMS}")
    nodes, _, extra = rest.partition("/")
    addresses = [parse_address(node) for node in nodes.split(",") if node]
    store = stores[scheme]
    if not addresses or (store == Store.redis and len(addresses) != 1):
        raise ValueError(f"'{text}' names {len(addresses)} address(es); {MIGRATE_TARGET_FORMS}")
    if store == Store.redis and extra and not extra.isdigit():
        raise ValueError(f"'{text}': the database must be a number")
    if store == Store.cluster and extra:
        raise ValueError(f"'{text}': a cluster has database 0 only, no path")
    return store, addresses, extra or None


@dataclass
class MigrateSettings:
    """``mode=migrate``: where to copy the trader's state (credentials and TLS: those of cache.redis)."""

    to: str | None = None

    def __post_init__(self) -> None:
        if self.to is not None:
            try:
                parse_migrate_target(self.to)
            except ValueError as e:
                raise ConfigError("migrate.to", str(e)) from None


@dataclass
class LauncherConfig:
    trader_id: str = "TRADER-001"
    mode: Mode = Mode.run
    cache: CacheSettings = field(default_factory=CacheSettings)
    venue: VenueSettings = field(default_factory=VenueSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    # Several strategies: option names of the strategy group (conf/strategy/*.yaml); when given,
    # they replace `strategy`. Per-entry params: +strategy_params.NAME.KEY=VALUE.
    strategies: list[str] = field(default_factory=list)
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    actors: list[ActorSettings] = field(default_factory=list)
    reconciliation: ReconciliationSettings = field(default_factory=ReconciliationSettings)
    run: RunSettings = field(default_factory=RunSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    migrate: MigrateSettings = field(default_factory=MigrateSettings)

    def __post_init__(self) -> None:
        check_numbers(self)
        # Checked here rather than by constructing a TraderId: NautilusTrader aborts the whole
        # process (a Rust panic) on an invalid one. ':' is Redis's key delimiter, so it is refused too.
        if not is_identifier(self.trader_id):
            raise ConfigError(
                "trader_id",
                f"'{self.trader_id}' is not in NautilusTrader's NAME-TAG form (e.g. TRADER-001; ASCII, no spaces or ':')",
            )
        if len(str(self.trader_id)) > MAX_TRADER_ID:
            # It names the trader's files in cache.spill_dir (spill file, records), where a character
            # other than A-Z a-z 0-9 . _ - takes three: a longer id overflowed the 255-byte file name.
            raise ConfigError("trader_id", f"{len(str(self.trader_id))} characters; at most {MAX_TRADER_ID} "
                                           "(it names the trader's files in cache.spill_dir)")
        if self.mode == Mode.migrate and not self.migrate.to:
            raise ConfigError("migrate.to", f"mode=migrate needs a target: {MIGRATE_TARGET_FORMS}")
        on_cluster = self.cache.store == Store.cluster or str(self.migrate.to or "").startswith("cluster://")
        if on_cluster and not self.cache.use_trader_prefix and str(self.trader_id).startswith("}"):
            # The cluster's hash tag would be '{}' (empty): Redis then hashes each whole key, and the
            # trader's keys scatter over many slots, which its batches and lease cannot span.
            raise ConfigError("trader_id", f"'{self.trader_id}' starts with '}}', which a Redis Cluster hash tag cannot hold "
                                           "without cache.use_trader_prefix=true")


MAX_TRADER_ID = 64

# Seconds per unit of the duration fields, by the suffix of their names (the schema's convention).
_SECONDS_PER_UNIT = {"_s": 1.0, "_ms": 1e-3, "_mins": 60.0, "_hours": 3600.0, "_days": 86400.0}
# The longest duration taken: Python's waits and NautilusTrader's int64 nanoseconds end near 292 years.
MAX_DURATION_S = 100 * 365.25 * 86400


def check_numbers(settings: Any, prefix: str = "") -> None:
    """
    ConfigError for the first number field of the dataclass tree `settings` that is NaN or
    infinite (NaN passes every range check, each comparison being false), or a duration longer
    than MAX_DURATION_S (it would overflow a wait or a timestamp much later, with a traceback).
    """
    for item in fields(settings):
        key, value = f"{prefix}{item.name}", getattr(settings, item.name)
        if is_dataclass(value):
            check_numbers(value, f"{key}.")
            continue
        if isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ConfigError(key, f"must hold finite numbers, was {value}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, was {value}")
        unit = next((seconds for suffix, seconds in _SECONDS_PER_UNIT.items() if item.name.endswith(suffix)), None)
        if unit is not None and value * unit > MAX_DURATION_S:
            raise ConfigError(key, f"{value} is longer than the longest duration taken, 100 years")


def is_identifier(text: Any, *, tag_only: bool = False) -> bool:
    """
    Whether NautilusTrader takes `text` as a ``NAME-TAG`` identifier (TraderId, StrategyId), or with
    `tag_only` as the TAG of one (an order_id_tag). It aborts the whole process (a Rust panic) on an
    empty part or a non-ASCII character; ':' is Redis's key delimiter, so it is refused too.
    """
    text = str(text)
    printable = all("!" <= c <= "~" and c != ":" for c in text)
    if tag_only:
        return printable and bool(text) and not text.endswith("-")
    name, sep, tag = text.rpartition("-")
    return printable and bool(sep and name and tag)


def _split_csv(value: Any) -> list[str]:
    """``"h1:p1,h2:p2"`` -> ``["h1:p1", "h2:p2"]`` (for REDIS_SENTINELS, REDIS_CLUSTER_NODES)."""
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
